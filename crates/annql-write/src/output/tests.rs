//! The output path under faults: an existing output, an unwritable directory, a full disk (a
//! file size limit in a child process), and the leftover of a killed write.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use annql_store::DType;
use annql_store::arrow::array::{ArrayRef, Float64Array};

use super::Staged;
use crate::error::Error;
use crate::sink::{ArraySpec, Attrs, Chunking, Format, create};
use crate::testing::Must;

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.must().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Writes a complete (tiny) zarr store through a sink into the staged temporary.
fn write_store(staged: &Staged, marker: &str) {
    let mut sink = create(&Format::ZarrV2, staged.tmp(), &Chunking::default()).must();
    let mut attrs = Attrs::new();
    attrs.insert("marker".into(), marker.into());
    sink.group("", &attrs).must();
    sink.finish().must();
}

fn marker(out: &Path) -> String {
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join(".zattrs")).must()).must();
    doc["marker"].as_str().must().to_string()
}

#[test]
fn existing_output_refused_without_overwrite_replaced_with() {
    let dir = tempfile::tempdir().must();
    let out = dir.path().join("out.zarr");
    let first = Staged::begin(&out, false).must();
    write_store(&first, "first");
    assert_eq!(first.commit().must(), out);
    assert_eq!(marker(&out), "first");

    let err = Staged::begin(&out, false).err().must();
    assert!(matches!(&err, Error::Exists(p) if p == &out), "{err}");
    assert!(err.to_string().contains("overwrite"), "{err}");

    let second = Staged::begin(&out, true).must();
    write_store(&second, "second");
    // Until the commit, the old output is untouched.
    assert_eq!(marker(&out), "first");
    second.commit().must();
    assert_eq!(marker(&out), "second");
    assert_eq!(
        names(dir.path()),
        ["out.zarr"],
        "no temporary or old copy left"
    );

    // An output that appeared during the write is not replaced without overwrite.
    let third = Staged::begin(&dir.path().join("late.zarr"), false).must();
    write_store(&third, "third");
    std::fs::create_dir(dir.path().join("late.zarr")).must();
    assert!(matches!(third.commit(), Err(Error::Exists(_))));
    assert_eq!(
        names(dir.path()),
        ["late.zarr", "out.zarr"],
        "the temporary is removed"
    );
}

#[test]
fn overwrite_never_replaces_a_plain_directory() {
    let dir = tempfile::tempdir().must();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).must();
    std::fs::write(home.join("thesis.tex"), "precious").must();
    let err = Staged::begin(&home, true).err().must();
    assert!(err.to_string().contains("not a zarr store"), "{err}");
    assert!(home.join("thesis.tex").exists());
    // A file is replaced.
    let file = dir.path().join("old.h5ad");
    std::fs::write(&file, "old").must();
    let staged = Staged::begin(&file, true).must();
    std::fs::write(staged.tmp(), "new").must();
    staged.commit().must();
    assert_eq!(std::fs::read_to_string(&file).must(), "new");
}

#[test]
fn unwritable_directory_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().must();
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).must();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).must();
    // Root ignores permissions: then write under /proc, where nobody creates directories.
    let privileged = std::fs::write(ro.join("probe"), "").is_ok();
    let parent = if privileged {
        PathBuf::from("/proc")
    } else {
        ro.clone()
    };
    let staged = Staged::begin(&parent.join("out.zarr"), false).must();
    let err = create(
        &Format::ZarrV3 { sharded: true },
        staged.tmp(),
        &Chunking::default(),
    )
    .err()
    .must();
    match &err {
        Error::Io { path, source } => {
            assert_eq!(path, staged.tmp());
            assert!(source.raw_os_error().is_some(), "the OS error: {source:?}");
        }
        other => panic!("expected an I/O error, got {other}"),
    }
    assert!(
        err.to_string()
            .contains(&staged.tmp().display().to_string()),
        "{err}"
    );
    drop(staged);
    assert!(!parent.join("out.zarr").exists());
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).must();
}

/// Runs this test binary's `child_process` test with `mode`, optionally under a file size limit
/// (with SIGXFSZ ignored, so an oversized write fails with EFBIG instead of killing the child).
fn run_child(mode: &str, dir: &Path, fsize: Option<u64>) -> std::process::Output {
    let exe = std::env::current_exe().must();
    let args = [
        "output::tests::child_process",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ];
    let mut cmd = match fsize {
        Some(limit) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!(
                    "trap '' XFSZ; exec prlimit --fsize={limit} \"$0\" \"$@\""
                ))
                .arg(&exe)
                .args(args);
            c
        }
        None => {
            let mut c = Command::new(&exe);
            c.args(args);
            c
        }
    };
    cmd.env("ANNQL_OUTPUT_CHILD", mode)
        .env("ANNQL_OUTPUT_DIR", dir)
        .output()
        .must()
}

#[test]
fn full_disk_is_an_io_error_and_leaves_nothing() {
    let dir = tempfile::tempdir().must();
    let run = run_child("fsize", dir.path(), Some(64 * 1024));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success() && stdout.contains("CHILD-IO 27 ") && stdout.contains("CHILD-CLEAN"),
        "child under a 64 KiB file size limit:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
}

#[test]
fn leftover_of_a_killed_write_is_removed_by_the_next() {
    let dir = tempfile::tempdir().must();
    let run = run_child("abort", dir.path(), None);
    assert!(!run.status.success(), "the child aborts mid-write");
    let left = names(dir.path());
    assert_eq!(
        left.len(),
        1,
        "the killed write left its temporary: {left:?}"
    );
    assert!(left[0].starts_with(".out.zarr.annql-tmp-"), "{left:?}");

    // A temporary of a live process (pid 1 always is) is another write in progress.
    let live = dir.path().join(".out.zarr.annql-tmp-1-0");
    std::fs::create_dir(&live).must();
    // One named with this process's id that no write here holds: a dead process's, id reused.
    let reused = dir
        .path()
        .join(format!(".out.zarr.annql-tmp-{}-999999", std::process::id()));
    std::fs::create_dir(&reused).must();
    // Another output's temporary is not touched.
    let other = dir.path().join(".other.zarr.annql-tmp-999999999-0");
    std::fs::create_dir(&other).must();

    let out = dir.path().join("out.zarr");
    let concurrent = Staged::begin(&out, false).must();
    std::fs::create_dir(concurrent.tmp()).must();
    let staged = Staged::begin(&out, false).must();
    assert_ne!(staged.tmp(), concurrent.tmp());
    assert!(
        concurrent.tmp().exists(),
        "a write of this process in progress is kept"
    );
    assert!(live.exists() && other.exists());
    assert!(!reused.exists());
    assert!(
        !dir.path().join(&left[0]).exists(),
        "the killed write's temporary is removed"
    );
    write_store(&staged, "after");
    staged.commit().must();
    assert_eq!(marker(&out), "after");
    drop(concurrent);
}

/// Not a test on its own: the child process of the tests above (does nothing unless they set
/// `ANNQL_OUTPUT_CHILD`). It reports to the parent on stdout.
#[test]
#[allow(clippy::print_stdout)]
fn child_process() {
    let Some(mode) = std::env::var_os("ANNQL_OUTPUT_CHILD") else {
        return;
    };
    let dir = PathBuf::from(std::env::var_os("ANNQL_OUTPUT_DIR").must());
    let out = dir.join("out.zarr");
    let staged = Staged::begin(&out, false).must();
    let chunking = Chunking {
        chunk_len: 1 << 16,
        ..Chunking::default()
    };
    let mut sink = create(&Format::ZarrV3 { sharded: false }, staged.tmp(), &chunking).must();
    sink.group("", &Attrs::new()).must();
    if mode == "abort" {
        std::process::abort();
    }
    // 512 KiB of values zstd cannot shrink below the 64 KiB limit (a xorshift sequence).
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let values: ArrayRef = Arc::new(Float64Array::from_iter_values((0..1 << 16).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as f64
    })));
    let spec = ArraySpec {
        dtype: DType::Float64,
        inner: vec![],
        scalar: false,
        len_hint: None,
    };
    let id = sink.open_array("x", &spec, &Attrs::new()).must();
    let err = sink
        .append(id, &values)
        .and_then(|()| sink.close_array(id))
        .err()
        .must();
    match &err {
        Error::Io { path, source } => println!(
            "CHILD-IO {} {}",
            source.raw_os_error().unwrap_or(-1),
            path.display()
        ),
        other => println!("CHILD-OTHER {other}"),
    }
    assert!(
        err.to_string().contains("x/c/0"),
        "the error names the chunk: {err}"
    );
    drop(sink);
    drop(staged);
    if !dir.join("out.zarr").exists() && names(&dir).is_empty() {
        println!("CHILD-CLEAN");
    }
}
