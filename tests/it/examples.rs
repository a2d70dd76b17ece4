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
    let p = run("pipeline");
    // The demo's top mean of raw.X for CD3E (zeros included), as anndata computes it: 2.081427.
    assert!(
        p.contains("CD4+/CD25 T Reg") && p.contains("2.081") && p.contains("lowered: SELECT"),
        "{p}"
    );
    let sm = run("subset_matrix");
    assert!(
        sm.contains("CD14+ monocytes: 129 cells × 765 genes") && sm.contains("match anndata's"),
        "{sm}"
    );
    let m = run("multiple");
    assert!(
        m.contains("pbmc") && m.contains("700") && m.contains("120"),
        "{m}"
    );
}

/// The `.aql` example file runs on the demo and gives the language reference's answers.
#[test]
fn aql_example_file_runs() {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/queries/dotplot.aql"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_annql"))
        .args(["run", "--format", "csv", file])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 10 cell types × 4 genes, then the 5 largest types.
    assert_eq!(
        text.lines().filter(|l| l.contains(",CD3E,")).count(),
        10,
        "{text}"
    );
    assert!(text.contains("bulk_labels,n\nDendritic,240\n"), "{text}");
}
