//! What a remote store fetched while an operator ran, as `EXPLAIN ANALYZE` metrics:
//! `fetch_requests`, `fetched_bytes`, `cache_hits`, `cache_hit_bytes`.
//!
//! The store's counters are shared by everything reading it, so the numbers cover the
//! operator's run time: with concurrent queries on one store (a server), they include theirs.

use std::sync::{Arc, OnceLock};

use annql_store::{AnnDataStore, FetchSnapshot, FetchStats};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, Gauge, MetricBuilder};

/// The operator's network gauges and the counters they were started from.
#[derive(Debug)]
pub(crate) struct FetchMetrics {
    stats: Arc<FetchStats>,
    start: FetchSnapshot,
    requests: Gauge,
    bytes: Gauge,
    hits: Gauge,
    hit_bytes: Gauge,
}

impl FetchMetrics {
    /// Starts counting for `store` (None for a local store, which fetches nothing).
    pub(crate) fn start(store: &AnnDataStore, metrics: &ExecutionPlanMetricsSet) -> Option<Self> {
        let stats = store.fetches()?.clone();
        let gauge = |name: &'static str| MetricBuilder::new(metrics).global_gauge(name);
        Some(Self {
            start: stats.snapshot(),
            stats,
            requests: gauge("fetch_requests"),
            bytes: gauge("fetched_bytes"),
            hits: gauge("cache_hits"),
            hit_bytes: gauge("cache_hit_bytes"),
        })
    }

    /// Starts counting once per operator, however many partitions it runs.
    pub(crate) fn once<'a>(
        cell: &'a OnceLock<Option<FetchMetrics>>,
        store: &AnnDataStore,
        metrics: &ExecutionPlanMetricsSet,
    ) -> Option<&'a FetchMetrics> {
        cell.get_or_init(|| Self::start(store, metrics)).as_ref()
    }

    /// Brings the gauges up to what has been fetched since the start.
    pub(crate) fn update(&self) {
        let d = self.stats.snapshot().since(&self.start);
        self.requests.set_max(d.requests as usize);
        self.bytes.set_max(d.bytes as usize);
        self.hits.set_max(d.cache_hits as usize);
        self.hit_bytes.set_max(d.cache_bytes as usize);
    }
}
