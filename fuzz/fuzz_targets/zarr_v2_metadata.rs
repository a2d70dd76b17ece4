//! A zarr v2 store walked document by document (`.zgroup`, `.zarray`, `.zattrs`): NUL-separated
//! `key\nJSON` entries opened as an AnnData store, its element tree walked and small elements read.
//! Errors are expected; a panic, hang or allocation abort is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(init: annql_fuzz::keep_caught_panics(), |data: &[u8]| {
    // An error is a clean answer to a bad input: only a crash fails the target.
    let _ = annql_store::fuzzing::zarr_v2_metadata(data);
});
