//! Statements from files, stdin or `-c`: split with sqlparser's tokenizer (so `;` inside strings
//! and comments does not split), run in order, stop at the first error with its position.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Instant;

use annql_engine::{AnnSession, session::default_name};
use annql_store::{AnnDataStore, FetchSnapshot, StorageOptions};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::args::{Format, Language, Options, RunArgs};
use crate::binary::BinaryWriter;
use crate::error::{CliError, Result};
use crate::output::{Stop, TableStyle, TextWriter};

/// The demo dataset shipped in the repository (scanpy's PBMC 700 cells, see examples/data).
pub const DEMO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/data/pbmc68k_reduced.zarr"
);

/// One statement of a script, with where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Its text, without the terminating `;`.
    pub text: String,
    /// 1-based line where it starts in the script.
    pub line: usize,
    /// 1-based column where it starts.
    pub column: usize,
}

/// Splits a script into statements at top-level semicolons; a text the tokenizer rejects (an
/// unclosed string or comment) is a [`CliError::Syntax`] at the tokenizer's position.
pub fn split_statements(sql: &str) -> Result<Vec<Statement>> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| CliError::Syntax {
            line: e.location.line as usize,
            column: e.location.column as usize,
            source: Box::new(e),
        })?;
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let offset = |line: u64, col: u64| {
        let start = line_starts
            .get(line.saturating_sub(1) as usize)
            .copied()
            .unwrap_or(sql.len());
        sql[start..]
            .char_indices()
            .nth(col.saturating_sub(1) as usize)
            .map_or(sql.len(), |(i, _)| start + i)
    };
    let mut out = Vec::new();
    let mut begin: Option<(usize, u64, u64)> = None;
    for t in &tokens {
        let significant = !matches!(
            t.token,
            Token::Whitespace(_) | Token::SemiColon | Token::EOF
        );
        if significant && begin.is_none() {
            begin = Some((
                offset(t.span.start.line, t.span.start.column),
                t.span.start.line,
                t.span.start.column,
            ));
        }
        if matches!(t.token, Token::SemiColon | Token::EOF)
            && let Some((start, line, column)) = begin.take()
        {
            {
                let end = offset(t.span.start.line, t.span.start.column);
                let text = sql[start..end].trim_end().to_string();
                out.push(Statement {
                    text,
                    line: line as usize,
                    column: column as usize,
                });
            }
        }
    }
    if let Some((start, line, column)) = begin {
        out.push(Statement {
            text: sql[start..].trim_end().to_string(),
            line: line as usize,
            column: column as usize,
        });
    }
    Ok(out)
}

/// Splits a script in `lang` into statements (SQL) or programs (pipelines).
pub fn split(lang: Language, text: &str) -> Result<Vec<Statement>> {
    match lang {
        Language::Sql => split_statements(text),
        Language::Aql => Ok(annql_lang::split_programs(text)
            .into_iter()
            .map(|(at, program)| {
                let (line, column) = annql_lang::error::line_column(text, at);
                Statement {
                    text: program.trim_end().to_string(),
                    line,
                    column,
                }
            })
            .collect()),
    }
}

/// Parses `NAME=PATH` or `PATH` (attached under its file stem).
pub fn dataset_spec(spec: &str) -> (String, String) {
    match spec.split_once('=') {
        Some((name, path))
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            (name.to_string(), path.to_string())
        }
        _ => (default_name(spec), spec.to_string()),
    }
}

/// The `--storage-option KEY=VALUE` settings, for datasets named on the command line.
pub fn storage_options(options: &Options) -> Result<StorageOptions> {
    let mut pairs = Vec::new();
    for o in &options.storage_options {
        let (k, v) = o.split_once('=').ok_or_else(|| {
            CliError::Usage(format!("--storage-option expects KEY=VALUE, got {o:?}"))
        })?;
        pairs.push((k.trim().to_string(), v.trim().to_string()));
    }
    if let Some(bytes) = options.read_limit {
        pairs.push(("read_limit".into(), bytes.to_string()));
    }
    Ok(StorageOptions::from_pairs(pairs).map_err(annql_engine::Error::from)?)
}

/// A session with `datasets` attached (the demo as `pbmc` when there are none).
pub fn open_session(options: &Options, datasets: &[String]) -> Result<AnnSession> {
    let mut builder = AnnSession::builder();
    if let Some(t) = options.threads {
        builder = builder.with_threads(t);
    }
    // `--memory-limit 0`: no limit, as without the option.
    if let Some(m) = options.memory_limit.filter(|&m| m > 0) {
        builder = builder.with_memory_limit(m);
    }
    let session = annql_lang::session(builder.with_storage_options(storage_options(options)?))?;
    if datasets.is_empty() {
        session.attach("pbmc", DEMO)?;
    }
    for spec in datasets {
        let (name, path) = dataset_spec(spec);
        session.attach(&name, &path)?;
    }
    Ok(session)
}

/// `session`, its queries run on the cluster `--cluster` names, if any.
pub async fn on_cluster(options: &Options, session: AnnSession) -> Result<AnnSession> {
    match &options.cluster {
        Some(url) => Ok(annql_cluster::connect(session, url)?),
        None => Ok(session),
    }
}

/// The result of one statement: its schema and batches (no schema columns: no result to print).
pub struct Outcome {
    /// Result schema.
    pub schema: SchemaRef,
    /// Result rows.
    pub batches: Vec<RecordBatch>,
}

/// Ctrl-C, turned into a wake-up for the running query (see [`crate::interrupt`], which also
/// stops the printing of a result).
fn interrupts() -> &'static Arc<tokio::sync::Notify> {
    crate::interrupt::wakeup()
}

/// Runs one statement (or pipeline); Ctrl-C cancels it (dropping the stream stops the scans).
pub async fn execute(session: &AnnSession, lang: Language, text: &str) -> Result<Outcome> {
    cancellable(session, async {
        let df = dataframe(session, lang, text).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        Ok(Outcome { schema, batches })
    })
    .await
}

/// Runs one statement (or pipeline) like [`execute`], but hands its result to `sink` a window of
/// `window` batches at a time as the scans produce it (`true` for the first window, which is
/// given even when the result is empty), so a large result is never held whole. A statement
/// without a result (SET, ATTACH) calls nothing. Returns whether there was a result.
pub async fn execute_streaming(
    session: &AnnSession,
    lang: Language,
    text: &str,
    window: usize,
    mut sink: impl FnMut(&SchemaRef, &[RecordBatch], bool) -> Result<()>,
) -> Result<bool> {
    cancellable(session, async {
        let df = dataframe(session, lang, text).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        if schema.fields().is_empty() {
            df.collect().await?;
            return Ok(false);
        }
        let mut stream = df.execute_stream().await?;
        let (mut buf, mut first) = (Vec::with_capacity(window), true);
        while let Some(batch) = futures::StreamExt::next(&mut stream).await {
            buf.push(batch?);
            if buf.len() >= window.max(1) {
                sink(&schema, &buf, first)?;
                (buf, first) = (Vec::with_capacity(window), false);
            }
        }
        if first || !buf.is_empty() {
            sink(&schema, &buf, first)?;
        }
        Ok(true)
    })
    .await
}

/// Plans one statement in its language.
async fn dataframe(
    session: &AnnSession,
    lang: Language,
    text: &str,
) -> Result<datafusion::dataframe::DataFrame> {
    Ok(match lang {
        Language::Sql => session.sql(text).await.map_err(CliError::of_sql)?,
        Language::Aql => annql_lang::query(session, text).await?,
    })
}

/// Runs `work` with the progress bar drawn and Ctrl-C cancelling it.
async fn cancellable<T>(
    session: &AnnSession,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let interrupted = interrupts().notified();
    session.progress().reset();
    let bar = ProgressBar::start(session.progress().clone());
    let result = tokio::select! {
        r = work => r,
        _ = interrupted => Err(CliError::Cancelled),
    };
    bar.stop();
    result
}

/// A progress bar on stderr — only on a terminal, and only once a query has run for a second —
/// showing blocks scanned of those planned. Drawn by a plain thread so it never waits on the query.
struct ProgressBar {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProgressBar {
    fn start(progress: Arc<annql_engine::Progress>) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut drawn = false;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    let (done, total) = progress.get();
                    if started.elapsed().as_secs_f64() < 1.0 || total == 0 {
                        continue;
                    }
                    let filled = (done.min(total) * 30 / total) as usize;
                    let bar = format!("{}{}", "=".repeat(filled), " ".repeat(30 - filled));
                    // Drawing the bar is best effort: a terminal that cannot take it loses
                    // nothing of the result, and there is nowhere else to report to.
                    let _ = write!(std::io::stderr(), "\r[{bar}] {done}/{total} blocks scanned");
                    let _ = std::io::stderr().flush();
                    drawn = true;
                }
                if drawn {
                    // Best effort, as above: clears the bar's line.
                    let _ = write!(std::io::stderr(), "\r\x1b[K");
                }
            })
        });
        Self { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread {
            // Err only if the drawing thread panicked: the bar is gone, the query unaffected.
            let _ = t.join();
        }
    }
}

/// What the attached stores have read so far, for `--stats` and `\\stats`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadTotals {
    /// Range reads asked of storage.
    pub requests: u64,
    /// Bytes those reads returned.
    pub bytes: u64,
    /// Distinct chunks (storage keys) read.
    pub chunks: usize,
    /// Network requests, bytes and cache hits of remote stores (None when all are local).
    pub remote: Option<FetchSnapshot>,
}

impl ReadTotals {
    /// What was read between `earlier` and now.
    pub fn since(&self, earlier: &ReadTotals) -> ReadTotals {
        ReadTotals {
            requests: self.requests - earlier.requests,
            bytes: self.bytes - earlier.bytes,
            chunks: self.chunks - earlier.chunks,
            remote: self
                .remote
                // A remote store attached since `earlier`: all its reads are new.
                .map(|r| r.since(&earlier.remote.unwrap_or_default())),
        }
    }
}

impl std::fmt::Display for ReadTotals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests, {} bytes, {} chunks read",
            self.requests, self.bytes, self.chunks
        )?;
        if let Some(r) = &self.remote {
            write!(
                f,
                "; fetched {} requests, {} bytes; cache {} hits, {} bytes",
                r.requests, r.bytes, r.cache_hits, r.cache_bytes
            )?;
        }
        Ok(())
    }
}

/// Read totals of every attached store (a collection's: each of its datasets').
pub fn read_totals(session: &AnnSession) -> ReadTotals {
    let mut t = ReadTotals::default();
    let mut stores: Vec<Arc<AnnDataStore>> = Vec::new();
    for name in session.attached_names() {
        if let Some(store) = session.store(&name) {
            stores.push(store);
        } else if let Some(c) = session.collection(&name) {
            stores.extend(c.members.iter().map(|m| m.store().clone()));
        }
    }
    for store in stores {
        t.requests += store.totals().requests();
        t.bytes += store.totals().bytes();
        t.chunks += store.totals().key_count();
        if let Some(f) = store.fetches() {
            let s = f.snapshot();
            let r = t.remote.get_or_insert_with(Default::default);
            r.requests += s.requests;
            r.bytes += s.bytes;
            r.cache_hits += s.cache_hits;
            r.cache_bytes += s.cache_bytes;
        }
    }
    t
}

/// `annql run`: every statement of every file, then the `-c` commands.
#[allow(clippy::print_stderr)]
pub async fn run_batch(options: &Options, args: RunArgs) -> Result<()> {
    let session = on_cluster(options, open_session(options, &args.datasets)?).await?;
    let mut sources: Vec<(String, Language, String)> = Vec::new();
    let given = args.lang.unwrap_or(Language::Sql);
    for f in &args.files {
        let text = if f.as_os_str() == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        } else {
            std::fs::read_to_string(f).map_err(|e| CliError::File {
                what: "",
                path: f.clone(),
                source: Box::new(e),
            })?
        };
        let lang = args.lang.unwrap_or_else(|| Language::of_file(f));
        sources.push((f.display().to_string(), lang, text));
    }
    sources.extend(
        args.commands
            .iter()
            .map(|c| ("-c".to_string(), given, c.clone())),
    );
    if sources.is_empty() {
        return Err(CliError::Usage(
            "nothing to run: give FILE..., - (stdin) or -c 'SQL'".into(),
        ));
    }
    if matches!(args.format, Format::Parquet | Format::Arrow) && args.output.is_none() {
        return Err(CliError::Usage(
            format!("--format {:?} needs --output FILE", args.format).to_lowercase(),
        ));
    }
    let style = TableStyle {
        max_rows: args.max_rows,
        ..TableStyle::default()
    };
    let window = 2 * std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut results = 0;
    for (file, lang, text) in &sources {
        let statements = split(*lang, text).map_err(|e| {
            let (line, column) = e.position(*lang).unwrap_or((1, 1));
            CliError::Script {
                file: file.clone(),
                line,
                column,
                source: Box::new(e),
            }
        })?;
        for st in statements {
            let started = Instant::now();
            let before = read_totals(&session);
            let located = |e: CliError| {
                let (line, column) = match e.position(*lang) {
                    Some((1, c)) => (st.line, st.column + c - 1),
                    Some((l, c)) => (st.line + l - 1, c),
                    None => (st.line, st.column),
                };
                CliError::Script {
                    file: file.clone(),
                    line,
                    column,
                    source: Box::new(e),
                }
            };
            // Every format streams: windows of batches are written (or, for a table, counted)
            // as the scans produce them, so no result is ever held whole.
            let mut sink: Option<ResultSink> = None;
            let had_result = execute_streaming(
                &session,
                *lang,
                &st.text,
                window,
                |schema, batches, _first| {
                    if sink.is_none() {
                        sink = Some(ResultSink::open(&args, schema, &style, results)?);
                    }
                    match sink.as_mut() {
                        Some(s) => s.write(batches),
                        None => Err(CliError::Usage("no output writer".into())),
                    }
                },
            )
            .await
            .map_err(located)?;
            if let Some(s) = sink.take() {
                s.finish()?;
            }
            results += usize::from(had_result);
            if options.stats {
                let read = read_totals(&session).since(&before);
                eprintln!(
                    "-- {}:{}: {:.3}s, {read}",
                    file,
                    st.line,
                    started.elapsed().as_secs_f64(),
                );
            }
        }
    }
    Ok(())
}

/// Where one result of `annql run` goes: a Parquet/Arrow file, or a text format written to the
/// output file (created by the first result, appended to by the next) or to stdout.
enum ResultSink {
    Binary(Box<BinaryWriter>),
    Text(TextWriter, Box<dyn Write>),
}

impl ResultSink {
    /// The sink of a result of `schema`, after `results` earlier results of the run.
    fn open(
        args: &RunArgs,
        schema: &SchemaRef,
        style: &TableStyle,
        results: usize,
    ) -> Result<Self> {
        if let (Format::Parquet | Format::Arrow, Some(path)) = (args.format, &args.output) {
            if results > 0 {
                return Err(CliError::Usage(format!(
                    "a second result cannot go to the same {:?} file",
                    args.format
                )));
            }
            let writer = BinaryWriter::create(args.format, path, schema)?;
            return Ok(Self::Binary(Box::new(writer)));
        }
        let text = TextWriter::try_new(args.format, schema, style, Stop::Never)?;
        let out: Box<dyn Write> = match &args.output {
            Some(path) if results == 0 => {
                Box::new(std::io::BufWriter::new(std::fs::File::create(path)?))
            }
            Some(path) => Box::new(std::io::BufWriter::new(
                std::fs::OpenOptions::new().append(true).open(path)?,
            )),
            None => Box::new(std::io::stdout().lock()),
        };
        Ok(Self::Text(text, out))
    }

    fn write(&mut self, batches: &[RecordBatch]) -> Result<()> {
        match self {
            Self::Binary(w) => w.write(batches),
            Self::Text(w, out) => w.write(batches, out),
        }
    }

    /// Ends the result (a file's footer, a table's layout) and flushes it.
    fn finish(self) -> Result<()> {
        match self {
            Self::Binary(w) => (*w).finish(),
            Self::Text(w, mut out) => {
                w.finish(&mut out)?;
                out.flush()?;
                Ok(())
            }
        }
    }
}

/// `annql schema`: the tables a store exposes (with columns and types), then its element tree.
pub fn print_schema(options: &Options, spec: &str) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let (name, path) = dataset_spec(spec);
    let started = Instant::now();
    let storage = storage_options(options)?;
    if let Some(collection) =
        annql_engine::collection::CollectionSpec::from_location(&path, &storage)?
    {
        return print_collection(&mut out, &name, &collection, &storage);
    }
    let store = Arc::new(
        AnnDataStore::open_with(&path, &storage_options(options)?)
            .map_err(annql_engine::Error::from)?,
    );
    let opened = started.elapsed();
    let provider = annql_engine::AnnDataSchemaProvider::try_new(store.clone())?;
    let metadata = if store.consolidated() {
        "consolidated"
    } else {
        "walked"
    };
    writeln!(
        out,
        "{name}: {path} (zarr {:?}, {metadata} metadata, opened in {:.1} ms)\n",
        store.format(),
        opened.as_secs_f64() * 1e3
    )?;
    for table in datafusion::catalog::SchemaProvider::table_names(&provider) {
        let Some(t) = provider.provider(&table) else {
            continue;
        };
        let schema = t.table().schema();
        let notes = t.notes();
        let note_of = |column: Option<&str>| {
            notes
                .iter()
                .find(|(c, _)| c.as_deref() == column)
                .map(|(_, note)| format!("cannot be read: {note}"))
        };
        let cols: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| match note_of(Some(f.name())) {
                Some(note) => format!("{} ({note})", quote(f.name())),
                None => format!("{} {}", quote(f.name()), type_name(f.data_type())),
            })
            .collect();
        let table_note = note_of(None).map_or(String::new(), |n| format!("  {n}"));
        writeln!(
            out,
            "{name}.{table}  (/{}){table_note}\n    {}",
            t.table().def().path,
            cols.join(",\n    ")
        )?;
    }
    writeln!(out, "\nelements:")?;
    for e in store.root().walk() {
        writeln!(out, "{}", e.describe())?;
    }
    Ok(())
}

/// `annql schema 'data/*.h5ad'`: the collection's datasets and tables.
fn print_collection(
    out: &mut impl Write,
    name: &str,
    spec: &annql_engine::collection::CollectionSpec,
    storage: &annql_store::StorageOptions,
) -> Result<()> {
    use annql_engine::collection::{Collection, CollectionSchemaProvider};
    let started = Instant::now();
    let progress = Arc::default();
    let collection = Arc::new(Collection::open(spec, storage, &progress, 8)?);
    let provider = CollectionSchemaProvider::try_new(collection.clone())?;
    writeln!(
        out,
        "{name}: a collection of {} datasets, {} cells, {} genes (opened in {:.1} ms)\n",
        collection.members.len(),
        collection.n_obs,
        collection.n_vars(),
        started.elapsed().as_secs_f64() * 1e3
    )?;
    for m in &collection.members {
        writeln!(
            out,
            "  {}  {}  ({} cells, {} genes)",
            m.name, m.location, m.n_obs, m.n_vars
        )?;
    }
    writeln!(out)?;
    for table in datafusion::catalog::SchemaProvider::table_names(&provider) {
        let Some(t) = provider.provider(&table) else {
            continue;
        };
        let schema = datafusion::catalog::TableProvider::schema(t.as_ref());
        let cols: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| format!("{} {}", quote(f.name()), type_name(f.data_type())))
            .collect();
        writeln!(out, "{name}.{table}\n    {}", cols.join(",\n    "))?;
    }
    Ok(())
}

/// An identifier as it must be written in SQL.
pub fn quote(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// A readable type name (categoricals shown as such).
pub fn type_name(t: &arrow::datatypes::DataType) -> String {
    match t {
        arrow::datatypes::DataType::Dictionary(_, v) => format!("categorical({v})"),
        other => other.to_string(),
    }
}

/// `annql explain`.
pub async fn explain(options: &Options, datasets: &[String], sql: &str) -> Result<()> {
    let session = on_cluster(options, open_session(options, datasets)?).await?;
    let outcome = execute(&session, Language::Sql, &format!("EXPLAIN {sql}")).await?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for b in &outcome.batches {
        let kinds = arrow::array::AsArray::as_string::<i32>(b.column(0).as_ref());
        let plans = arrow::array::AsArray::as_string::<i32>(b.column(1).as_ref());
        for i in 0..b.num_rows() {
            writeln!(out, "{}:\n{}\n", kinds.value(i), plans.value(i))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_top_level_semicolons() -> Result<()> {
        let s = split_statements("SELECT 1;\n-- a; comment\nSELECT 'a;b'\n  FROM t;  \n SELECT 3")?;
        assert_eq!(s.len(), 3);
        assert_eq!(s[1].text, "SELECT 'a;b'\n  FROM t");
        assert_eq!((s[1].line, s[1].column), (3, 1));
        assert_eq!((s[2].line, s[2].column), (5, 2));
        Ok(())
    }

    #[test]
    fn syntax_errors_carry_their_position() {
        let unclosed = split_statements("SELECT 1;\nSELECT 'a");
        assert!(
            matches!(unclosed, Err(CliError::Syntax { line: 2, .. })),
            "{unclosed:?}"
        );
        let parser = datafusion::sql::sqlparser::parser::ParserError::ParserError(
            "Expected: x, found: y at Line: 2, Column: 8".into(),
        );
        let e = CliError::of_sql(annql_engine::Error::DataFusion(
            datafusion::error::DataFusionError::SQL(Box::new(parser), None),
        ));
        assert_eq!(e.position(Language::Sql), Some((2, 8)));
        assert!(e.to_string().contains("Expected: x"), "{e}");
        let plain = CliError::of_sql(annql_engine::Error::NotAttached("x".into()));
        assert_eq!(plain.position(Language::Sql), None);
    }

    #[test]
    fn dataset_specs() {
        assert_eq!(
            dataset_spec("a=/x/y.zarr"),
            ("a".into(), "/x/y.zarr".into())
        );
        assert_eq!(
            dataset_spec("/x/My Atlas.zarr.zip"),
            ("my_atlas".into(), "/x/My Atlas.zarr.zip".into())
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("cell_type"), "cell_type");
        assert_eq!(quote("orig.ident"), "\"orig.ident\"");
        assert_eq!(quote("Pre-existing"), "\"Pre-existing\"");
    }
}
