//! Group-by aggregates as AnnData: the groups, keys and statistics annql computes equal what the
//! real scanpy's `sc.get.aggregate` returns on the same fixtures
//! (`tests/fixtures/data/aggregate_anndata.expected.json`, written by
//! `tests/fixtures/make_aggregate_anndata_expected.py`), through the fused aggregation.

use std::path::PathBuf;

use annql::engine::AnnSession;
use annql::engine::datafusion::arrow::array::{Array, AsArray};
use annql::engine::export_aggregate::{
    AggFunc, AggregateRequest, ExportOptions, aggregate_sql, compute_aggregate, export_aggregate,
};
use serde_json::Value;

use crate::common::{fixture, python};

const FUNCS: [AggFunc; 4] = [
    AggFunc::Sum,
    AggFunc::Mean,
    AggFunc::CountNonzero,
    AggFunc::Var,
];

fn session(store: &str) -> AnnSession {
    let s = AnnSession::builder()
        .with_threads(2)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    s.attach("atlas", fixture(store))
        .unwrap_or_else(|e| panic!("{e}"));
    s
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
        .block_on(f)
}

fn cases() -> Vec<Value> {
    let path = fixture("aggregate_anndata.expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    v["cases"].as_array().cloned().unwrap_or_default()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// The request of an expected case (its cells kept as an obs predicate).
fn request(case: &Value, out: PathBuf) -> AggregateRequest {
    let obs = case["keep"].as_array().map(|k| {
        format!(
            "\"{}\" = '{}'",
            k[0].as_str().unwrap_or(""),
            k[1].as_str().unwrap_or("")
        )
    });
    AggregateRequest {
        dataset: "atlas".into(),
        by: strings(&case["by"]),
        funcs: FUNCS.to_vec(),
        layer: case["layer"].as_str().map(str::to_string),
        obs,
        var: None,
        x_from: None,
        out,
        options: ExportOptions::default(),
    }
}

/// Compares one statistic, NaN (JSON null) included.
fn assert_layer(got: &[f64], want: &Value, what: &str) {
    let want: Vec<Option<f64>> = want
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row.as_array().cloned().unwrap_or_default())
        .map(|v| v.as_f64())
        .collect();
    assert_eq!(got.len(), want.len(), "{what}: size");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        match w {
            None => assert!(g.is_nan(), "{what}[{i}]: got {g}, scanpy NaN"),
            Some(w) => assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                "{what}[{i}]: got {g}, scanpy {w}"
            ),
        }
    }
}

/// Groups (order and names), key categories and codes, and every statistic equal scanpy's, for
/// one and two keys, X and a layer (CSR and dense), a cell predicate, on zarr v2/v3 and h5ad.
#[test]
fn aggregates_equal_scanpy() {
    for case in cases() {
        let base = case["store"].as_str().unwrap_or("");
        let stem = base.trim_end_matches(".v2.zarr");
        for store in [
            base.to_string(),
            format!("{stem}.v3.zarr"),
            format!("{stem}.h5ad"),
        ] {
            let what = format!("{store} by {} layer {}", case["by"], case["layer"]);
            let s = session(&store);
            let req = request(&case, PathBuf::new());
            let (agg, genes) =
                block_on(compute_aggregate(&s, &req)).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(agg.group_names, strings(&case["obs_names"]), "{what}");
            assert_eq!(
                genes.len(),
                case["var_names"].as_array().map_or(0, Vec::len)
            );
            for key in &agg.keys {
                let want = &case["obs"][&key.name];
                let cats = key.categories.as_string_opt::<i32>().map(|c| {
                    c.iter()
                        .map(|v| v.unwrap_or_default().to_string())
                        .collect::<Vec<_>>()
                });
                assert_eq!(
                    cats,
                    Some(strings(&want["categories"])),
                    "{what} {}",
                    key.name
                );
                let codes: Vec<u64> = want["codes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_u64)
                    .collect();
                let got: Vec<u64> = key.codes.iter().map(|&c| u64::from(c)).collect();
                assert_eq!(got, codes, "{what} {} codes", key.name);
                assert_eq!(want["ordered"], Value::Bool(false));
            }
            for (f, values) in &agg.stats {
                let want = &case["layers"][f.name()];
                assert_eq!(want["dtype"], "float64");
                assert_layer(values, &want["values"], &format!("{what} {}", f.name()));
            }
        }
    }
}

/// The statistics run through the fused aggregation (EXPLAIN names it).
#[test]
fn aggregate_runs_fused() {
    let s = session("chunky.v2.zarr");
    let case = cases().into_iter().nth(5).unwrap_or_default();
    let mut req = request(&case, PathBuf::new());
    req.obs = Some("tissue = 'lung'".into());
    req.var = Some("var_id < 10".into());
    let sql = format!("EXPLAIN {}", aggregate_sql(&req));
    let batches = block_on(s.collect(&sql)).unwrap_or_else(|e| panic!("{e}"));
    let plan: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            let c = b.column(1).as_string::<i32>();
            (0..c.len())
                .map(|i| c.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let plan = plan.join("\n");
    assert!(plan.contains("FusedAggregateExec"), "{plan}");
    // A gene selection keeps its genes in var_id order, each with every group.
    let (agg, genes) = block_on(compute_aggregate(&s, &req)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(genes, (0..10).collect::<Vec<u64>>());
    // The cell predicate keeps scanpy's lung groups, in its order.
    let lung: Vec<String> = strings(&case["obs_names"])
        .into_iter()
        .filter(|n| n.starts_with("lung_"))
        .collect();
    assert!(!lung.is_empty());
    assert_eq!(agg.group_names, lung);
    assert_eq!(agg.stats[0].1.len(), lung.len() * 10);
    // The statistics of the kept genes are scanpy's columns 0..10 of those groups.
    let offset = strings(&case["obs_names"]).len() - lung.len();
    for (f, values) in &agg.stats {
        let rows = case["layers"][f.name()]["values"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let want: Vec<Value> = rows[offset..]
            .iter()
            .map(|r| Value::Array(r.as_array().map(|r| r[..10].to_vec()).unwrap_or_default()))
            .collect();
        assert_layer(values, &Value::Array(want), f.name());
    }
}

/// Requests annql cannot answer are errors that say why.
#[test]
fn bad_aggregate_requests() {
    let s = session("tiny.v2.zarr");
    let base = || AggregateRequest {
        dataset: "atlas".into(),
        by: vec!["cell_type".into()],
        funcs: vec![AggFunc::Sum],
        layer: None,
        obs: None,
        var: None,
        x_from: None,
        out: PathBuf::new(),
        options: ExportOptions::default(),
    };
    let err = |r: AggregateRequest| {
        block_on(compute_aggregate(&s, &r))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let e = err(AggregateRequest {
        by: vec![],
        ..base()
    });
    assert!(e.contains("no obs column to group by"), "{e}");
    let e = err(AggregateRequest {
        funcs: vec![AggFunc::Sum, AggFunc::Sum],
        ..base()
    });
    assert!(e.contains("asked for twice"), "{e}");
    let e = err(AggregateRequest {
        x_from: Some(AggFunc::Mean),
        ..base()
    });
    assert!(e.contains("X is to be mean"), "{e}");
    let e = err(AggregateRequest {
        layer: Some("nope".into()),
        ..base()
    });
    assert!(e.contains("no matrix 'layers/nope'"), "{e}");
    let e = err(AggregateRequest {
        by: vec!["pct_mito".into()],
        ..base()
    });
    assert!(e.contains("'pct_mito' holds Float64"), "{e}");
    let e = err(AggregateRequest {
        by: vec!["no_such".into()],
        ..base()
    });
    assert!(e.contains("no_such"), "{e}");
    let e = err(AggregateRequest {
        obs: Some("cell_type = 'none'".into()),
        ..base()
    });
    assert!(e.contains("the obs predicate keeps no cells"), "{e}");
    let e = err(AggregateRequest {
        by: vec!["batch code".into()],
        obs: Some("\"batch code\" IS NULL".into()),
        ..base()
    });
    assert!(
        e.contains("no selected cell has a value for every key"),
        "{e}"
    );
    let e = err(AggregateRequest {
        dataset: "other".into(),
        ..base()
    });
    assert!(e.contains("'other'"), "{e}");
}

/// Written in each format and read back by the real anndata: obs names, keys, var names and
/// layers equal scanpy's.
#[test]
fn exported_aggregate_reads_back_in_anndata() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let case = cases().into_iter().nth(1).unwrap_or_default();
    let mut outs = Vec::new();
    for ext in ["h5ad", "zarr"] {
        let out = dir.path().join(format!("agg.{ext}"));
        let s = session("tiny.v2.zarr");
        let summary = block_on(export_aggregate(&s, request(&case, out.clone())))
            .unwrap_or_else(|e| panic!("{ext}: {e}"));
        assert_eq!(summary.n_obs, 28);
        outs.push(out);
    }
    // X from a statistic, genes selected, zarr v2: var is the selected genes' var.
    let out = dir.path().join("agg_hvg.zarr");
    let mut req = request(&case, out.clone());
    req.var = Some("highly_variable".into());
    req.x_from = Some(AggFunc::Mean);
    req.options.format = Some(annql::engine::export_aggregate::Format::ZarrV2);
    let s = session("tiny.v2.zarr");
    block_on(export_aggregate(&s, req)).unwrap_or_else(|e| panic!("hvg: {e}"));
    let script = r#"
import json, sys, anndata as ad, numpy as np
out = []
for p in sys.argv[1:]:
    a = ad.read_h5ad(p) if p.endswith(".h5ad") else ad.read_zarr(p)
    out.append({"obs_names": list(map(str, a.obs_names)), "var_names": list(map(str, a.var_names)),
                "x": a.X is None, "var_columns": list(map(str, a.var.columns)),
                "hvg": [bool(v) for v in a.var["highly_variable"]],
                "xv": None if a.X is None else np.asarray(a.X).ravel().tolist(), "obs": {k: [str(c) for c in a.obs[k].cat.categories] for k in a.obs},
                "layers": {k: [[None if np.isnan(v) else float(v) for v in r] for r in np.asarray(m)]
                           for k, m in a.layers.items()}})
print(json.dumps(out))
"#;
    let o = std::process::Command::new(python())
        .arg("-c")
        .arg(script)
        .args(&outs)
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let read: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}"));
    let read = read.as_array().cloned().unwrap_or_default();
    let (hvg, read) = read.split_last().unwrap_or_else(|| panic!("nothing read"));
    assert!(
        hvg["hvg"]
            .as_array()
            .is_some_and(|v| !v.is_empty() && v.iter().all(|b| b == true))
    );
    let mean = &hvg["layers"]["mean"];
    let x: Vec<f64> = hvg["xv"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect();
    assert_layer(&x, mean, "X = mean");
    for r in read {
        assert_eq!(r["var_columns"], case["var_columns"]);
        assert_eq!(r["obs_names"], case["obs_names"]);
        assert_eq!(r["var_names"], case["var_names"]);
        assert_eq!(r["x"], Value::Bool(true), "X is absent");
        for k in strings(&case["by"]) {
            assert_eq!(r["obs"][&k], case["obs"][&k]["categories"]);
        }
        for f in FUNCS {
            let got: Vec<f64> = r["layers"][f.name()]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|row| row.as_array().cloned().unwrap_or_default())
                .map(|v| v.as_f64().unwrap_or(f64::NAN))
                .collect();
            assert_layer(&got, &case["layers"][f.name()]["values"], f.name());
        }
    }
}

/// The front ends of the aggregate: `annql export --aggregate … --by …` and SQL's
/// `COPY atlas AGGREGATE … BY … TO …` write scanpy's layers (read back by the real anndata).
#[test]
fn cli_and_sql_aggregates_equal_scanpy() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let case = cases().into_iter().next().unwrap_or_default();
    assert_eq!(strings(&case["by"]), ["cell_type"]);
    assert!(case["keep"].is_null() && case["layer"].is_null());
    let cli_out = dir.path().join("cli.h5ad");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_annql"))
        .arg("export")
        .arg(fixture(case["store"].as_str().unwrap_or("")))
        .args([
            "--aggregate",
            "sum,mean,count_nonzero",
            "--by",
            "cell_type",
            "-o",
        ])
        .arg(&cli_out)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("4 groups × 40 genes"), "{stdout}");
    let sql_out = dir.path().join("sql.zarr");
    let s = session(case["store"].as_str().unwrap_or(""));
    block_on(s.collect(&format!(
        "COPY atlas AGGREGATE sum, mean, count_nonzero BY cell_type TO '{}'",
        sql_out.display()
    )))
    .unwrap_or_else(|e| panic!("{e}"));
    let bad = block_on(s.collect(&format!(
        "COPY atlas AGGREGATE median BY cell_type TO '{}'",
        dir.path().join("bad.h5ad").display()
    )));
    let err = bad.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("unknown aggregate function 'median'"), "{err}");
    let script = r#"
import json, sys, anndata as ad, numpy as np
out = []
for p in sys.argv[1:]:
    a = ad.read_h5ad(p) if p.endswith(".h5ad") else ad.read_zarr(p)
    out.append({"obs_names": list(map(str, a.obs_names)), "x": a.X is None,
                "layers": {k: np.asarray(m).tolist() for k, m in a.layers.items()}})
print(json.dumps(out))
"#;
    let o = std::process::Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(&cli_out)
        .arg(&sql_out)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let read: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}"));
    for (what, got) in ["cli", "sql"]
        .iter()
        .zip(read.as_array().into_iter().flatten())
    {
        assert_eq!(
            strings(&got["obs_names"]),
            strings(&case["obs_names"]),
            "{what}"
        );
        assert_eq!(got["x"], true, "{what}: X is absent");
        for func in ["sum", "mean", "count_nonzero"] {
            let values: Vec<f64> = got["layers"][func]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r.as_array().cloned().unwrap_or_default())
                .filter_map(|v| v.as_f64())
                .collect();
            assert_layer(
                &values,
                &case["layers"][func]["values"],
                &format!("{what} {func}"),
            );
        }
    }
}
