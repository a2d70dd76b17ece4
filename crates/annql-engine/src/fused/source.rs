//! What a fused aggregation reads: the matrix of one store, or of a collection (each dataset's
//! matrix with its cells' place among the collection's and its gene map), and the obs and var
//! tables it groups by, as the rule sees them.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::error::Result;
use datafusion::logical_expr::Expr;

use crate::AnnTable;
use crate::collection::provider::{CollectionTable, CollectionTableProvider};
use crate::collection::union::UnionTable;
use crate::error::store_err;
use crate::model::{Axis, OBS_ID, TableKind, VAR_ID};
use crate::provider::AnnDataTableProvider;

use super::kernel::NONE;

/// The matrix of a fused aggregation.
#[derive(Debug, Clone)]
pub enum FusedMatrix {
    /// A store's matrix.
    Table(Arc<AnnTable>),
    /// A collection's: every dataset's matrix.
    Collection(Arc<UnionTable>),
}

/// One matrix folded into the grid, with the groups of its cells and the slots of its genes.
pub(crate) struct MatrixPart {
    pub(crate) matrix: Arc<AnnTable>,
    pub(crate) cells: Vec<u32>,
    pub(crate) genes: Vec<u32>,
}

impl FusedMatrix {
    /// The same matrix (for plan equality).
    pub(crate) fn same(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Table(a), Self::Table(b)) => Arc::ptr_eq(a, b),
            (Self::Collection(a), Self::Collection(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Cells and genes.
    pub(crate) fn shape(&self) -> Result<(u64, u64)> {
        match self {
            Self::Table(t) => t.matrix_shape(),
            Self::Collection(u) => Ok((u.collection.n_obs, u.collection.n_vars())),
        }
    }

    /// The schema of the matrix table (`obs_id`, `var_id`, `value`).
    pub(crate) fn schema(&self) -> annql_store::arrow::datatypes::SchemaRef {
        match self {
            Self::Table(t) => t.schema(),
            Self::Collection(u) => u.schema(),
        }
    }

    /// Refuses an axis of `len` positions whose grouping (24 bytes each) the read limit does not
    /// allow.
    pub(crate) fn check_axis(&self, len: u64) -> Result<()> {
        let table = match self {
            Self::Table(t) => t.clone(),
            Self::Collection(u) => u.members[0].table().clone(),
        };
        let what = format!("grouping the {len} positions of an axis");
        table
            .store
            .check_alloc(&table.def.path, &what, len.saturating_mul(24))
            .map_err(store_err)
    }

    /// The rows of slice `k` of `slices` over `n_obs` cells: contiguous, cut at the matrix's
    /// block boundaries so that no block is read by two slices.
    pub(crate) fn slice(&self, k: usize, slices: usize, n_obs: u64) -> std::ops::Range<usize> {
        let step = match self {
            Self::Table(t) => t.block_rows.max(1),
            Self::Collection(_) => 1,
        };
        let blocks = n_obs.div_ceil(step);
        let cut = |k: usize| ((blocks * k as u64 / slices as u64) * step).min(n_obs) as usize;
        cut(k)..cut(k + 1)
    }

    /// Where the CSC copies are, for `EXPLAIN`.
    pub(crate) fn csc_copy_location(&self) -> Option<String> {
        match self {
            Self::Table(t) => t.csc_copy_location(),
            Self::Collection(u) => {
                let with = u
                    .members
                    .iter()
                    .filter(|m| m.table().csc_copy().is_some())
                    .count();
                (with > 0).then(|| format!("{with} of {} datasets", u.members.len()))
            }
        }
    }

    /// The datasets of a collection (for `EXPLAIN`).
    pub(crate) fn datasets(&self) -> Option<usize> {
        match self {
            Self::Table(_) => None,
            Self::Collection(u) => Some(u.members.len()),
        }
    }

    /// The matrices to fold, each with its cells' groups and its genes' slots from the
    /// collection-wide `cells` and `genes` maps; those with no selected cell or gene are left out.
    pub(crate) fn parts(&self, cells: &[u32], genes: &[u32]) -> Vec<MatrixPart> {
        match self {
            Self::Table(t) => vec![MatrixPart {
                matrix: t.clone(),
                cells: cells.to_vec(),
                genes: genes.to_vec(),
            }],
            Self::Collection(u) => {
                let c = &u.collection;
                c.members
                    .iter()
                    .enumerate()
                    .filter_map(|(m, d)| {
                        let (a, b) = (d.obs_start as usize, (d.obs_start + d.n_obs) as usize);
                        let local_cells = cells.get(a..b)?.to_vec();
                        let local_genes: Vec<u32> = c.genes.to_global[m]
                            .iter()
                            .map(|&g| genes.get(g as usize).copied().unwrap_or(NONE))
                            .collect();
                        let any = |v: &[u32]| v.iter().any(|&x| x != NONE);
                        (any(&local_cells) && any(&local_genes)).then(|| MatrixPart {
                            matrix: u.members[m].table().clone(),
                            cells: local_cells,
                            genes: local_genes,
                        })
                    })
                    .collect()
            }
        }
    }
}

/// A table under the join a fused aggregation replaces, as the rule needs to know it.
pub(crate) struct Leaf {
    pub(crate) kind: TableKind,
    /// The store or collection it belongs to (tables of one join must share it).
    pub(crate) origin: usize,
    /// Rows (cells of obs, genes of var).
    pub(crate) rows: u64,
    /// The matrix, if the table is one the fused aggregation can read: sparse, cells × genes,
    /// readable.
    pub(crate) matrix: Option<FusedMatrix>,
}

/// The leaf a table provider is, if it is an AnnData or collection table.
pub(crate) fn leaf_of(provider: &Arc<dyn TableProvider>) -> Option<Leaf> {
    if let Some(p) = provider.downcast_ref::<AnnDataTableProvider>() {
        let t = p.table();
        let matrix = matches!(
            t.def.kind,
            TableKind::Matrix {
                rows: Axis::Obs,
                cols: Axis::Var,
                ..
            }
        ) && sparse(t);
        return Some(Leaf {
            kind: t.def.kind.clone(),
            origin: Arc::as_ptr(&t.store) as *const () as usize,
            rows: t.major_len,
            matrix: matrix.then(|| FusedMatrix::Table(t.clone())),
        });
    }
    let p = provider.downcast_ref::<CollectionTableProvider>()?;
    match p.table() {
        CollectionTable::Union(u) => {
            let origin = Arc::as_ptr(&u.collection) as *const () as usize;
            let matrix = matches!(u.kind, TableKind::Matrix { .. })
                && u.members.iter().all(|m| sparse(m.table()));
            Some(Leaf {
                kind: u.kind.clone(),
                origin,
                rows: u.collection.n_obs,
                matrix: matrix.then(|| FusedMatrix::Collection(u.clone())),
            })
        }
        CollectionTable::Var(v) => Some(Leaf {
            kind: TableKind::Frame {
                axis: Axis::Var,
                with_names: true,
            },
            origin: Arc::as_ptr(v.collection()) as *const () as usize,
            rows: v.collection().n_vars(),
            matrix: None,
        }),
        _ => None,
    }
}

/// A readable sparse matrix (the rule does not apply to dense ones, or to one that cannot be
/// read: its scan then reports why).
fn sparse(t: &AnnTable) -> bool {
    t.unmapped.is_none()
        // Not found: the rule does not apply; the scan reports the error.
        && t.stored_as().is_ok_and(|e| *e != annql_store::Encoding::Array)
}

/// Whether a filter of the matrix scan selects cells or genes by id alone, as the fused
/// aggregation applies them.
pub(crate) fn selects_ids(matrix: &FusedMatrix, filter: &Expr) -> bool {
    match matrix {
        FusedMatrix::Table(t) => crate::pushdown::place_filter(filter, t).selects_ids(),
        FusedMatrix::Collection(_) => {
            let cols = filter.column_refs();
            let mut names = cols.iter().map(|c| c.name.as_str());
            let first = names.next();
            !filter.is_volatile()
                && first.is_some_and(|n| n == OBS_ID || n == VAR_ID)
                && names.all(|n| Some(n) == first)
        }
    }
}
