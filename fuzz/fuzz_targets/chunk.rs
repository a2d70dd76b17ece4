//! Chunk decoding into Arrow: an array's metadata document, a NUL byte, then its first chunk's
//! bytes, read as values, index offsets and dense rows.
//! Errors are expected; a panic, hang or allocation abort is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(init: annql_fuzz::keep_caught_panics(), |data: &[u8]| {
    // An error is a clean answer to a bad input: only a crash fails the target.
    let _ = annql_store::fuzzing::chunk_to_arrow(data);
});
