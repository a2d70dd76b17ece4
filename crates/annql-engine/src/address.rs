//! Tables as plain data another process opens again: how annql's plans travel to a cluster's
//! scheduler and executors (`annql-cluster`), which read the same stores by path or URL.
//!
//! A [`TableAddress`] names a store (an absolute path on storage every process shares, or a URL),
//! the gene index its matrices were read through, and a table of its model. A [`StoreCache`]
//! turns addresses back into providers, opening each store once per process.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use annql_store::{AnnDataStore, StorageOptions};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gene_index::sql::IndexChoice;
use crate::progress::Progress;
use crate::provider::{AnnDataSchemaProvider, AnnDataTableProvider};

/// Where a table is: enough for another process to open it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TableAddress {
    /// The store: an absolute local path, or a URL.
    pub location: String,
    /// The gene index the store's matrices were read through (a path or URL), if any.
    pub index: Option<String>,
    /// The table's name in the store's table model (`x`, `obs`, `layers_counts`, …).
    pub table: String,
}

impl AnnDataTableProvider {
    /// This table's address. A relative local path is made absolute, since the process that
    /// opens it again runs elsewhere; it must see the same file at that path (shared storage).
    pub fn address(&self) -> Result<TableAddress> {
        self.table().address()
    }
}

/// A local path made absolute; a URL as it is.
fn absolute(location: &str) -> Result<String> {
    if location.contains("://") {
        return Ok(location.to_string());
    }
    let path = Path::new(location);
    let full = std::fs::canonicalize(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    Ok(full.to_string_lossy().into_owned())
}

/// A store's location and the gene index it is read through.
type StoreKey = (String, Option<String>);

/// Stores opened by address, once each: an executor runs many tasks over the same stores, and
/// opening one reads its metadata.
#[derive(Debug)]
pub struct StoreCache {
    options: StorageOptions,
    progress: Arc<Progress>,
    schemas: Mutex<HashMap<StoreKey, Arc<AnnDataSchemaProvider>>>,
}

impl StoreCache {
    /// A cache opening remote stores with `options` (this process's credentials: a plan carries
    /// none).
    pub fn new(options: StorageOptions) -> Self {
        Self {
            options,
            progress: Arc::default(),
            schemas: Mutex::default(),
        }
    }

    /// The table at `address`, its store opened if this process has not yet.
    pub fn provider(&self, address: &TableAddress) -> Result<Arc<AnnDataTableProvider>> {
        let schema = self.schema(&address.location, address.index.as_deref())?;
        schema
            .provider(&address.table)
            .cloned()
            .ok_or_else(|| Error::NoTable {
                location: address.location.clone(),
                table: address.table.clone(),
            })
    }

    fn schema(&self, location: &str, index: Option<&str>) -> Result<Arc<AnnDataSchemaProvider>> {
        let key = (location.to_string(), index.map(str::to_string));
        let poisoned = || Error::Internal("store cache lock poisoned".into());
        if let Some(s) = self.schemas.lock().map_err(|_| poisoned())?.get(&key) {
            return Ok(s.clone());
        }
        // Opened outside the lock: two tasks may open the same store at once, and the second
        // insert wins, which is harmless (both are the same store).
        let store = Arc::new(AnnDataStore::open_with(location, &self.options)?);
        let choice = match index {
            Some(at) => IndexChoice::At(at.to_string()),
            None => IndexChoice::Off,
        };
        let found = choice.find(location, &self.options)?;
        let schema = Arc::new(AnnDataSchemaProvider::with_index(
            store,
            self.progress.clone(),
            found.as_ref(),
        )?);
        self.schemas
            .lock()
            .map_err(|_| poisoned())?
            .insert(key, schema.clone());
        Ok(schema)
    }
}

impl crate::table::AnnTable {
    /// This table's address (see [`AnnDataTableProvider::address`]).
    pub(crate) fn address(&self) -> Result<TableAddress> {
        Ok(TableAddress {
            location: absolute(self.store.name())?,
            index: self.sidecar_index().map(absolute).transpose()?,
            table: self.def.name.clone(),
        })
    }
}

impl crate::scan::AnnDataScanExec {
    /// The address of the table scanned.
    pub fn address(&self) -> Result<TableAddress> {
        self.table().address()
    }
}

impl crate::fused::source::FusedMatrix {
    /// The address of the matrix folded; a collection's has none (its datasets are not
    /// shipped yet).
    pub fn address(&self) -> Result<TableAddress> {
        match self {
            Self::Table(t) => t.address(),
            Self::Collection(_) => Err(Error::Statement(
                "a collection's aggregation cannot be shipped to other processes".into(),
            )),
        }
    }

    /// The matrix of `provider`'s table.
    pub fn of_provider(provider: &AnnDataTableProvider) -> Self {
        Self::Table(provider.table().clone())
    }
}
