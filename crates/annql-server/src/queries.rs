//! The runtime statements execute on, apart from the one that serves connections.
//!
//! A query's partitions are CPU-bound tasks that can run for a long time between yields. On the
//! connections' runtime they would hold every worker, and what stops a statement — the timer of
//! `statement_timeout`, the accept of a CancelRequest, the watchdog that sees a client hang up —
//! would wait behind them for seconds (tokio polls its timers and sockets between task polls).
//! So each statement's plan executes on [`QueryRuntime`], and its batches come back over a
//! channel. Dropping the stream aborts the query's task, which drops the plan's streams and with
//! them every task they spawned.

use std::io;

use datafusion::arrow::array::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SessionContext;
use futures::{StreamExt, stream};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinHandle};

/// A multi-threaded tokio runtime for query execution (see the module docs).
pub struct QueryRuntime {
    /// Always `Some` until dropped.
    runtime: Option<Runtime>,
}

impl std::fmt::Debug for QueryRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryRuntime").finish_non_exhaustive()
    }
}

impl QueryRuntime {
    /// A runtime of `threads` workers (default: one per core).
    pub fn new(threads: Option<usize>) -> io::Result<Self> {
        let threads = threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("annql-query")
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    fn runtime(&self) -> &Runtime {
        self.runtime
            .as_ref()
            .expect("the query runtime lives until dropped")
    }

    /// Executes `plan` in `ctx` on the query runtime. Resolves once the plan has started (or
    /// failed to), to the stream of its batches. The stream ends with an error, never early, if
    /// the query's task dies; dropping it (or this future) stops the query.
    pub async fn execute(
        &self,
        ctx: SessionContext,
        plan: LogicalPlan,
    ) -> Result<SendableRecordBatchStream> {
        let (started_tx, started_rx) = oneshot::channel();
        let (batch_tx, batch_rx) = mpsc::channel::<Result<RecordBatch>>(2);
        let task = self.runtime().spawn(async move {
            let started = async { ctx.execute_logical_plan(plan).await?.execute_stream().await };
            let mut batches = match started.await {
                // A send fails only when the caller stopped waiting (cancelled, client gone):
                // then nobody is left to tell, and the batches below stop at the same point.
                Ok(s) => {
                    let _ = started_tx.send(Ok(s.schema()));
                    s
                }
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                    return;
                }
            };
            while let Some(batch) = batches.next().await {
                let failed = batch.is_err();
                if batch_tx.send(batch).await.is_err() || failed {
                    return;
                }
            }
        });
        let mut running = Running {
            abort: task.abort_handle(),
            task: Some(task),
        };
        let schema = match started_rx.await {
            Ok(started) => started?,
            Err(_) => return Err(running.died().await),
        };
        let batches = stream::unfold((batch_rx, running), |(mut rx, mut running)| async move {
            match rx.recv().await {
                Some(batch) => Some((batch, (rx, running))),
                // The sender is gone: the query ended, or its task died (a panic) and the
                // result must not pass for complete.
                None => match running.task.take()?.await {
                    Ok(()) => None,
                    Err(e) => Some((Err(task_died(e)), (rx, running))),
                },
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is refused inside another runtime.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A query's task: aborted when dropped.
struct Running {
    abort: AbortHandle,
    /// Taken once awaited.
    task: Option<JoinHandle<()>>,
}

impl Running {
    /// Why a task that stopped answering ended.
    async fn died(&mut self) -> DataFusionError {
        match self.task.take() {
            Some(task) => match task.await {
                Ok(()) => DataFusionError::Internal("the query ended without starting".into()),
                Err(e) => task_died(e),
            },
            None => DataFusionError::Internal("the query's task is gone".into()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.abort.abort();
    }
}

fn task_died(e: tokio::task::JoinError) -> DataFusionError {
    if e.is_panic() {
        DataFusionError::Execution(format!("the query failed: {}", panic_message(e)))
    } else {
        DataFusionError::Execution("the query was stopped".into())
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use datafusion::physical_plan::common::collect;

    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn block_on<F: std::future::Future<Output = TestResult>>(f: F) -> TestResult {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(f)
    }

    async fn plan(ctx: &SessionContext, sql: &str) -> Result<LogicalPlan> {
        ctx.state().create_logical_plan(sql).await
    }

    #[test]
    fn batches_come_back_from_the_query_runtime() -> TestResult {
        let queries = QueryRuntime::new(Some(1))?;
        block_on(async {
            let ctx = SessionContext::new();
            let plan = plan(&ctx, "SELECT * FROM (VALUES (1), (2), (3)) t(v) ORDER BY v").await?;
            let batches = collect(queries.execute(ctx, plan).await?).await?;
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            assert_eq!(rows, 3);
            Ok(())
        })
    }

    #[test]
    fn errors_come_back_as_errors() -> TestResult {
        let queries = QueryRuntime::new(Some(1))?;
        block_on(async {
            let ctx = SessionContext::new();
            let plan = plan(&ctx, "SELECT 1 / 0").await?;
            // Division by zero in a constant fails while the plan is optimised or run.
            let out = match queries.execute(ctx, plan).await {
                Err(e) => Err(e),
                Ok(s) => collect(s).await,
            };
            assert!(matches!(out, Err(e) if e.to_string().contains("Divide by zero")));
            Ok(())
        })
    }

    #[test]
    fn dropping_the_stream_stops_every_task_of_the_query() -> TestResult {
        let queries = QueryRuntime::new(Some(2))?;
        block_on(async {
            let ctx = SessionContext::new();
            // Hours of work in many partitions: it ends only if it is stopped.
            let plan = plan(
                &ctx,
                "SELECT v % 7 AS k, count(*) FROM range(0, 1000000000000) t(v) GROUP BY 1",
            )
            .await?;
            let stream = queries.execute(ctx, plan).await?;
            let metrics = queries.runtime().metrics();
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(metrics.num_alive_tasks() > 0, "the query runs");
            drop(stream);
            let deadline = Instant::now() + Duration::from_secs(5);
            while metrics.num_alive_tasks() > 0 {
                assert!(
                    Instant::now() < deadline,
                    "{} tasks still alive",
                    metrics.num_alive_tasks()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        })
    }
}
