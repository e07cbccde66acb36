//! Orchestration: the coordinator's state machine for agents and sweeps.
//!
//! A sweep is running until every host in it is completed, failed or
//! cancelled ([`crate::state`]); each host has a deadline, so a sweep always
//! ends even when an agent never comes back. Everything that matters is in
//! the store first and in memory second, so a restarted coordinator picks up
//! running sweeps where they were: agents reconnect, are sent what they have
//! not finished, and the deadlines still hold.
//!
//! [`Coordinator`] is one type; its methods are grouped by seam:
//! [`agents`](self::agents) (sessions: Hello, heartbeats, progress, and the
//! `RunSweep` each agent is owed), [`lifecycle`](self::lifecycle) (start,
//! results, verdicts, deadlines, cancel, end), [`limits`](self::limits) (the
//! bounds one agent or sweep cannot pass) and [`views`](self::views) (what the
//! control API and `/metrics` show).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fleetbench_proto::v1::{self, coordinator_message};
use fleetbench_proto::{ConvertError, PROTOCOL_VERSION};
use thiserror::Error;
use tokio::sync::broadcast;

use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use crate::writer::{ResultWriter, StartError, WriteError};

mod agents;
mod lifecycle;
mod limits;
mod views;

#[cfg(test)]
mod tests;

pub use agents::AgentRefused;
pub use limits::{LimitHit, Limits};
pub use views::SweepView;

// Messages include their cause: they reach operators as one gRPC status
// line, which shows no source chain.
#[derive(Debug, Error)]
pub enum SweepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A write through the group-commit writer failed.
    #[error("could not record {what}: {source}")]
    Write {
        what: String,
        #[source]
        source: WriteError,
    },
    /// A result was neither stored nor acknowledged; the agent keeps it.
    #[error(
        "the coordinator could not store result {seq} ({source}); it is not acknowledged: keep it and send it again later"
    )]
    ResultNotStored {
        seq: u64,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("could not encode {what} for the store: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid sweep: {0}")]
    Invalid(#[from] ConvertError),
    #[error("{0}")]
    NoHosts(String),
    /// A request's argument is not one the coordinator can use.
    #[error("{0}")]
    BadRequest(String),
    #[error("no sweep with id '{0}': `fleetbench sweeps` lists them")]
    NotFound(String),
    #[error("the reports of sweep '{0}' could not be written: the coordinator's log says why")]
    ReportsUnavailable(String),
}

/// Why the coordinator could not open its data directory.
#[derive(Debug, Error)]
pub enum OpenError {
    #[error("cannot create the data directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Writer(#[from] StartError),
}

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub data_dir: PathBuf,
    pub heartbeat_interval: Duration,
    /// Silence longer than this marks an agent lost.
    pub heartbeat_timeout: Duration,
    /// A host's deadline when the sweep does not set one.
    pub default_deadline: Duration,
    /// Only tests change this, to check that a mismatch is refused.
    pub protocol_version: u32,
    /// Prices per GPU-hour for the fleet reports' cost efficiency.
    pub prices: Option<fleetbench_report::PriceTable>,
    /// Resource limits; each hit is logged and counted in /metrics.
    pub limits: Limits,
    /// Agents not seen for this long are forgotten (unless a running sweep
    /// waits for them).
    pub agent_retention: Duration,
}

impl CoordinatorConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        CoordinatorConfig {
            data_dir,
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(15),
            default_deadline: Duration::from_secs(3600),
            protocol_version: PROTOCOL_VERSION,
            prices: None,
            limits: Limits::default(),
            agent_retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Shared state of one coordinator process.
#[derive(Debug)]
pub struct Coordinator {
    pub config: CoordinatorConfig,
    pub store: Store,
    writer: ResultWriter,
    pub fleet: Fleet,
    pub metrics: Metrics,
    /// Fires with a sweep id whenever that sweep changes; watchers re-read it.
    changes: broadcast::Sender<String>,
    result_counts: limits::ResultCounter,
}

impl Coordinator {
    pub fn open(config: CoordinatorConfig) -> Result<Arc<Coordinator>, OpenError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| OpenError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let path = config.data_dir.join("fleetbench.db");
        let store = Store::open(&path)?;
        let writer = ResultWriter::start(&path)?;
        let (changes, _) = broadcast::channel(1024);
        Ok(Arc::new(Coordinator {
            config,
            store,
            writer,
            fleet: Fleet::default(),
            metrics: Metrics::default(),
            changes,
            result_counts: limits::ResultCounter::default(),
        }))
    }

    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.changes.subscribe()
    }

    fn changed(&self, sweep_id: &str) {
        // Fails only when nobody watches, which is fine.
        let _ = self.changes.send(sweep_id.to_string());
    }

    /// Blocking store work from async code: SQLite commits wait for fsync.
    fn blocking<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        tokio::task::block_in_place(|| f(&self.store))
    }

    pub fn welcome(&self) -> v1::CoordinatorMessage {
        v1::CoordinatorMessage {
            body: Some(coordinator_message::Body::Welcome(v1::Welcome {
                protocol_version: self.config.protocol_version,
                coordinator_version: env!("CARGO_PKG_VERSION").to_string(),
                heartbeat_interval_ms: self.config.heartbeat_interval.as_millis() as u32,
            })),
        }
    }
}

/// `20261127-112319-3f9a`: sortable by time, unique enough within a fleet.
fn new_sweep_id(now_ms: i64) -> String {
    let stamp = fleetbench_common::time::rfc3339_from_unix_ms(now_ms)
        .replace(['-', ':'], "")
        .replace('T', "-");
    let stamp = stamp.trim_end_matches('Z');
    let suffix = fleetbench_common::rng::SplitMix64::from_entropy().next_u64() & 0xffff;
    format!("{stamp}-{suffix:04x}")
}

/// JSON for a store column.
fn to_json<T: serde::Serialize>(value: &T, what: &'static str) -> Result<String, SweepError> {
    serde_json::to_string(value).map_err(|source| SweepError::Encode { what, source })
}
