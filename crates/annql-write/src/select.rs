//! Which cells and genes are kept: sorted, distinct row positions along each axis.

use crate::error::{Error, Result};

/// The rows kept along one axis (`obs` or `var`): all of them, or the given positions.
///
/// Positions are 0-based (annql's `obs_id`/`var_id`), strictly increasing, so the output keeps the
/// source's order, as `adata[mask]` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rows {
    /// Every row.
    All,
    /// These rows, strictly increasing.
    Some(Vec<u64>),
}

impl Rows {
    /// Checks `ids` (strictly increasing, each below `len`) and keeps them.
    pub fn try_new(axis: &'static str, ids: Vec<u64>, len: u64) -> Result<Rows> {
        if let Some(w) = ids.windows(2).find(|w| w[0] >= w[1]) {
            return Err(Error::Selection {
                axis,
                reason: format!("ids must be strictly increasing ({} then {})", w[0], w[1]),
            });
        }
        if let Some(&last) = ids.last()
            && last >= len
        {
            return Err(Error::Selection {
                axis,
                reason: format!("id {last} is past the end ({len} rows)"),
            });
        }
        Ok(Rows::Some(ids))
    }

    /// How many rows are kept out of `len`.
    pub fn count(&self, len: u64) -> u64 {
        match self {
            Rows::All => len,
            Rows::Some(ids) => ids.len() as u64,
        }
    }
}

/// The cells (`obs`) and genes (`var`) an export keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Cells kept.
    pub obs: Rows,
    /// Genes kept.
    pub var: Rows,
}

impl Selection {
    /// Everything.
    pub fn all() -> Selection {
        Selection {
            obs: Rows::All,
            var: Rows::All,
        }
    }
}
