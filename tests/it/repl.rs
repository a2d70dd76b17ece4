//! The REPL through a pseudo-terminal: completion, a meta-command, multi-line input, Ctrl-C
//! during a query and during the printing of its result.

use std::process::Command;

use crate::common::{fixture, python};

#[test]
fn repl_in_a_terminal() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/it/repl_pty.py");
    let dataset = format!("tiny={}", fixture("tiny.v2.zarr").display());
    let out = Command::new(python())
        .args([script, env!("CARGO_BIN_EXE_annql"), &dataset])
        .output()
        .unwrap_or_else(|e| panic!("{}: the pty test: {e}", python().display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "tab completes",
        "meta-command",
        "multi-line statement result",
        "Ctrl-C cancels",
        "still answers",
        "a large result prints whole",
        "Ctrl-C stops printing a large result",
        "answers after output was stopped",
        "quit",
    ] {
        assert!(stdout.contains(&format!("ok: {step}")), "{stdout}");
    }
}
