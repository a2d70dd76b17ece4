//! The sqllogictest suite (`tests/slt/*.slt`), run once per storage layout of the fixtures.
//!
//! Each file starts a fresh session. `${TINY}` and `${CHUNKY}` stand for the fixture stores, so
//! the same expectations hold for zarr v2, v3 (sharded), zip and HDF5 (.h5ad). Regenerate expected output with
//! `ANNQL_SLT_COMPLETE=1 cargo test --test it slt` and review the diff.

use std::path::{Path, PathBuf};

use annql::engine::AnnSession;
use annql::engine::datafusion::arrow::array::Array;
use annql::engine::datafusion::arrow::datatypes::DataType;
use annql::engine::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use annql::store::StorageOptions;
use async_trait::async_trait;
use sqllogictest::{DBOutput, DefaultColumnType};

use crate::common::fixture;

/// One sqllogictest connection: a fresh annql session.
pub struct AnnDb {
    session: AnnSession,
}

impl AnnDb {
    /// A connection over `session` (the cluster tests run the suite through a cluster's).
    pub fn new(session: AnnSession) -> Self {
        Self { session }
    }
}

#[async_trait]
impl sqllogictest::AsyncDB for AnnDb {
    type Error = annql::engine::Error;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let df = self.session.sql(sql).await?;
        let is_query = {
            let head = sql.trim_start().to_ascii_uppercase();
            [
                "SELECT", "WITH", "EXPLAIN", "SHOW", "VALUES", "(", "DESCRIBE",
            ]
            .iter()
            .any(|k| head.starts_with(k))
        };
        let schema = df.schema().inner().clone();
        let batches = df.collect().await?;
        if !is_query {
            return Ok(DBOutput::StatementComplete(0));
        }
        let types = schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Float16
                | DataType::Float32
                | DataType::Float64
                | DataType::Decimal128(_, _) => DefaultColumnType::FloatingPoint,
                t if t.is_integer() => DefaultColumnType::Integer,
                _ => DefaultColumnType::Text,
            })
            .collect();
        let options = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for batch in &batches {
            let formatters = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| annql::engine::Error::DataFusion(e.into()))?;
            for row in 0..batch.num_rows() {
                rows.push(
                    formatters
                        .iter()
                        .zip(batch.columns())
                        .map(|(f, c)| {
                            let s = f.value(row).to_string();
                            if s.is_empty() && !c.is_null(row) {
                                "(empty)".to_string()
                            } else {
                                s
                            }
                        })
                        .collect(),
                );
            }
        }
        if sql.trim_start().to_ascii_uppercase().starts_with("EXPLAIN") {
            return Ok(explain_output(rows));
        }
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "annql"
    }
}

/// Plans as one row per line, numbered, indentation shown as dashes (as DataFusion's own suite does),
/// so whitespace survives the .slt format.
pub fn explain_output(rows: Vec<Vec<String>>) -> DBOutput<DefaultColumnType> {
    let mut out = Vec::new();
    for row in rows {
        let (kind, plan) = (
            row.first().cloned().unwrap_or_default(),
            row.get(1).cloned().unwrap_or_default(),
        );
        out.push(vec![kind]);
        for (i, line) in plan.lines().enumerate() {
            let body = line.trim_start();
            let indent = "-".repeat(line.len() - body.len());
            out.push(vec![format!("{:02}){indent}{body}", i + 1)]);
        }
    }
    DBOutput::Rows {
        types: vec![DefaultColumnType::Text],
        rows: out,
    }
}

/// The storage layouts every .slt file is run against.
const LAYOUTS: [(&str, &str, &str); 5] = [
    ("zarr-v2", "tiny.v2.zarr", "chunky.v2.zarr"),
    ("zarr-v3-sharded", "tiny.v3.zarr", "chunky.v3.zarr"),
    ("zip", "tiny.v2.zarr.zip", "chunky.v2.zarr"),
    ("h5ad", "tiny.h5ad", "chunky.h5ad"),
    ("h5ad-gzip", "tiny.gzip.h5ad", "chunky.h5ad"),
];

pub fn files() -> Vec<PathBuf> {
    let dir = Path::new(crate::common::REPO).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    files
}

fn runner(
    tiny: &str,
    chunky: &str,
) -> sqllogictest::Runner<AnnDb, impl sqllogictest::MakeConnection<Conn = AnnDb>> {
    located_runner(
        fixture(tiny).display().to_string(),
        fixture(chunky).display().to_string(),
        StorageOptions::default(),
    )
}

/// A runner whose `${TINY}` and `${CHUNKY}` are any locations (paths or URLs), reached with
/// `storage`.
pub fn located_runner(
    tiny: String,
    chunky: String,
    storage: StorageOptions,
) -> sqllogictest::Runner<AnnDb, impl sqllogictest::MakeConnection<Conn = AnnDb>> {
    let mut runner = sqllogictest::Runner::new(move || {
        let storage = storage.clone();
        async move {
            let session = AnnSession::builder()
                .with_threads(2)
                .with_storage_options(storage)
                .build()?;
            Ok(AnnDb { session })
        }
    });
    runner.set_var("TINY".into(), tiny);
    runner.set_var("CHUNKY".into(), chunky);
    runner
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt() {
    let files = files();
    assert!(!files.is_empty(), "no .slt files found");
    if std::env::var_os("ANNQL_SLT_COMPLETE").is_some() {
        let (_, tiny, chunky) = LAYOUTS[0];
        for file in &files {
            let mut r = runner(tiny, chunky);
            r.update_test_file(
                file,
                " ",
                sqllogictest::default_validator,
                sqllogictest::default_normalizer,
                sqllogictest::default_column_validator,
            )
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
    }
    let mut failures = Vec::new();
    for (layout, tiny, chunky) in LAYOUTS {
        for file in &files {
            let mut r = runner(tiny, chunky);
            if let Err(e) = r.run_file_async(file).await {
                failures.push(format!("[{layout}] {}: {e}", file.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
