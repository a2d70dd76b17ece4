//! The pipeline parser on arbitrary text: it returns a tree or diagnostics, never panics, and
//! the diagnostics render (spans inside the source, on character boundaries).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    match annql_syntax::parse(source) {
        Ok(tree) => {
            let _ = tree.to_string();
        }
        Err(diagnostics) => {
            let _ = diagnostics.to_string();
        }
    }
    for (at, program) in annql_syntax::split_programs(source) {
        assert!(source[at..].starts_with(program));
    }
});
