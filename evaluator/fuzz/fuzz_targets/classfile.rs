//! `evaluator::classfile` on arbitrary bytes: it must return, never panic, hang or
//! exhaust memory.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = evaluator::classfile::references(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = evaluator::classfile::descriptor_types(text);
        let _ = evaluator::classfile::field_type(text);
    }
});
