//! Gene indexes found beside attached stores ([`annql_index`]): a sidecar's CSC copy of a matrix
//! stands in for the matrix's in-store copy, but only once it is known to match the source as it
//! is now ([`SidecarCopy::usable`]): a stale copy is ignored with a warning, never read.

/// `CREATE GENE INDEX`, `DROP GENE INDEX` and the `index` option of `ATTACH`.
pub mod sql;

use std::sync::{Arc, OnceLock};

use annql_index::{GeneIndex, IndexedCopy};
use annql_store::AnnDataStore;

/// The sidecar found for an attached store, with where the store was opened from.
#[derive(Debug, Clone)]
pub struct AttachedIndex {
    /// The sidecar.
    pub index: GeneIndex,
    /// The source's location (path or URL), which the sidecar's records were taken from.
    pub source: String,
}

/// A sidecar copy of one matrix, checked against its source the first time a plan would use it.
#[derive(Debug)]
pub(crate) struct SidecarCopy {
    copy: IndexedCopy,
    source: Arc<AnnDataStore>,
    location: String,
    verdict: OnceLock<bool>,
}

impl SidecarCopy {
    /// The copy of `matrix` in `attached`'s sidecar, if it has one.
    pub(crate) fn find(
        attached: &AttachedIndex,
        source: &Arc<AnnDataStore>,
        matrix: &str,
    ) -> Option<Arc<SidecarCopy>> {
        match attached.index.copy_of(matrix) {
            Ok(Some(copy)) => Some(Arc::new(SidecarCopy {
                copy,
                source: source.clone(),
                location: attached.source.clone(),
                verdict: OnceLock::new(),
            })),
            Ok(None) => None,
            Err(e) => {
                // A record that cannot be read makes the copy unusable; the matrix is still read
                // from the source, so the warning is all the user needs.
                log::warn!("ignoring the gene index {}: {e}", attached.index.location());
                None
            }
        }
    }

    /// The sidecar's store.
    pub(crate) fn store(&self) -> &Arc<AnnDataStore> {
        &self.copy.store
    }

    /// The copy's path in the sidecar.
    pub(crate) fn path(&self) -> &str {
        &self.copy.path
    }

    /// Where the sidecar (the gene index) is.
    pub(crate) fn index_location(&self) -> &str {
        &self.copy.location
    }

    /// Where the copy is, for `EXPLAIN`: `<sidecar>:/X`.
    pub(crate) fn describe(&self) -> String {
        format!("{}:/{}", self.copy.location, self.copy.path)
    }

    /// Whether the copy matches its source (checked once, with a warning when it does not).
    pub(crate) fn usable(&self) -> bool {
        *self.verdict.get_or_init(|| {
            match self.copy.stale(&self.source, &self.location) {
                Ok(None) => true,
                Ok(Some(why)) => {
                    log::warn!(
                        "ignoring the gene index {} (stale: {why}); rebuild it with `annql index {}`",
                        self.describe(),
                        self.location
                    );
                    false
                }
                Err(e) => {
                    // Not knowing whether it matches is reason enough not to use it: the
                    // source's own rows answer the query either way.
                    log::warn!("ignoring the gene index {}: cannot check it: {e}", self.describe());
                    false
                }
            }
        })
    }
}
