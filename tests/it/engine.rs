//! The engine: answers equal pandas/anndata's, and pushdown reads only what queries need.

use std::sync::Arc;

use annql::engine::AnnSession;
use annql::engine::datafusion::physical_plan::{ExecutionPlan, collect, displayable};
use serde_json::Value;

use crate::common::{assert_close, fixture, rows};

fn session(name: &str, store: &str) -> AnnSession {
    let s = AnnSession::builder()
        .with_threads(2)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    s.attach(name, fixture(store))
        .unwrap_or_else(|e| panic!("{e}"));
    s
}

async fn query(s: &AnnSession, sql: &str) -> Vec<Value> {
    rows(
        &s.collect(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}")),
    )
}

/// The Q1–Q7 questions on the fixture, in SQL, equal what pandas computed from anndata's read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_equal_pandas() {
    for layout in ["tiny.v2.zarr", "tiny.v3.zarr", "tiny.v3.zarr.zip"] {
        assert_q1_q7_equal_pandas(&session("t", layout), layout).await;
    }
}

/// Q1–Q7 on the `tiny` fixture attached as `t` in `s` equal pandas' answers.
pub async fn assert_q1_q7_equal_pandas(s: &AnnSession, layout: &str) {
    let want: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny.answers.json")).unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("tiny.answers.json: {e}"));
    {
        let cases = [
            (
                "q1_cells_per_cell_type",
                "SELECT cell_type, count(*) FROM t.obs GROUP BY 1 ORDER BY 1",
            ),
            (
                "q2_mean_cd3e",
                "SELECT o.cell_type, coalesce(sum(x.value), 0) / count(*) FROM t.obs o \
                 LEFT JOIN (SELECT obs_id, value FROM t.x JOIN t.var USING (var_id) WHERE var_name = 'CD3E') x USING (obs_id) \
                 GROUP BY 1 ORDER BY 1",
            ),
            (
                "q3_pseudobulk",
                "SELECT o.donor_id, o.cell_type, v.var_name, sum(c.value) AS s FROM t.layers_counts c \
                 JOIN t.obs o USING (obs_id) JOIN t.var v USING (var_id) GROUP BY 1, 2, 3 HAVING sum(c.value) <> 0 ORDER BY 1, 2, 3",
            ),
            (
                "q4_lung_totals",
                "SELECT o.obs_name, coalesce(sum(c.value), 0), count(c.value) FROM t.obs o \
                 LEFT JOIN t.layers_counts c USING (obs_id) WHERE o.tissue = 'lung' GROUP BY 1 ORDER BY 1",
            ),
            (
                "q5_markers",
                "SELECT o.cell_type, g.var_name, coalesce(sum(x.value), 0) / max(n.cells), count(x.value) * 1.0 / max(n.cells) \
                 FROM t.obs o CROSS JOIN (SELECT var_id, var_name FROM t.var WHERE var_name IN ('CD3E', 'CD4', 'CD8A', 'MS4A1')) g \
                 JOIN (SELECT cell_type, count(*) AS cells FROM t.obs GROUP BY 1) n ON n.cell_type = o.cell_type \
                 LEFT JOIN t.x x ON x.obs_id = o.obs_id AND x.var_id = g.var_id \
                 GROUP BY 1, 2 ORDER BY 1, 2",
            ),
            (
                "q6_top_genes_t_cell",
                "SELECT v.var_name, sum(c.value) AS total FROM t.layers_counts c JOIN t.obs o USING (obs_id) \
                 JOIN t.var v USING (var_id) WHERE o.cell_type = 'T cell' GROUP BY 1 ORDER BY total DESC, 1 LIMIT 5",
            ),
            (
                "q7_ms4a1_donor_d3",
                "SELECT o.obs_name, coalesce(x.value, 0) FROM t.obs o LEFT JOIN \
                 (SELECT obs_id, value FROM t.x JOIN t.var USING (var_id) WHERE var_name = 'MS4A1') x USING (obs_id) \
                 WHERE o.donor_id = 'D3' ORDER BY 1",
            ),
        ];
        for (name, sql) in cases {
            // Row order: SQL sorts categories by value, pandas by category order; compare sorted.
            let mut got = query(s, sql).await;
            let mut expected = want[name].as_array().cloned().unwrap_or_default();
            if name != "q6_top_genes_t_cell" {
                got.sort_by_key(|r| r.to_string());
                expected.sort_by_key(|r| r.to_string());
            }
            assert_close(
                &Value::Array(got),
                &Value::Array(expected),
                &format!("{layout} {name}"),
            );
        }
    }
}

/// What one query read from the store under `prefix`: (distinct keys, requests), and its plan.
async fn reads(
    s: &AnnSession,
    store: &str,
    sql: &str,
    prefix: &str,
) -> (usize, u64, Arc<dyn ExecutionPlan>) {
    let st = s
        .store(store)
        .unwrap_or_else(|| panic!("{store} not attached"));
    let before = (
        st.totals().keys_under(prefix),
        st.totals().requests_under(prefix),
    );
    let df = s.sql(sql).await.unwrap_or_else(|e| panic!("{e}"));
    let plan = df
        .create_physical_plan()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    collect(plan.clone(), s.context().task_ctx())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let after = (
        st.totals().keys_under(prefix),
        st.totals().requests_under(prefix),
    );
    (after.0 - before.0, after.1 - before.1, plan)
}

/// 1% of cells (tissue = lung, the first 100 of 10 000) reads at most 2% of X's data chunks,
/// through a join (dynamic filter), a semi-join and a direct obs_id predicate. With sharding (v3) a
/// key is a shard of 4 chunks: the inner chunks read are the requests less one index per shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selective_queries_read_few_chunks() {
    for layout in ["chunky.v2.zarr", "chunky.v3.zarr"] {
        let total_chunks = {
            let st =
                annql::store::AnnDataStore::open(fixture(layout)).unwrap_or_else(|e| panic!("{e}"));
            st.array_meta("X/data")
                .map(|m| m.shape[0].div_ceil(1000))
                .unwrap_or(0) as usize
        };
        let queries = [
            "SELECT sum(x.value) FROM c.x JOIN c.obs USING (obs_id) WHERE obs.tissue = 'lung'",
            "SELECT sum(value) FROM c.x WHERE obs_id < 100",
            "SELECT count(*) FROM c.x WHERE obs_id IN (SELECT obs_id FROM c.obs WHERE tissue = 'lung')",
        ];
        for sql in queries {
            let s = session("c", layout);
            let (keys, requests, plan) = reads(&s, "c", sql, "X/data/").await;
            let plan_text = displayable(plan.as_ref()).indent(true).to_string();
            assert!(keys >= 1, "{layout}: nothing read?\n{plan_text}");
            let chunks = if layout.contains("v3") {
                requests as usize - keys
            } else {
                keys
            };
            assert!(
                chunks * 50 <= total_chunks,
                "{layout}: {sql}\nread {chunks} of {total_chunks} chunks\n{plan_text}"
            );
        }
        // An obs-only query reads no chunk of X.
        let s = session("c", layout);
        let (x, _, _) = reads(
            &s,
            "c",
            "SELECT cell_type, count(*) FROM c.obs WHERE tissue = 'lung' GROUP BY 1",
            "X/",
        )
        .await;
        assert_eq!(x, 0, "{layout}: obs-only query read X");
        // count(*) reads at most indptr.
        let s = session("c", layout);
        let (data, _, _) = reads(&s, "c", "SELECT count(*) FROM c.x", "X/data/").await;
        let (indices, _, _) = reads(&s, "c", "SELECT count(*) FROM c.x", "X/indices/").await;
        assert_eq!((data, indices), (0, 0), "{layout}: count(*) decoded X");
    }
}

/// EXPLAIN ANALYZE shows chunks and bytes read on the scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_analyze_reports_reads() {
    let s = session("c", "chunky.v2.zarr");
    let out = query(
        &s,
        "EXPLAIN ANALYZE SELECT sum(value) FROM c.x WHERE obs_id < 100",
    )
    .await;
    let text = format!("{out:?}");
    assert!(
        text.contains("AnnDataScanExec")
            && text.contains("chunks_read=")
            && text.contains("bytes_read="),
        "{text}"
    );
}

/// The embedded API: stream a large result batch by batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_stream() {
    use futures::StreamExt;
    let s = session("c", "chunky.v2.zarr");
    let mut stream = s
        .sql("SELECT obs_id, var_id, value FROM c.x")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .execute_stream()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (mut batches, mut rows) = (0, 0);
    while let Some(b) = stream.next().await {
        let b = b.unwrap_or_else(|e| panic!("{e}"));
        batches += 1;
        rows += b.num_rows();
    }
    let nnz = annql::store::AnnDataStore::open(fixture("chunky.v2.zarr"))
        .and_then(|st| st.array_meta("X/data").map(|m| m.shape[0]))
        .unwrap_or(0);
    assert_eq!(rows as u64, nnz);
    assert!(batches >= 1);
}

/// Scan blocks count against the session's memory limit: under a limit smaller than one decoded
/// block, a scan of X is a resources error naming the scan (not an overrun); with room, the same
/// scan streams every entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_honour_the_memory_limit() {
    let sql = "SELECT obs_id, var_id, value FROM c.x";
    let limited = |bytes: usize| {
        let s = AnnSession::builder()
            .with_threads(2)
            .with_memory_limit(bytes)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        s.attach("c", fixture("chunky.v2.zarr"))
            .unwrap_or_else(|e| panic!("{e}"));
        s
    };
    let err = limited(16 << 10)
        .collect(sql)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("Resources exhausted") && err.contains("AnnDataScanExec"),
        "{err}"
    );
    let batches = limited(256 << 20)
        .collect(sql)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 50_000);
}

/// A store with a CSC copy of X (`layers/X_csc`): gene-selective queries — plain scans, the
/// zero-filled view and the fused aggregation — read the selected genes' columns from the copy
/// (a few chunks) instead of every row of X, and answer exactly as the store without the copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gene_selective_queries_read_the_csc_copy() {
    let queries = [
        // A join's gene selection (dynamic filter on var_id).
        "SELECT x.obs_id, x.value FROM c.x x JOIN c.var v USING (var_id) WHERE v.var_name = 'G7'",
        // The same with a cell predicate too, and a direct var_id predicate.
        "SELECT x.obs_id, x.var_id, x.value FROM c.x x JOIN c.obs o USING (obs_id)
         WHERE o.cell_type = 'b' AND x.var_id IN (3, 30)",
        // The zero-filled view: every cell of the gene, zeros included.
        "SELECT d.obs_id, d.value FROM c.x_dense d JOIN c.var v USING (var_id)
         WHERE v.var_name = 'G12' AND d.obs_id < 3000",
        // The fused aggregation (dot-plot statistics over two genes).
        "SELECT o.cell_type, v.var_name, avg(d.value), count(*) FILTER (WHERE d.value > 0)
         FROM c.x_dense d JOIN c.obs o USING (obs_id) JOIN c.var v USING (var_id)
         WHERE v.var_name IN ('G3', 'G30') GROUP BY 1, 2",
    ];
    for sql in queries {
        let plain = session("c", "chunky.v2.zarr");
        let with_copy = session("c", "chunky.csc.zarr");
        let (x_keys, _, _) = reads(&plain, "c", sql, "X/").await;
        let (copy_keys, _, plan) = reads(&with_copy, "c", sql, "layers/X_csc/").await;
        let (csr_keys, _, _) = reads(&with_copy, "c", sql, "X/").await;
        let plan_text = format!(
            "{}",
            annql::engine::datafusion::physical_plan::displayable(plan.as_ref()).indent(true)
        );
        assert!(copy_keys >= 1, "{sql}: the copy was not read\n{plan_text}");
        // Row-selective reads of X touch most of its 100 data + indices chunks; the copy's
        // columns of two genes touch a handful (each column is ~1000 entries of 1000-entry chunks).
        assert!(
            copy_keys * 5 <= x_keys && csr_keys == 0,
            "{sql}: copy read {copy_keys} keys (and X {csr_keys}), X alone {x_keys}\n{plan_text}"
        );
        let mut want = query(&plain, sql).await;
        let mut got = query(&with_copy, sql).await;
        want.sort_by_key(|r| r.to_string());
        got.sort_by_key(|r| r.to_string());
        assert!(!want.is_empty(), "{sql}: empty");
        assert_close(&Value::Array(got), &Value::Array(want), sql);
    }
    // Many genes of few cells: the rows are cheaper, and X is read, not the copy.
    let with_copy = session("c", "chunky.csc.zarr");
    let sql = "SELECT sum(x.value) FROM c.x x JOIN c.obs o USING (obs_id) WHERE o.tissue = 'lung'";
    let (copy_keys, _, _) = reads(&with_copy, "c", sql, "layers/X_csc/").await;
    assert_eq!(copy_keys, 0, "{sql}: read the copy");
}
