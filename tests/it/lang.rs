//! The pipeline language: each question answered by a pipeline and by its hand-written SQL gives
//! the same rows and the same optimised physical plan, and equals what pandas computed.

use annql::engine::AnnSession;
use annql::engine::datafusion::dataframe::DataFrame;
use annql::engine::datafusion::physical_plan::displayable;
use serde_json::Value;

use crate::common::{assert_close, fixture, rows};

fn session() -> AnnSession {
    let s = annql::open(AnnSession::builder().with_threads(2)).unwrap_or_else(|e| panic!("{e}"));
    s.attach("t", fixture("tiny.v2.zarr"))
        .unwrap_or_else(|e| panic!("{e}"));
    s
}

/// The optimised physical plan of a pipeline, as text.
async fn physical_plan(s: &AnnSession, aql: &str) -> String {
    let df = annql_lang::query(s, aql)
        .await
        .unwrap_or_else(|e| panic!("{aql}\n{e}"));
    let plan = df
        .create_physical_plan()
        .await
        .unwrap_or_else(|e| panic!("{aql}: {e}"));
    displayable(plan.as_ref()).indent(true).to_string()
}

/// The optimised physical plan as text, and the rows.
async fn run(s: &AnnSession, df: DataFrame, what: &str) -> (String, Vec<Value>) {
    let plan = df
        .create_physical_plan()
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = displayable(plan.as_ref()).indent(true).to_string();
    let batches = annql::engine::datafusion::physical_plan::collect(plan, s.context().task_ctx())
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    (text, rows(&batches))
}

/// Runs `aql` and `sql`; both must give the same plan and rows. Returns the rows.
async fn agree(s: &AnnSession, aql: &str, sql: &str) -> Vec<Value> {
    let lowered = annql_lang::to_sql(s, aql)
        .await
        .unwrap_or_else(|e| panic!("{aql}\n{e}"));
    let lang = annql_lang::query(s, aql)
        .await
        .unwrap_or_else(|e| panic!("{aql}\n{e}"));
    let sql_df = s.sql(sql).await.unwrap_or_else(|e| panic!("{sql}\n{e}"));
    let (lang_plan, lang_rows) = run(s, lang, aql).await;
    let (sql_plan, sql_rows) = run(s, sql_df, sql).await;
    assert_eq!(
        lang_plan, sql_plan,
        "plans differ\npipeline: {aql}\nlowered:  {lowered}\nSQL:      {sql}"
    );
    // Without ORDER BY, row order is the scheduler's: compare sorted.
    let sorted = |mut r: Vec<Value>| {
        if !sql.contains("ORDER BY") {
            r.sort_by_key(|r| r.to_string());
        }
        r
    };
    let (lang_rows, sql_rows) = (sorted(lang_rows), sorted(sql_rows));
    assert_eq!(lang_rows, sql_rows, "rows differ\n{aql}\n{sql}");
    lang_rows
}

/// Q1–Q7 of the benchmark: the pipeline and its SQL agree, and the answers equal pandas'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lang_q1_q7_agree_with_sql_and_pandas() {
    let s = session();
    let want: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny.answers.json")).unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("tiny.answers.json: {e}"));
    // The zero-filled read of genes: the dense view.
    let x_gene = |cols: &str, filter: &str, group: &str| {
        format!(
            "SELECT {cols} FROM t.x_dense m JOIN t.obs o USING (obs_id) JOIN t.var v USING (var_id) \
             WHERE {filter}{group}"
        )
    };
    let value = "m.value";
    let cases: Vec<(&str, &str, String)> = vec![
        (
            "q1_cells_per_cell_type",
            "from t | group cell_type | agg n_cells = count()",
            "SELECT o.cell_type, count(*) AS n_cells FROM t.obs o GROUP BY o.cell_type".into(),
        ),
        (
            "q2_mean_cd3e",
            r#"from t | group cell_type | agg mean_x = mean(X["CD3E"])"#,
            x_gene(
                &format!("o.cell_type, avg({value}) AS mean_x"),
                "v.var_name = 'CD3E'",
                " GROUP BY o.cell_type",
            ),
        ),
        (
            "q3_pseudobulk",
            "from t | group donor_id, cell_type, gene | agg total = sum(layers.counts) | where total != 0",
            "SELECT * FROM (SELECT o.donor_id, o.cell_type, v.var_name AS gene, sum(m.value) AS total \
             FROM t.layers_counts m JOIN t.obs o USING (obs_id) JOIN t.var v USING (var_id) \
             GROUP BY o.donor_id, o.cell_type, v.var_name) s1 WHERE total <> 0"
                .into(),
        ),
        (
            "q4_lung_totals",
            r#"from t | where tissue == "lung" | select barcode = obs_name, total_counts = sum(layers.counts), n_genes = nnz(layers.counts)"#,
            "SELECT o.obs_name AS barcode, coalesce(r1.sum, 0) AS total_counts, coalesce(r1.nnz, 0) AS n_genes \
             FROM t.obs o LEFT JOIN (SELECT m.obs_id, sum(m.value) AS sum, count(CASE WHEN m.value <> 0 THEN 1 END) AS nnz \
             FROM t.layers_counts m GROUP BY m.obs_id) r1 ON r1.obs_id = o.obs_id WHERE o.tissue = 'lung'"
                .into(),
        ),
        (
            "q5_markers",
            r#"let markers = ["CD3E", "CD4", "CD8A", "MS4A1"]
               from t | group cell_type, gene | agg mean_x = mean(X[markers]), frac_pos = frac(X[markers] > 0)"#,
            x_gene(
                &format!(
                    "o.cell_type, v.var_name AS gene, avg({value}) AS mean_x, \
                     CAST(count(*) FILTER (WHERE {value} > 0) AS DOUBLE) / nullif(count(*), 0) AS frac_pos"
                ),
                "v.var_name IN ('CD3E', 'CD4', 'CD8A', 'MS4A1')",
                " GROUP BY o.cell_type, v.var_name",
            ),
        ),
        (
            "q6_top_genes_t_cell",
            r#"from t | where cell_type == "T cell" | group gene | agg total = sum(layers.counts) | sort -total, gene | take 5"#,
            "SELECT v.var_name AS gene, sum(m.value) AS total FROM t.layers_counts m JOIN t.obs o USING (obs_id) \
             JOIN t.var v USING (var_id) WHERE o.cell_type = 'T cell' GROUP BY v.var_name ORDER BY total DESC, gene LIMIT 5"
                .into(),
        ),
        (
            "q7_ms4a1_donor_d3",
            r#"from t | where donor_id == "D3" | select barcode = obs_name, value = X["MS4A1"]"#,
            x_gene(
                &format!("o.obs_name AS barcode, {value} AS value"),
                "(v.var_name = 'MS4A1') AND (o.donor_id = 'D3')",
                "",
            ),
        ),
    ];
    for (name, aql, sql) in cases {
        let plan = physical_plan(&s, aql).await;
        // Aggregates over a matrix run as the fused sparse pass, for the pipeline as for SQL.
        let fused = matches!(
            name,
            "q2_mean_cd3e" | "q3_pseudobulk" | "q5_markers" | "q6_top_genes_t_cell"
        );
        assert_eq!(plan.contains("FusedAggregateExec"), fused, "{name}\n{plan}");
        let mut got = agree(&s, aql, &sql).await;
        let mut expected = want[name].as_array().cloned().unwrap_or_default();
        if name != "q6_top_genes_t_cell" {
            got.sort_by_key(|r| r.to_string());
            expected.sort_by_key(|r| r.to_string());
        }
        assert_close(&Value::Array(got), &Value::Array(expected), name);
    }
}

/// `aql('…')` inside SQL is the pipeline's result, planned as part of the statement (filters
/// and joins around it, the fused aggregation inside it); a bad pipeline inside it reports the
/// pipeline's diagnostics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aql_table_function_in_sql() {
    let s = session();
    let pipeline = r#"from t | group cell_type | agg n = count(), m = mean(X["CD3E"])"#;
    let direct = annql_lang::query(&s, pipeline)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, mut want) = run(&s, direct, pipeline).await;
    want.retain(|r| r[1].as_f64().is_some_and(|n| n > 1.0));
    want.sort_by_key(|r| r.to_string());
    let sql = format!("SELECT * FROM aql('{pipeline}') WHERE n > 1");
    let df = s.sql(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let (plan, mut got) = run(&s, df, &sql).await;
    got.sort_by_key(|r| r.to_string());
    assert!(!want.is_empty());
    assert_eq!(got, want, "{sql}");
    assert!(plan.contains("FusedAggregateExec"), "{plan}");
    // Dollar-quoted, aliased, joined to a table.
    let sql = "SELECT a.cell_type, a.n, count(*) AS again FROM aql($$from t | group cell_type | agg n = count()$$) AS a \
               JOIN t.obs o ON o.cell_type = a.cell_type GROUP BY 1, 2";
    let batches = s
        .collect(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    for r in rows(&batches) {
        assert_eq!(r[1], r[2], "{r}");
    }
    // Errors: the pipeline's diagnostics, and a usage message for a wrong argument.
    let err = s
        .sql("SELECT * FROM aql('from t | where cel_type == 1')")
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("did you mean `cell_type`?"), "{err}");
    let err = s
        .sql("SELECT * FROM aql(1)")
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("aql() takes one string"), "{err}");
}

/// Joins and unions across attached datasets: the same fixture attached twice, so every answer
/// is known from the single-dataset one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_and_unions_across_datasets() {
    let s = session();
    s.attach("u", fixture("tiny.v3.zarr"))
        .unwrap_or_else(|e| panic!("{e}"));
    let one = r#"from t | group cell_type | agg n = count(), m = mean(X["CD3E"])"#;
    let df = annql_lang::query(&s, one)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, mut base) = run(&s, df, one).await;
    base.sort_by_key(|r| r.to_string());

    // Inner join on the key: each row beside its twin.
    let join = r#"from t | group cell_type | agg n = count(), m = mean(X["CD3E"])
        | join (from u | group cell_type | agg n2 = count(), m2 = mean(X["CD3E"])) on cell_type
        | select cell_type, n, m, n2, m2"#;
    let sql = "SELECT * FROM (SELECT o.cell_type, count(*) AS n, avg(m.value) AS m FROM t.x_dense m JOIN t.obs o USING (obs_id) JOIN t.var v USING (var_id) WHERE v.var_name = 'CD3E' GROUP BY o.cell_type) a \
               JOIN (SELECT o.cell_type, count(*) AS n2, avg(m.value) AS m2 FROM u.x_dense m JOIN u.obs o USING (obs_id) JOIN u.var v USING (var_id) WHERE v.var_name = 'CD3E' GROUP BY o.cell_type) b USING (cell_type)";
    let df = annql_lang::query(&s, join)
        .await
        .unwrap_or_else(|e| panic!("{join}\n{e}"));
    let (plan, mut got) = run(&s, df, join).await;
    got.sort_by_key(|r| r.to_string());
    assert_eq!(got.len(), base.len());
    for (g, b) in got.iter().zip(&base) {
        assert_eq!((&g[0], &g[1], &g[2]), (&b[0], &b[1], &b[2]));
        assert_eq!((&g[3], &g[4]), (&b[1], &b[2]), "{g}");
    }
    assert_eq!(plan.matches("FusedAggregateExec").count(), 2, "{plan}");
    let df = s.sql(sql).await.unwrap_or_else(|e| panic!("{e}"));
    let (_, mut want) = run(&s, df, sql).await;
    want.sort_by_key(|r| r.to_string());
    assert_eq!(got, want);

    // Union: every row twice; regrouped, the counts double.
    let union = "from t | select obs_name, cell_type | union (from u | select obs_name, cell_type) \
                 | group cell_type | agg n = count()";
    let df = annql_lang::query(&s, union)
        .await
        .unwrap_or_else(|e| panic!("{union}\n{e}"));
    let (_, mut got) = run(&s, df, union).await;
    got.sort_by_key(|r| r.to_string());
    assert_eq!(got.len(), base.len());
    for (g, b) in got.iter().zip(&base) {
        assert_eq!(g[0], b[0]);
        assert_eq!(g[1].as_f64(), b[1].as_f64().map(|n| 2.0 * n), "{g}");
    }
    // Left join to an embedding keeps every cell.
    let left = "from t | select obs_id, cell_type | left join (from u.obsm_x_umap) on obs_id | agg n = count(), k = count(x_umap_0)";
    let df = annql_lang::query(&s, left)
        .await
        .unwrap_or_else(|e| panic!("{left}\n{e}"));
    let (_, got) = run(&s, df, left).await;
    let cells: f64 = base.iter().filter_map(|r| r[1].as_f64()).sum();
    assert_eq!(got, vec![serde_json::json!([cells, cells])]);
}

/// The demo dataset (scanpy's PBMC 700 cells) attached as `pbmc`, as the CLI attaches it.
fn demo() -> AnnSession {
    let s = session();
    let path = std::path::Path::new(crate::common::REPO).join("examples/data/pbmc68k_reduced.zarr");
    s.attach("pbmc", path).unwrap_or_else(|e| panic!("{e}"));
    s
}

/// Rows of a pipeline and of its SQL, in the order each returns them.
async fn ordered_rows(s: &AnnSession, aql: &str, sql: &str) -> (Vec<Value>, Vec<Value>) {
    let lowered = annql_lang::to_sql(s, aql)
        .await
        .unwrap_or_else(|e| panic!("{aql}\n{e}"));
    let lang = annql_lang::query(s, aql)
        .await
        .unwrap_or_else(|e| panic!("{aql}\n{lowered}\n{e}"));
    let sql_df = s.sql(sql).await.unwrap_or_else(|e| panic!("{sql}\n{e}"));
    let (_, lang_rows) = run(s, lang, aql).await;
    let (_, sql_rows) = run(s, sql_df, sql).await;
    assert_eq!(
        lang_rows, sql_rows,
        "rows differ (in order)\npipeline: {aql}\nlowered:  {lowered}\nSQL:      {sql}"
    );
    (lang_rows, sql_rows)
}

/// A `sort` stays in effect through `where`, `derive`, `select` and `take` until a `group`,
/// `agg`, `join` or `union` (as in PRQL), and a later `sort` replaces it: each pipeline returns
/// the rows of its SQL `ORDER BY`, in that order. The first is the demo query of issue #24.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sort_stays_in_effect_through_later_stages() {
    let s = demo();
    let (got, _) = ordered_rows(
        &s,
        "from pbmc | group bulk_labels | agg n = count() | sort -n | where n > 10 | take 3",
        "SELECT bulk_labels, count(*) AS n FROM pbmc.obs GROUP BY bulk_labels \
         HAVING count(*) > 10 ORDER BY n DESC LIMIT 3",
    )
    .await;
    // What pandas' value_counts() gives for obs.bulk_labels.
    assert_eq!(
        got,
        vec![
            serde_json::json!(["Dendritic", 240.0]),
            serde_json::json!(["CD14+ Monocyte", 129.0]),
            serde_json::json!(["CD19+ B", 95.0]),
        ]
    );
    let cases = [
        (
            "from pbmc | group bulk_labels | agg n = count() | sort n | derive half = n / 2 | take 4",
            "SELECT bulk_labels, n, n / 2 AS half FROM (SELECT bulk_labels, count(*) AS n \
             FROM pbmc.obs GROUP BY bulk_labels) ORDER BY n LIMIT 4",
        ),
        // The sort key is no longer a column after `select`.
        (
            r#"from pbmc | sort -n_counts | select obs_name, louvain | where louvain != "8" | take 5"#,
            "SELECT obs_name, louvain FROM pbmc.obs WHERE louvain <> '8' ORDER BY n_counts DESC LIMIT 5",
        ),
        // Sorted, cut, then filtered: still sorted.
        (
            r#"from pbmc | sort -n_counts | take 12 | where louvain != "8" | select obs_name, n_counts"#,
            "SELECT obs_name, n_counts FROM (SELECT * FROM pbmc.obs ORDER BY n_counts DESC LIMIT 12) \
             WHERE louvain <> '8' ORDER BY n_counts DESC",
        ),
        // A later sort replaces an earlier one.
        (
            "from pbmc | group bulk_labels | agg n = count() | sort bulk_labels | sort -n | take 4",
            "SELECT bulk_labels, count(*) AS n FROM pbmc.obs GROUP BY bulk_labels ORDER BY n DESC LIMIT 4",
        ),
    ];
    for (aql, sql) in cases {
        let (got, _) = ordered_rows(&s, aql, sql).await;
        assert!(!got.is_empty(), "{aql}");
    }
}

/// `left join … on key` keeps the left rows' keys where the right side has no match (as SQL
/// `USING` and PRQL do); only the right side's other columns are null.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn left_join_keeps_the_keys_of_unmatched_rows() {
    let s = session();
    let aql = r#"from t | group cell_type | agg n = count()
        | left join (from t | where cell_type == "B cell" | group cell_type | agg n2 = count()) on cell_type"#;
    let df = annql_lang::query(&s, aql)
        .await
        .unwrap_or_else(|e| panic!("{aql}\n{e}"));
    let (_, mut got) = run(&s, df, aql).await;
    got.sort_by_key(|r| r.to_string());
    // pandas: obs.cell_type.value_counts() of tiny; only B cells are on the right.
    assert_eq!(
        got,
        vec![
            serde_json::json!(["B cell", 28.0, 28.0]),
            serde_json::json!(["NK cell", 29.0, "NULL"]),
            serde_json::json!(["T cell", 29.0, "NULL"]),
            serde_json::json!(["monocyte", 34.0, "NULL"]),
        ]
    );
}

/// `EXPLAIN` and `EXPLAIN ANALYZE` of SQL that calls `aql('…')` plan the pipeline's subquery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_of_aql_table_function() {
    let s = session();
    for explain in ["EXPLAIN", "EXPLAIN ANALYZE", "EXPLAIN VERBOSE"] {
        let sql = format!(
            "{explain} SELECT * FROM aql('from t | group cell_type | agg n = count()') WHERE n > 1"
        );
        let batches = s
            .collect(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let text: String = rows(&batches).iter().map(|r| format!("{r}\n")).collect();
        assert!(text.contains("AnnDataScanExec"), "{sql}\n{text}");
    }
}
