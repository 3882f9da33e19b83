//! `libjsheets_zygote.so`: the sandbox helper as a shared object. A zygote's forked
//! interpreter loads it and calls [`jsheets_forked_helper`] to build a sandbox around
//! itself (see `evaluator::sandbox::zygote`). Its one item is the exported symbol,
//! which is why this crate, and no other but the evaluator's `sys` module, allows
//! `unsafe_code` (the lint covers `no_mangle`).
#![allow(unsafe_code)]

/// Becomes a sandbox's helper (`evaluator::sandbox::forked_main`). Returns 0, and only
/// in the sandbox's payload; every other process of the sandbox exits inside.
// SAFETY: an exported, unmangled symbol: the name is unique to this library, and the
// function takes nothing and returns a plain int, so any C caller matches it.
#[no_mangle]
pub extern "C" fn jsheets_forked_helper() -> std::ffi::c_int {
    evaluator::sandbox::forked_main();
    0
}
