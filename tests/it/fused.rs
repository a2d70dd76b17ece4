//! The fused group-by: it is chosen for matrix ⋈ obs [⋈ var] aggregates, gives the answers of
//! DataFusion's own operators, and its zero-aware statistics equal scanpy.get.aggregate's.

use annql::engine::AnnSession;
use annql::engine::datafusion::arrow::array::RecordBatch;
use serde_json::Value;

use crate::common::fixture;

fn session(store: &str, fused: bool) -> AnnSession {
    let s = AnnSession::builder()
        .with_threads(2)
        .with_fused_aggregate(fused)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    s.attach("atlas", fixture(store))
        .unwrap_or_else(|e| panic!("{e}"));
    s
}

/// One result cell: a number (compared within tolerance), or text (NULL included).
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Cell {
    Num(f64),
    Text(String),
}

/// The rows of `batches` (as `common::rows` reads them), sorted.
fn rows(batches: &[RecordBatch]) -> Vec<Vec<Cell>> {
    let mut out: Vec<Vec<Cell>> = crate::common::rows(batches)
        .into_iter()
        .map(|row| {
            row.as_array()
                .into_iter()
                .flatten()
                .map(|v| match v.as_f64() {
                    Some(n) => Cell::Num(n),
                    None => Cell::Text(v.as_str().map_or_else(|| v.to_string(), str::to_string)),
                })
                .collect()
        })
        .collect();
    out.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    out
}

async fn run(s: &AnnSession, sql: &str) -> (Vec<Vec<Cell>>, String) {
    let batches = s
        .collect(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let plan = s
        .collect(&format!("EXPLAIN {sql}"))
        .await
        .unwrap_or_else(|e| panic!("EXPLAIN {sql}: {e}"));
    let plan = rows(&plan)
        .into_iter()
        .flatten()
        .map(|c| match c {
            Cell::Text(t) => t,
            Cell::Num(n) => n.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    (rows(&batches), plan)
}

fn assert_same(got: &[Vec<Cell>], want: &[Vec<Cell>], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: row count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: row {i} width");
        for (a, b) in g.iter().zip(w) {
            match (a, b) {
                (Cell::Num(a), Cell::Num(b)) => {
                    let tol = 1e-9_f64.max(1e-6 * b.abs());
                    assert!(
                        (a - b).abs() <= tol,
                        "{what}: row {i}: fused {g:?} vs unfused {w:?}"
                    );
                }
                _ => assert_eq!(a, b, "{what}: row {i}: fused {g:?} vs unfused {w:?}"),
            }
        }
    }
}

/// Aggregates the rule must take, each run fused and unfused on zarr v2 and v3 fixtures.
const FUSED: &[&str] = &[
    // Pseudobulk by two obs columns and gene, with the var join inside the aggregate.
    "SELECT o.donor_id, o.cell_type, v.var_name, sum(c.value) AS s
     FROM atlas.layers_counts c JOIN atlas.obs o USING (obs_id) JOIN atlas.var v USING (var_id)
     GROUP BY o.donor_id, o.cell_type, v.var_name",
    // By var_id of the matrix, HAVING above the aggregate.
    "SELECT o.cell_type, c.var_id, sum(c.value) AS s, count(*) AS n, min(c.value), max(c.value)
     FROM atlas.layers_counts c JOIN atlas.obs o ON c.obs_id = o.obs_id
     GROUP BY o.cell_type, c.var_id HAVING sum(c.value) > 3",
    // A filtered obs side and a gene predicate; every statistic; FILTER clauses.
    "SELECT o.cell_type, avg(x.value) AS m, var_samp(x.value) AS vs, var_pop(x.value) AS vp,
            stddev(x.value) AS sd, count(*) FILTER (WHERE x.value > 2) AS n2,
            sum(x.value) FILTER (WHERE x.value <= 2) AS s2
     FROM atlas.x x JOIN atlas.obs o USING (obs_id) JOIN atlas.var v USING (var_id)
     WHERE o.tissue = 'lung' AND v.var_name IN ('CD3E', 'MS4A1', 'LYZ', 'GENE003')
     GROUP BY o.cell_type",
    // Per-cell QC (group by the matrix's obs_id), filtered by an obs column.
    "SELECT c.obs_id, sum(c.value) AS total, count(*) FILTER (WHERE c.value > 0) AS n_genes
     FROM atlas.layers_counts c JOIN atlas.obs o USING (obs_id)
     WHERE o.cell_type = 'B cell' GROUP BY c.obs_id",
    // Matrix id predicates pushed into the matrix scan.
    "SELECT o.tissue, c.var_id, avg(c.value) FROM atlas.layers_counts c JOIN atlas.obs o USING (obs_id)
     WHERE c.var_id < 5 AND c.obs_id >= 10 GROUP BY o.tissue, c.var_id",
    // Zero-filled view: mean, variance and fraction expressing over every cell of the group.
    "SELECT o.cell_type, v.var_name, avg(d.value) AS mean, var_samp(d.value) AS var,
            count(*) FILTER (WHERE d.value > 0) AS n_pos, count(*) AS n, min(d.value), max(d.value)
     FROM atlas.x_dense d JOIN atlas.obs o USING (obs_id) JOIN atlas.var v USING (var_id)
     WHERE v.var_name IN ('CD4', 'CD8A', 'LYZ') GROUP BY o.cell_type, v.var_name",
    // Dense view of a layer, grouped by obs only (one mean over several genes).
    "SELECT o.donor_id, avg(d.value) AS m, count(*) AS n
     FROM atlas.layers_counts_dense d JOIN atlas.obs o USING (obs_id)
     WHERE d.var_id IN (1, 4, 9) GROUP BY o.donor_id",
];

/// Aggregates the rule must leave to DataFusion (and which still give right answers).
const NOT_FUSED: &[&str] = &[
    // DISTINCT aggregate.
    "SELECT o.cell_type, count(DISTINCT c.var_id) FROM atlas.layers_counts c
     JOIN atlas.obs o USING (obs_id) GROUP BY o.cell_type",
    // An expression of value.
    "SELECT o.cell_type, sum(c.value * 2) FROM atlas.layers_counts c
     JOIN atlas.obs o USING (obs_id) GROUP BY o.cell_type",
    // A value predicate on the matrix.
    "SELECT o.cell_type, sum(c.value) FROM atlas.layers_counts c
     JOIN atlas.obs o USING (obs_id) WHERE c.value > 1 GROUP BY o.cell_type",
    // A left join.
    "SELECT o.cell_type, count(c.value) FROM atlas.obs o
     LEFT JOIN atlas.layers_counts c USING (obs_id) GROUP BY o.cell_type",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fused_and_unfused_agree() {
    for store in ["tiny.v2.zarr", "tiny.v3.zarr", "chunky.v2.zarr"] {
        let (fused, plain) = (session(store, true), session(store, false));
        let queries: Vec<&str> = if store.starts_with("chunky") {
            // chunky has obs cell_type/tissue and X only.
            vec![
                "SELECT o.cell_type, x.var_id, sum(x.value), count(*), avg(x.value)
                 FROM atlas.x x JOIN atlas.obs o USING (obs_id)
                 WHERE o.tissue = 'lung' GROUP BY o.cell_type, x.var_id",
                "SELECT o.tissue, avg(d.value), count(*) FROM atlas.x_dense d
                 JOIN atlas.obs o USING (obs_id) WHERE d.var_id IN (3, 30) GROUP BY o.tissue",
                // Grids larger than the caches (10,000 cells × 50 genes): entries are bucketed
                // by grid region before they are added; a plain sum, a sum with counts, and the
                // general sink with a FILTER clause.
                "SELECT x.obs_id, x.var_id, sum(x.value) FROM atlas.x x
                 JOIN atlas.obs o USING (obs_id) GROUP BY x.obs_id, x.var_id",
                "SELECT x.obs_id, x.var_id, avg(x.value), count(*) FROM atlas.x x
                 JOIN atlas.obs o USING (obs_id) WHERE o.tissue <> 'lung'
                 GROUP BY x.obs_id, x.var_id",
                "SELECT x.obs_id, x.var_id, max(x.value), count(*) FILTER (WHERE x.value > 1)
                 FROM atlas.x x JOIN atlas.obs o USING (obs_id) GROUP BY x.obs_id, x.var_id",
                // A tiled zero-aware grid (6 MB): every cell × gene is a row, read out across
                // tile boundaries.
                "SELECT d.obs_id, d.var_id, avg(d.value), count(*) FROM atlas.x_dense d
                 JOIN atlas.obs o USING (obs_id) GROUP BY d.obs_id, d.var_id",
            ]
        } else {
            FUSED.to_vec()
        };
        for sql in queries {
            let (got, plan) = run(&fused, sql).await;
            let (want, plain_plan) = run(&plain, sql).await;
            assert!(
                plan.contains("FusedAggregateExec"),
                "{store}: not fused:\n{sql}\n{plan}"
            );
            assert!(!plain_plan.contains("FusedAggregateExec"), "{plain_plan}");
            assert!(!want.is_empty(), "{store}: empty answer for {sql}");
            assert_same(&got, &want, &format!("{store}: {sql}"));
        }
    }
    let (fused, plain) = (
        session("tiny.v2.zarr", true),
        session("tiny.v2.zarr", false),
    );
    for sql in NOT_FUSED {
        let (got, plan) = run(&fused, sql).await;
        let (want, _) = run(&plain, sql).await;
        assert!(
            !plan.contains("FusedAggregateExec"),
            "fused:\n{sql}\n{plan}"
        );
        assert_same(&got, &want, sql);
    }
}

/// The zero-filled view's mean, sample variance, cells expressing and sum equal
/// scanpy.get.aggregate's (tests/fixtures/make_aggregate_expected.py), fused and unfused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dense_statistics_equal_scanpy() {
    let text = std::fs::read_to_string(fixture("tiny.aggregate.json"))
        .unwrap_or_else(|e| panic!("tiny.aggregate.json: {e}"));
    let expected: Vec<Value> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    for fused in [true, false] {
        let s = session("tiny.v2.zarr", fused);
        for case in &expected {
            let by = case["by"].as_str().unwrap_or_default();
            let table = match case["layer"].as_str() {
                Some(layer) => format!("layers_{layer}_dense"),
                None => "x_dense".into(),
            };
            let sql = format!(
                "SELECT o.{by} AS g, v.var_name AS gene, avg(d.value), var_samp(d.value),
                        count(*) FILTER (WHERE d.value <> 0), sum(d.value), count(*)
                 FROM atlas.{table} d JOIN atlas.obs o USING (obs_id) JOIN atlas.var v USING (var_id)
                 GROUP BY o.{by}, v.var_name"
            );
            let (got, plan) = run(&s, &sql).await;
            assert_eq!(plan.contains("FusedAggregateExec"), fused, "{plan}");
            let groups: Vec<&str> = case["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let genes: Vec<&str> = case["genes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(got.len(), groups.len() * genes.len(), "{sql}");
            for row in &got {
                let (Cell::Text(g), Cell::Text(gene)) = (&row[0], &row[1]) else {
                    panic!("unexpected row {row:?}");
                };
                let gi = groups
                    .iter()
                    .position(|x| x == g)
                    .unwrap_or_else(|| panic!("{g}"));
                let vi = genes
                    .iter()
                    .position(|x| x == gene)
                    .unwrap_or_else(|| panic!("{gene}"));
                let n_cells = case["n_cells"][gi].as_f64().unwrap_or(f64::NAN);
                for (col, key) in [(2, "mean"), (3, "var"), (4, "count_nonzero"), (5, "sum")] {
                    let want = case[key][gi][vi].as_f64().unwrap_or(f64::NAN);
                    let Cell::Num(v) = row[col] else {
                        panic!("{key} of {g}/{gene}: {:?}", row[col]);
                    };
                    assert!(
                        (v - want).abs() <= 1e-5 * want.abs().max(1.0),
                        "{table} {g}/{gene} {key}: annql {v}, scanpy {want} (fused={fused})"
                    );
                }
                assert_eq!(row[6], Cell::Num(n_cells), "{g}/{gene} cells");
            }
        }
    }
}
