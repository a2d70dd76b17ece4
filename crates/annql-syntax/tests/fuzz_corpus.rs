//! Replays the `parse` fuzz corpus (`fuzz/corpus/parse`) through what the fuzz target checks:
//! every input parses to a tree or to diagnostics that render, and programs split on boundaries.

use std::path::Path;

#[test]
fn parse_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/parse");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .path();
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let Ok(source) = std::str::from_utf8(&data) else {
            continue;
        };
        match annql_syntax::parse(source) {
            Ok(tree) => drop(tree.to_string()),
            Err(diagnostics) => drop(diagnostics.to_string()),
        }
        for (at, program) in annql_syntax::split_programs(source) {
            assert!(
                source[at..].starts_with(program),
                "{}: program at {at}",
                path.display()
            );
        }
        replayed += 1;
    }
    assert!(replayed >= 5, "fuzz/corpus/parse holds {replayed} inputs");
}
