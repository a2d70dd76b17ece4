//! Collections: many stores queried as one atlas (`ATTACH 'dir/part*' AS atlas`).
//!
//! A 5,000-cell atlas made by ../shared/datagen/make_atlas.py is split by benches/split_atlas.py
//! into six stores in three formats, with their genes in different orders, genes absent, extra and
//! missing obs columns and different category sets. The benchmark queries Q1–Q7 over the
//! collection must equal annql's answers over the unsplit store and the real anndata's over
//! `anndata.concat(parts, join="outer", fill_value=0)` (tests/fixtures/collection_answers.py).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use annql_engine::AnnSession;
use serde_json::Value;

use crate::common::{REPO, fixture, python, rows};

/// The generated atlas, its split and the reference answers, made once per test run.
pub(crate) struct Atlas {
    pub(crate) source: PathBuf,
    parts: PathBuf,
    pub(crate) answers: Value,
}

fn run_python(args: &[&std::ffi::OsStr]) {
    let out = Command::new(python()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}{}",
        args,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) fn atlas() -> &'static Atlas {
    static ATLAS: OnceLock<Atlas> = OnceLock::new();
    ATLAS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("collection-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir); // A leftover of an earlier run, or nothing.
        std::fs::create_dir_all(&dir).unwrap();
        let source = dir.join("atlas.zarr");
        let parts = dir.join("parts");
        let answers = dir.join("answers.json");
        let make = Path::new(REPO).join("../shared/datagen/make_atlas.py");
        let split = Path::new(REPO).join("benches/split_atlas.py");
        let reference = Path::new(REPO).join("tests/fixtures/collection_answers.py");
        // 2,000 genes keep Q3's answer (every donor × type × gene) small.
        run_python(&[
            make.as_os_str(),
            "--cells".as_ref(),
            "5000".as_ref(),
            "--genes".as_ref(),
            "2000".as_ref(),
            "--out".as_ref(),
            source.as_os_str(),
        ]);
        run_python(&[
            split.as_os_str(),
            source.as_os_str(),
            "--out".as_ref(),
            parts.as_os_str(),
            "--parts".as_ref(),
            "6".as_ref(),
        ]);
        let mut stores: Vec<PathBuf> = std::fs::read_dir(&parts)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("part"))
            .collect();
        stores.sort();
        assert_eq!(stores.len(), 6, "{stores:?}");
        let mut args: Vec<&std::ffi::OsStr> = vec![reference.as_os_str()];
        args.extend(stores.iter().map(|p| p.as_os_str()));
        args.extend(["--out".as_ref(), answers.as_os_str()]);
        run_python(&args);
        let answers = serde_json::from_str(&std::fs::read_to_string(&answers).unwrap()).unwrap();
        Atlas {
            source,
            parts,
            answers,
        }
    })
}

/// A session with `name` attached from `location`.
async fn session(name: &str, location: &str) -> AnnSession {
    let s = AnnSession::builder().with_threads(2).build().unwrap();
    s.sql(&format!("ATTACH '{location}' AS {name}"))
        .await
        .unwrap_or_else(|e| panic!("{location}: {e}"));
    s
}

/// Benchmark query `q` (benches/sql) with the parameters the reference computed.
pub(crate) fn query(q: &str, params: &Value) -> String {
    let sql =
        std::fs::read_to_string(Path::new(REPO).join(format!("benches/sql/{q}.sql"))).unwrap();
    let quote = |v: &Value| format!("'{}'", v.as_str().unwrap().replace('\'', "''"));
    let markers: Vec<String> = params["markers"]
        .as_array()
        .unwrap()
        .iter()
        .map(quote)
        .collect();
    sql.replace("${q2_gene}", &quote(&params["q2_gene"]))
        .replace("${q4_tissue}", &quote(&params["q4_tissue"]))
        .replace("${markers}", &markers.join(", "))
        .replace("${q6_cell_type}", &quote(&params["q6_cell_type"]))
        .replace("${q7_donor}", &quote(&params["q7_donor"]))
        .replace("${q7_gene}", &quote(&params["q7_gene"]))
}

/// Rows sorted by their text columns (each answer's key), numbers compared apart.
pub(crate) fn keyed(mut rows: Vec<Value>) -> Vec<Value> {
    let key = |r: &Value| -> String {
        r.as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
            .join("\u{1}")
    };
    rows.sort_by_key(key);
    rows
}

/// Equal rows, numbers within 1e-5 relative (QUERIES.md's tolerance).
pub(crate) fn assert_rows(got: &[Value], want: &[Value], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: row count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g.as_array().unwrap(), w.as_array().unwrap());
        assert_eq!(g.len(), w.len(), "{what}: row {i}");
        for (a, b) in g.iter().zip(w) {
            match (a.as_f64(), b.as_f64()) {
                (Some(a), Some(b)) => assert!(
                    (a - b).abs() <= 1e-5 * b.abs().max(1e-12),
                    "{what}: row {i}: {g:?} vs {w:?}"
                ),
                _ => assert_eq!(a, b, "{what}: row {i}: {g:?} vs {w:?}"),
            }
        }
    }
}

pub(crate) async fn answer(s: &AnnSession, sql: &str) -> Vec<Value> {
    keyed(rows(
        &s.collect(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}")),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q1_to_q7_over_a_collection_equal_the_store_and_anndata_concat() {
    let a = atlas();
    let glob = format!("{}/part*", a.parts.display());
    let collection = session("atlas", &glob).await;
    let single = session("atlas", &a.source.to_string_lossy()).await;
    for q in ["q1", "q2", "q3", "q4", "q5", "q6", "q7"] {
        let sql = query(q, &a.answers["params"]);
        let got = answer(&collection, &sql).await;
        assert!(!got.is_empty(), "{q}: no rows");
        assert_rows(
            &got,
            &answer(&single, &sql).await,
            &format!("{q} vs the store"),
        );
        let want: Vec<Value> = keyed(a.answers["queries"][q]["rows"].as_array().unwrap().clone());
        assert_rows(&got, &want, &format!("{q} vs anndata.concat"));
        // The fused aggregation runs where it does on one store.
        let explain = format!("EXPLAIN {sql}");
        let fused = |plan: Vec<Value>| format!("{plan:?}").contains("FusedAggregateExec");
        let here = fused(rows(&collection.collect(&explain).await.unwrap()));
        let there = fused(rows(&single.collect(&explain).await.unwrap()));
        assert_eq!((here, there), (q != "q1" && q != "q7", here), "{q}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collection_has_the_tables_of_a_store_and_its_own() {
    let a = atlas();
    let glob = format!("{}/part*", a.parts.display());
    let s = session("c", &glob).await;
    let one = |sql: &str| {
        let s = &s;
        let sql = sql.to_string();
        async move {
            rows(
                &s.collect(&sql)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}")),
            )
        }
    };
    let n_obs = a.answers["n_obs"].as_f64().unwrap();
    let n_vars = a.answers["n_vars"].as_f64().unwrap();
    assert_eq!(one("SELECT count(*) FROM c.obs").await[0][0], n_obs);
    assert_eq!(one("SELECT count(*) FROM c.var").await[0][0], n_vars);
    // obs_id runs over every cell once, in dataset order.
    let ids = one("SELECT min(obs_id), max(obs_id), count(DISTINCT obs_id) FROM c.obs").await;
    assert_eq!(ids[0], serde_json::json!([0.0, n_obs - 1.0, n_obs]));
    // The datasets table agrees with anndata's view of each part.
    let datasets = one("SELECT n_obs, n_vars FROM c.datasets ORDER BY dataset").await;
    let want: Vec<Value> = a.answers["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| serde_json::json!([d["n_obs"].as_f64(), d["n_vars"].as_f64()]))
        .collect();
    assert_eq!(datasets, want);
    // gene_presence: one row per gene a dataset measured.
    let presence = one("SELECT count(*) FROM c.gene_presence").await;
    let measured: f64 = want.iter().map(|d| d[1].as_f64().unwrap()).sum();
    assert_eq!(presence[0][0], measured);
    // Columns a part lacks are NULL there, and columns some parts add exist.
    let columns: Vec<String> = a.answers["obs_columns"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    for c in &columns {
        let nulls = one(&format!("SELECT count(*) - count(\"{c}\") FROM c.obs")).await;
        assert!(nulls[0][0].as_f64().is_some(), "{c}");
    }
    let x = one("SELECT count(*), sum(value) FROM c.x").await;
    let single = session("s", &a.source.to_string_lossy()).await;
    let y = rows(
        &single
            .collect("SELECT count(*), sum(value) FROM s.x")
            .await
            .unwrap(),
    );
    assert_rows(&x, &y, "stored entries of X");
    // The embeddings every part has are unions too.
    let pca = one("SELECT count(*) FROM c.obsm_x_pca").await;
    assert_eq!(pca[0][0], n_obs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predicates_prune_datasets_and_explain_names_them() {
    let a = atlas();
    let glob = format!("{}/part*", a.parts.display());
    let s = session("c", &glob).await;
    let plan = |sql: String| {
        let s = &s;
        async move {
            format!(
                "{:?}",
                rows(&s.collect(&format!("EXPLAIN {sql}")).await.unwrap())
            )
        }
    };
    let p = plan("SELECT count(*) FROM c.obs WHERE dataset = 'part002'".into()).await;
    assert!(
        p.contains("datasets=1 of 6") && p.contains("pruned=[part000"),
        "{p}"
    );
    // qc_flag exists only in some parts: the others are NULL there and cannot match.
    let p = plan("SELECT count(*) FROM c.obs WHERE qc_flag".into()).await;
    assert!(p.contains("pruned=[part000"), "{p}");
    let kept = rows(
        &s.collect("SELECT count(*) FROM c.obs WHERE qc_flag OR NOT qc_flag")
            .await
            .unwrap(),
    );
    let n: f64 = rows(
        &s.collect("SELECT sum(n_obs) FROM c.datasets WHERE dataset IN ('part001', 'part004')")
            .await
            .unwrap(),
    )[0][0]
        .as_f64()
        .unwrap();
    assert_eq!(kept[0][0].as_f64(), Some(n));
    // A category no part but one has: the others are pruned by their categories.
    let one_type = rows(
        &s.collect("SELECT dataset, count(*) FROM c.obs GROUP BY dataset ORDER BY 2 LIMIT 1")
            .await
            .unwrap(),
    );
    let part = one_type[0][0].as_str().unwrap().to_string();
    let p = plan(format!(
        "SELECT count(*) FROM c.obs WHERE dataset = '{part}' AND cell_type = 'no such type'"
    ))
    .await;
    assert!(p.contains("datasets=0 of 6"), "{p}");
    // The fused aggregation leaves out the datasets whose cells are all filtered out.
    let sql = "SELECT o.cell_type, sum(c.value) FROM c.layers_counts c JOIN c.obs o USING (obs_id) \
               WHERE o.dataset = 'part003' GROUP BY o.cell_type";
    let got = keyed(rows(&s.collect(sql).await.unwrap()));
    let single = session("c", &format!("{}/part003.zarr", a.parts.display())).await;
    let want = keyed(rows(
        &single
            .collect(&sql.replace(" WHERE o.dataset = 'part003'", ""))
            .await
            .unwrap(),
    ));
    assert_rows(&got, &want, "one dataset's pseudobulk");
}

/// Two small stores written by anndata whose obs columns and genes disagree.
fn conflicting(dir: &Path) {
    let script = r#"
import sys, numpy as np, pandas as pd, scipy.sparse as sp, anndata as ad
d = sys.argv[1]
def make(n, genes, obs, path, ids=None):
    var = pd.DataFrame(index=genes)
    var["gene_ids"] = ids if ids is not None else ["ID_" + g for g in genes]
    X = sp.random(n, len(genes), density=0.5, format="csr", dtype=np.float32, random_state=n)
    a = ad.AnnData(X=X, obs=pd.DataFrame(obs, index=[f"c{i}" for i in range(n)]), var=var)
    a.write_h5ad(path) if path.endswith(".h5ad") else a.write_zarr(path)
make(3, ["A", "B"], {"score": [1.0, 2.0, 3.0], "n": np.array([1, 2, 3], dtype=np.int32)}, f"{d}/types/a.h5ad")
make(2, ["B", "C"], {"score": ["x", "y"], "n": np.array([4, 5], dtype=np.int64)}, f"{d}/types/b.zarr")
make(2, ["A", "A"], {"n": [1, 2]}, f"{d}/dups/a.h5ad", ids=["ID_A1", "ID_A2"])
make(2, ["A", "B"], {"n": [3, 4]}, f"{d}/dups/b.h5ad", ids=["ID_A1", "ID_B"])
"#;
    for sub in ["types", "dups"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    run_python(&["-c".as_ref(), script.as_ref(), dir.as_os_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harmonisation_errors_name_the_column_and_datasets_and_can_be_resolved() {
    let dir = tempfile::tempdir().unwrap();
    conflicting(dir.path());
    let types = format!("{}/types/*", dir.path().display());
    let s = AnnSession::builder().with_threads(2).build().unwrap();
    let err = s
        .sql(&format!("ATTACH '{types}' AS c"))
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("column score")
            && err.contains("'a' has Float64")
            && err.contains("'b' has Utf8"),
        "{err}"
    );
    // Skipped, or cast to text: the rest is widened (int32 + int64 = int64).
    s.sql(&format!("ATTACH '{types}' AS skipped (skip 'score')"))
        .await
        .unwrap();
    let n = rows(
        &s.collect("SELECT arrow_typeof(n), sum(n) FROM skipped.obs GROUP BY 1")
            .await
            .unwrap(),
    );
    assert_eq!(n, vec![serde_json::json!(["Int64", 15.0])]);
    s.sql(&format!("ATTACH '{types}' AS cast (cast 'score:varchar')"))
        .await
        .unwrap();
    let scores = keyed(rows(
        &s.collect("SELECT score FROM cast.obs").await.unwrap(),
    ));
    let want: Vec<Value> = [
        serde_json::json!([1.0]),
        serde_json::json!([2.0]),
        serde_json::json!([3.0]),
        serde_json::json!(["x"]),
        serde_json::json!(["y"]),
    ]
    .into();
    assert_eq!(scores, want);
    // Genes: the union on the var index, absent genes zero in the dense view.
    let genes = rows(
        &s.collect("SELECT var_name FROM cast.var ORDER BY var_id")
            .await
            .unwrap(),
    );
    assert_eq!(
        genes,
        vec![
            serde_json::json!(["A"]),
            serde_json::json!(["B"]),
            serde_json::json!(["C"])
        ]
    );
    let dense = rows(
        &s.collect("SELECT count(*) FROM cast.x_dense")
            .await
            .unwrap(),
    );
    assert_eq!(dense[0][0].as_f64(), Some(15.0));
    let zeros = rows(&s.collect("SELECT count(*) FROM cast.x_dense d JOIN cast.var v USING (var_id) \
                                 JOIN cast.obs o USING (obs_id) WHERE v.var_name = 'C' AND o.dataset = 'a' AND d.value = 0").await.unwrap());
    assert_eq!(zeros[0][0].as_f64(), Some(3.0));
    // A key repeated within a dataset is an error naming it; another key aligns them.
    let dups = format!("{}/dups/*", dir.path().display());
    let err = s
        .sql(&format!("ATTACH '{dups}' AS d"))
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("dataset 'a' has 'A' at rows 0 and 1"), "{err}");
    s.sql(&format!("ATTACH '{dups}' AS d (var_key 'gene_ids')"))
        .await
        .unwrap();
    let n = rows(&s.collect("SELECT count(*) FROM d.var").await.unwrap());
    assert_eq!(n[0][0].as_f64(), Some(3.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_dataset_is_named_in_the_error() {
    let a = atlas();
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&a.parts).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_owned();
        if p.is_dir() {
            crate::common::copy_dir(&p, &dir.path().join(&name));
        } else {
            std::fs::copy(&p, dir.path().join(&name)).unwrap();
        }
    }
    // A chunk of part003's X/data cut short: reading it fails, naming the dataset.
    let data = dir.path().join("part003.zarr/X/data");
    let chunk = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .unwrap();
    let bytes = std::fs::read(&chunk).unwrap();
    std::fs::write(&chunk, &bytes[..bytes.len() / 2]).unwrap();
    let s = session("c", &format!("{}/part*", dir.path().display())).await;
    let err = s
        .collect("SELECT sum(value) FROM c.x")
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("dataset 'part003'"), "{err}");
    let err = s
        .collect(
            "SELECT o.cell_type, sum(x.value) FROM c.x x JOIN c.obs o USING (obs_id) GROUP BY 1",
        )
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("part003"), "{err}");
    // Metadata that cannot be read fails the ATTACH, naming the dataset.
    std::fs::write(dir.path().join("part001.zarr/zarr.json"), b"{not json").unwrap();
    let s = AnnSession::new().unwrap();
    let err = s
        .sql(&format!("ATTACH '{}/part*' AS c", dir.path().display()))
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("dataset 'part001'"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_and_collection_files_attach_the_same_collection() {
    let a = atlas();
    let mut stores: Vec<String> = std::fs::read_dir(&a.parts)
        .unwrap()
        .map(|e| e.unwrap().path().to_string_lossy().into_owned())
        .filter(|p| {
            Path::new(p)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("part")
        })
        .collect();
    stores.sort();
    let s = AnnSession::builder().with_threads(2).build().unwrap();
    let list: Vec<String> = stores.iter().map(|p| format!("'{p}'")).collect();
    s.sql(&format!("ATTACH ({}) AS l", list.join(", ")))
        .await
        .unwrap();
    let file = a.parts.join("all.annql-collection");
    let names: Vec<String> = stores
        .iter()
        .map(|p| {
            Path::new(p)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    std::fs::write(&file, serde_json::json!({ "datasets": names }).to_string()).unwrap();
    s.sql(&format!("ATTACH '{}' AS f", file.display()))
        .await
        .unwrap();
    let sql =
        |c: &str| format!("SELECT dataset, count(*), sum(total_counts) FROM {c}.obs GROUP BY 1");
    let l = keyed(rows(&s.collect(&sql("l")).await.unwrap()));
    let f = keyed(rows(&s.collect(&sql("f")).await.unwrap()));
    assert_rows(&l, &f, "list vs collection file");
    assert_eq!(l.len(), 6);
    // A glob matching nothing is an error, not an empty collection.
    let err = s
        .sql("ATTACH '/nonexistent/dir/*.h5ad' AS z")
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no store matches"), "{err}");
}

/// The tiny fixtures in three formats as one collection: counts and sums as anndata.concat
/// gives them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_in_three_formats_concatenate_as_anndata_does() {
    let stores = ["tiny.h5ad", "tiny.v2.zarr", "tiny.v3.zarr"].map(fixture);
    let script = r#"
import sys, json, numpy as np, anndata as ad
ads = [ad.read_h5ad(p) if p.endswith(".h5ad") else ad.read_zarr(p) for p in sys.argv[1:]]
c = ad.concat(ads, join="outer", fill_value=0, index_unique=None)
X = c.X.toarray() if hasattr(c.X, "toarray") else np.asarray(c.X)
print(json.dumps({"n_obs": c.n_obs, "n_vars": c.n_vars, "row": X.sum(axis=1).astype(float).tolist(),
                  "gene": dict(zip(map(str, c.var_names), X.sum(axis=0).astype(float).tolist()))}))
"#;
    let mut cmd = Command::new(python());
    cmd.args(["-c", script]).args(&stores);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: Value = serde_json::from_slice(&out.stdout).unwrap();
    let list: Vec<String> = stores
        .iter()
        .map(|p| format!("'{}'", p.display()))
        .collect();
    let s = AnnSession::builder().with_threads(2).build().unwrap();
    s.sql(&format!("ATTACH ({}) AS t", list.join(", ")))
        .await
        .unwrap();
    let n = rows(
        &s.collect(
            "SELECT (SELECT count(*) FROM t.obs) AS n_obs, (SELECT count(*) FROM t.var) AS n_vars",
        )
        .await
        .unwrap(),
    );
    assert_eq!(
        n[0],
        serde_json::json!([want["n_obs"].as_f64(), want["n_vars"].as_f64()])
    );
    let per_cell = rows(&s.collect("SELECT o.obs_id, coalesce(sum(x.value), 0) FROM t.obs o LEFT JOIN t.x x USING (obs_id) GROUP BY 1 ORDER BY 1").await.unwrap());
    let cells: Vec<Value> = want["row"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, v)| serde_json::json!([i as f64, v.as_f64()]))
        .collect();
    assert_rows(&per_cell, &cells, "per-cell sums");
    let per_gene = rows(&s.collect("SELECT v.var_name, sum(x.value) FROM t.x_dense x JOIN t.var v USING (var_id) GROUP BY 1").await.unwrap());
    for r in per_gene {
        let (g, v) = (r[0].as_str().unwrap(), r[1].as_f64().unwrap());
        let w = want["gene"][g]
            .as_f64()
            .unwrap_or_else(|| panic!("gene {g}"));
        assert!(
            (v - w).abs() <= 1e-5 * w.abs().max(1e-12),
            "gene {g}: {v} vs {w}"
        );
    }
}

/// `COPY collection TO …` writes one AnnData that anndata reads back equal to
/// `anndata.concat(parts, join="outer", fill_value=0, label="dataset")` (restricted by the
/// predicates): annql's `concat_on_disk`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_is_written_as_anndata_concat_writes_it() {
    let a = atlas();
    let dir = tempfile::tempdir().unwrap();
    let glob = format!("{}/part*", a.parts.display());
    let s = session("c", &glob).await;
    let whole = dir.path().join("all.h5ad");
    let lung = dir.path().join("lung.zarr");
    s.collect(&format!("COPY c TO '{}'", whole.display()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s.collect(&format!(
        "COPY c WHERE OBS (tissue = 'lung') AND VAR (var_name LIKE 'CD%') TO '{}'",
        lung.display()
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let mut parts: Vec<PathBuf> = std::fs::read_dir(&a.parts)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("part"))
        .collect();
    parts.sort();
    let check = Path::new(REPO).join("tests/fixtures/check_collection_export.py");
    for (out, extra) in [
        (&whole, vec![]),
        (&lung, vec!["--tissue", "lung", "--gene-prefix", "CD"]),
    ] {
        let mut args: Vec<&std::ffi::OsStr> = vec![check.as_os_str(), out.as_os_str()];
        args.extend(parts.iter().map(|p| p.as_os_str()));
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        run_python(&args);
    }
    // Aggregates of a collection are SQL's, not COPY's: refused with the reason.
    let err = s
        .collect(&format!(
            "COPY c AGGREGATE sum BY cell_type TO '{}'",
            dir.path().join("pb.h5ad").display()
        ))
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("is a collection"), "{err}");
}

/// `annql serve 'atlas=dir/part*'`: a collection over the PostgreSQL wire, with the answers of
/// the in-process session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_serves_a_collection() {
    let a = atlas();
    let glob = format!("{}/part*", a.parts.display());
    let config = annql_server::ServerConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        datasets: vec![annql_server::Dataset {
            name: "atlas".into(),
            location: PathBuf::from(&glob),
            options: Default::default(),
        }],
        threads: Some(2),
        ..annql_server::ServerConfig::default()
    };
    let server = annql_server::Server::bind(config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.run());
    let client = crate::common::pg_connect(addr).await.unwrap();
    let sql = query("q2", &a.answers["params"]);
    let got: Vec<Value> = client
        .query(sql.as_str(), &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| {
            let cell_type: String = r.get(0);
            let mean: f64 = r.get(1);
            serde_json::json!([cell_type, mean])
        })
        .collect();
    let want = keyed(
        a.answers["queries"]["q2"]["rows"]
            .as_array()
            .unwrap()
            .clone(),
    );
    assert_rows(&keyed(got), &want, "q2 over the wire");
    let n: i64 = client
        .query_one("SELECT count(*) FROM atlas.datasets", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 6);
}
