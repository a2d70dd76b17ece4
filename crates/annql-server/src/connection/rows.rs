//! The rows of a running query, encoded batch by batch as the scans produce them; each batch
//! boundary checks for a cancel request and the statement timeout, so both stop a running
//! scan, not only its planning.

use std::sync::Arc;

use datafusion::physical_plan::SendableRecordBatchStream;
use futures::{StreamExt, stream};
use pgwire::api::results::FieldInfo;
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;

use crate::activity::{Activity, Running};
use crate::sqlstate;

/// The rows of a running query, batch by batch, watching the cancel token and the deadline.
pub(super) struct RowStream {
    pub(super) batches: SendableRecordBatchStream,
    pub(super) fields: Arc<Vec<FieldInfo>>,
    pub(super) running: Running,
    pub(super) deadline: Option<tokio::time::Instant>,
    pub(super) activity: Arc<Activity>,
}

type RowIter = Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send + Sync>;

impl RowStream {
    pub(super) fn into_stream(
        self,
    ) -> impl futures::Stream<Item = PgWireResult<DataRow>> + Send + 'static {
        struct State {
            s: RowStream,
            rows: Option<RowIter>,
            done: bool,
        }
        impl Drop for State {
            fn drop(&mut self) {
                // The client went away or the stream ended: stop any work still running.
                self.s.running.token.cancel();
                self.s.activity.finish(&self.s.running);
            }
        }
        stream::unfold(
            State {
                s: self,
                rows: None,
                done: false,
            },
            |mut st| async move {
                loop {
                    if st.done {
                        return None;
                    }
                    if let Some(rows) = st.rows.as_mut() {
                        if let Some(row) = rows.next() {
                            return Some((row, st));
                        }
                        st.rows = None;
                    }
                    let next = tokio::select! {
                        b = st.s.batches.next() => b.map(|b| b.map_err(|e| sqlstate::from_datafusion(&e))),
                        _ = st.s.running.token.cancelled() => Some(Err(sqlstate::cancelled())),
                        _ = sleep_until(st.s.deadline) => Some(Err(sqlstate::timed_out())),
                    };
                    match next {
                        None => {
                            st.done = true;
                            st.s.activity.finish(&st.s.running);
                            return None;
                        }
                        Some(Ok(batch)) => {
                            st.rows = Some(arrow_pg::datatypes::encode_recordbatch(
                                st.s.fields.clone(),
                                batch,
                            ));
                        }
                        Some(Err(e)) => {
                            st.done = true;
                            return Some((Err(e), st));
                        }
                    }
                }
            },
        )
    }
}

/// Waits until `deadline`, or forever without one.
pub(super) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
