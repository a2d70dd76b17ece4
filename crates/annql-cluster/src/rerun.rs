//! A job whose stages Ballista ran again is reported as failed, never as answered.
//!
//! Ballista 55 runs a stage again when an executor holding its input is lost or a task cannot
//! fetch shuffle data. The stage's tasks that had finished before already handed their output
//! locations to the next stage, and the rerun hands them once more, so the next stage reads part
//! of the stage's output twice (seen on loopback as sums 13/11 of the right ones). Until Ballista
//! drops the earlier locations, the scheduler's gRPC service is wrapped: every task report passes
//! through [`RerunGuard`] before the scheduler sees it, a report from a stage's second or later
//! attempt marks its job, and a marked job's success is turned into a failure that says why. The
//! mark is taken before the report reaches the scheduler, so no answer of such a job can be
//! returned; the job is cancelled at once.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use ballista_core::serde::protobuf::scheduler_grpc_server::SchedulerGrpc;
use ballista_core::serde::protobuf::{
    CancelJobParams, CancelJobResult, CleanJobDataParams, CleanJobDataResult,
    CreateUpdateSessionParams, CreateUpdateSessionResult, ExecuteQueryParams, ExecuteQueryResult,
    ExecutorStoppedParams, ExecutorStoppedResult, FailedJob, GetJobMetricsParams,
    GetJobMetricsResult, GetJobStatusParams, GetJobStatusResult, HeartBeatParams, HeartBeatResult,
    JobStatus, PollWorkParams, PollWorkResult, RegisterExecutorParams, RegisterExecutorResult,
    RemoveSessionParams, RemoveSessionResult, TaskStatus, UpdateTaskStatusParams,
    UpdateTaskStatusResult, failed_task::FailedReason, job_status, task_status,
};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

/// Jobs remembered as rerun; the oldest are forgotten beyond this many (a client asks for its
/// job's status while it runs and right after, long before thousands of later jobs rerun).
const REMEMBERED: usize = 4096;

/// The jobs with a stage that ran more than once, and why.
#[derive(Debug, Default)]
pub struct Reruns {
    marks: HashMap<String, Mark>,
    order: VecDeque<String>,
}

/// What was seen of one job.
#[derive(Debug, Default)]
struct Mark {
    /// What happened, in order, each once.
    causes: Vec<String>,
    /// A stage ran again: the answer is refused. (A fetch failure alone refuses nothing: Ballista
    /// may still fail the job, or retry a task only.)
    rerun: bool,
}

impl Reruns {
    /// Marks the jobs of `reports` that come from a stage's second or later attempt; returns the
    /// jobs marked for the first time.
    pub fn observe(&mut self, reports: &[TaskStatus]) -> Vec<String> {
        let mut first = Vec::new();
        for report in reports {
            if let Some(task_status::Status::Failed(failed)) = &report.status
                && let Some(FailedReason::FetchPartitionError(fetch)) = &failed.failed_reason
            {
                // Not yet a rerun, but the cause of the one to come: named in the message.
                self.note(
                    &report.job_id,
                    format!(
                        "a task of stage {} could not fetch shuffle data of stage {} from executor {}",
                        report.stage_id, fetch.map_stage_id, fetch.executor_id
                    ),
                    false,
                );
            }
            if report.stage_attempt_num > 0 {
                if !self.refuses(&report.job_id) {
                    first.push(report.job_id.clone());
                }
                self.note(
                    &report.job_id,
                    format!(
                        "stage {} ran again (attempt {})",
                        report.stage_id,
                        report.stage_attempt_num + 1
                    ),
                    true,
                );
            }
        }
        first
    }

    fn refuses(&self, job_id: &str) -> bool {
        self.marks.get(job_id).is_some_and(|mark| mark.rerun)
    }

    /// Why `job_id`'s answer is refused, if it is.
    pub fn refused(&self, job_id: &str) -> Option<String> {
        let mark = self.marks.get(job_id)?;
        mark.rerun.then(|| {
            format!(
                "job {job_id}: {} after an executor was lost or a shuffle fetch failed; \
                 Ballista 55 can then count part of that stage's output twice, so annql does not \
                 return this answer: run the query again",
                mark.causes.join("; ")
            )
        })
    }

    /// Rewrites a refused job's end (success, or the failure its cancellation brings) as a
    /// failure that says why.
    pub fn judge(&self, status: Option<JobStatus>) -> Option<JobStatus> {
        let mut status = status?;
        let Some(error) = self.refused(&status.job_id) else {
            return Some(status);
        };
        status.status = match status.status {
            Some(job_status::Status::Successful(done)) => {
                Some(job_status::Status::Failed(FailedJob {
                    error,
                    queued_at: done.queued_at,
                    started_at: done.started_at,
                    ended_at: done.ended_at,
                }))
            }
            Some(job_status::Status::Failed(mut failed)) => {
                failed.error = format!("{error} (Ballista: {})", failed.error);
                Some(job_status::Status::Failed(failed))
            }
            other => other,
        };
        Some(status)
    }

    fn note(&mut self, job_id: &str, cause: String, rerun: bool) {
        if !self.marks.contains_key(job_id) {
            if self.order.len() == REMEMBERED
                && let Some(oldest) = self.order.pop_front()
            {
                self.marks.remove(&oldest);
            }
            self.order.push_back(job_id.to_owned());
        }
        let mark = self.marks.entry(job_id.to_owned()).or_default();
        if !mark.causes.contains(&cause) {
            mark.causes.push(cause);
        }
        mark.rerun |= rerun;
    }
}

/// The scheduler's gRPC service with reruns watched; everything else is the wrapped service's.
pub struct RerunGuard<S> {
    inner: S,
    reruns: Arc<Mutex<Reruns>>,
}

impl<S> RerunGuard<S> {
    /// Wraps a scheduler's service.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            reruns: Arc::default(),
        }
    }

    fn reruns(&self) -> std::sync::MutexGuard<'_, Reruns> {
        // A panic while holding the lock leaves plain data, still consistent.
        self.reruns.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<S: SchedulerGrpc> RerunGuard<S> {
    /// Cancels jobs whose answer is refused: the executors stop working for nothing, and the
    /// client hears of the failure at once.
    async fn cancel(&self, jobs: Vec<String>) {
        for job_id in jobs {
            log::warn!("job {job_id}: a stage ran again; cancelling it (see annql_cluster::rerun)");
            let request = Request::new(CancelJobParams {
                job_id: job_id.clone(),
            });
            if let Err(e) = self.inner.cancel_job(request).await {
                // The refusal stands either way: the job ends failed when it ends.
                log::warn!("job {job_id}: could not cancel it: {e}");
            }
        }
    }
}

type StatusStream = Pin<Box<dyn Stream<Item = Result<GetJobStatusResult, Status>> + Send>>;

#[tonic::async_trait]
impl<S: SchedulerGrpc> SchedulerGrpc for RerunGuard<S> {
    async fn poll_work(
        &self,
        request: Request<PollWorkParams>,
    ) -> Result<Response<PollWorkResult>, Status> {
        let refused = self.reruns().observe(&request.get_ref().task_status);
        let response = self.inner.poll_work(request).await;
        self.cancel(refused).await;
        response
    }

    async fn register_executor(
        &self,
        request: Request<RegisterExecutorParams>,
    ) -> Result<Response<RegisterExecutorResult>, Status> {
        self.inner.register_executor(request).await
    }

    async fn heart_beat_from_executor(
        &self,
        request: Request<HeartBeatParams>,
    ) -> Result<Response<HeartBeatResult>, Status> {
        self.inner.heart_beat_from_executor(request).await
    }

    async fn update_task_status(
        &self,
        request: Request<UpdateTaskStatusParams>,
    ) -> Result<Response<UpdateTaskStatusResult>, Status> {
        let refused = self.reruns().observe(&request.get_ref().task_status);
        let response = self.inner.update_task_status(request).await;
        self.cancel(refused).await;
        response
    }

    async fn create_update_session(
        &self,
        request: Request<CreateUpdateSessionParams>,
    ) -> Result<Response<CreateUpdateSessionResult>, Status> {
        self.inner.create_update_session(request).await
    }

    async fn remove_session(
        &self,
        request: Request<RemoveSessionParams>,
    ) -> Result<Response<RemoveSessionResult>, Status> {
        self.inner.remove_session(request).await
    }

    type ExecuteQueryPushStream = StatusStream;

    async fn execute_query_push(
        &self,
        request: Request<ExecuteQueryParams>,
    ) -> Result<Response<Self::ExecuteQueryPushStream>, Status> {
        let (metadata, statuses, extensions) =
            self.inner.execute_query_push(request).await?.into_parts();
        let reruns = self.reruns.clone();
        let judged = statuses.map(move |item| {
            item.map(|mut result| {
                let reruns = reruns.lock().unwrap_or_else(PoisonError::into_inner);
                result.status = reruns.judge(result.status.take());
                result
            })
        });
        let judged: StatusStream = Box::pin(judged);
        Ok(Response::from_parts(metadata, judged, extensions))
    }

    async fn execute_query(
        &self,
        request: Request<ExecuteQueryParams>,
    ) -> Result<Response<ExecuteQueryResult>, Status> {
        self.inner.execute_query(request).await
    }

    async fn get_job_status(
        &self,
        request: Request<GetJobStatusParams>,
    ) -> Result<Response<GetJobStatusResult>, Status> {
        let mut response = self.inner.get_job_status(request).await?;
        let result = response.get_mut();
        result.status = self.reruns().judge(result.status.take());
        Ok(response)
    }

    async fn get_job_metrics(
        &self,
        request: Request<GetJobMetricsParams>,
    ) -> Result<Response<GetJobMetricsResult>, Status> {
        self.inner.get_job_metrics(request).await
    }

    async fn executor_stopped(
        &self,
        request: Request<ExecutorStoppedParams>,
    ) -> Result<Response<ExecutorStoppedResult>, Status> {
        self.inner.executor_stopped(request).await
    }

    async fn cancel_job(
        &self,
        request: Request<CancelJobParams>,
    ) -> Result<Response<CancelJobResult>, Status> {
        self.inner.cancel_job(request).await
    }

    async fn clean_job_data(
        &self,
        request: Request<CleanJobDataParams>,
    ) -> Result<Response<CleanJobDataResult>, Status> {
        self.inner.clean_job_data(request).await
    }
}

#[cfg(test)]
mod tests {
    use ballista_core::serde::protobuf::{
        FailedTask, FetchPartitionError, SuccessfulJob, SuccessfulTask,
    };

    use super::*;

    fn report(job: &str, stage: u32, attempt: u32, status: task_status::Status) -> TaskStatus {
        TaskStatus {
            job_id: job.into(),
            stage_id: stage,
            stage_attempt_num: attempt,
            status: Some(status),
            ..Default::default()
        }
    }

    fn done() -> task_status::Status {
        task_status::Status::Successful(SuccessfulTask::default())
    }

    fn success(job: &str) -> Option<JobStatus> {
        Some(JobStatus {
            job_id: job.into(),
            job_name: String::new(),
            status: Some(job_status::Status::Successful(SuccessfulJob {
                queued_at: 1,
                started_at: 2,
                ended_at: 3,
                ..Default::default()
            })),
        })
    }

    fn error_of(status: Option<JobStatus>) -> Option<String> {
        match status?.status? {
            job_status::Status::Failed(failed) => Some(failed.error),
            _ => None,
        }
    }

    #[test]
    fn a_job_whose_stage_ran_again_is_failed_with_the_reason() {
        let mut reruns = Reruns::default();
        let fetch = task_status::Status::Failed(FailedTask {
            failed_reason: Some(FailedReason::FetchPartitionError(FetchPartitionError {
                executor_id: "e0".into(),
                map_stage_id: 1,
                map_partition_id: 0,
            })),
            ..Default::default()
        });
        let first = reruns.observe(&[report("a", 2, 0, done()), report("a", 2, 0, fetch)]);
        assert!(first.is_empty());
        // A fetch failure alone: Ballista may still fail the job, or retry a task only.
        assert_eq!(error_of(reruns.judge(success("a"))), None);
        let first = reruns.observe(&[report("a", 1, 1, done()), report("a", 1, 1, done())]);
        assert_eq!(first, ["a"]);
        assert!(reruns.observe(&[report("a", 2, 1, done())]).is_empty());
        let error = error_of(reruns.judge(success("a"))).expect("refused");
        assert!(error.contains("job a: "), "{error}");
        assert!(error.contains("from executor e0"), "{error}");
        assert!(error.contains("stage 1 ran again (attempt 2)"), "{error}");
        assert!(error.contains("run the query again"), "{error}");
        // The failure its cancellation brings says why too.
        let cancelled = Some(JobStatus {
            job_id: "a".into(),
            job_name: String::new(),
            status: Some(job_status::Status::Failed(FailedJob {
                error: "Job cancelled".into(),
                ..Default::default()
            })),
        });
        let error = error_of(reruns.judge(cancelled)).expect("failed");
        assert!(error.contains("ran again") && error.ends_with("(Ballista: Job cancelled)"));
        // Other jobs, and a marked job's other statuses, pass as they are.
        assert_eq!(reruns.judge(success("b")), success("b"));
        let running = Some(JobStatus {
            job_id: "a".into(),
            job_name: String::new(),
            status: Some(job_status::Status::Running(Default::default())),
        });
        assert_eq!(reruns.judge(running.clone()), running);
        assert_eq!(reruns.judge(None), None);
    }

    #[test]
    fn the_oldest_marks_are_forgotten_beyond_the_bound() {
        let mut reruns = Reruns::default();
        for job in 0..=REMEMBERED {
            reruns.observe(&[report(&job.to_string(), 1, 1, done())]);
        }
        assert!(reruns.refused("0").is_none());
        assert!(reruns.refused("1").is_some());
        assert!(reruns.refused(&REMEMBERED.to_string()).is_some());
        assert_eq!(reruns.marks.len(), REMEMBERED);
    }
}
