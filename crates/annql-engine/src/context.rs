//! [`QueryContext`]: what the engine's work on top of SQL — the cells and genes a predicate keeps
//! ([`crate::select`]), exports ([`crate::export`]) — needs of the session it runs in: its
//! attached stores, where it may write, and a way to run a statement.
//!
//! A narrow trait rather than the session itself, so that selections and exports sit below
//! [`crate::session`] (which calls down into them for `COPY`) instead of beside it, as DataFusion's
//! `catalog::Session` lets table providers see a session without depending on it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use annql_store::AnnDataStore;
use datafusion::arrow::array::RecordBatch;
use datafusion::dataframe::DataFrame;

use crate::collection::CollectionSchemaProvider;
use crate::error::Result;

/// The session, as selections and exports see it ([`AnnSession`](crate::AnnSession) is one).
#[async_trait::async_trait]
pub trait QueryContext: Send + Sync {
    /// The store attached under `name`.
    fn store(&self, name: &str) -> Option<Arc<AnnDataStore>>;

    /// The collection attached under `name`.
    fn collection(&self, _name: &str) -> Option<Arc<CollectionSchemaProvider>> {
        None
    }

    /// The path an output `out` is written at under the session's write policy, or why it may
    /// not be.
    fn resolve_output(&self, out: &Path) -> Result<PathBuf>;

    /// Plans one SQL statement, as the session's own `sql` does.
    async fn sql(&self, sql: &str) -> Result<DataFrame>;

    /// Runs one statement and collects its result.
    async fn collect(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        Ok(self.sql(sql).await?.collect().await?)
    }
}
