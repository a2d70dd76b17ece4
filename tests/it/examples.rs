//! Every example in `examples/` runs and prints what it promises.

use std::path::PathBuf;
use std::process::Command;

/// `cargo test` builds the examples next to the test binary's directory.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap_or_else(|| panic!("no target dir"));
    dir.join("examples").join(name)
}

fn run(name: &str) -> String {
    let path = example(name);
    let out = Command::new(&path)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (build examples with cargo test)", path.display()));
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn examples_run() {
    let q = run("quickstart");
    assert!(
        q.contains("CD4+/CD45RA+/CD25- Naive T") && q.contains("mean_stored_cd3e"),
        "{q}"
    );
    let s = run("streaming");
    assert!(s.contains("streamed") && s.contains("batches"), "{s}");
    let m = run("multiple");
    assert!(
        m.contains("pbmc") && m.contains("700") && m.contains("120"),
        "{m}"
    );
}
