//! The shared corpus of AnnData files from many tools (`../shared/corpus/anndata-files`): annql's
//! values equal what anndata 0.12.19 read from every file it reads (cells, genes, stored entries
//! and sums of X and raw.X, every obs/var column), and every file anndata cannot read is refused.
//!
//! The expected values are written by `tests/fixtures/make_corpus_expected.py` into
//! `tests/fixtures/corpus.expected.json`. No file is skipped: the test fails when the corpus and
//! the JSON disagree on the list of files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use annql::engine::AnnSession;
use annql::engine::datafusion::arrow::array::{Array, RecordBatch};
use annql::engine::datafusion::arrow::datatypes::{DataType, Schema};
use annql::engine::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use annql::engine::model::{sql_name, tables_of_store};
use annql::store::{AnnDataStore, Element, Encoding, Error as StoreError, ReadStats};
use serde_json::Value;

use crate::common::{corpus_dir, corpus_stores};

/// Files anndata cannot read, and the element annql must refuse in each (with anndata's reason).
/// Opening may succeed (annql opens lazily); reading the element must fail.
const REFUSED: &[(&str, &str, &str)] = &[
    (
        "scverse-anndataR/inst/extdata/example.zarr.zip",
        "obs/leiden",
        "a categorical without its 'ordered' attribute: anndata's reader raises KeyError 'ordered'",
    ),
    (
        "scverse-scanpy/src/scanpy/datasets/10x_pbmc68k_reduced.zarr.zip",
        "uns/rank_genes_groups/names",
        "a zarr v3 struct dtype: zarr-python cannot parse it, annql does not read rec-arrays",
    ),
];

/// The expected values, keyed by path relative to the corpus root.
fn expected() -> BTreeMap<String, Value> {
    let path = Path::new(crate::common::REPO).join("tests/fixtures/corpus.expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run tests/fixtures/make_corpus_expected.py)",
            path.display()
        )
    });
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    match doc.get("files") {
        Some(Value::Object(files)) => files.clone().into_iter().collect(),
        _ => panic!("corpus.expected.json has no 'files' object"),
    }
}

/// For every corpus file anndata reads, annql's values equal anndata's; every file it cannot read
/// is refused. All mismatches are reported together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_files_match_anndata() {
    let root = corpus_dir();
    assert!(root.exists(), "corpus not found at {}", root.display());
    let want = expected();
    let files = corpus_stores(&root);
    let found: BTreeSet<String> = files
        .iter()
        .map(|p| p.strip_prefix(&root).unwrap_or(p).display().to_string())
        .collect();
    let listed: BTreeSet<String> = want.keys().cloned().collect();
    assert_eq!(
        found, listed,
        "corpus files and corpus.expected.json differ: re-run make_corpus_expected.py"
    );
    assert!(found.len() >= 30, "only {} corpus files", found.len());
    let mut failures = Vec::new();
    let mut table = Vec::new();
    for rel in &found {
        let path = root.join(rel);
        let entry = &want[rel];
        let before = failures.len();
        let outcome = match entry.get("error").and_then(Value::as_str) {
            Some(anndata_error) => refused(&path, rel, anndata_error, &mut failures).await,
            None => {
                compare_file(&path, rel, &entry["anndatas"], &mut failures).await;
                "matched anndata".to_string()
            }
        };
        let status = if failures.len() == before {
            outcome
        } else {
            format!("MISMATCH ({} problems)", failures.len() - before)
        };
        table.push(format!("{rel} -> {status}"));
    }
    eprintln!("{}", table.join("\n"));
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A file anndata cannot read: annql refuses it at open, or refuses the listed element.
async fn refused(
    path: &Path,
    rel: &str,
    anndata_error: &str,
    failures: &mut Vec<String>,
) -> String {
    let Some((_, element, why)) = REFUSED.iter().find(|(f, _, _)| *f == rel) else {
        failures.push(format!(
            "{rel}: anndata cannot read it ({anndata_error}); list the element annql must refuse \
             in REFUSED"
        ));
        return String::new();
    };
    let store = match AnnDataStore::open(path) {
        Err(e) => return format!("refused at open: {e}"),
        Ok(store) => store,
    };
    match read_element(&store, element) {
        Err(e) => format!("refused: {e} (anndata: {why})"),
        // The store reads the bytes; the engine's checks refuse what anndata refuses (a dataframe
        // column is then an error when a query names it).
        Ok(()) if engine_refuses_column(path, element).await => {
            format!("refused by the engine (anndata: {why})")
        }
        Ok(()) => {
            failures.push(format!(
                "{rel}: anndata cannot read it ({anndata_error}), but annql read '/{element}'"
            ));
            String::new()
        }
    }
}

/// Whether a query naming the obs/var column at `element` fails.
async fn engine_refuses_column(path: &Path, element: &str) -> bool {
    let Some((table @ ("obs" | "var"), column)) = element.split_once('/') else {
        return false;
    };
    let session = AnnSession::new().unwrap_or_else(|e| panic!("{e}"));
    if session.attach("c", path).is_err() {
        return true;
    }
    let sql = format!("SELECT \"{column}\" FROM c.{table}");
    session.collect(&sql).await.is_err()
}

/// Reads an element whole, stopping at the first error.
fn read_element(store: &AnnDataStore, path: &str) -> annql::store::Result<()> {
    let element = store.element(path)?;
    let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
    let in_frame = path.contains('/')
        && store
            .element(parent)
            .is_ok_and(|p| p.encoding == Encoding::DataFrame);
    match read_tree(store, element, in_frame).into_iter().next() {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// Reads every leaf below `e` whole (dataframe columns, matrices, arrays), returning each failure
/// with the path of the leaf.
fn read_tree(store: &AnnDataStore, e: &Element, in_frame: bool) -> Vec<(String, StoreError)> {
    let stats = ReadStats::new_shared();
    let rows = e.shape.first().copied().unwrap_or(0);
    let result = if in_frame {
        store.read_column(e, 0..rows, &stats).map(|_| ())
    } else {
        match e.encoding {
            Encoding::DataFrame => {
                return e
                    .children
                    .iter()
                    .flat_map(|c| read_tree(store, c, true))
                    .collect();
            }
            Encoding::AnnData | Encoding::MuData | Encoding::Raw | Encoding::Dict => {
                return e
                    .children
                    .iter()
                    .flat_map(|c| read_tree(store, c, false))
                    .collect();
            }
            Encoding::CsrMatrix | Encoding::CscMatrix => store
                .sparse_dims(e)
                .and_then(|(major, _)| store.read_sparse(&e.path, 0..major, &stats))
                .map(|_| ()),
            // Column encodings stored outside a dataframe (anndataR writes them into uns).
            Encoding::Categorical
            | Encoding::NullableInteger
            | Encoding::NullableBoolean
            | Encoding::NullableStringArray => store.read_column(e, 0..rows, &stats).map(|_| ()),
            _ => store.read_array(&e.path, 0..rows, &stats).map(|_| ()),
        }
    };
    result
        .err()
        .map(|err| (e.path.clone(), err))
        .into_iter()
        .collect()
}

/// Elements of files anndata reads that annql refuses, each with why. Everything else in every
/// such file must read.
const UNSUPPORTED: &[(&str, &str, &str)] = &[
    (
        "scverse-anndata/tests/data/archives/v0.5.0/adata.h5ad",
        "uns/rank_genes_groups/names",
        REC_ARRAY,
    ),
    (
        "scverse-anndata/tests/data/archives/v0.5.0/adata.h5ad",
        "uns/rank_genes_groups/scores",
        REC_ARRAY,
    ),
    (
        "scverse-anndata/tests/data/archives/v0.7.0/adata.h5ad",
        "uns/O_recarray",
        REC_ARRAY,
    ),
    (
        "scverse-anndata/tests/data/archives/v0.7.0/adata.zarr.zip",
        "uns/O_recarray",
        REC_ARRAY,
    ),
    (
        "scverse-anndata/tests/data/archives/v0.7.8/adata.h5ad",
        "uns/O_recarray",
        REC_ARRAY,
    ),
    (
        "scverse-anndata/tests/data/archives/v0.7.8/adata.zarr.zip",
        "uns/O_recarray",
        REC_ARRAY,
    ),
    (
        "scverse-anndata/tests/data/archives/v0.7.8/adata.zarr.zip",
        "uns/nested/scalar_str",
        "a zarr v2 fixed-width unicode scalar (<U3): zarrs has no such data type",
    ),
    (
        "scverse-anndataR/inst/extdata/example.h5ad",
        "uns/rank_genes_groups/logfoldchanges",
        REC_ARRAY,
    ),
    (
        "scverse-anndataR/inst/extdata/example.h5ad",
        "uns/rank_genes_groups/names",
        REC_ARRAY,
    ),
    (
        "scverse-anndataR/inst/extdata/example.h5ad",
        "uns/rank_genes_groups/pvals",
        REC_ARRAY,
    ),
    (
        "scverse-anndataR/inst/extdata/example.h5ad",
        "uns/rank_genes_groups/pvals_adj",
        REC_ARRAY,
    ),
    (
        "scverse-anndataR/inst/extdata/example.h5ad",
        "uns/rank_genes_groups/scores",
        REC_ARRAY,
    ),
    (
        "scverse-scanpy/src/scanpy/datasets/10x_pbmc68k_reduced.h5ad",
        "uns/rank_genes_groups/names",
        REC_ARRAY,
    ),
    (
        "scverse-scanpy/src/scanpy/datasets/10x_pbmc68k_reduced.h5ad",
        "uns/rank_genes_groups/scores",
        REC_ARRAY,
    ),
];

/// Why rec-arrays are listed.
const REC_ARRAY: &str = "a record array (numpy structured dtype) in uns: annql has no SQL type for rec-arrays; anndata reads it as a numpy recarray";

/// Every element of every corpus file anndata reads is read whole by annql, except the listed
/// ones (which must still fail, so the list stays true).
#[test]
fn corpus_every_element_reads() {
    let root = corpus_dir();
    let want = expected();
    let mut problems = Vec::new();
    for (rel, entry) in &want {
        if entry.get("error").is_some() {
            continue;
        }
        let store = match AnnDataStore::open(root.join(rel)) {
            Ok(store) => store,
            Err(e) => {
                problems.push(format!("{rel}: {e}"));
                continue;
            }
        };
        let failed: BTreeMap<String, StoreError> =
            read_tree(&store, store.root(), false).into_iter().collect();
        for (path, err) in &failed {
            if !UNSUPPORTED.iter().any(|(f, p, _)| f == rel && p == path) {
                problems.push(format!("{rel}: '/{path}': {err}"));
            }
        }
        for (_, path, why) in UNSUPPORTED.iter().filter(|(f, _, _)| f == rel) {
            if !failed.contains_key(*path) {
                problems.push(format!(
                    "{rel}: '/{path}' is listed as unsupported ({why}) but reads"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// One session per file, the store attached as `c`.
async fn compare_file(path: &Path, rel: &str, anndatas: &Value, failures: &mut Vec<String>) {
    let session = match AnnSession::builder().with_threads(2).build() {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    if let Err(e) = session.attach("c", path) {
        failures.push(format!("{rel}: anndata reads it, annql refuses it: {e}"));
        return;
    }
    let Some(store) = session.store("c") else {
        panic!("{rel}: attached store missing")
    };
    let tables: BTreeSet<String> = tables_of_store(&store)
        .into_iter()
        .map(|t| t.name)
        .collect();
    let Value::Object(anndatas) = anndatas else {
        panic!("{rel}: 'anndatas' is not an object")
    };
    let annql_adatas: BTreeSet<String> = store.anndatas().iter().map(|a| a.path.clone()).collect();
    let want_adatas: BTreeSet<String> = anndatas.keys().cloned().collect();
    if annql_adatas != want_adatas {
        failures.push(format!(
            "{rel}: AnnData objects {annql_adatas:?}, anndata read {want_adatas:?}"
        ));
    }
    for (adata_path, want) in anndatas {
        let prefix = match adata_path.rsplit_once('/') {
            Some((_, name)) => format!("{}_", sql_name(name)),
            None => String::new(),
        };
        let check = Check {
            session: &session,
            tables: &tables,
            rel,
            prefix,
        };
        check.anndata(want, failures).await;
    }
}

/// Compares one AnnData object (the root or a modality) of one file.
struct Check<'a> {
    session: &'a AnnSession,
    tables: &'a BTreeSet<String>,
    rel: &'a str,
    prefix: String,
}

impl Check<'_> {
    fn table(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn fail(&self, failures: &mut Vec<String>, what: &str) {
        failures.push(format!("{}: {}{what}", self.rel, self.prefix));
    }

    /// Runs `sql`, returning its rows formatted as text (NULL as None).
    async fn query(&self, sql: &str) -> Result<(Vec<Vec<Option<String>>>, Schema), String> {
        let batches = self
            .session
            .collect(sql)
            .await
            .map_err(|e| format!("{sql}: {e}"))?;
        let schema = batches
            .first()
            .map(|b| b.schema().as_ref().clone())
            .unwrap_or_else(Schema::empty);
        Ok((text_rows(&batches), schema))
    }

    /// One row of numbers (NULL as NaN).
    async fn numbers(&self, sql: &str) -> Result<Vec<f64>, String> {
        let (rows, _) = self.query(sql).await?;
        let row = rows.first().ok_or_else(|| format!("{sql}: no rows"))?;
        Ok(row
            .iter()
            .map(|v| {
                v.as_deref()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(f64::NAN)
            })
            .collect())
    }

    async fn anndata(&self, want: &Value, failures: &mut Vec<String>) {
        self.frame("obs", &want["obs"], want["n_obs"].as_u64(), failures)
            .await;
        self.frame("var", &want["var"], want["n_vars"].as_u64(), failures)
            .await;
        self.matrix("x", &want["X"], failures).await;
        let raw = &want["raw"];
        self.matrix("raw_x", &raw["X"], failures).await;
        if !raw.is_null() {
            let names = &raw["var_names"];
            self.names("raw_var", "var", names, raw["n_vars"].as_u64(), failures)
                .await;
        } else if self.tables.contains(&self.table("raw_var")) {
            self.fail(failures, "raw_var: annql has a raw, anndata read none");
        }
    }

    /// Stored entries, sum and value type of a matrix table; or its absence.
    async fn matrix(&self, name: &str, want: &Value, failures: &mut Vec<String>) {
        let table = self.table(name);
        let present = self.tables.contains(&table);
        if want.is_null() {
            if present {
                self.fail(
                    failures,
                    &format!("{name}: annql has it, anndata read none"),
                );
            }
            return;
        }
        if !present {
            self.fail(failures, &format!("{name}: missing (anndata read one)"));
            return;
        }
        let sql = format!(
            "SELECT count(*), sum(CAST(value AS DOUBLE)), sum(abs(CAST(value AS DOUBLE))) \
             FROM c.{table}"
        );
        match self.numbers(&sql).await {
            Err(e) => self.fail(failures, &format!("{name}: {e}")),
            Ok(got) => {
                expect_count(
                    self,
                    failures,
                    &format!("{name} stored entries"),
                    got[0],
                    &want["stored"],
                );
                expect_sum(
                    self,
                    failures,
                    &format!("{name} sum"),
                    got[1],
                    &want["sum"],
                    &want["abs_sum"],
                );
            }
        }
        if let Ok((_, schema)) = self
            .query(&format!("SELECT value FROM c.{table} LIMIT 1"))
            .await
            && let Ok(field) = schema.field_with_name("value")
            && let Some(dtype) = want["dtype"].as_str()
            && !type_matches(dtype, field.data_type())
        {
            self.fail(
                failures,
                &format!(
                    "{name}: value type {}, anndata's dtype {dtype}",
                    field.data_type()
                ),
            );
        }
    }

    /// Row count and the `<axis>_name` index: count, distinct, first and last.
    async fn names(
        &self,
        table: &str,
        axis: &str,
        want: &Value,
        rows: Option<u64>,
        failures: &mut Vec<String>,
    ) {
        let t = self.table(table);
        if !self.tables.contains(&t) {
            self.fail(failures, &format!("{table}: missing (anndata read one)"));
            return;
        }
        let sql = format!(
            "SELECT count(*), count(DISTINCT {axis}_name), \
             first_value({axis}_name ORDER BY {axis}_id), last_value({axis}_name ORDER BY {axis}_id) \
             FROM c.{t}"
        );
        match self.query(&sql).await {
            Err(e) => self.fail(failures, &format!("{table}: {e}")),
            Ok((got, _)) => {
                let row = got.first().cloned().unwrap_or_default();
                let text = |i: usize| row.get(i).cloned().flatten();
                let want_rows = rows.map(|n| n.to_string());
                if text(0) != want_rows || text(0) != want["count"].as_u64().map(|n| n.to_string())
                {
                    self.fail(
                        failures,
                        &format!("{table}: {:?} rows, anndata {:?}", text(0), want_rows),
                    );
                }
                for (i, key) in [(1, "n_unique"), (2, "first"), (3, "last")] {
                    let w = match &want[key] {
                        Value::String(s) => Some(s.clone()),
                        Value::Null => None,
                        other => Some(other.to_string()),
                    };
                    if text(i) != w {
                        self.fail(
                            failures,
                            &format!("{table}: {axis}_name {key} {:?}, anndata {w:?}", text(i)),
                        );
                    }
                }
            }
        }
    }

    /// A dataframe table: its names, its column list, and each column's summary.
    async fn frame(&self, axis: &str, want: &Value, rows: Option<u64>, failures: &mut Vec<String>) {
        self.names(axis, axis, &want["names"], rows, failures).await;
        let t = self.table(axis);
        if !self.tables.contains(&t) {
            return;
        }
        let schema = match self.session.sql(&format!("SELECT * FROM c.{t}")).await {
            Ok(df) => df.schema().as_arrow().clone(),
            Err(e) => {
                self.fail(failures, &format!("{axis}: {e}"));
                return;
            }
        };
        let got: Vec<String> = schema
            .fields()
            .iter()
            .skip(2)
            .map(|f| f.name().clone())
            .collect();
        let Some(columns) = want["columns"].as_object() else {
            self.fail(failures, &format!("{axis}: expected columns missing"));
            return;
        };
        let want_names: Vec<String> = columns.keys().cloned().collect();
        if got != want_names {
            self.fail(
                failures,
                &format!("{axis}: columns {got:?}, anndata {want_names:?}"),
            );
        }
        for (name, summary) in columns {
            let Ok(field) = schema.field_with_name(name) else {
                continue;
            };
            self.column(axis, name, field.data_type(), summary, failures)
                .await;
            if let Some(ordered) = summary.get("ordered").and_then(Value::as_bool) {
                let got = field.metadata().get("annql.ordered").map(String::as_str);
                if got != Some(if ordered { "true" } else { "false" }) {
                    self.fail(
                        failures,
                        &format!("{axis}.{name}: ordered {got:?}, anndata {ordered}"),
                    );
                }
            }
        }
    }

    async fn column(
        &self,
        axis: &str,
        name: &str,
        dtype: &DataType,
        want: &Value,
        failures: &mut Vec<String>,
    ) {
        let t = self.table(axis);
        let col = format!("\"{}\"", name.replace('"', "\"\""));
        let what = format!("{axis}.{name}");
        let pandas = want["dtype"].as_str().unwrap_or("?");
        let kind = want["kind"].as_str().unwrap_or("?");
        let type_ok = match kind {
            "categorical" => matches!(dtype, DataType::Dictionary(..)),
            "string" => matches!(
                dtype,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ),
            _ => type_matches(pandas, dtype),
        };
        if !type_ok {
            self.fail(
                failures,
                &format!("{what}: type {dtype}, anndata's dtype {pandas}"),
            );
        }
        match kind {
            "categorical" | "string" => {
                let sql = format!(
                    "SELECT count(*) - count({col}), count(DISTINCT {col}), \
                     first_value(CAST({col} AS VARCHAR) ORDER BY {axis}_id), \
                     last_value(CAST({col} AS VARCHAR) ORDER BY {axis}_id) FROM c.{t}"
                );
                match self.query(&sql).await {
                    Err(e) => self.fail(failures, &format!("{what}: {e}")),
                    Ok((rows, _)) => {
                        let row = rows.first().cloned().unwrap_or_default();
                        let text = |i: usize| row.get(i).cloned().flatten();
                        let num = |v: &Value| v.as_u64().map(|n| n.to_string());
                        if text(0) != num(&want["nulls"]) {
                            self.fail(
                                failures,
                                &format!("{what}: nulls {:?}, anndata {}", text(0), want["nulls"]),
                            );
                        }
                        if kind == "string" {
                            if text(1) != num(&want["n_unique"]) {
                                self.fail(
                                    failures,
                                    &format!(
                                        "{what}: distinct {:?}, anndata {}",
                                        text(1),
                                        want["n_unique"]
                                    ),
                                );
                            }
                            for (i, key) in [(2, "first"), (3, "last")] {
                                if text(i) != value_text(&want[key]) {
                                    self.fail(
                                        failures,
                                        &format!(
                                            "{what}: {key} {:?}, anndata {}",
                                            text(i),
                                            want[key]
                                        ),
                                    );
                                }
                            }
                        }
                    }
                }
                if let Some(counts) = want.get("counts").and_then(Value::as_array) {
                    self.counts(&t, &col, &what, counts, failures).await;
                }
            }
            "bool" => {
                let sql = format!(
                    "SELECT count(*) FILTER (WHERE {col}), count(*) - count({col}) FROM c.{t}"
                );
                match self.numbers(&sql).await {
                    Err(e) => self.fail(failures, &format!("{what}: {e}")),
                    Ok(got) => {
                        expect_count(
                            self,
                            failures,
                            &format!("{what} true"),
                            got[0],
                            &want["true"],
                        );
                        expect_count(
                            self,
                            failures,
                            &format!("{what} nulls"),
                            got[1],
                            &want["nulls"],
                        );
                    }
                }
            }
            _ => {
                let v = format!("CAST({col} AS DOUBLE)");
                let sql = format!(
                    "SELECT sum({v}) FILTER (WHERE NOT isnan({v})), \
                     sum(abs({v})) FILTER (WHERE NOT isnan({v})), count(*) - count({col}), \
                     count(*) FILTER (WHERE isnan({v})) FROM c.{t}"
                );
                match self.numbers(&sql).await {
                    Err(e) => self.fail(failures, &format!("{what}: {e}")),
                    Ok(got) => {
                        // An all-NaN or empty column sums to NULL here, to 0 in numpy.
                        let sum = if got[0].is_nan() { 0.0 } else { got[0] };
                        expect_sum(
                            self,
                            failures,
                            &format!("{what} sum"),
                            sum,
                            &want["sum"],
                            &want["abs_sum"],
                        );
                        expect_count(
                            self,
                            failures,
                            &format!("{what} nulls"),
                            got[2],
                            &want["nulls"],
                        );
                        expect_count(self, failures, &format!("{what} NaN"), got[3], &want["nan"]);
                    }
                }
            }
        }
    }

    /// Cells per value, compared as text.
    async fn counts(
        &self,
        t: &str,
        col: &str,
        what: &str,
        want: &[Value],
        failures: &mut Vec<String>,
    ) {
        let sql = format!(
            "SELECT CAST({col} AS VARCHAR), count(*) FROM c.{t} WHERE {col} IS NOT NULL GROUP BY 1"
        );
        let got: BTreeMap<Option<String>, Option<String>> = match self.query(&sql).await {
            Err(e) => {
                self.fail(failures, &format!("{what}: {e}"));
                return;
            }
            Ok((rows, _)) => rows
                .into_iter()
                .map(|r| (r.first().cloned().flatten(), r.get(1).cloned().flatten()))
                .collect(),
        };
        let want: BTreeMap<Option<String>, Option<String>> = want
            .iter()
            .filter_map(|pair| {
                let n = pair.get(1)?.as_u64()?;
                (n > 0).then(|| (value_text(&pair[0]), Some(n.to_string())))
            })
            .collect();
        if got != want {
            self.fail(
                failures,
                &format!("{what}: counts {got:?}, anndata {want:?}"),
            );
        }
    }
}

fn expect_count(c: &Check<'_>, failures: &mut Vec<String>, what: &str, got: f64, want: &Value) {
    if want.as_f64() != Some(got) {
        c.fail(failures, &format!("{what}: {got}, anndata {want}"));
    }
}

/// Sums agree within a tolerance scaled by the sum of magnitudes; a NaN sum is null in the JSON.
fn expect_sum(
    c: &Check<'_>,
    failures: &mut Vec<String>,
    what: &str,
    got: f64,
    want: &Value,
    magnitude: &Value,
) {
    let ok = match want.as_f64() {
        None => got.is_nan(),
        Some(w) => {
            let scale = magnitude.as_f64().unwrap_or(w.abs()).max(1.0);
            (got - w).abs() <= 1e-9 * scale
        }
    };
    if !ok {
        c.fail(failures, &format!("{what}: {got}, anndata {want}"));
    }
}

/// The text a JSON category or string value is compared as (Arrow's rendering of the value).
fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Whether an Arrow type is what anndata's numpy/pandas dtype maps to.
fn type_matches(pandas: &str, arrow: &DataType) -> bool {
    let want = match pandas.to_ascii_lowercase().as_str() {
        "bool" | "boolean" => DataType::Boolean,
        "int8" => DataType::Int8,
        "int16" => DataType::Int16,
        "int32" => DataType::Int32,
        "int64" => DataType::Int64,
        "uint8" => DataType::UInt8,
        "uint16" => DataType::UInt16,
        "uint32" => DataType::UInt32,
        "uint64" => DataType::UInt64,
        "float32" => DataType::Float32,
        "float64" => DataType::Float64,
        _ => return false,
    };
    *arrow == want
}

/// Rows of `batches` as text, NULL as None.
fn text_rows(batches: &[RecordBatch]) -> Vec<Vec<Option<String>>> {
    let opts = FormatOptions::default();
    let mut out = Vec::new();
    for b in batches {
        let columns = b.columns();
        let fmts: Vec<_> = columns
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        for r in 0..b.num_rows() {
            out.push(
                columns
                    .iter()
                    .zip(&fmts)
                    .map(|(c, f)| (!c.is_null(r)).then(|| f.value(r).to_string()))
                    .collect(),
            );
        }
    }
    out
}
