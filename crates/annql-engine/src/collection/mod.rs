//! Collections: many AnnData stores queried in place as one atlas, without ingesting or
//! rewriting anything (docs/collections.md).
//!
//! `ATTACH 'data/*.h5ad' AS atlas` (or a list, or a collection file: [`sources`]) opens the
//! stores in parallel ([`Collection::open`]), numbers their cells one after another (datasets
//! ordered by path), aligns their genes on a key ([`genes`]) and brings their columns together
//! ([`harmonise`]). The collection then has the tables of one store ([`provider`]): `obs` with a
//! `dataset` column, `var` (the union of genes), the matrices and embeddings every dataset has
//! ([`union`]), plus `datasets` and `gene_presence`. Scans read each dataset's own scan and
//! convert its batches ([`scan`]); datasets a predicate rules out are not read; the fused
//! group-by folds every dataset's blocks into one grid through per-dataset gene maps.

/// The union of the datasets' genes.
pub(crate) mod genes;
/// Column types across datasets, and how each dataset's values convert.
pub(crate) mod harmonise;
/// The collection's tables as DataFusion sees them.
pub mod provider;
/// The scan of a collection table.
pub mod scan;
/// Which stores make a collection.
pub mod sources;
/// Tables every dataset has, as their union.
pub mod union;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use annql_store::arrow::array::{ArrayRef, StringArray};
use annql_store::{AnnDataStore, StorageOptions};
use datafusion::catalog::TableProvider;
use datafusion::error::DataFusionError;

use crate::error::{Error, Result};
use crate::gene_index::sql::IndexChoice;
use crate::progress::Progress;
use crate::provider::AnnDataSchemaProvider;
use genes::GeneAxis;
pub use provider::CollectionSchemaProvider;
pub use sources::{CollectionSpec, HarmoniseOptions, MemberSource};

/// One dataset of a collection.
#[derive(Debug)]
pub struct Member {
    /// Its name: the value of the `dataset` column.
    pub name: String,
    /// Where it was opened from.
    pub location: String,
    /// Its tables.
    pub(crate) tables: AnnDataSchemaProvider,
    /// Its first cell's collection `obs_id`.
    pub obs_start: u64,
    /// Its cells.
    pub n_obs: u64,
    /// Its genes.
    pub n_vars: u64,
}

/// An opened collection.
#[derive(Debug)]
pub struct Collection {
    /// The datasets, in the order their cells are numbered.
    pub members: Vec<Member>,
    pub(crate) genes: GeneAxis,
    /// Cells in the collection.
    pub n_obs: u64,
    /// The name of the `dataset` column of `obs`.
    pub dataset_column: String,
    /// The harmonisation options it was attached with.
    pub options: HarmoniseOptions,
}

impl Collection {
    /// Opens the stores of `spec`, on up to `threads` threads, and aligns them.
    pub fn open(
        spec: &CollectionSpec,
        storage: &StorageOptions,
        progress: &Arc<Progress>,
        threads: usize,
    ) -> Result<Self> {
        if spec.members.is_empty() {
            return Err(Error::Statement(
                "a collection needs at least one store".into(),
            ));
        }
        let names = sources::dataset_names(&spec.members);
        let n = spec.members.len();
        let slots: Vec<std::sync::Mutex<Option<Result<Opened>>>> =
            (0..n).map(|_| std::sync::Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let key = spec.options.var_key.as_deref();
        let work = |_: usize| -> datafusion::error::Result<()> {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok(());
                }
                let opened = open_member(&spec.members[i].location, storage, progress, key)
                    .map_err(|e| dataset_error(&names[i], &spec.members[i].location, e));
                if let Ok(mut slot) = slots[i].lock() {
                    *slot = Some(opened);
                }
            }
        };
        crate::schedule::run_workers("opening a collection", threads.clamp(1, n), &work)?;
        let mut members = Vec::with_capacity(n);
        let mut keys = Vec::with_capacity(n);
        let mut obs_start = 0;
        for (i, slot) in slots.into_iter().enumerate() {
            let opened = slot
                // A poisoned slot (its opener panicked) leaves no result: the internal error below.
                .into_inner()
                .ok()
                .flatten()
                .ok_or_else(|| Error::Internal(format!("dataset {i} was not opened")))??;
            keys.push(opened.keys);
            members.push(Member {
                name: names[i].clone(),
                location: spec.members[i].location.clone(),
                tables: opened.tables,
                obs_start,
                n_obs: opened.n_obs,
                n_vars: opened.n_vars,
            });
            obs_start += opened.n_obs;
        }
        let genes = GeneAxis::align(&names, &keys, key.unwrap_or("var_name"))?;
        let schemas: Vec<_> = members
            .iter()
            .map(|m| m.table("obs").map(|t| t.schema()))
            .collect::<Result<_>>()?;
        Ok(Self {
            dataset_column: harmonise::dataset_column_name(&schemas),
            members,
            genes,
            n_obs: obs_start,
            options: spec.options.clone(),
        })
    }

    /// Genes in the collection.
    pub fn n_vars(&self) -> u64 {
        self.genes.len
    }

    /// The datasets' names as an array: the dictionary of the `dataset` column.
    pub(crate) fn dataset_values(&self) -> ArrayRef {
        Arc::new(StringArray::from_iter_values(
            self.members.iter().map(|m| m.name.as_str()),
        ))
    }

    /// An error of dataset `m`'s, naming it.
    pub(crate) fn in_dataset(&self, m: usize, e: DataFusionError) -> DataFusionError {
        let member = &self.members[m];
        DataFusionError::Context(
            format!("dataset '{}' ({})", member.name, member.location),
            Box::new(e),
        )
    }
}

impl Member {
    /// Its store.
    pub fn store(&self) -> &Arc<AnnDataStore> {
        self.tables.store()
    }

    /// Its table `name`.
    pub(crate) fn table(&self, name: &str) -> Result<Arc<crate::provider::AnnDataTableProvider>> {
        self.tables
            .provider(name)
            .cloned()
            .ok_or_else(|| Error::Statement(format!("dataset '{}' has no table {name}", self.name)))
    }
}

/// A dataset opened: its tables, sizes and gene keys.
struct Opened {
    tables: AnnDataSchemaProvider,
    n_obs: u64,
    n_vars: u64,
    keys: Vec<String>,
}

fn open_member(
    location: &str,
    storage: &StorageOptions,
    progress: &Arc<Progress>,
    key: Option<&str>,
) -> Result<Opened> {
    let store = Arc::new(AnnDataStore::open_with(location, storage)?);
    let index = IndexChoice::Beside.find(location, storage)?;
    let tables = AnnDataSchemaProvider::with_index(store, progress.clone(), index.as_ref())?;
    let frame = |name: &str| {
        tables.provider(name).cloned().ok_or_else(|| {
            Error::Statement(format!(
                "{location} has no {name}: a collection's datasets are AnnData stores with obs \
                 and var"
            ))
        })
    };
    let (obs, var) = (frame("obs")?, frame("var")?);
    if let Some(e) = obs.table().refusal([]).or_else(|| var.table().refusal([])) {
        return Err(e);
    }
    let keys = genes::read_keys(tables.store().name(), var.table(), key)?;
    Ok(Opened {
        n_obs: obs.table().major_len,
        n_vars: var.table().major_len,
        keys,
        tables,
    })
}

fn dataset_error(name: &str, location: &str, e: Error) -> Error {
    Error::Dataset {
        dataset: name.to_string(),
        location: location.to_string(),
        source: Box::new(e),
    }
}
