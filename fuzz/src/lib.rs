//! What the store targets share.

/// libFuzzer's panic hook aborts on every panic, also one annql catches at its boundary with a
/// dependency (hdf5-reader, zarrs's decoders) and reports as an error naming the file. Those
/// are printed (`panicked at`, so a run's log lists them) and left to unwind; a panic annql
/// does not catch still reaches libfuzzer-sys, which aborts: a crash.
pub fn keep_caught_panics() {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("{info} (caught by annql, or a crash if libFuzzer aborts next)");
    }));
}
