//! A `.zarr.zip` archive from bytes: opened from a temporary file through `AnnDataStore::open`,
//! its element tree walked and small elements read (member sizes, CRCs, inflation).
//! Errors are expected; a panic, hang or allocation abort is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(init: annql_fuzz::keep_caught_panics(), |data: &[u8]| {
    // An error is a clean answer to a bad input: only a crash fails the target.
    let _ = annql_store::fuzzing::zip_archive(data);
});
