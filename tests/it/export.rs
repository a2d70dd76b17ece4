//! `annql_write::export` checked by the real anndata: subsets of every fixture layout and of every
//! corpus file anndata reads, written in every output format, equal `adata[obs_ids, var_ids]`
//! element by element (`tests/fixtures/check_export.py`, one Python process over a manifest); and
//! a failed or cancelled export leaves nothing at the output path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use annql::engine::AnnSession;
use annql::engine::select::{SelectAxis, select_rows};
use annql::store::AnnDataStore;
use annql_write::select::Rows;
use annql_write::sink::Chunking;
use annql_write::{Error, ExportOptions, Format, Selection, export};
use serde_json::{Value, json};

use crate::common::{TINY_LAYOUTS, copy_dir, corpus_dir, corpus_stores, fixture, python};

/// Refusals the round trip accepts: the element is then left out (`exclude`) and the checker
/// removes it from the expected AnnData too. Any other refusal or error fails the test.
const ALLOWED_REFUSALS: &[(&str, &str)] = &[
    (
        "rec-array",
        "structured arrays (scanpy's rank_genes_groups) need structured dtypes in the sinks",
    ),
    (
        "awkward array",
        "cutting awkward arrays along an axis is awkward's own logic",
    ),
    (
        "values of type <U",
        "fixed-width unicode arrays (anndata 0.7's zarr scalars) are not read by annql",
    ),
];

/// Mismatches anndata reports that are known gaps of annql's reader, not of the writer:
/// (source, element, why). Any other mismatch fails the test.
const KNOWN_MISMATCHES: &[(&str, &str, &str)] = &[(
    "archives/v0.5.0/adata.h5ad",
    "uns['",
    "anndata reads a pre-0.7 1-element fixed-width bytes dataset as a str scalar; annql's HDF5 \
     reader presents fixed-width strings as variable-length ones, so the writer cannot tell it \
     from a 1-element string array",
)];

/// The output formats, with the extension each is written under.
fn formats() -> Vec<(&'static str, Format)> {
    vec![
        ("h5ad", Format::H5ad),
        ("v2.zarr", Format::ZarrV2),
        ("zarr", Format::ZarrV3 { sharded: true }),
    ]
}

/// One source AnnData and a selection of it.
struct Job {
    source: PathBuf,
    root: String,
    label: String,
    obs: Option<Vec<u64>>,
    var: Option<Vec<u64>>,
    /// Write it in every format (otherwise in one, rotating).
    every_format: bool,
    /// `ExportOptions::block_bytes`: small for the fixtures (many blocks, cut inside chunks).
    block_bytes: usize,
}

/// A named selection: obs ids and var ids (`None`: every row).
type Cut = (&'static str, Option<Vec<u64>>, Option<Vec<u64>>);

/// The five selections of an AnnData: obs only, var only, both, empty, everything.
fn selections(obs: &[u64], var: &[u64]) -> Vec<Cut> {
    vec![
        ("obs", Some(obs.to_vec()), None),
        ("var", None, Some(var.to_vec())),
        ("both", Some(obs.to_vec()), Some(var.to_vec())),
        ("empty", Some(Vec::new()), Some(Vec::new())),
        ("all", None, None),
    ]
}

fn rows(ids: &Option<Vec<u64>>) -> Rows {
    match ids {
        Some(ids) => Rows::Some(ids.clone()),
        None => Rows::All,
    }
}

/// Exports `job` to `out`, leaving out the elements refused for an allowed reason; returns the
/// elements left out, or the error that is not allowed.
fn export_allowing(
    store: &AnnDataStore,
    job: &Job,
    out: &Path,
    format: &Format,
) -> Result<Vec<String>, String> {
    let selection = Selection {
        obs: rows(&job.obs),
        var: rows(&job.var),
    };
    let mut exclude: Vec<String> = Vec::new();
    loop {
        let options = ExportOptions {
            format: Some(format.clone()),
            block_bytes: job.block_bytes,
            // Small chunks and shards: outputs of several chunks and shards even for the fixtures.
            chunking: Chunking {
                chunk_len: 4096,
                target_chunk_elements: 4096,
                chunks_per_shard: 4,
            },
            exclude: exclude.clone(),
            ..ExportOptions::default()
        };
        match export(store, &job.root, &selection, out, &options) {
            Ok(summary) => {
                let want = (
                    selection.obs.count(store_rows(store, &job.root, "obs")),
                    selection.var.count(store_rows(store, &job.root, "var")),
                );
                if (summary.n_obs, summary.n_vars) != want {
                    return Err(format!("summary says {summary:?}, expected {want:?}"));
                }
                return Ok(exclude);
            }
            Err(Error::Refused { element, reason })
                if ALLOWED_REFUSALS.iter().any(|(r, _)| reason.contains(r)) =>
            {
                let prefix = if job.root.is_empty() {
                    String::new()
                } else {
                    format!("{}/", job.root)
                };
                let rel = element
                    .strip_prefix(&prefix)
                    .unwrap_or(&element)
                    .to_string();
                if exclude.contains(&rel) {
                    return Err(format!("refused {element} again after leaving it out"));
                }
                exclude.push(rel);
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn store_rows(store: &AnnDataStore, root: &str, frame: &str) -> u64 {
    let path = if root.is_empty() {
        frame.to_string()
    } else {
        format!("{root}/{frame}")
    };
    store
        .element(&path)
        .ok()
        .and_then(|e| e.shape.first().copied())
        .unwrap_or(0)
}

/// Ids where a SQL predicate over obs/var holds, through the engine (as the front ends do).
async fn select(source: &Path, axis: SelectAxis, predicate: &str) -> Vec<u64> {
    let session = AnnSession::builder()
        .with_threads(2)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    session
        .attach("d", source)
        .unwrap_or_else(|e| panic!("{}: {e}", source.display()));
    select_rows(&session, "d", axis, predicate)
        .await
        .unwrap_or_else(|e| panic!("{predicate}: {e}"))
}

/// The fixtures: every layout of `tiny` and `chunky`, cut by real predicates.
async fn fixture_jobs() -> Vec<Job> {
    let more = [
        "tiny.fletcher32.h5ad",
        "chunky.v2.zarr",
        "chunky.v3.zarr",
        "chunky.h5ad",
        "chunky.csc.zarr",
    ];
    let layouts = TINY_LAYOUTS.iter().chain(&more).copied();
    let tiny = fixture("tiny.v2.zarr");
    let tiny_obs = select(
        &tiny,
        SelectAxis::Obs,
        "cell_type = 'B cell' OR tissue = 'lung'",
    )
    .await;
    let tiny_var = select(&tiny, SelectAxis::Var, "highly_variable").await;
    let chunky = fixture("chunky.v2.zarr");
    let chunky_obs = select(
        &chunky,
        SelectAxis::Obs,
        "cell_type = 'rare' OR tissue = 'lung'",
    )
    .await;
    let chunky_var = select(&chunky, SelectAxis::Var, "var_name LIKE 'G1%'").await;
    assert!(!tiny_obs.is_empty() && !tiny_var.is_empty() && !chunky_obs.is_empty());
    let mut jobs = Vec::new();
    for layout in layouts {
        let (obs, var) = if layout.starts_with("tiny") {
            (&tiny_obs, &tiny_var)
        } else {
            (&chunky_obs, &chunky_var)
        };
        for (label, obs, var) in selections(obs, var) {
            jobs.push(Job {
                source: fixture(layout),
                root: String::new(),
                label: format!("{layout} {label}"),
                obs,
                var,
                every_format: layout == "tiny.v2.zarr" || layout == "chunky.v2.zarr",
                block_bytes: 1 << 14,
            });
        }
    }
    jobs
}

/// A small AnnData written by anndata here (`make_colors.py`) with unused categories and
/// `uns["<column>_colors"]`: trimmed with the categories kept, deleted when their length does not
/// match, and a column name shared by obs and var.
fn colors_jobs(dir: &Path) -> Vec<Job> {
    let script = Path::new(crate::common::REPO).join("tests/fixtures/make_colors.py");
    let made = Command::new(python())
        .arg(&script)
        .arg(dir)
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    assert!(
        made.status.success(),
        "make_colors.py: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let obs: Vec<u64> = (0..40).filter(|i| i % 4 != 1).collect();
    let var: Vec<u64> = vec![0, 2, 4];
    let mut jobs = Vec::new();
    for source in ["colors.h5ad", "colors.zarr"] {
        for (label, obs, var) in selections(&obs, &var) {
            jobs.push(Job {
                source: dir.join(source),
                root: String::new(),
                label: format!("{source} {label}"),
                obs,
                var,
                every_format: true,
                block_bytes: 1 << 10,
            });
        }
    }
    jobs
}

/// Every AnnData of every corpus file anndata reads (each MuData modality on its own), cut by
/// position: rows and genes, and one of the other selections in turn (the fixtures run all five
/// in every format; this keeps the suite's time down). The files anndata cannot read are listed
/// with anndata's error.
fn corpus_jobs(skipped: &mut Vec<String>) -> Vec<Job> {
    let root = corpus_dir();
    let text = std::fs::read_to_string(
        Path::new(crate::common::REPO).join("tests/fixtures/corpus.expected.json"),
    )
    .unwrap_or_else(|e| panic!("corpus.expected.json: {e}"));
    let expected: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let mut jobs = Vec::new();
    let mut turn = 0;
    for path in corpus_stores(&root) {
        let rel = path
            .strip_prefix(&root)
            .unwrap_or(&path)
            .display()
            .to_string();
        let entry = &expected["files"][&rel];
        if let Some(error) = entry.get("error").and_then(Value::as_str) {
            skipped.push(format!("{rel}: anndata cannot read it ({error})"));
            continue;
        }
        let Some(anndatas) = entry.get("anndatas").and_then(Value::as_object) else {
            panic!("{rel}: not in corpus.expected.json (re-run make_corpus_expected.py)");
        };
        for (ad_root, info) in anndatas {
            let n_obs = info["n_obs"].as_u64().unwrap_or(0);
            let n_vars = info["n_vars"].as_u64().unwrap_or(0);
            let obs: Vec<u64> = (0..n_obs).filter(|i| i % 3 == 0).collect();
            let var: Vec<u64> = (0..n_vars).filter(|i| i % 2 == 1).collect();
            let all = selections(&obs, &var);
            turn += 1;
            let other = [0, 1, 3, 4][turn % 4];
            for (label, obs, var) in [all[2].clone(), all[other].clone()] {
                jobs.push(Job {
                    source: path.clone(),
                    root: ad_root.clone(),
                    label: format!("{rel} [{ad_root}] {label}"),
                    obs,
                    var,
                    every_format: false,
                    block_bytes: 4 << 20,
                });
            }
        }
    }
    jobs
}

/// Every fixture layout and every corpus file anndata reads: obs only, var only, both, empty and
/// everything, in h5ad, zarr v2 and zarr v3 sharded, each output equal to `adata[obs, var]` as the
/// real anndata computes it. Refusals are accepted only for the reasons in `ALLOWED_REFUSALS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_equal_anndata_subsets() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut skipped = Vec::new();
    let mut jobs = fixture_jobs().await;
    jobs.extend(colors_jobs(dir.path()));
    jobs.extend(corpus_jobs(&mut skipped));
    let formats = formats();
    let mut manifest = Vec::new();
    let mut failures = Vec::new();
    let mut left_out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut stores: BTreeMap<PathBuf, AnnDataStore> = BTreeMap::new();
    for (i, job) in jobs.iter().enumerate() {
        if !stores.contains_key(&job.source) {
            stores.clear();
            let store = AnnDataStore::open(&job.source)
                .unwrap_or_else(|e| panic!("{}: {e}", job.source.display()));
            stores.insert(job.source.clone(), store);
        }
        let store = &stores[&job.source];
        let chosen: Vec<&(&str, Format)> = if job.every_format {
            formats.iter().collect()
        } else {
            vec![&formats[i % formats.len()]]
        };
        for (ext, format) in chosen {
            let out = dir.path().join(format!("{i}.{ext}"));
            match export_allowing(store, job, &out, format) {
                Ok(exclude) => {
                    if !exclude.is_empty() {
                        left_out.insert(job.source.display().to_string(), exclude.clone());
                    }
                    manifest.push(json!({
                        "source": job.source,
                        "root": job.root,
                        "obs": job.obs,
                        "var": job.var,
                        "output": out,
                        "exclude": exclude,
                        "label": format!("{} → {ext}", job.label),
                    }));
                }
                Err(e) => failures.push(format!("{} → {ext}: {e}", job.label)),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} exports failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(manifest.len() > 150, "only {} outputs", manifest.len());
    let manifest_path = dir.path().join("manifest.json");
    std::fs::write(&manifest_path, Value::Array(manifest.clone()).to_string())
        .unwrap_or_else(|e| panic!("{e}"));
    let script = Path::new(crate::common::REPO).join("tests/fixtures/check_export.py");
    let run = Command::new(python())
        .arg(&script)
        .arg(&manifest_path)
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    let checked = format!("CHECKED {} OUTPUTS,", manifest.len());
    assert!(
        stdout.lines().any(|l| l.starts_with(&checked)),
        "the checker did not check every output:\n{stdout}\n{stderr}"
    );
    let unexpected: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("MISMATCH"))
        .filter(|l| {
            !KNOWN_MISMATCHES
                .iter()
                .any(|(source, element, _)| l.contains(source) && l.contains(element))
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "anndata disagrees with annql's exports ({} mismatches):\n{}\n(left out: {left_out:?}; \
         not exported: {skipped:?})",
        unexpected.len(),
        unexpected.join("\n")
    );
    // Only the corpus files anndata itself cannot read are not exported.
    assert!(
        skipped.iter().all(|s| s.contains("anndata cannot read it")),
        "{skipped:?}"
    );
}

/// No output and no temporary sibling of it are left in `dir`.
fn assert_nothing_left(dir: &Path, out: &Path) {
    assert!(
        std::fs::symlink_metadata(out).is_err(),
        "{} exists",
        out.display()
    );
    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let left: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(name))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A chunk of X/data corrupted half-way through the matrix: the export fails with an error naming
/// the element, after obs and var were written, and leaves no output and no temporary behind.
#[test]
fn damaged_source_fails_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let source = dir.path().join("chunky.v2.zarr");
    copy_dir(&fixture("chunky.v2.zarr"), &source);
    let chunk = source.join("X/data/25");
    let len = std::fs::metadata(&chunk)
        .unwrap_or_else(|e| panic!("{}: {e}", chunk.display()))
        .len();
    std::fs::write(&chunk, vec![0x5a; len as usize]).unwrap_or_else(|e| panic!("{e}"));
    let store = AnnDataStore::open(&source).unwrap_or_else(|e| panic!("{e}"));
    for (ext, format) in formats() {
        let out = dir.path().join(format!("out.{ext}"));
        let options = ExportOptions {
            format: Some(format.clone()),
            block_bytes: 1 << 12,
            ..ExportOptions::default()
        };
        let err = export(&store, "", &Selection::all(), &out, &options)
            .expect_err("a corrupt chunk must fail the export");
        let message = err.to_string();
        assert!(message.contains("X/data"), "{ext}: {message}");
        assert!(matches!(err, Error::Source(_)), "{ext}: {err:?}");
        assert_nothing_left(dir.path(), &out);
    }
}

/// Cancelling from another thread once the temporary output exists stops the write with
/// `Cancelled` and leaves no output and no temporary.
#[test]
fn cancelled_export_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = AnnDataStore::open(fixture("chunky.v3.zarr")).unwrap_or_else(|e| panic!("{e}"));
    for (ext, format) in formats() {
        let out = dir.path().join(format!("big.{ext}"));
        let cancel = Arc::new(AtomicBool::new(false));
        let options = ExportOptions {
            format: Some(format.clone()),
            // Small blocks: thousands of them, so the write is still going when cancelled.
            block_bytes: 512,
            cancel: Some(cancel.clone()),
            ..ExportOptions::default()
        };
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (dir, name) = (dir.path().to_path_buf(), format!(".big.{ext}"));
            let (cancel, done) = (cancel, done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    let writing = std::fs::read_dir(&dir)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with(&name));
                    if writing {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        cancel.store(true, Ordering::Relaxed);
                        return true;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                false
            })
        };
        let result = export(&store, "", &Selection::all(), &out, &options);
        done.store(true, Ordering::Relaxed);
        let saw_write = watcher.join().unwrap_or(false);
        assert!(saw_write, "{ext}: the temporary output never appeared");
        assert!(
            matches!(result, Err(Error::Cancelled(ref p)) if p == &out),
            "{ext}: {result:?}"
        );
        assert_nothing_left(dir.path(), &out);
    }
}
