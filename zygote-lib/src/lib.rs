//! `libjsheets_zygote.so`: exports `jsheets_forked_helper` (see
//! `evaluator::sandbox::jsheets_forked_helper`), which a zygote's forked interpreter calls
//! to build a sandbox around itself. The library carries the symbol of its
//! dependency; this crate adds nothing of its own.

pub use evaluator::sandbox::jsheets_forked_helper;
