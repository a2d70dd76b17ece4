//! Subsets: the obs/var predicates turned into row ids ([`crate::select`]), then
//! `annql_write::export` on a blocking thread.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use annql_write::select::{Rows, Selection};
use annql_write::{ExportOptions, ExportSummary};

use super::writable_output;
use crate::context::QueryContext;
use crate::error::{Error, Result};
use crate::select::{SelectAxis, select_rows};

/// What to write: the cells (`obs` predicate) and genes (`var` predicate) of `dataset` kept, and
/// where. `None` keeps every row of that axis.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// The attached dataset.
    pub dataset: String,
    /// A SQL boolean expression over `<dataset>.obs` (subqueries allowed).
    pub obs: Option<String>,
    /// A SQL boolean expression over `<dataset>.var`.
    pub var: Option<String>,
    /// The output path (checked against the session's [`WritePolicy`](super::WritePolicy)).
    pub out: PathBuf,
    /// Format, overwrite and chunking.
    pub options: ExportOptions,
}

/// Sets the cancel flag when dropped: a front end that stops waiting (Ctrl-C, a client's cancel
/// request) drops the export's future, and the writer then stops and removes its temporary.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Writes the cells and genes of `request.dataset` its predicates keep as a new AnnData store.
///
/// The output path is checked against the session's [`WritePolicy`](super::WritePolicy) before anything is read.
/// Dropping the returned future cancels the write (nothing is left at the output path).
pub async fn export_subset(
    session: &dyn QueryContext,
    request: ExportRequest,
) -> Result<ExportSummary> {
    let out = writable_output(session, &request.out, request.options.overwrite)?;
    let store = session
        .store(&request.dataset)
        .ok_or_else(|| Error::NotAttached(request.dataset.clone()))?;
    // The writer holds an id (and an index entry) per cell and per gene, sized from the
    // declared shape: within the read limit.
    for (axis, n) in ["cells", "genes"].iter().zip(store.root().shape.clone()) {
        let what = format!("the ids of its {n} {axis}");
        store.check_alloc("", &what, n.saturating_mul(8))?;
    }
    let obs = rows(session, &request.dataset, SelectAxis::Obs, &request.obs).await?;
    let var = rows(session, &request.dataset, SelectAxis::Var, &request.var).await?;
    let selection = Selection { obs, var };
    let mut options = request.options;
    let cancel = options.cancel.get_or_insert_with(Arc::default).clone();
    let _guard = CancelOnDrop(cancel);
    let written = crate::schedule::blocking(move || {
        annql_write::export(&store, "", &selection, &out, &options)
    })
    .await
    .map_err(|e| Error::Internal(format!("the export thread failed: {e}")))?;
    Ok(written?)
}

async fn rows(
    session: &dyn QueryContext,
    dataset: &str,
    axis: SelectAxis,
    predicate: &Option<String>,
) -> Result<Rows> {
    let Some(predicate) = predicate else {
        return Ok(Rows::All);
    };
    let ids = select_rows(session, dataset, axis, predicate)
        .await
        .map_err(|source| Error::Predicate {
            axis: axis.name(),
            source: Box::new(source),
        })?;
    // Ordered by id and unique (ids are row positions): what `Rows::Some` asks for.
    Ok(Rows::Some(ids))
}
