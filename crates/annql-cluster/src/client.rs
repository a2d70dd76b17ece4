//! A session whose queries run on a cluster: planned here, optimised, split into stages and run
//! by the scheduler and its executors.

use std::sync::Arc;

use annql_engine::session::AnnSession;
use annql_engine::session::remote::{Connector, ContextRunner, RemoteRunner};
use annql_store::StorageOptions;
use ballista::prelude::SessionConfigExt;
use ballista_core::extension::SessionStateExt;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use crate::process::codecs;

/// A cluster, by its scheduler's address.
#[derive(Debug, Clone)]
pub struct Cluster {
    host: String,
    port: u16,
}

impl Cluster {
    /// The cluster whose scheduler is at `url` (`df://HOST:PORT`).
    pub fn new(url: &str) -> Result<Self> {
        let (host, port) = parse_address(url)?;
        Ok(Self { host, port })
    }

    /// `session`, its queries run on this cluster. Statements annql handles itself (ATTACH,
    /// COPY, gene indexes) and queries over tables a cluster cannot open (collections, system
    /// tables) run in this process, with a warning saying why.
    pub fn connect(&self, session: AnnSession) -> Result<AnnSession> {
        let runner = self.context_runner(&session)?;
        Ok(session.with_remote(Arc::new(runner)))
    }

    fn context_runner(&self, session: &AnnSession) -> Result<ContextRunner> {
        let state = session.context().state();
        let (logical, physical) = codecs(StorageOptions::default());
        let config = state
            .config()
            .clone()
            .upgrade_for_ballista()
            .with_ballista_logical_extension_codec(logical)
            .with_ballista_physical_extension_codec(physical)
            // The static planner runs the scheduler session's physical rules (annql's slicing
            // among them); the adaptive one replaces them with its own.
            .with_ballista_adaptive_query_planner(false)
            // The catalog list is the session's own, shared: building the state must not
            // replace its catalog (and every attached dataset) with a new empty one.
            .with_create_default_catalog_and_schema(false)
            // Hash joins, as in one process. Ballista's default, sort-merge joins, sorts
            // categorical columns, and concatenating their dictionaries overflows the 8-bit keys
            // anndata's codes have ("Dictionary key bigger than the key type").
            .set_bool("datafusion.optimizer.prefer_hash_join", true)
            // Partitioned hash joins only: Ballista's planner demotes a collect-left join it
            // will not broadcast to a partitioned one without repartitioning what sits above
            // it, and a global aggregate above then answered once per partition.
            .set_u64(
                "datafusion.optimizer.hash_join_single_partition_threshold",
                0,
            )
            .set_u64(
                "datafusion.optimizer.hash_join_single_partition_threshold_rows",
                0,
            );
        // The fused aggregation is planned on the scheduler, which splits it across executors.
        let rules = state
            .optimizers()
            .iter()
            .filter(|r| r.name() != "annql_fused_aggregate")
            .cloned()
            .collect();
        let remote = SessionStateBuilder::new_from_existing(state)
            .with_config(config)
            .with_optimizer_rules(rules)
            .build()
            .upgrade_for_ballista(format!("http://{}:{}", self.host, self.port))?;
        Ok(ContextRunner::new(SessionContext::new_with_state(remote)))
    }
}

impl Connector for Cluster {
    fn runner(&self, session: &AnnSession) -> annql_engine::Result<Arc<dyn RemoteRunner>> {
        match self.context_runner(session) {
            Ok(r) => Ok(Arc::new(r)),
            Err(Error::Engine(e)) => Err(e),
            Err(Error::DataFusion(e)) => Err(e.into()),
            Err(e) => Err(annql_engine::Error::Statement(e.to_string())),
        }
    }
}

/// `session`, its queries run on the cluster whose scheduler is at `url` (`df://HOST:PORT`):
/// [`Cluster::connect`].
pub fn connect(session: AnnSession, url: &str) -> Result<AnnSession> {
    Cluster::new(url)?.connect(session)
}

/// The scheduler's host and port in a `df://HOST:PORT` address.
pub fn parse_address(url: &str) -> Result<(String, u16)> {
    url.strip_prefix("df://")
        .and_then(|rest| parse_host_port(rest.trim_end_matches('/')))
        .ok_or_else(|| Error::Address(url.into()))
}

/// `HOST:PORT` (a non-empty host, a port that fits 16 bits), or None: callers say which
/// address was wrong and how it should look.
pub fn parse_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    // A port that is no u16 is the same "not HOST:PORT" as a missing colon: the caller's error
    // names the whole address, which says more than the parse error would.
    let port = port.parse().ok()?;
    (!host.is_empty()).then(|| (host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_addresses() {
        assert_eq!(
            parse_address("df://127.0.0.1:50050").expect("address"),
            ("127.0.0.1".into(), 50050)
        );
        for bad in [
            "127.0.0.1:50050",
            "df://",
            "df://host",
            "df://:1",
            "df://h:port",
        ] {
            parse_address(bad).expect_err(bad);
        }
    }
}
