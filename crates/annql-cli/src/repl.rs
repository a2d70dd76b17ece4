//! The interactive REPL: multi-line statements ending in `;`, persistent history, completion of
//! keywords, datasets, tables, columns (quoted when needed) and functions, psql/duckdb-style
//! meta-commands, Ctrl-C to cancel a running query, Ctrl-D to leave.

use std::borrow::Cow;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use annql_engine::AnnSession;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Editor, Helper};

use crate::args::{Format, Language, Options};
use crate::error::{CliError, Result};
use crate::output::{Stop, TableStyle, TextWriter};
use crate::script::{
    execute_streaming, on_cluster, open_session, quote, read_totals, split, type_name,
};

/// The help shown by `\?`.
pub const HELP: &str = "\
Statements end with ';' and may span lines. Ctrl-C cancels a running query, Ctrl-D leaves.
  \\d, .tables          list datasets and their tables
  \\d TABLE             columns of a table (atlas.obs), with types and category counts
  \\timing              toggle printing each statement's time
  \\x                   toggle expanded (one field per line) display
  .maxrows N           rows a table shows (default 40): the first and last halves, the rest
                       counted without being kept
  .mode FORMAT         table | csv | json | ndjson | markdown
  \\o FILE, \\o          send results to FILE / back to the screen
  \\i FILE              run the statements in FILE
  \\stats               toggle printing chunk reads (requests, bytes, chunks) per statement
  \\lang [sql|aql]      switch between SQL and pipelines (`aql>`: a pipeline ends at the end of
                       a line unless the line ends in | , ( [ or =, or at ';')
  \\?, .help            this help
  \\q, .quit, .exit     leave
SQL: ATTACH 'path/to/store.zarr' AS name;  DETACH name;  SELECT ... FROM name.obs / name.x / name.var ...
Pipelines: from name | where tissue == \"lung\" | group cell_type | agg n = count(), cd3e = mean(X[\"CD3E\"])
  (or from SQL: SELECT * FROM aql('from name | ...'))";

/// Words offered by completion, refreshed after each statement (ATTACH changes them).
#[derive(Default)]
struct Words {
    keywords: Vec<String>,
    functions: Vec<String>,
    tables: Vec<String>,
    columns: Vec<String>,
}

struct SqlHelper {
    words: Arc<Mutex<Words>>,
    /// Pipelines instead of SQL (`\lang aql`): they end at the end of a line.
    aql: Arc<std::sync::atomic::AtomicBool>,
}

impl Completer for SqlHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start = line[..pos]
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_alphanumeric() || *c == '_' || *c == '.' || *c == '"'))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let word = &line[start..pos];
        if word.is_empty() {
            return Ok((pos, Vec::new()));
        }
        let lower = word.trim_start_matches('"').to_lowercase();
        let words = self.words.lock().map_err(|_| ReadlineError::Interrupted)?;
        let upper = word.chars().next().is_some_and(char::is_uppercase);
        let mut out: Vec<Pair> = Vec::new();
        let mut push = |display: &str, replacement: String| {
            if !out.iter().any(|p| p.replacement == replacement) {
                out.push(Pair {
                    display: display.to_string(),
                    replacement,
                });
            }
        };
        for t in words.tables.iter().chain(&words.columns) {
            if t.trim_start_matches('"').to_lowercase().starts_with(&lower) {
                push(t, t.clone());
            }
        }
        for k in &words.keywords {
            if k.to_lowercase().starts_with(&lower) {
                push(k, if upper { k.clone() } else { k.to_lowercase() });
            }
        }
        for f in &words.functions {
            if f.starts_with(&lower) {
                push(f, format!("{f}("));
            }
        }
        out.truncate(200);
        Ok((start, out))
    }
}

impl Hinter for SqlHelper {
    type Hint = String;
}

impl Highlighter for SqlHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        _default: bool,
    ) -> Cow<'b, str> {
        Cow::Borrowed(prompt)
    }
}

impl Validator for SqlHelper {
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        let input = ctx.input().trim();
        if self.aql.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(if pipeline_complete(input) {
                ValidationResult::Valid(None)
            } else {
                ValidationResult::Incomplete
            });
        }
        let complete = input.is_empty()
            || input.starts_with('\\')
            || input.starts_with('.')
            || input.ends_with(';')
            // A trailing line comment after the ';' also completes the statement.
            || input.lines().last().is_some_and(|l| l.trim_start().starts_with("--") && input.contains(';'));
        Ok(if complete {
            ValidationResult::Valid(None)
        } else {
            ValidationResult::Incomplete
        })
    }
}

impl Helper for SqlHelper {}

/// Whether a pipeline typed at `aql>` is complete: it is, unless its last line ends with a
/// stage separator, a comma, an open bracket or `=`, or only `let` bindings have been given.
fn pipeline_complete(input: &str) -> bool {
    let last = input.chars().last();
    if input.is_empty() || input.starts_with('\\') || last == Some(';') {
        return true;
    }
    let open = input.matches(['(', '[']).count() > input.matches([')', ']']).count();
    let only_lets = input
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .all(|l| l.starts_with("let "));
    !(open || only_lets || matches!(last, Some('|' | ',' | '(' | '[' | '=')))
}

/// REPL state that meta-commands change.
struct State {
    session: AnnSession,
    lang: Language,
    aql: Arc<std::sync::atomic::AtomicBool>,
    style: TableStyle,
    format: Format,
    timing: bool,
    stats: bool,
    output: Option<PathBuf>,
}

/// Runs the REPL until `\q` or Ctrl-D.
#[allow(clippy::print_stdout, clippy::print_stderr)]
pub async fn run(options: &Options, datasets: &[String]) -> Result<()> {
    let session = on_cluster(options, open_session(options, datasets)?).await?;
    let words = Arc::new(Mutex::new(Words::default()));
    let aql = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut state = State {
        session,
        lang: Language::Sql,
        aql: aql.clone(),
        style: TableStyle::default(),
        format: Format::Table,
        timing: false,
        stats: options.stats,
        output: None,
    };
    refresh_words(&state.session, &words);
    let mut editor: Editor<SqlHelper, DefaultHistory> =
        Editor::new().map_err(|source| CliError::Editor {
            what: "cannot start the line editor",
            source,
        })?;
    editor.set_helper(Some(SqlHelper {
        words: words.clone(),
        aql,
    }));
    let history = history_path();
    if let Some(h) = &history {
        // No history yet (the first run) or none readable: the REPL starts without one.
        let _ = editor.load_history(h);
    }
    println!(
        "annql {} — attached: {}. Type \\? for help, \\q to quit.",
        env!("CARGO_PKG_VERSION"),
        state.session.attached_names().join(", ")
    );
    loop {
        let prompt = match state.lang {
            Language::Sql => "annql> ",
            Language::Aql => "aql> ",
        };
        match editor.readline(prompt) {
            Ok(line) => {
                let input = line.trim();
                if input.is_empty() {
                    continue;
                }
                // Fails only for an entry the history ignores (a repeat): nothing lost.
                let _ = editor.add_history_entry(input);
                if input.starts_with('\\') || input.starts_with('.') {
                    match meta(&mut state, input).await {
                        Ok(true) => break,
                        Ok(false) => {}
                        Err(e) => eprintln!("Error: {e}"),
                    }
                } else {
                    run_text(&mut state, input).await;
                }
                refresh_words(&state.session, &words);
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(source) => {
                return Err(CliError::Editor {
                    what: "line editor",
                    source,
                });
            }
        }
    }
    if let Some(h) = &history
        && let Err(e) = editor.save_history(h)
    {
        // The session's work is done; say that its history was not kept, but do not fail.
        eprintln!("annql: history not saved to {}: {e}", h.display());
    }
    Ok(())
}

fn history_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ANNQL_HISTORY") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".annql_history"))
}

/// Runs every statement in `text`, reporting errors with a caret under the position.
#[allow(clippy::print_stdout, clippy::print_stderr)]
async fn run_text(state: &mut State, text: &str) {
    let statements = match split(state.lang, text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("Error: {e}");
            return;
        }
    };
    for st in statements {
        let started = Instant::now();
        let before = read_totals(&state.session);
        match emit(state, &st.text).await {
            Ok(()) => {
                if state.timing {
                    println!("Time: {:.3} s", started.elapsed().as_secs_f64());
                }
                if state.stats {
                    let read = read_totals(&state.session).since(&before);
                    println!("Reads: {read}");
                }
            }
            Err(CliError::Cancelled) => {
                // The output may stop mid-line.
                eprintln!("\nCancelled.");
                return;
            }
            Err(e) => {
                let message = e.to_string();
                eprintln!("Error: {message}");
                // Pipeline diagnostics draw their own carets.
                if let Some((line, col)) = e
                    .position(state.lang)
                    .filter(|_| state.lang == Language::Sql)
                    && let Some(text) = st.text.lines().nth(line.saturating_sub(1))
                {
                    eprintln!("  {text}\n  {}^", " ".repeat(col.saturating_sub(1)));
                }
                if let Some(hint) = suggest(&state.session, &message) {
                    eprintln!("Hint: did you mean {hint}?");
                }
                return;
            }
        }
    }
}

/// Runs one statement and prints its result (to the screen or the `\o` file) as the batches
/// arrive: a table shows its first and last rows and counts the rest without keeping them, the
/// other formats are written batch by batch. Ctrl-C stops the query and the printing alike.
async fn emit(state: &State, text: &str) -> Result<()> {
    let stop = Stop::on_ctrl_c();
    let mut out: Box<dyn Write> = match &state.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        )),
        None => Box::new(std::io::stdout()),
    };
    let mut writer: Option<TextWriter> = None;
    let ran = execute_streaming(&state.session, state.lang, text, 1, |schema, batches, _| {
        let w = match &mut writer {
            Some(w) => w,
            None => writer.insert(TextWriter::try_new(
                state.format,
                schema,
                &state.style,
                stop,
            )?),
        };
        w.write(batches, &mut out)
    })
    .await;
    let finished = match (ran, writer) {
        (Ok(_), Some(w)) => w.finish(&mut out),
        (ran, _) => ran.map(drop),
    };
    // What was written before an error or a Ctrl-C still reaches the screen.
    out.flush()?;
    finished
}

/// For "table 'annql.pbmc.obz' not found": the closest attached table name.
fn suggest(session: &AnnSession, message: &str) -> Option<String> {
    let start = message.find("table '")? + 7;
    let end = start + message[start..].find('\'')?;
    let missing = message[start..end].trim_start_matches("annql.");
    all_tables(session)
        .into_iter()
        .map(|t| (strsim::jaro_winkler(&t, missing), t))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, t)| t)
}

fn all_tables(session: &AnnSession) -> Vec<String> {
    let mut out = Vec::new();
    for name in session.attached_names() {
        if let Some(schema) = session
            .context()
            .catalog("annql")
            .and_then(|c| c.schema(&name))
        {
            out.extend(
                schema
                    .table_names()
                    .into_iter()
                    .map(|t| format!("{name}.{t}")),
            );
        }
    }
    out
}

fn refresh_words(session: &AnnSession, words: &Arc<Mutex<Words>>) {
    let state = session.context().state();
    let mut functions: Vec<String> = state
        .scalar_functions()
        .keys()
        .chain(state.aggregate_functions().keys())
        .cloned()
        .collect();
    functions.sort();
    let mut columns = Vec::new();
    for name in session.attached_names() {
        let schema = session
            .context()
            .catalog("annql")
            .and_then(|c| c.schema(&name));
        let Some(schema) = schema else { continue };
        let Some(p) = schema.downcast_ref::<annql_engine::AnnDataSchemaProvider>() else {
            continue;
        };
        for t in schema.table_names() {
            if let Some(t) = p.provider(&t) {
                columns.extend(t.table().schema().fields().iter().map(|f| quote(f.name())));
            }
        }
    }
    columns.sort();
    columns.dedup();
    let mut tables = all_tables(session);
    tables.extend(session.attached_names());
    if let Ok(mut w) = words.lock() {
        w.keywords = datafusion::sql::sqlparser::keywords::ALL_KEYWORDS
            .iter()
            .map(|k| k.to_string())
            .collect();
        w.functions = functions;
        w.tables = tables;
        w.columns = columns;
    }
}

/// Handles a meta-command; `Ok(true)` means quit.
#[allow(clippy::print_stdout)]
async fn meta(state: &mut State, input: &str) -> Result<bool> {
    let mut parts = input.trim_end_matches(';').split_whitespace();
    let cmd = parts.next().unwrap_or("");
    let arg = parts.collect::<Vec<_>>().join(" ");
    match cmd {
        "\\q" | ".quit" | ".exit" => return Ok(true),
        "\\?" | ".help" | "\\h" => println!("{HELP}"),
        "\\d" | ".tables" | ".schema" if arg.is_empty() => {
            for name in state.session.attached_names() {
                let store = state.session.store(&name);
                // A name just listed is attached; a store detached meanwhile shows no path.
                let path = match (store, state.session.collection(&name)) {
                    (Some(s), _) => s.name().to_string(),
                    (None, Some(c)) => format!("a collection of {} datasets", c.members.len()),
                    (None, None) => String::new(),
                };
                println!("{name}  ({path})");
                for t in all_tables(&state.session)
                    .iter()
                    .filter(|t| t.starts_with(&format!("{name}.")))
                {
                    println!("    {t}");
                }
            }
        }
        "\\d" | ".schema" => describe(state, &arg)?,
        "\\lang" => {
            state.lang = match arg.as_str() {
                "" if state.lang == Language::Sql => Language::Aql,
                "" => Language::Sql,
                "sql" => Language::Sql,
                "aql" => Language::Aql,
                other => {
                    return Err(CliError::Usage(format!("\\lang {other}: use sql or aql")));
                }
            };
            state.aql.store(
                state.lang == Language::Aql,
                std::sync::atomic::Ordering::Relaxed,
            );
            println!(
                "Language is {}.",
                match state.lang {
                    Language::Sql => "SQL",
                    Language::Aql => "aql (pipelines)",
                }
            );
        }
        "\\timing" => {
            state.timing = !state.timing;
            println!("Timing is {}.", if state.timing { "on" } else { "off" });
        }
        "\\stats" => {
            state.stats = !state.stats;
            println!(
                "Read statistics are {}.",
                if state.stats { "on" } else { "off" }
            );
        }
        "\\x" => {
            state.style.expanded = !state.style.expanded;
            println!(
                "Expanded display is {}.",
                if state.style.expanded { "on" } else { "off" }
            );
        }
        ".maxrows" => {
            state.style.max_rows = arg
                .parse()
                .map_err(|_| CliError::Usage(format!(".maxrows {arg}: give a number of rows")))?;
            println!("Tables show at most {} rows.", state.style.max_rows);
        }
        ".mode" => {
            state.format = match arg.as_str() {
                "table" | "box" => Format::Table,
                "csv" => Format::Csv,
                "json" => Format::Json,
                "ndjson" | "jsonl" => Format::Ndjson,
                "markdown" | "md" => Format::Markdown,
                other => {
                    return Err(CliError::Usage(format!(
                        ".mode {other}: use table, csv, json, ndjson or markdown"
                    )));
                }
            };
        }
        "\\o" | ".output" => {
            state.output = if arg.is_empty() {
                None
            } else {
                Some(PathBuf::from(arg))
            };
        }
        "\\i" | ".read" => {
            let text = std::fs::read_to_string(&arg).map_err(|e| CliError::File {
                what: "",
                path: PathBuf::from(&arg),
                source: Box::new(e),
            })?;
            // A `.aql` file holds pipelines whatever the current language.
            let current = state.lang;
            if Language::of_file(std::path::Path::new(&arg)) == Language::Aql {
                state.lang = Language::Aql;
            }
            Box::pin(run_text(state, &text)).await;
            state.lang = current;
        }
        other => {
            return Err(CliError::Usage(format!(
                "unknown command {other}; \\? lists them"
            )));
        }
    }
    Ok(false)
}

/// `\d atlas.obs`: columns, types, and for categoricals how many categories.
#[allow(clippy::print_stdout)]
fn describe(state: &State, name: &str) -> Result<()> {
    let (schema_name, table) = name
        .split_once('.')
        .ok_or_else(|| CliError::Usage(format!("\\d {name}: give DATASET.TABLE, e.g. pbmc.obs")))?;
    let schema = state
        .session
        .context()
        .catalog("annql")
        .and_then(|c| c.schema(schema_name))
        .ok_or_else(|| CliError::Usage(format!("no dataset named {schema_name}")))?;
    if let Some(c) = schema.downcast_ref::<annql_engine::collection::CollectionSchemaProvider>() {
        let t = c
            .provider(table)
            .ok_or_else(|| CliError::Usage(format!("no table {name}")))?;
        println!(
            "{name}  (a collection of {} datasets)",
            c.collection().members.len()
        );
        for f in datafusion::catalog::TableProvider::schema(t.as_ref()).fields() {
            println!("  {:<30} {}", quote(f.name()), type_name(f.data_type()));
        }
        return Ok(());
    }
    let provider = schema
        .downcast_ref::<annql_engine::AnnDataSchemaProvider>()
        .and_then(|p| p.provider(table).cloned())
        .ok_or_else(|| CliError::Usage(format!("no table {name}")))?;
    println!("{name}  (element /{})", provider.table().def().path);
    let notes = provider.notes();
    let note_of = |column: Option<&str>| {
        notes
            .iter()
            .find(|(c, _)| c.as_deref() == column)
            .map(|(_, note)| format!("cannot be read: {note}"))
    };
    if let Some(note) = note_of(None) {
        println!("  {note}");
    }
    for f in provider.table().schema().fields() {
        if let Some(note) = note_of(Some(f.name())) {
            println!("  {:<30} {note}", quote(f.name()));
            continue;
        }
        let extra = match f.data_type() {
            arrow::datatypes::DataType::Dictionary(_, _) => {
                let ordered = if f
                    .metadata()
                    .get("annql.ordered")
                    .is_some_and(|o| o == "true")
                {
                    ", ordered"
                } else {
                    ""
                };
                match provider.category_count(f.name()) {
                    Ok(Some(n)) => format!("  ({n} categories{ordered})"),
                    Ok(None) => String::new(),
                    Err(e) => format!("  (categories cannot be read: {e})"),
                }
            }
            _ => String::new(),
        };
        println!(
            "  {:<30} {}{}{extra}",
            quote(f.name()),
            type_name(f.data_type()),
            if f.is_nullable() { "" } else { " NOT NULL" }
        );
    }
    Ok(())
}
