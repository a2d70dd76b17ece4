//! [`AnnSession`]: a DataFusion session that knows how to attach AnnData stores.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use annql_store::{AnnDataStore, StorageOptions};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::CatalogProvider;
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Statement, Value as SqlValue};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::collection::{Collection, CollectionSchemaProvider, CollectionSpec};
use crate::context::QueryContext;
use crate::error::{Error, Result};
use crate::export::WritePolicy;
use crate::export::sql::{execute_copy, parse_copy};
use crate::gene_index::AttachedIndex;
use crate::gene_index::sql::{AttachedSource, GeneIndexStatement, IndexChoice, parse_gene_index};
pub use crate::model::default_name;
use crate::progress::Progress;
use crate::provider::AnnDataSchemaProvider;

/// The builder: settings for a session.
mod builder;
/// Where a session's queries run: here, or on a cluster.
pub mod remote;

pub use builder::SessionBuilder;
use remote::RemoteRunner;

/// Rewrites a parsed statement before DataFusion plans it. This is how a front-end above the
/// engine extends SQL without a second planner: the pipeline language replaces `aql('…')` in
/// `FROM` with the subquery its pipeline lowers to.
#[async_trait::async_trait]
pub trait StatementRewriter: Send + Sync + std::fmt::Debug {
    /// The statement to plan instead of `statement`.
    async fn rewrite(&self, ctx: &SessionContext, statement: DFStatement) -> Result<DFStatement>;
}

/// A query session over attached AnnData stores.
pub struct AnnSession {
    ctx: SessionContext,
    attached: Mutex<BTreeMap<String, Arc<AnnDataStore>>>,
    /// Collections attached, by name (their schemas are in the catalog too).
    collections: Mutex<BTreeMap<String, Arc<CollectionSchemaProvider>>>,
    /// Where each dataset attached by location was opened from, to find its gene index again
    /// after `CREATE GENE INDEX`.
    sources: Mutex<BTreeMap<String, AttachedSource>>,
    progress: Arc<Progress>,
    rewriters: Mutex<Vec<Arc<dyn StatementRewriter>>>,
    storage: StorageOptions,
    write_policy: WritePolicy,
    /// Where queries run when not in this process (a cluster), if anywhere.
    remote: Option<Arc<dyn RemoteRunner>>,
}

impl std::fmt::Debug for AnnSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnSession")
            .field("attached", &self.attached_names())
            .finish()
    }
}

impl AnnSession {
    /// A session with default settings.
    pub fn new() -> Result<Self> {
        SessionBuilder::default().build()
    }

    /// Configure a session.
    pub fn builder() -> SessionBuilder {
        SessionBuilder::default()
    }

    /// The same session with its queries run by `remote` (a cluster), each query that cannot
    /// run there running here, with a warning saying why.
    pub fn with_remote(mut self, remote: Arc<dyn RemoteRunner>) -> Self {
        self.remote = Some(remote);
        self
    }

    /// The context `plan` runs in: the remote one (a cluster's) when the session has one and
    /// the plan can be shipped, else this process's (with a warning saying why, for a plan a
    /// remote session cannot run). Front-ends that plan with [`Self::plan_statement`] execute
    /// through it.
    pub fn execution_context(&self, plan: &LogicalPlan) -> SessionContext {
        if let Some(remote) = &self.remote {
            match remote.why_local(plan) {
                None => return remote.context().clone(),
                Some(why) => log::warn!("running in this process, not on the cluster: {why}"),
            }
        }
        self.ctx.clone()
    }

    /// The DataFusion context, for anything annql does not wrap.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Blocks planned and scanned by this session's queries (for progress bars).
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// Where this session's exports may write.
    pub fn write_policy(&self) -> &WritePolicy {
        &self.write_policy
    }

    /// Names of the attached datasets and collections.
    pub fn attached_names(&self) -> Vec<String> {
        // A poisoned lock (a panic while attaching) leaves no list to give.
        let mut names: Vec<String> = self
            .attached
            .lock()
            .map(|a| a.keys().cloned().collect())
            .unwrap_or_default();
        // Likewise.
        names.extend(
            self.collections
                .lock()
                .map(|c| c.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default(),
        );
        names.sort();
        names
    }

    /// The collection attached under `name`.
    pub fn collection(&self, name: &str) -> Option<Arc<Collection>> {
        // A poisoned lock (a panic while attaching): no collection to give.
        Some(
            self.collections
                .lock()
                .ok()?
                .get(name)?
                .collection()
                .clone(),
        )
    }

    /// The tables of the collection attached under `name`.
    pub fn collection_schema(&self, name: &str) -> Option<Arc<CollectionSchemaProvider>> {
        // A poisoned lock (a panic while attaching): no collection to give.
        self.collections.lock().ok()?.get(name).cloned()
    }

    /// Opens the stores of `spec` (in parallel) and attaches them as one collection, schema
    /// `name` (see [`crate::collection`]).
    pub fn attach_collection(
        &self,
        name: &str,
        spec: &CollectionSpec,
        options: &StorageOptions,
    ) -> Result<()> {
        if self.store(name).is_some() || self.collection(name).is_some() {
            return Err(Error::AlreadyAttached(name.into()));
        }
        let threads = self.ctx.state().config().target_partitions().clamp(4, 16);
        let collection = Arc::new(Collection::open(spec, options, &self.progress, threads)?);
        let schema = CollectionSchemaProvider::try_new(collection)?;
        self.attach_collection_schema(name, Arc::new(schema))
    }

    /// Attaches an already opened collection (a server opens its collections once and attaches
    /// them to every connection's session).
    pub fn attach_collection_schema(
        &self,
        name: &str,
        schema: Arc<CollectionSchemaProvider>,
    ) -> Result<()> {
        if self.store(name).is_some() || self.collection(name).is_some() {
            return Err(Error::AlreadyAttached(name.into()));
        }
        let mut collections = self
            .collections
            .lock()
            .map_err(|_| Error::Internal("session lock poisoned".into()))?;
        self.catalog()?.register_schema(name, schema.clone())?;
        collections.insert(name.to_string(), schema);
        Ok(())
    }

    /// The store attached under `name`.
    pub fn store(&self, name: &str) -> Option<Arc<AnnDataStore>> {
        // A poisoned lock (a panic while attaching): no store to give.
        self.attached.lock().ok()?.get(name).cloned()
    }

    /// Opens the store at `path` (a local path or a URL) and attaches it as schema `name`.
    pub fn attach(&self, name: &str, path: impl AsRef<Path>) -> Result<()> {
        self.attach_with(name, path, &self.storage)
    }

    /// Opens the store at `path`, reaching a remote one with `options`, and attaches it, with the
    /// gene index beside it if there is one (`<path>.annql-index`).
    pub fn attach_with(
        &self,
        name: &str,
        path: impl AsRef<Path>,
        options: &StorageOptions,
    ) -> Result<()> {
        self.attach_indexed(name, path, options, &IndexChoice::Beside)
    }

    /// As [`Self::attach_with`], with the gene index `index` chooses.
    pub fn attach_indexed(
        &self,
        name: &str,
        path: impl AsRef<Path>,
        options: &StorageOptions,
        index: &IndexChoice,
    ) -> Result<()> {
        let location = path.as_ref().to_string_lossy().into_owned();
        if let Some(spec) = CollectionSpec::from_location(&location, options)? {
            return self.attach_collection(name, &spec, options);
        }
        let store = Arc::new(AnnDataStore::open_with(&location, options)?);
        let found = index.find(&location, options)?;
        self.attach_store_with(name, store, found.as_ref())?;
        if let Ok(mut sources) = self.sources.lock() {
            sources.insert(
                name.to_string(),
                AttachedSource {
                    location,
                    options: options.clone(),
                    index: index.clone(),
                },
            );
        }
        Ok(())
    }

    /// Attaches an already opened store.
    pub fn attach_store(&self, name: &str, store: Arc<AnnDataStore>) -> Result<()> {
        self.attach_store_with(name, store, None)
    }

    /// Attaches an already opened store with a gene index.
    pub fn attach_store_with(
        &self,
        name: &str,
        store: Arc<AnnDataStore>,
        index: Option<&AttachedIndex>,
    ) -> Result<()> {
        let mut attached = self
            .attached
            .lock()
            .map_err(|_| Error::Internal("session lock poisoned".into()))?;
        if attached.contains_key(name) || self.collection(name).is_some() {
            return Err(Error::AlreadyAttached(name.into()));
        }
        let schema =
            AnnDataSchemaProvider::with_index(store.clone(), self.progress.clone(), index)?;
        self.catalog()?.register_schema(name, Arc::new(schema))?;
        attached.insert(name.to_string(), store);
        Ok(())
    }

    /// Detaches the dataset `name`.
    pub fn detach(&self, name: &str) -> Result<()> {
        let mut attached = self
            .attached
            .lock()
            .map_err(|_| Error::Internal("session lock poisoned".into()))?;
        let collection = self
            .collections
            .lock()
            .map_err(|_| Error::Internal("session lock poisoned".into()))?
            .remove(name);
        if attached.remove(name).is_none() && collection.is_none() {
            return Err(Error::NotAttached(name.into()));
        }
        if let Ok(mut sources) = self.sources.lock() {
            sources.remove(name);
        }
        self.catalog()?.deregister_schema(name, true)?;
        Ok(())
    }

    fn catalog(&self) -> Result<Arc<dyn CatalogProvider>> {
        self.ctx
            .catalog("annql")
            .ok_or_else(|| Error::Internal("default catalog 'annql' is missing".into()))
    }

    /// Plans one SQL statement: `ATTACH 'path' [AS name]`, `DETACH name` and
    /// `COPY dataset … TO 'out.h5ad'` ([`crate::export::sql`]) are handled here (at once: an export
    /// is written before this returns, and its frame is the one-row summary), everything else by
    /// DataFusion.
    pub async fn sql(&self, sql: &str) -> Result<DataFrame> {
        let is_dataset = |name: &str| self.store(name).is_some() || self.collection(name).is_some();
        if let Some(copy) = parse_copy(sql, is_dataset)? {
            // Boxed: the export's predicates run through this method again.
            let summary = Box::pin(execute_copy(self, copy)).await?;
            return Ok(self.ctx.read_batch(summary)?);
        }
        if let Some(statement) = parse_gene_index(sql)? {
            let summary = Box::pin(self.gene_index_statement(statement)).await?;
            return Ok(self.ctx.read_batch(summary)?);
        }
        if let Some(list) = crate::collection::sources::parse_attach_list(sql)? {
            let (paths, name, mut options) = list;
            let mut spec = CollectionSpec::default();
            spec.take_options(&mut options)?;
            let options = self.storage.with_pairs(options)?;
            spec.members = CollectionSpec::from_list(&paths, &options)?.members;
            self.attach_collection(&name, &spec, &options)?;
            return Ok(self.ctx.read_empty()?);
        }
        if let Some(cmd) = parse_attach(sql)? {
            match cmd {
                Attach::Attach {
                    path,
                    name,
                    mut options,
                } => {
                    if crate::collection::sources::is_collection(&path) {
                        let mut taken = CollectionSpec::default();
                        taken.take_options(&mut options)?;
                        let options = self.storage.with_pairs(options)?;
                        let mut spec = CollectionSpec::from_location(&path, &options)?
                            .ok_or_else(|| Error::Internal(format!("{path} is no collection")))?;
                        // Options given in ATTACH win over the collection file's.
                        if taken.options.var_key.is_some() {
                            spec.options.var_key = taken.options.var_key;
                        }
                        spec.options.skip.extend(taken.options.skip);
                        spec.options.cast.extend(taken.options.cast);
                        self.attach_collection(&name, &spec, &options)?;
                        return Ok(self.ctx.read_empty()?);
                    }
                    let index = IndexChoice::take_from(&mut options);
                    let options = self.storage.with_pairs(options)?;
                    self.attach_indexed(&name, &path, &options, &index)?
                }
                Attach::Detach { name, if_exists } => match self.detach(&name) {
                    Err(Error::NotAttached(_)) if if_exists => {}
                    other => other?,
                },
            }
            return Ok(self.ctx.read_empty()?);
        }
        let state = self.ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state.sql_to_statement(sql, &dialect)?;
        let plan = self.plan_statement(statement).await?;
        Ok(self
            .execution_context(&plan)
            .execute_logical_plan(plan)
            .await?)
    }

    /// Runs `CREATE GENE INDEX` / `DROP GENE INDEX` (see [`crate::gene_index::sql`]): the
    /// dataset is re-attached afterwards, so the next query uses (or stops using) the index.
    async fn gene_index_statement(&self, statement: GeneIndexStatement) -> Result<RecordBatch> {
        let dataset = match &statement {
            GeneIndexStatement::Create { dataset, .. } | GeneIndexStatement::Drop { dataset } => {
                dataset.clone()
            }
        };
        let source = self
            .sources
            .lock()
            .map_err(|_| Error::Internal("session lock poisoned".into()))?
            .get(&dataset)
            .cloned()
            .ok_or_else(|| {
                Error::Statement(format!(
                    "no dataset named '{dataset}' was attached from a path (ATTACH it first)"
                ))
            })?;
        let sidecar = match &source.index {
            IndexChoice::At(at) if !annql_store::object::is_remote(at) => PathBuf::from(at),
            _ => annql_index::default_location(&source.location).ok_or_else(|| {
                Error::Statement(format!(
                    "{} is remote: build its index with `annql index --out`",
                    source.location
                ))
            })?,
        };
        self.write_policy.resolve(&sidecar)?;
        let summary = match statement {
            GeneIndexStatement::Create { table, memory, .. } => {
                let matrix = self.matrix_path(&dataset, &table).await?;
                let options = annql_index::IndexOptions {
                    matrix,
                    memory: memory.unwrap_or(1 << 30),
                    out: Some(sidecar.clone()),
                    in_place: false,
                    cancel: None,
                    window: None,
                };
                let (location, storage) = (source.location.clone(), source.options.clone());
                let progress = self.progress.clone();
                let built = crate::schedule::blocking(move || {
                    annql_index::build(&location, &storage, &options, &|done, total| {
                        progress.set(done, total)
                    })
                })
                .await
                .map_err(|e| Error::Internal(format!("the index build stopped: {e}")))??;
                index_summary(&built)?
            }
            GeneIndexStatement::Drop { .. } => {
                annql_index::drop_index(&sidecar)?;
                let dropped = datafusion::arrow::array::StringArray::from(vec![
                    sidecar.display().to_string(),
                ]);
                RecordBatch::try_from_iter([("dropped", Arc::new(dropped) as _)])
                    .map_err(datafusion::error::DataFusionError::from)?
            }
        };
        self.detach(&dataset)?;
        self.attach_indexed(&dataset, &source.location, &source.options, &source.index)?;
        Ok(summary)
    }

    /// The element path of `dataset.table`'s matrix.
    async fn matrix_path(&self, dataset: &str, table: &str) -> Result<String> {
        let provider = self
            .catalog()?
            .schema(dataset)
            .ok_or_else(|| Error::NotAttached(dataset.into()))?
            .table(table)
            .await?
            .ok_or_else(|| Error::Statement(format!("no table {dataset}.{table}")))?;
        let table_def = provider
            .downcast_ref::<crate::provider::AnnDataTableProvider>()
            .map(|p| p.table().def().clone())
            .ok_or_else(|| Error::Statement(format!("{dataset}.{table} is not a matrix")))?;
        match table_def.kind {
            crate::model::TableKind::Matrix { .. } => Ok(table_def.path),
            _ => Err(Error::Statement(format!(
                "{dataset}.{table} is not a matrix: a gene index is built for x or layers_*"
            ))),
        }
    }

    /// Plans an already parsed statement: the registered rewriters run first, then DataFusion's
    /// planner. Front-ends with a parser of their own (the PostgreSQL-wire server) enter here;
    /// `ATTACH`/`DETACH` are not handled (they change the session, so [`AnnSession::sql`] owns them).
    pub async fn plan_statement(&self, mut statement: DFStatement) -> Result<LogicalPlan> {
        let rewriters = self
            .rewriters
            .lock()
            .map_err(|_| Error::Internal("session lock poisoned".into()))?
            .clone();
        for rewriter in rewriters {
            statement = rewriter.rewrite(&self.ctx, statement).await?;
        }
        Ok(self.ctx.state().statement_to_plan(statement).await?)
    }

    /// Adds a [`StatementRewriter`], applied to every later statement of [`AnnSession::sql`].
    pub fn register_rewriter(&self, rewriter: Arc<dyn StatementRewriter>) -> Result<()> {
        self.rewriters
            .lock()
            .map_err(|_| Error::Internal("session lock poisoned".into()))?
            .push(rewriter);
        Ok(())
    }

    /// Runs one statement and collects its result.
    pub async fn collect(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        Ok(self.sql(sql).await?.collect().await?)
    }
}

/// What selections and exports need of the session: they run their statements through
/// [`AnnSession::sql`], so `COPY` and the registered rewriters apply to them too.
#[async_trait::async_trait]
impl QueryContext for AnnSession {
    fn store(&self, name: &str) -> Option<Arc<AnnDataStore>> {
        AnnSession::store(self, name)
    }

    fn collection(&self, name: &str) -> Option<Arc<CollectionSchemaProvider>> {
        self.collection_schema(name)
    }

    fn resolve_output(&self, out: &Path) -> Result<PathBuf> {
        self.write_policy.resolve(out)
    }

    async fn sql(&self, sql: &str) -> Result<DataFrame> {
        AnnSession::sql(self, sql).await
    }
}

/// An ATTACH or DETACH statement.
#[derive(Debug, PartialEq, Eq)]
enum Attach {
    Attach {
        path: String,
        name: String,
        options: Vec<(String, String)>,
    },
    Detach {
        name: String,
        if_exists: bool,
    },
}

/// Recognises `ATTACH [DATABASE] 'path' [AS name] [(key value, ...)]` and
/// `DETACH [DATABASE] [IF EXISTS] name`.
fn parse_attach(sql: &str) -> Result<Option<Attach>> {
    let first = sql
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    if first != "ATTACH" && first != "DETACH" {
        return Ok(None);
    }
    let mut sql = sql.trim().trim_end_matches(';').trim_end().to_string();
    let mut options = Vec::new();
    if first == "ATTACH" && sql.ends_with(')') {
        let (rest, parsed) = split_attach_options(&sql)?;
        options = parsed;
        sql = rest;
    }
    // `ATTACH 'path'` without `AS`: the generic dialect wants a name, so give it the default one.
    if first == "ATTACH"
        && !sql.to_ascii_uppercase().contains(" AS ")
        && let Some(path) = sql.split('\'').nth(1)
    {
        sql = format!("{sql} AS {}", default_name(path));
    }
    let statements =
        DFParser::parse_sql_with_dialect(&sql, &GenericDialect {}).map_err(Error::DataFusion)?;
    let Some(DFStatement::Statement(stmt)) = statements.front() else {
        return Ok(None);
    };
    Ok(match stmt.as_ref() {
        Statement::AttachDuckDBDatabase {
            database_path,
            database_alias,
            ..
        } => Some(Attach::Attach {
            name: database_alias
                .as_ref()
                .map_or_else(|| default_name(&database_path.value), |a| a.value.clone()),
            path: database_path.value.clone(),
            options,
        }),
        Statement::AttachDatabase {
            schema_name,
            database_file_name,
            ..
        } => {
            let path = match database_file_name {
                SqlExpr::Value(v) => match &v.value {
                    SqlValue::SingleQuotedString(s) | SqlValue::DoubleQuotedString(s) => s.clone(),
                    other => {
                        return Err(Error::Statement(format!(
                            "ATTACH expects a quoted path, got {other}"
                        )));
                    }
                },
                other => {
                    return Err(Error::Statement(format!(
                        "ATTACH expects a quoted path, got {other}"
                    )));
                }
            };
            Some(Attach::Attach {
                path,
                name: schema_name.value.clone(),
                options,
            })
        }
        Statement::DetachDuckDBDatabase {
            database_alias,
            if_exists,
            ..
        } => Some(Attach::Detach {
            name: database_alias.value.clone(),
            if_exists: *if_exists,
        }),
        _ => None,
    })
}

/// Splits the trailing `(key value, key = value, ...)` off an ATTACH statement. Values are quoted
/// strings, numbers or words; keys are words.
fn split_attach_options(sql: &str) -> Result<(String, Vec<(String, String)>)> {
    let bad = |why: &str| Error::Statement(format!("ATTACH options: {why}"));
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| bad(&e.to_string()))?;
    // The options list is the parenthesised group that ends the statement.
    let Some(open) = tokens.iter().rposition(|t| *t == Token::LParen) else {
        return Err(bad("unbalanced parentheses"));
    };
    let inner: Vec<&Token> = tokens[open + 1..tokens.len() - 1]
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let mut options = Vec::new();
    for item in inner.split(|t| **t == Token::Comma) {
        let (key, value) = match item {
            [] => continue,
            [Token::Word(k), v] | [Token::Word(k), Token::Eq, v] => (k, v),
            _ => {
                let text: String = item
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(" ");
                return Err(bad(&format!("expected key 'value', got {text}")));
            }
        };
        let value = match value {
            Token::SingleQuotedString(v) | Token::DoubleQuotedString(v) => v.clone(),
            Token::Number(n, _) => n.clone(),
            Token::Word(w) => w.value.clone(),
            other => return Err(bad(&format!("bad value {other} for {}", key.value))),
        };
        options.push((key.value.to_ascii_lowercase(), value));
    }
    let rest: String = tokens[..open].iter().map(|t| t.to_string()).collect();
    Ok((rest.trim_end().to_string(), options))
}

/// The one-row result of `CREATE GENE INDEX`.
fn index_summary(built: &annql_index::IndexSummary) -> Result<RecordBatch> {
    use datafusion::arrow::array::{ArrayRef, Float64Array, StringArray, UInt64Array};
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "sidecar",
            Arc::new(StringArray::from(vec![built.sidecar.display().to_string()])),
        ),
        (
            "matrix",
            Arc::new(StringArray::from(vec![built.matrix.clone()])),
        ),
        ("cells", Arc::new(UInt64Array::from(vec![built.shape.0]))),
        ("genes", Arc::new(UInt64Array::from(vec![built.shape.1]))),
        ("entries", Arc::new(UInt64Array::from(vec![built.nnz]))),
        ("passes", Arc::new(UInt64Array::from(vec![built.passes]))),
        ("seconds", Arc::new(Float64Array::from(vec![built.seconds]))),
    ];
    Ok(RecordBatch::try_from_iter(columns).map_err(datafusion::error::DataFusionError::from)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_statements() -> Result<()> {
        assert_eq!(
            parse_attach("ATTACH 'data/pbmc.zarr' AS pbmc")?,
            Some(Attach::Attach {
                path: "data/pbmc.zarr".into(),
                name: "pbmc".into(),
                options: vec![],
            })
        );
        assert_eq!(
            parse_attach(
                "ATTACH 's3://bucket/a.zarr' AS a (endpoint 'http://127.0.0.1:9000', region = 'eu', cache off);"
            )?,
            Some(Attach::Attach {
                path: "s3://bucket/a.zarr".into(),
                name: "a".into(),
                options: vec![
                    ("endpoint".into(), "http://127.0.0.1:9000".into()),
                    ("region".into(), "eu".into()),
                    ("cache".into(), "off".into()),
                ],
            })
        );
        assert!(parse_attach("ATTACH 'x.zarr' AS x (endpoint)").is_err());
        assert_eq!(
            parse_attach("attach 'x/Atlas-M.zarr.zip'")?,
            Some(Attach::Attach {
                path: "x/Atlas-M.zarr.zip".into(),
                name: "atlas_m".into(),
                options: vec![],
            })
        );
        assert_eq!(
            parse_attach("DETACH pbmc")?,
            Some(Attach::Detach {
                name: "pbmc".into(),
                if_exists: false
            })
        );
        assert_eq!(parse_attach("SELECT 1")?, None);
        Ok(())
    }
}
