//! Orchestration: the coordinator's state machine for agents and sweeps.
//!
//! A sweep is `running` until every host in it is `completed`, `failed` or
//! `cancelled`; each host has a deadline, so a sweep always ends even when an
//! agent never comes back. Everything that matters is in the store first and
//! in memory second, so a restarted coordinator picks up running sweeps where
//! they were: agents reconnect, are sent what they have not finished, and the
//! deadlines still hold.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fleetbench_common::time::now_unix_ms;
use fleetbench_common::{HostInventory, SweepSpec};
use fleetbench_proto::v1::{self, coordinator_message};
use fleetbench_proto::{ConvertError, PROTOCOL_VERSION};
use thiserror::Error;
use tokio::sync::broadcast;

use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::reports;
use crate::store::{
    AgentRecord, HostVerdict, Inserted, NewResult, Store, StoreError, SweepRow,
    TERMINAL_HOST_STATES,
};
use crate::writer::ResultWriter;

#[derive(Debug, Error)]
pub enum SweepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid sweep: {0}")]
    Invalid(#[from] ConvertError),
    #[error("{0}")]
    NoHosts(String),
    #[error("no sweep with id '{0}': `fleetbench sweeps` lists them")]
    NotFound(String),
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
    pub prices: Option<fleetbench_common::report::PriceTable>,
    /// Resource limits; each hit is logged and counted in /metrics.
    pub limits: Limits,
}

/// Bounds that keep one misbehaving agent or sweep from exhausting the
/// coordinator. Defaults sit far above a real fleet's needs (a sweep of the
/// seed's 5 batch sizes on 8 GPUs is 40 results per host).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Agent sessions held at once; more are refused until some leave.
    pub max_agents: usize,
    /// Largest gRPC message accepted, in bytes. Results are a few kB; the
    /// default leaves room for long `--min-seconds` runs (100,000 latency
    /// samples of 8 bytes) and no more.
    pub max_message_bytes: usize,
    /// Results stored per sweep, all hosts together.
    pub max_results_per_sweep: u64,
    /// Results stored per host in one sweep.
    pub max_results_per_host: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_agents: 20_000,
            max_message_bytes: 4 << 20,
            max_results_per_sweep: 1_000_000,
            max_results_per_host: 10_000,
        }
    }
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
    /// Stored results per sweep and per host, for the result limits; loaded
    /// from the store the first time a sweep is seen after a restart.
    result_counts: std::sync::Mutex<HashMap<String, ResultCounts>>,
}

#[derive(Debug, Default)]
struct ResultCounts {
    total: u64,
    per_host: HashMap<String, u64>,
}

/// Report options chosen when the sweep started, kept with it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SweepOptions {
    pub baseline: Option<String>,
}

/// A sweep's current picture, for the control API.
#[derive(Debug, Clone)]
pub struct SweepView {
    pub summary: v1::SweepSummary,
    pub hosts: Vec<v1::HostStatus>,
}

impl Coordinator {
    pub fn open(config: CoordinatorConfig) -> Result<Arc<Coordinator>, StoreError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            StoreError::Corrupt(format!(
                "cannot create data directory {}: {e}",
                config.data_dir.display()
            ))
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
            result_counts: std::sync::Mutex::new(HashMap::new()),
        }))
    }

    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.changes.subscribe()
    }

    fn changed(&self, sweep_id: &str) {
        let _ = self.changes.send(sweep_id.to_string());
    }

    /// Blocking store work from async code: SQLite commits wait for fsync.
    fn blocking<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        tokio::task::block_in_place(|| f(&self.store))
    }

    // ----- agents -------------------------------------------------------------

    /// An agent said Hello: record it and resend what it still owes.
    pub async fn agent_registered(
        &self,
        name: &str,
        version: &str,
        inventory: &HostInventory,
    ) -> Result<(), SweepError> {
        let record = AgentRecord {
            name: name.to_string(),
            version: version.to_string(),
            inventory_json: serde_json::to_string(inventory).unwrap_or_else(|_| "{}".into()),
            simulated: inventory.simulated,
            now: now_unix_ms(),
        };
        self.writer
            .upsert_agent(record)
            .await
            .map_err(|e| StoreError::Corrupt(format!("could not record the agent: {e}")))?;
        for sweep in self.blocking(|s| s.running_sweeps())? {
            if let Some(h) = self.blocking(|s| s.sweep_host(&sweep.id, name))?
                && !TERMINAL_HOST_STATES.contains(&h.state.as_str())
            {
                self.send_run(&sweep, name, h.deadline_ms)?;
            }
        }
        Ok(())
    }

    pub fn agent_seen(&self, name: &str, session_id: u64, heartbeat: Option<&v1::Heartbeat>) {
        let now = now_unix_ms();
        self.fleet.update(name, session_id, |c| {
            c.last_seen_ms = now;
            if let Some(hb) = heartbeat {
                c.active_sweep = hb.active_sweep_id.clone();
            }
        });
        // Liveness lives in memory: persisting every heartbeat would cost an
        // fsync per agent every few seconds. The store learns it on connect
        // and disconnect.
    }

    /// The session ended: remember when the agent was last seen.
    pub fn agent_gone(&self, name: &str) {
        self.metrics.agent_disconnected();
        let _ = self.blocking(|s| s.touch_agent(name, now_unix_ms()));
    }

    pub fn agent_progress(&self, name: &str, session_id: u64, p: &v1::SweepProgress) {
        self.fleet.update(name, session_id, |c| {
            c.active_sweep = p.sweep_id.clone();
            c.current = format!("{} batch {} {}", p.device_id, p.batch_size, p.phase);
            c.points_total = p.points_total;
        });
        self.changed(&p.sweep_id);
    }

    fn send_run(&self, sweep: &SweepRow, host: &str, deadline_ms: i64) -> Result<(), SweepError> {
        let spec: SweepSpec = serde_json::from_str(&sweep.spec_json)
            .map_err(|e| StoreError::Corrupt(format!("sweep {} spec: {e}", sweep.id)))?;
        let completed = self
            .blocking(|s| s.completed_points(&sweep.id, host))?
            .into_iter()
            .map(|(device_id, b)| v1::PointKey {
                device_id,
                batch_size: b as u32,
            })
            .collect();
        let run = v1::RunSweep {
            sweep_id: sweep.id.clone(),
            spec: Some((&spec).into()),
            deadline_unix_ms: deadline_ms,
            completed,
        };
        if !self.fleet.send(
            host,
            v1::CoordinatorMessage {
                body: Some(coordinator_message::Body::RunSweep(run)),
            },
        ) {
            tracing::warn!(sweep = %sweep.id, host, "could not reach the agent now; it gets the sweep when it reconnects");
        }
        Ok(())
    }

    // ----- sweeps -------------------------------------------------------------

    /// Starts a sweep on the selected connected agents.
    pub fn start_sweep(
        &self,
        req: v1::StartSweepRequest,
    ) -> Result<(String, Vec<String>), SweepError> {
        let spec: SweepSpec = req.spec.ok_or(ConvertError::Missing("spec"))?.try_into()?;
        let connected = self.fleet.names();
        let mut hosts = Vec::new();
        if req.hosts.is_empty() {
            hosts = connected.clone();
        } else {
            for h in &req.hosts {
                if !connected.contains(h) {
                    return Err(SweepError::NoHosts(format!(
                        "host '{h}' is not connected: `fleetbench agents` lists the fleet (connected: {})",
                        if connected.is_empty() {
                            "none".to_string()
                        } else {
                            connected.join(", ")
                        }
                    )));
                }
                if !hosts.contains(h) {
                    hosts.push(h.clone());
                }
            }
        }
        let agents = self.blocking(|s| s.agents())?;
        let inventory_of = |name: &str| -> Option<HostInventory> {
            agents
                .iter()
                .find(|a| a.name == name)
                .and_then(|a| serde_json::from_str(&a.inventory_json).ok())
        };
        if !req.gpu_model.trim().is_empty() {
            let wanted = req.gpu_model.trim().to_ascii_lowercase();
            hosts.retain(|h| {
                inventory_of(h).is_some_and(|inv| {
                    inv.gpus
                        .iter()
                        .any(|g| g.name.to_ascii_lowercase().contains(&wanted))
                })
            });
        }
        if hosts.is_empty() {
            return Err(SweepError::NoHosts(if req.gpu_model.trim().is_empty() {
                "no agent is connected: start `fleetbench-agent run --coordinator URL` on your hosts first".into()
            } else {
                format!(
                    "no connected agent has a GPU matching '{}': `fleetbench agents` shows their GPUs",
                    req.gpu_model
                )
            }));
        }
        let now = now_unix_ms();
        let deadline = if req.deadline_seconds > 0 {
            Duration::from_secs(req.deadline_seconds as u64)
        } else {
            self.config.default_deadline
        };
        let deadline_ms = now + deadline.as_millis() as i64;
        let id = new_sweep_id(now);
        let rows: Vec<(String, bool, i64)> = hosts
            .iter()
            .map(|h| {
                (
                    h.clone(),
                    inventory_of(h).is_some_and(|i| i.simulated),
                    deadline_ms,
                )
            })
            .collect();
        let spec_json = serde_json::to_string(&spec).unwrap_or_default();
        let options = SweepOptions {
            baseline: Some(req.baseline.trim().to_string()).filter(|b| !b.is_empty()),
        };
        let options_json = serde_json::to_string(&options).unwrap_or_else(|_| "{}".into());
        self.blocking(|s| s.create_sweep(&id, &spec_json, &options_json, now, &rows))?;
        let sweep = self
            .blocking(|s| s.sweep(&id))?
            .ok_or_else(|| SweepError::NotFound(id.clone()))?;
        for h in &hosts {
            self.send_run(&sweep, h, deadline_ms)?;
        }
        tracing::info!(sweep = %id, hosts = hosts.len(), spec = %spec.summary(), "sweep started");
        self.changed(&id);
        Ok((id, hosts))
    }

    /// Stores one result; the returned Ack is sent only after the commit.
    /// `Err` when it could not be stored (disk full, database locked): no
    /// ack, and the caller closes the session with that error so the agent
    /// keeps the result and sends it again after a pause.
    pub async fn result_received(
        &self,
        host: &str,
        r: v1::PointResultMsg,
    ) -> Result<v1::Ack, String> {
        let seq = r.seq;
        let refuse = |reason: String| {
            tracing::warn!(host, seq, %reason, "result refused");
            self.metrics.result_refused();
            Ok(v1::Ack {
                seq,
                accepted: false,
                reason,
            })
        };
        let device: fleetbench_common::DeviceDescription = match r.device.map(TryInto::try_into) {
            Some(Ok(d)) => d,
            Some(Err(e)) => return refuse(format!("{e}")),
            None => return refuse("result without a device".into()),
        };
        let model: fleetbench_common::ModelInfo = match r.model.map(TryInto::try_into) {
            Some(Ok(m)) => m,
            Some(Err(e)) => return refuse(format!("{e}")),
            None => return refuse("result without model information".into()),
        };
        let point: fleetbench_common::PointResult = match r.point.map(TryInto::try_into) {
            Some(Ok(p)) => p,
            Some(Err(e)) => return refuse(format!("{e}")),
            None => return refuse("result without a point".into()),
        };
        let environment: fleetbench_common::RunEnvironment =
            r.environment.map(Into::into).unwrap_or_default();
        let new = NewResult {
            sweep_id: r.sweep_id.clone(),
            host: host.to_string(),
            device_id: device.id.clone(),
            batch_size: point.batch_size as i64,
            device_json: to_json(&device),
            model_json: to_json(&model),
            environment_json: to_json(&environment),
            point_json: to_json(&point),
            agent_seq: seq,
            received_ms: now_unix_ms(),
        };
        if let Some(limit) = self.result_limit_reached(&r.sweep_id, host) {
            self.metrics.limit_hit(limit.0);
            return refuse(limit.1);
        }
        match self.writer.insert(new).await {
            Ok(Inserted::New) => {
                self.metrics.result_stored();
                self.count_result(&r.sweep_id, host);
                self.changed(&r.sweep_id);
                Ok(v1::Ack {
                    seq,
                    accepted: true,
                    reason: String::new(),
                })
            }
            Ok(Inserted::Duplicate) => Ok(v1::Ack {
                seq,
                accepted: true,
                reason: "already stored".into(),
            }),
            Ok(Inserted::UnknownSweep) => refuse(format!(
                "sweep '{}' does not include host '{host}'",
                r.sweep_id
            )),
            // Not stored, so not acknowledged: the agent keeps it and resends.
            Err(e) => {
                tracing::error!(host, seq, error = %e, "could not store a result; refusing results from this agent until the store works again");
                self.metrics.store_failed();
                Err(format!(
                    "the coordinator could not store result {seq} ({e}); it is not acknowledged: keep it and send it again later"
                ))
            }
        }
    }

    /// `(limit name, reason)` when storing one more result of `host` in
    /// `sweep` would pass a result limit.
    fn result_limit_reached(&self, sweep: &str, host: &str) -> Option<(&'static str, String)> {
        let limits = &self.config.limits;
        let mut counts = self.result_counts.lock().ok()?;
        if !counts.contains_key(sweep) {
            // Old sweeps are reloaded on demand, so the cache may be dropped.
            if counts.len() >= 64 {
                counts.clear();
            }
            let loaded = self.store.result_counts(sweep).unwrap_or_default();
            counts.insert(
                sweep.to_string(),
                ResultCounts {
                    total: loaded.values().map(|(n, _)| *n as u64).sum(),
                    per_host: loaded
                        .into_iter()
                        .map(|(h, (n, _))| (h, n as u64))
                        .collect(),
                },
            );
        }
        let c = counts.get(sweep)?;
        if c.total >= limits.max_results_per_sweep {
            return Some((
                "results_per_sweep",
                format!(
                    "sweep '{sweep}' already has {} results, the coordinator's limit (--max-results-per-sweep); this one is not stored",
                    c.total
                ),
            ));
        }
        let of_host = c.per_host.get(host).copied().unwrap_or(0);
        if of_host >= limits.max_results_per_host {
            return Some((
                "results_per_host",
                format!(
                    "host '{host}' already has {of_host} results in sweep '{sweep}', the coordinator's limit (--max-results-per-host); this one is not stored"
                ),
            ));
        }
        None
    }

    fn count_result(&self, sweep: &str, host: &str) {
        if let Ok(mut counts) = self.result_counts.lock()
            && let Some(c) = counts.get_mut(sweep)
        {
            c.total += 1;
            *c.per_host.entry(host.to_string()).or_insert(0) += 1;
        }
    }

    /// An agent finished (or gave up on) a sweep.
    pub async fn sweep_finished(
        &self,
        host: &str,
        f: &v1::SweepFinished,
    ) -> Result<(), SweepError> {
        let state = if f.ok {
            "completed"
        } else if f.error == "cancelled" {
            "cancelled"
        } else {
            "failed"
        };
        let verdict = HostVerdict {
            sweep_id: f.sweep_id.clone(),
            host: host.to_string(),
            state: state.to_string(),
            error: (!f.ok).then(|| f.error.clone()),
            notes: f.notes.clone(),
            now: now_unix_ms(),
        };
        let changed = self.writer.finish_host(verdict).await.map_err(|e| {
            StoreError::Corrupt(format!("could not record the host's verdict: {e}"))
        })?;
        if changed {
            tracing::info!(sweep = %f.sweep_id, host, state, error = %f.error, "host finished");
            self.changed(&f.sweep_id);
        }
        self.maybe_end(&f.sweep_id)
    }

    /// Marks hosts past their deadline failed; ends sweeps that are complete.
    pub fn check_deadlines(&self) -> Result<(), SweepError> {
        let now = now_unix_ms();
        for sweep in self.blocking(|s| s.running_sweeps())? {
            for h in self.blocking(|s| s.sweep_hosts(&sweep.id))? {
                if !TERMINAL_HOST_STATES.contains(&h.state.as_str()) && now > h.deadline_ms {
                    let why = if self.fleet.get(&h.host).is_some() {
                        "missed its deadline: the agent is still connected but did not finish in time"
                    } else {
                        "missed its deadline: the agent disconnected and did not come back"
                    };
                    if self.blocking(|s| {
                        s.finish_host(&sweep.id, &h.host, "failed", Some(why), &[], now)
                    })? {
                        tracing::warn!(sweep = %sweep.id, host = %h.host, "{why}");
                        self.fleet.send(
                            &h.host,
                            v1::CoordinatorMessage {
                                body: Some(coordinator_message::Body::CancelSweep(
                                    v1::CancelSweep {
                                        sweep_id: sweep.id.clone(),
                                        reason: "deadline passed".into(),
                                    },
                                )),
                            },
                        );
                        self.changed(&sweep.id);
                    }
                }
            }
            self.maybe_end(&sweep.id)?;
        }
        Ok(())
    }

    pub fn cancel_sweep(&self, id: &str) -> Result<SweepView, SweepError> {
        let sweep = self
            .blocking(|s| s.sweep(id))?
            .ok_or_else(|| SweepError::NotFound(id.to_string()))?;
        if sweep.state == "running" {
            let now = now_unix_ms();
            for h in self.blocking(|s| s.sweep_hosts(id))? {
                if self.blocking(|s| {
                    s.finish_host(
                        id,
                        &h.host,
                        "cancelled",
                        Some("cancelled by the operator"),
                        &[],
                        now,
                    )
                })? {
                    self.fleet.send(
                        &h.host,
                        v1::CoordinatorMessage {
                            body: Some(coordinator_message::Body::CancelSweep(v1::CancelSweep {
                                sweep_id: id.to_string(),
                                reason: "cancelled by the operator".into(),
                            })),
                        },
                    );
                }
            }
            self.changed(id);
            self.maybe_end(id)?;
        }
        self.view(id)
    }

    /// Ends the sweep when no host is still running, and writes its reports.
    fn maybe_end(&self, id: &str) -> Result<(), SweepError> {
        let Some(sweep) = self.blocking(|s| s.sweep(id))? else {
            return Ok(());
        };
        if sweep.state != "running" {
            return Ok(());
        }
        // Cheap (an index range) and asked after every host's verdict, so
        // the full host list is read only once, when the sweep really ends.
        if self.blocking(|s| s.unfinished_hosts(id))? > 0 {
            return Ok(());
        }
        let hosts = self.blocking(|s| s.sweep_hosts(id))?;
        let count = |st: &str| hosts.iter().filter(|h| h.state == st).count();
        let state = if count("cancelled") > 0 && count("completed") == 0 {
            "cancelled"
        } else if count("completed") == hosts.len() {
            "completed"
        } else if count("completed") == 0 {
            "failed"
        } else {
            "partial"
        };
        if !self.blocking(|s| s.end_sweep(id, state, now_unix_ms()))? {
            return Ok(()); // another session's verdict ended it first
        }
        match self.blocking(|s| {
            reports::write_sweep_reports(s, &self.config.data_dir, id, self.config.prices.as_ref())
        }) {
            Ok(dir) => {
                let dir = dir.display().to_string();
                self.blocking(|s| s.set_reports_dir(id, &dir))?;
                tracing::info!(sweep = id, state, reports = %dir, "sweep ended");
            }
            Err(e) => {
                tracing::error!(sweep = id, error = %e, "sweep ended but its reports could not be written")
            }
        }
        self.changed(id);
        Ok(())
    }

    // ----- views --------------------------------------------------------------

    pub fn view(&self, id: &str) -> Result<SweepView, SweepError> {
        let sweep = self
            .blocking(|s| s.sweep(id))?
            .ok_or_else(|| SweepError::NotFound(id.to_string()))?;
        let hosts = self.blocking(|s| s.sweep_hosts(id))?;
        let spec: Option<SweepSpec> = serde_json::from_str(&sweep.spec_json).ok();
        let batches = spec
            .as_ref()
            .map(|s| s.batch_sizes.len() as u32)
            .unwrap_or(0);
        let counts = self.blocking(|s| s.result_counts(id))?;
        let mut statuses = Vec::new();
        for h in &hosts {
            // A host measures every batch size on each of its devices; the
            // devices are known once they report.
            let (done, devices) = counts.get(&h.host).copied().unwrap_or((0, 0));
            let done = done as u32;
            let live = self.fleet.get(&h.host).filter(|c| c.active_sweep == id);
            statuses.push(v1::HostStatus {
                host: h.host.clone(),
                state: if h.state == "running" && self.fleet.get(&h.host).is_none() {
                    "disconnected".into()
                } else {
                    h.state.clone()
                },
                error: h.error.clone().unwrap_or_default(),
                points_done: done,
                points_total: (batches * devices.max(1) as u32).max(done),
                current: if h.state == "running" {
                    live.map(|c| c.current).unwrap_or_default()
                } else {
                    String::new()
                },
                simulated: h.simulated,
                deadline_unix_ms: h.deadline_ms,
            });
        }
        let summary = v1::SweepSummary {
            sweep_id: sweep.id.clone(),
            state: sweep.state.clone(),
            spec: spec.as_ref().map(Into::into),
            created_unix_ms: sweep.created_ms,
            ended_unix_ms: sweep.ended_ms.unwrap_or(0),
            hosts: hosts.len() as u32,
            hosts_done: hosts.iter().filter(|h| h.state == "completed").count() as u32,
            hosts_failed: hosts
                .iter()
                .filter(|h| h.state == "failed" || h.state == "cancelled")
                .count() as u32,
            reports_dir: sweep.reports_dir.clone().unwrap_or_default(),
        };
        Ok(SweepView {
            summary,
            hosts: statuses,
        })
    }

    pub fn list_sweeps(&self, limit: u32) -> Result<Vec<v1::SweepSummary>, SweepError> {
        let rows = self.blocking(|s| s.sweeps(if limit == 0 { 50 } else { limit }))?;
        rows.iter()
            .map(|r| self.view(&r.id).map(|v| v.summary))
            .collect()
    }

    pub fn results(&self, id: &str) -> Result<Vec<v1::StoredResult>, SweepError> {
        let rows = self.blocking(|s| s.results(id))?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let device: fleetbench_common::DeviceDescription =
                    serde_json::from_str(&r.device_json).ok()?;
                let point: fleetbench_common::PointResult =
                    serde_json::from_str(&r.point_json).ok()?;
                Some(v1::StoredResult {
                    host: r.host,
                    device: Some((&device).into()),
                    point: Some((&point).into()),
                    received_unix_ms: r.received_ms,
                })
            })
            .collect())
    }

    pub fn list_agents(&self) -> Result<Vec<v1::AgentSummary>, SweepError> {
        let rows = self.blocking(|s| s.agents())?;
        Ok(rows
            .into_iter()
            .map(|a| {
                let live = self.fleet.get(&a.name);
                let inventory: Option<HostInventory> = serde_json::from_str(&a.inventory_json).ok();
                v1::AgentSummary {
                    name: a.name,
                    connected: live.is_some(),
                    agent_version: a.agent_version,
                    inventory: inventory.as_ref().map(Into::into),
                    last_seen_unix_ms: live
                        .as_ref()
                        .map(|c| c.last_seen_ms)
                        .unwrap_or(a.last_seen_ms),
                    active_sweep_id: live.map(|c| c.active_sweep).unwrap_or_default(),
                }
            })
            .collect())
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

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}
