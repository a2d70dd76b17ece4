//! Matrices handed to Rust: the cells and genes of an attached dataset selected by SQL predicates,
//! read from X, a layer or raw.X as a `sprs` matrix, an `ndarray` array, or row blocks for
//! out-of-core algorithms.
//!
//! ```no_run
//! # async fn demo(session: &annql_engine::AnnSession) -> annql_engine::Result<()> {
//! let counts = session
//!     .dataset("pbmc")?
//!     .obs("bulk_labels = 'CD14+ Monocyte'")
//!     .layer("counts")
//!     .to_csmat::<f32>()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Predicates are resolved to row ids first ([`select_rows`]); then only the selected rows (CSR,
//! dense) or columns (CSC) of the matrix are read. The element type is the stored one: asking for
//! another is an error naming the stored dtype, never a conversion.

use std::sync::Arc;

use annql_store::{AnnDataStore, Encoding};
use ndarray::Array2;
use sprs::CsMat;

use crate::error::{Error, Result};
use crate::select::{SelectAxis, select_rows_in};
use crate::session::AnnSession;

mod read;

pub use read::MatrixElement;
use read::{Compressed, Source, VarMap, read_columns, read_rows};

/// Which matrix of the dataset is read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Matrix {
    X,
    Layer(String),
    Raw,
}

/// A selection of an attached dataset's cells and genes in one of its matrices, materialised on
/// demand. Built by [`AnnSession::dataset`]; the builder methods narrow it.
#[derive(Debug, Clone)]
pub struct Dataset<'s> {
    session: &'s AnnSession,
    name: String,
    store: Arc<AnnDataStore>,
    obs: Option<String>,
    var: Option<String>,
    matrix: Matrix,
    csc: bool,
}

/// The cells and genes a [`Dataset`] keeps, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// Selected cells (`obs_id`), increasing.
    pub obs: Vec<u64>,
    /// Selected genes (`var_id`, of raw's var for raw.X), increasing.
    pub var: Vec<u64>,
}

/// A block of consecutive selected cells: their ids and their rows of the matrix (CSR, the
/// selected genes as columns).
#[derive(Debug, Clone)]
pub struct RowBlock<T> {
    /// The cells' `obs_id`s, increasing; row `i` of `matrix` is cell `obs_ids[i]`.
    pub obs_ids: Vec<u64>,
    /// The block's rows.
    pub matrix: CsMat<T>,
}

impl AnnSession {
    /// The attached dataset `name`, all cells and genes of X until narrowed.
    pub fn dataset(&self, name: &str) -> Result<Dataset<'_>> {
        let store = self
            .store(name)
            .ok_or_else(|| Error::NotAttached(name.into()))?;
        if store.root().encoding != Encoding::AnnData {
            return Err(Error::Matrix {
                dataset: name.into(),
                reason: format!(
                    "its root is a {} store, not an AnnData (MuData modalities are not supported here)",
                    store.root().encoding.name()
                ),
            });
        }
        Ok(Dataset {
            session: self,
            name: name.into(),
            store,
            obs: None,
            var: None,
            matrix: Matrix::X,
            csc: false,
        })
    }
}

impl<'s> Dataset<'s> {
    /// Keeps the cells where `predicate` (SQL over the dataset's `obs` columns) is true.
    pub fn obs(mut self, predicate: &str) -> Self {
        self.obs = Some(predicate.into());
        self
    }

    /// Keeps the genes where `predicate` (SQL over `var`, or `raw_var` for raw.X) is true.
    pub fn var(mut self, predicate: &str) -> Self {
        self.var = Some(predicate.into());
        self
    }

    /// Reads the layer `name` instead of X.
    pub fn layer(mut self, name: &str) -> Self {
        self.matrix = Matrix::Layer(name.into());
        self
    }

    /// Reads raw.X (its genes are raw's var) instead of X.
    pub fn raw(mut self) -> Self {
        self.matrix = Matrix::Raw;
        self
    }

    /// [`to_csmat`](Self::to_csmat) gives a CSC matrix instead of CSR.
    pub fn csc(mut self) -> Self {
        self.csc = true;
        self
    }

    /// The matrix's path inside the store, and the table its genes are selected in.
    fn matrix_path(&self) -> Result<(String, &'static str)> {
        let (path, var_table) = match &self.matrix {
            Matrix::X => ("X".to_string(), "var"),
            Matrix::Layer(l) => (format!("layers/{l}"), "var"),
            Matrix::Raw => ("raw/X".to_string(), "raw_var"),
        };
        if self.store.root().find(&path).is_none() {
            return Err(Error::Matrix {
                dataset: self.name.clone(),
                reason: format!("it has no matrix '{path}'"),
            });
        }
        Ok((path, var_table))
    }

    /// The stored matrix and the resolved selection.
    async fn resolve(&self) -> Result<(Source, Selected)> {
        let (path, var_table) = self.matrix_path()?;
        let src = Source::open(self.store.clone(), &path)?;
        // The id lists (and the per-cell, per-gene lookups built from them) are sized from the
        // declared shape: within the read limit.
        for (axis, n) in [("cells", src.n_obs), ("genes", src.n_vars)] {
            let what = format!("the ids of its {n} {axis}");
            self.store.check_alloc(&path, &what, n.saturating_mul(8))?;
        }
        let obs = match &self.obs {
            None => (0..src.n_obs).collect(),
            Some(p) => select_rows_in(self.session, &self.name, "obs", SelectAxis::Obs, p).await?,
        };
        let var = match &self.var {
            None => (0..src.n_vars).collect(),
            Some(p) => {
                select_rows_in(self.session, &self.name, var_table, SelectAxis::Var, p).await?
            }
        };
        // The obs/var tables' lengths were checked against the matrix when the store was
        // attached; an id past the matrix would still be a bug, not a panic.
        if obs.last().is_some_and(|&i| i >= src.n_obs)
            || var.last().is_some_and(|&g| g >= src.n_vars)
        {
            return Err(Error::Internal(format!(
                "{path}: a selected id is past the matrix's {} × {} shape",
                src.n_obs, src.n_vars
            )));
        }
        Ok((src, Selected { obs, var }))
    }

    /// The selected cell and gene ids.
    pub async fn selected(&self) -> Result<Selected> {
        Ok(self.resolve().await?.1)
    }

    /// The selection as a sparse matrix of the stored element type `T`: CSR, or CSC after
    /// [`csc`](Self::csc); rows are the selected cells and columns the selected genes, in order.
    pub async fn to_csmat<T: MatrixElement>(&self) -> Result<CsMat<T>> {
        let (src, sel) = self.resolve().await?;
        src.check_type::<T>()?;
        let var = VarMap::new(Some(&sel.var), src.n_vars);
        let shape = (sel.obs.len(), sel.var.len());
        if self.csc {
            let m = read_columns::<T>(&src, &sel.obs, &var)?;
            csmat(&src, shape, m, true)
        } else {
            let m = read_rows::<T>(&src, &sel.obs, &var)?;
            csmat(&src, shape, m, false)
        }
    }

    /// The selection as a dense array of the stored element type, refused when it has more than
    /// `max_elements` elements (cells × genes).
    pub async fn to_array2<T: MatrixElement>(&self, max_elements: u64) -> Result<Array2<T>> {
        let (src, sel) = self.resolve().await?;
        src.check_type::<T>()?;
        let (rows, cols) = (sel.obs.len(), sel.var.len());
        let elements = rows as u64 * cols as u64;
        if elements > max_elements {
            return Err(Error::DenseLimit {
                element: format!("{} of {}", src.path, self.name),
                rows: rows as u64,
                cols: cols as u64,
                limit: max_elements,
            });
        }
        let var = VarMap::new(Some(&sel.var), src.n_vars);
        let m = read_rows::<T>(&src, &sel.obs, &var)?;
        let mut out = Array2::<T>::default((rows, cols));
        for r in 0..rows {
            for e in m.indptr[r]..m.indptr[r + 1] {
                out[[r, m.indices[e]]] = m.data[e];
            }
        }
        Ok(out)
    }

    /// The selection as consecutive blocks of at most `rows_per_block` selected cells, each read
    /// when the iterator reaches it (CSR blocks; a CSC source reads its selected columns once per
    /// block, as it has no row ranges).
    pub async fn row_blocks<T: MatrixElement>(
        &self,
        rows_per_block: usize,
    ) -> Result<RowBlocks<T>> {
        if rows_per_block == 0 {
            return Err(Error::Matrix {
                dataset: self.name.clone(),
                reason: "row blocks need at least one row each".into(),
            });
        }
        let (src, sel) = self.resolve().await?;
        src.check_type::<T>()?;
        let var = VarMap::new(Some(&sel.var), src.n_vars);
        Ok(RowBlocks {
            src,
            obs: sel.obs,
            var,
            next: 0,
            rows_per_block,
            _t: std::marker::PhantomData,
        })
    }
}

/// The row blocks of a selection, read one at a time ([`Dataset::row_blocks`]).
#[derive(Debug)]
pub struct RowBlocks<T> {
    src: Source,
    obs: Vec<u64>,
    var: VarMap,
    next: usize,
    rows_per_block: usize,
    _t: std::marker::PhantomData<T>,
}

impl<T: MatrixElement> Iterator for RowBlocks<T> {
    type Item = Result<RowBlock<T>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.obs.len() {
            return None;
        }
        let end = (self.next + self.rows_per_block).min(self.obs.len());
        let ids = self.obs[self.next..end].to_vec();
        self.next = end;
        let block = read_rows::<T>(&self.src, &ids, &self.var)
            .and_then(|m| csmat(&self.src, (ids.len(), self.var.len), m, false));
        Some(block.map(|matrix| RowBlock {
            obs_ids: ids,
            matrix,
        }))
    }
}

/// A `sprs` matrix from compressed arrays; a structure `sprs` refuses (a duplicated entry in a
/// row of the store) is an error naming the matrix.
fn csmat<T: MatrixElement>(
    src: &Source,
    shape: (usize, usize),
    m: Compressed<T>,
    csc: bool,
) -> Result<CsMat<T>> {
    let built = if csc {
        CsMat::try_new_csc(shape, m.indptr, m.indices, m.data)
    } else {
        CsMat::try_new(shape, m.indptr, m.indices, m.data)
    };
    built.map_err(|(_, _, _, e)| {
        Error::Store(annql_store::Error::Malformed {
            store: src.store.name().to_string(),
            path: src.path.clone(),
            reason: format!("not a valid sparse matrix: {e}"),
        })
    })
}
