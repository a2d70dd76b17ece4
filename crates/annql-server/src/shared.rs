//! What every connection of a server shares: the opened stores, the SQL parser, the admission
//! policy, the cancel registry and the runtime statements execute on; and how a connection's
//! session is opened over them.
//!
//! Apart from the listener ([`crate::server`]), which makes it, and from the connections, which
//! use it, so that neither needs the other to reach it.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use annql_engine::AnnSession;
use annql_engine::collection::CollectionSchemaProvider;
use annql_engine::export::WritePolicy;
use annql_engine::gene_index::AttachedIndex;
use annql_store::AnnDataStore;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

use crate::activity::Cancels;
use crate::auth::Admission;
use crate::catalog::{self, Identity};
use crate::config::ServerConfig;
use crate::queries::QueryRuntime;
use crate::settings::Settings;

/// What every connection of a server shares.
pub struct Shared {
    pub(crate) config: ServerConfig,
    /// The datasets: name, opened store, and the gene index found beside it.
    pub(crate) stores: Vec<(String, Arc<AnnDataStore>, Option<AttachedIndex>)>,
    /// The collections (a glob or a collection file), opened once.
    pub(crate) collections: Vec<(String, Arc<CollectionSchemaProvider>)>,
    pub(crate) parser: PostgresCompatibilityParser,
    /// Who may connect (what a connection's startup is given).
    pub(crate) admission: Admission,
    /// Where CancelRequests are routed.
    pub(crate) cancels: Arc<Cancels>,
    /// Connections open now.
    pub(crate) connections: AtomicUsize,
    pub(crate) queries: QueryRuntime,
    /// Where sessions may write: nowhere, or inside `config.writable_dir`.
    pub(crate) write_policy: WritePolicy,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field(
                "datasets",
                &self.stores.iter().map(|s| &s.0).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Shared {
    /// A session for one connection: the language installed, the datasets attached,
    /// PostgreSQL's catalogs installed.
    pub(crate) fn open_session(&self, who: &Identity) -> annql_engine::Result<AnnSession> {
        let mut builder = AnnSession::builder()
            .with_information_schema(false)
            .with_write_policy(self.write_policy.clone());
        if let Some(limit) = self.config.memory_limit {
            builder = builder.with_memory_limit(limit);
        }
        if let Some(threads) = self.config.threads {
            builder = builder.with_threads(threads);
        }
        let session = annql_lang::session(builder)?;
        for (name, store, index) in &self.stores {
            session.attach_store_with(name, store.clone(), index.as_ref())?;
        }
        for (name, collection) in &self.collections {
            session.attach_collection_schema(name, collection.clone())?;
        }
        catalog::install(session.context(), who, &Settings::for_server(&self.config))?;
        Ok(match &self.config.cluster {
            Some(cluster) => {
                let runner = cluster.runner(&session)?;
                session.with_remote(runner)
            }
            None => session,
        })
    }
}

/// Unhooks the schemas that point back at the session's own catalog list, so the session can
/// be freed. `pg_catalog` (datafusion-pg-catalog's provider) and `information_schema` each hold
/// the catalog list they are registered in: an `Arc` cycle that kept every session of every
/// client that ever connected (~5 MB each, its pg_catalog tables included) until the server
/// stopped.
pub(crate) fn release_session(session: &AnnSession) {
    let Some(catalog) = session.context().catalog(crate::CATALOG) else {
        return;
    };
    for schema in ["pg_catalog", "information_schema"] {
        // The memory catalog's deregister fails only for a non-empty schema without `cascade`;
        // with it, nothing is left to report: the session is being dropped either way.
        if let Err(e) = catalog.deregister_schema(schema, true) {
            log::warn!("releasing a session's {schema}: {e}");
        }
    }
}
