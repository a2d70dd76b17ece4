//! Command-line arguments (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// What a DATASET may be, as the store reader opens it (`annql_store::AnnDataStore::open_with`):
/// shown by `--help` and by errors about a path that is not a store.
pub const DATASET_FORMS: &str = "\
A DATASET is PATH or NAME=PATH (PATH alone is attached under its file stem). PATH may be:
  a zarr directory (zarr format 2 or 3, sharded or not)   atlas.zarr
  a zip archive of one (zarr's ZipStore, a zipped folder)  atlas.zarr.zip
  an HDF5 file (AnnData or MuData)                         atlas.h5ad, atlas.h5mu
  the URL of a zarr store (not of a .zip or HDF5 file)     https://host/atlas.zarr, http://…,
      s3://bucket/atlas.zarr (s3a://), gs://…, az://… (azure://, abfs://, abfss://)
  a file:// URL of a local path";

/// annql: SQL and pipelines over AnnData stores (zarr directories, .zarr.zip archives, .h5ad and
/// .h5mu files, zarr stores at http(s)://, s3://, gs://, az:// URLs), lazily and out of core.
///
/// Options before or after the subcommand apply alike (`annql --threads 2 run …` and
/// `annql run --threads 2 …`).
#[derive(Debug, Parser)]
#[command(name = "annql", version, after_help = DATASET_FORMS)]
pub struct Cli {
    /// Datasets to attach (zarr directory, .zarr.zip, .h5ad, .h5mu, or a zarr store's URL; see
    /// below), as PATH (attached under its file stem) or NAME=PATH. Without any, the bundled
    /// demo dataset is attached as `pbmc`.
    #[arg(value_name = "DATASET")]
    pub datasets: Vec<String>,
    /// Options shared by every mode.
    #[command(flatten)]
    pub options: Options,
    /// What to do (default: the interactive REPL).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Options shared by the REPL and batch runs.
#[derive(Debug, Clone, Args)]
pub struct Options {
    /// Worker threads / scan partitions (default: all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Memory one query may hold (sorts, joins and aggregates spill or fail beyond it; the
    /// scans' blocks count too), e.g. 2GB or 512MB. `annql serve` applies 512MB per connection
    /// by default; 0 means no limit.
    #[arg(long, global = true, value_parser = parse_bytes)]
    pub memory_limit: Option<usize>,
    /// Print chunk reads (requests, bytes, chunks; for remote stores also requests, bytes
    /// fetched and cache hits) after each statement, on stderr.
    #[arg(long, global = true)]
    pub stats: bool,
    /// The most one read may allocate (a decoded chunk, a row block, a category table, a zip
    /// member), e.g. 4GB: what a file declares beyond it is an error (default 1GiB).
    #[arg(long, global = true, value_parser = parse_bytes)]
    pub read_limit: Option<usize>,
    /// A setting for remote datasets named on the command line, as KEY=VALUE (repeatable):
    /// endpoint, region, skip_signature, allow_http, cache=off, retries, timeout, … (docs/remote.md).
    #[arg(long = "storage-option", global = true, value_name = "KEY=VALUE")]
    pub storage_options: Vec<String>,
    /// Run queries on an Apache Ballista cluster of annql processes, given its scheduler
    /// (`annql scheduler`), e.g. df://127.0.0.1:50050. Every process must see the datasets at
    /// the same paths (shared storage) or URLs (docs/distributed.md).
    #[arg(long, global = true, value_name = "df://HOST:PORT")]
    pub cluster: Option<String>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run SQL files (or -c, or - for stdin) non-interactively.
    #[command(after_help = DATASET_FORMS)]
    Run(RunArgs),
    /// Print the table model of a dataset: its tables, columns and types, and its elements.
    #[command(after_help = DATASET_FORMS)]
    Schema {
        /// PATH or NAME=PATH.
        dataset: String,
    },
    /// Serve datasets over the PostgreSQL wire protocol (psql, JDBC, ODBC, BI tools).
    #[command(after_help = DATASET_FORMS)]
    Serve(ServeArgs),
    /// Write the cells and genes of a dataset that predicates keep as a new AnnData store (.h5ad
    /// or zarr), as `adata[obs_mask, var_mask]` (docs/export.md).
    #[command(after_help = DATASET_FORMS)]
    Export(ExportArgs),
    /// Build a gene-major (CSC) copy of a dataset's matrix beside it, out of core, so that
    /// questions about a few genes read only those genes (docs/index.md).
    Index(IndexArgs),
    /// Run a cluster's scheduler: Apache Ballista's, planning with annql's rules
    /// (docs/distributed.md).
    Scheduler(SchedulerArgs),
    /// Run a cluster executor, which registers with a scheduler and runs its tasks
    /// (docs/distributed.md).
    Executor(ExecutorArgs),
    /// Show the plan of a statement, with what is pushed into the scans.
    #[command(after_help = DATASET_FORMS)]
    Explain {
        /// Datasets to attach (PATH or NAME=PATH); default: the demo.
        #[arg(short = 'd', long = "dataset")]
        datasets: Vec<String>,
        /// The statement.
        sql: String,
    },
}

/// `annql scheduler`.
#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Address to listen on (gRPC and Ballista's REST API). Loopback by default: give a
    /// public address only on a network you trust (the cluster has no authentication).
    #[arg(long, default_value = "127.0.0.1:50050")]
    pub bind: std::net::SocketAddr,
    /// The host executors and clients reach this scheduler by, if not the bound address.
    #[arg(long)]
    pub external_host: Option<String>,
    /// Seconds without a heartbeat before an executor is taken for dead and its tasks rerun.
    #[arg(long, default_value_t = 180)]
    pub executor_timeout: u64,
}

/// `annql executor`.
#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// The scheduler, as HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50050")]
    pub scheduler: String,
    /// Host to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_host: String,
    /// The host the scheduler and other executors reach this one by, if not the bound host.
    #[arg(long)]
    pub external_host: Option<String>,
    /// Arrow Flight port, results and shuffle data are fetched from.
    #[arg(long, default_value_t = 50051)]
    pub flight_port: u16,
    /// gRPC port the scheduler sends tasks to.
    #[arg(long, default_value_t = 50052)]
    pub grpc_port: u16,
    /// Tasks run at once (default: the cores this process may use).
    #[arg(long)]
    pub vcores: Option<usize>,
    /// Where shuffle files are written (default: a temporary directory).
    #[arg(long)]
    pub work_dir: Option<String>,
    /// Seconds between heartbeats to the scheduler.
    #[arg(long, default_value_t = 60)]
    pub heartbeat: u64,
}

/// `annql run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// SQL files to run in order (`-` reads stdin).
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Run this statement (may be repeated; runs after the files).
    #[arg(short = 'c', long = "command")]
    pub commands: Vec<String>,
    /// Datasets to attach before running (PATH or NAME=PATH). Without any, the demo is attached.
    #[arg(short = 'd', long = "dataset")]
    pub datasets: Vec<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write results to this file instead of stdout (required for parquet and arrow).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Language of -c, stdin and files (default: pipelines for `.aql` files, SQL otherwise).
    #[arg(short, long, value_enum)]
    pub lang: Option<Language>,
    /// Rows a table shows (the first and last halves beyond it; the rest are counted).
    #[arg(long, value_name = "N", default_value_t = 40)]
    pub max_rows: usize,
}

/// `annql index`.
#[derive(Debug, Args)]
pub struct IndexArgs {
    /// The store (a path, or a URL with --out).
    pub source: String,
    /// The matrix to index: X or layers/NAME.
    #[arg(long, default_value = "X")]
    pub matrix: String,
    /// Memory the build may use (e.g. 1GiB, 64MiB).
    #[arg(long, value_parser = parse_size, default_value = "1GiB")]
    pub memory: u64,
    /// Where the index goes (default: SOURCE.annql-index beside the store).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Check the index against the store instead of building one.
    #[arg(long, conflicts_with_all = ["drop", "in_place"])]
    pub check: bool,
    /// Remove the index.
    #[arg(long, conflicts_with = "in_place")]
    pub drop: bool,
    /// Write the copy into the store itself, as layers/<name>_csc (a local zarr directory;
    /// this modifies the source).
    #[arg(long, conflicts_with = "out")]
    pub in_place: bool,
}

/// Parses `1GiB`, `64MiB`, `512MB`, `65536` (bytes).
fn parse_size(s: &str) -> Result<u64, String> {
    annql_store::object::parse_bytes(s).ok_or_else(|| format!("not a size: {s} (try 1GiB)"))
}

/// `annql export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The dataset to cut: PATH or NAME=PATH.
    #[arg(value_name = "SRC")]
    pub source: String,
    /// The new store (`.h5ad` or `.zarr`, or any name with --format).
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Cells kept: a SQL predicate over the dataset's obs table (default: all), e.g.
    /// "tissue = 'lung' AND n_genes > 200".
    #[arg(long, value_name = "PRED")]
    pub obs: Option<String>,
    /// Genes kept: a SQL predicate over the var table (default: all), e.g. "highly_variable".
    #[arg(long, value_name = "PRED")]
    pub var: Option<String>,
    /// Output format (default: from OUT's extension; .zarr is zarr v3, sharded).
    #[arg(long, value_enum)]
    pub format: Option<ExportFormat>,
    /// Replace OUT if it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// Elements per chunk of the output's arrays (default 65536).
    #[arg(long, value_name = "N")]
    pub chunk_len: Option<u64>,
    /// Chunks per shard (zarr v3; 0 writes unsharded arrays; default 64).
    #[arg(long, value_name = "N")]
    pub shard_chunks: Option<u64>,
    /// Leave this element out (`obsm/awk`, `uns/rank_genes_groups`; repeatable): an element
    /// annql cannot write is otherwise an error.
    #[arg(long, value_name = "ELEMENT")]
    pub exclude: Vec<String>,
    /// Write a group-by aggregate instead of a subset, as scanpy.get.aggregate returns it: each
    /// statistic (sum, mean, count_nonzero, var; comma-separated) a layer. Needs --by.
    #[arg(long, value_name = "FUNCS", value_delimiter = ',', requires = "by")]
    pub aggregate: Vec<String>,
    /// obs columns the aggregate groups by (comma-separated).
    #[arg(
        long,
        value_name = "COLS",
        value_delimiter = ',',
        requires = "aggregate"
    )]
    pub by: Vec<String>,
    /// The layer aggregated (default: X).
    #[arg(long, value_name = "LAYER", requires = "aggregate")]
    pub layer: Option<String>,
}

/// Formats `annql export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// An HDF5 `.h5ad` file.
    H5ad,
    /// A zarr v3 directory (sharded).
    Zarr,
    /// A zarr v2 directory.
    Zarr2,
    /// A zarr v3 directory (sharded unless --shard-chunks 0).
    Zarr3,
}

impl ExportFormat {
    /// The name the engine knows it by.
    pub fn name(self) -> &'static str {
        match self {
            ExportFormat::H5ad => "h5ad",
            ExportFormat::Zarr => "zarr",
            ExportFormat::Zarr2 => "zarr2",
            ExportFormat::Zarr3 => "zarr3",
        }
    }
}

/// `annql serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Datasets to serve, as PATH or NAME=PATH; each becomes a schema. Without any (and without
    /// --catalog), the demo is served as `pbmc`.
    #[arg(value_name = "DATASET")]
    pub datasets: Vec<String>,
    /// A file of `NAME = PATH` lines (`#` starts a comment) naming more datasets.
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:5433")]
    pub listen: std::net::SocketAddr,
    /// Also serve Flight SQL (ADBC, pandas, polars: answers as Arrow) on this address, e.g.
    /// 127.0.0.1:31337. Same datasets, password, TLS and limits; off by default.
    #[arg(long, value_name = "ADDR")]
    pub flight_sql: Option<std::net::SocketAddr>,
    /// The user clients log in as.
    #[arg(long, default_value = "annql")]
    pub user: String,
    /// The password (SCRAM-SHA-256). Without it and without --no-auth, one is generated and
    /// printed at start.
    #[arg(long, env = "ANNQL_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Accept connections without a password (loopback addresses only).
    #[arg(long, conflicts_with = "password")]
    pub no_auth: bool,
    /// PEM certificate (chain) for TLS.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Refuse connections without TLS.
    #[arg(long, requires = "tls_cert")]
    pub require_tls: bool,
    /// Connections served at once; one more gets FATAL 53300.
    #[arg(long, default_value_t = 64)]
    pub max_connections: usize,
    /// Close sessions idle this many seconds (default: never).
    #[arg(long)]
    pub idle_timeout: Option<u64>,
    /// Let clients write new AnnData stores (`COPY dataset TO 'out.h5ad'`) inside this
    /// directory, and only there. Without it the server is read-only.
    #[arg(long, value_name = "DIR")]
    pub writable_dir: Option<PathBuf>,
}

/// The two query languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Language {
    /// SQL (DataFusion's dialect, with ATTACH/DETACH and `aql('…')`).
    Sql,
    /// annql's pipeline language (docs/language.md).
    Aql,
}

impl Language {
    /// The language of a query file: pipelines for `.aql`, SQL otherwise.
    pub fn of_file(path: &std::path::Path) -> Language {
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("aql"))
        {
            Language::Aql
        } else {
            Language::Sql
        }
    }
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned table for people.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON array of objects per result.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// Apache Parquet (needs --output).
    Parquet,
    /// Arrow IPC file (needs --output).
    Arrow,
    /// Markdown table.
    Markdown,
}

/// Parses `2GB`, `512MB`, `1024` (bytes).
fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim().to_ascii_uppercase();
    let (num, mult) = [
        ("TB", 1usize << 40),
        ("GB", 1 << 30),
        ("MB", 1 << 20),
        ("KB", 1 << 10),
        ("B", 1),
    ]
    .iter()
    .find_map(|(suffix, m)| t.strip_suffix(suffix).map(|n| (n.trim().to_string(), *m)))
    .unwrap_or((t.clone(), 1));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("not a size: {s} (try 2GB or 512MB)"))?;
    Ok((n * mult as f64) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("2GB"), Ok(2 << 30));
        assert_eq!(parse_bytes("512mb"), Ok(512 << 20));
        assert_eq!(parse_bytes("100"), Ok(100));
        assert!(parse_bytes("lots").is_err());
    }
}
