//! A sweep's life: start, results, each host's verdict (finished, failed,
//! cancelled, or deadline passed), and its end with the reports.

use fleetbench_common::names::{LONG_TEXT, MAX_NOTES, clean_text};
use std::time::Duration;

use fleetbench_common::time::now_unix_ms;
use fleetbench_common::{
    DeviceDescription, HostInventory, ModelInfo, PointResult, RunEnvironment, SweepSpec,
};
use fleetbench_proto::ConvertError;
use fleetbench_proto::v1::{self, coordinator_message};

use super::{Coordinator, SweepError, new_sweep_id, to_json};
use crate::reports;
use crate::state::{HostState, SweepState};
use crate::store::{HostVerdict, Inserted, NewResult, SweepOptions};

impl Coordinator {
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
        // A connected agent has registered, but its session may be newer
        // than its row (registration runs after the Welcome): no row reads as
        // an empty inventory, an unreadable row is an error.
        let inventories: Vec<(String, HostInventory)> = self
            .blocking(|s| s.agents())?
            .iter()
            .filter(|a| hosts.contains(&a.name))
            .map(|a| Ok((a.name.clone(), a.inventory()?)))
            .collect::<Result<_, SweepError>>()?;
        let inventory_of = |name: &str| inventories.iter().find(|(n, _)| n == name).map(|(_, i)| i);
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
        let spec_json = to_json(&spec, "the sweep spec")?;
        let options = SweepOptions {
            baseline: Some(req.baseline.trim().to_string()).filter(|b| !b.is_empty()),
        };
        let options_json = to_json(&options, "the sweep's report options")?;
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
    /// A result that is invalid or over a limit gets a refusing Ack. `Err`
    /// when it could not be stored (disk full, database locked): no ack, and
    /// the caller closes the session with that error so the agent keeps the
    /// result and sends it again after a pause.
    pub async fn result_received(
        &self,
        host: &str,
        r: v1::PointResultMsg,
    ) -> Result<v1::Ack, SweepError> {
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
        let not_stored = |source: Box<dyn std::error::Error + Send + Sync>| {
            tracing::error!(host, seq, error = %source, "could not store a result; refusing results from this agent until the store works again");
            self.metrics.store_failed();
            SweepError::ResultNotStored { seq, source }
        };
        let device: DeviceDescription = match r.device.map(TryInto::try_into) {
            Some(Ok(d)) => d,
            Some(Err(e)) => return refuse(format!("{e}")),
            None => return refuse("result without a device".into()),
        };
        let model: ModelInfo = match r.model.map(TryInto::try_into) {
            Some(Ok(m)) => m,
            Some(Err(e)) => return refuse(format!("{e}")),
            None => return refuse("result without model information".into()),
        };
        let point: PointResult = match r.point.map(TryInto::try_into) {
            Some(Ok(p)) => p,
            Some(Err(e)) => return refuse(format!("{e}")),
            None => return refuse("result without a point".into()),
        };
        // Optional on the wire: agents before it was added did not send it.
        let environment: RunEnvironment = r.environment.map(Into::into).unwrap_or_default();
        let new = NewResult {
            sweep_id: r.sweep_id.clone(),
            host: host.to_string(),
            device_id: device.id.clone(),
            batch_size: point.batch_size as i64,
            device_json: to_json(&device, "the result's device")?,
            model_json: to_json(&model, "the result's model")?,
            environment_json: to_json(&environment, "the result's environment")?,
            point_json: to_json(&point, "the result's point")?,
            agent_seq: seq,
            received_ms: now_unix_ms(),
        };
        let limit = self
            .result_counts
            .check(&self.config.limits, &r.sweep_id, host, || {
                self.blocking(|s| s.result_counts(&r.sweep_id))
            });
        match limit {
            Ok(None) => {}
            Ok(Some(hit)) => {
                self.metrics.limit_hit(hit.metric_label());
                return refuse(hit.to_string());
            }
            Err(e) => return Err(not_stored(Box::new(e))),
        }
        match self.writer.insert(new).await {
            Ok(Inserted::New) => {
                self.metrics.result_stored();
                self.result_counts.count(&r.sweep_id, host);
                self.changed(&r.sweep_id);
                Ok(v1::Ack {
                    seq,
                    accepted: true,
                    reason: String::new(),
                })
            }
            Ok(Inserted::Duplicate) => {
                self.metrics.result_duplicate();
                Ok(v1::Ack {
                    seq,
                    accepted: true,
                    reason: "already stored".into(),
                })
            }
            Ok(Inserted::UnknownSweep) => refuse(format!(
                "sweep '{}' does not include host '{host}'",
                r.sweep_id
            )),
            // Not stored, so not acknowledged: the agent keeps it and resends.
            Err(e) => Err(not_stored(Box::new(e))),
        }
    }

    /// An agent finished (or gave up on) a sweep.
    pub async fn sweep_finished(
        &self,
        host: &str,
        f: &v1::SweepFinished,
    ) -> Result<(), SweepError> {
        let state = HostState::from_finished(f);
        let verdict = HostVerdict {
            sweep_id: f.sweep_id.clone(),
            host: host.to_string(),
            state,
            // Agent text, stored and shown in reports and terminals: cleaned
            // and bounded on the way in.
            error: (!f.ok).then(|| clean_text(&f.error, LONG_TEXT)),
            notes: f
                .notes
                .iter()
                .take(MAX_NOTES)
                .map(|n| clean_text(n, LONG_TEXT))
                .collect(),
            now: now_unix_ms(),
        };
        let changed =
            self.writer
                .finish_host(verdict)
                .await
                .map_err(|source| SweepError::Write {
                    what: format!("the verdict of host '{host}' in sweep '{}'", f.sweep_id),
                    source,
                })?;
        if changed {
            tracing::info!(sweep = %f.sweep_id, host, %state, error = %clean_text(&f.error, LONG_TEXT), "host finished");
            self.changed(&f.sweep_id);
        }
        self.maybe_end(&f.sweep_id)
    }

    /// Marks hosts past their deadline failed; ends sweeps that are complete.
    pub fn check_deadlines(&self) -> Result<(), SweepError> {
        self.check_deadlines_at(now_unix_ms())
    }

    /// [`Self::check_deadlines`] at a given time, so tests need not wait.
    pub(super) fn check_deadlines_at(&self, now: i64) -> Result<(), SweepError> {
        for sweep in self.blocking(|s| s.running_sweeps())? {
            for h in self.blocking(|s| s.sweep_hosts(&sweep.id))? {
                if h.state.is_terminal() || now <= h.deadline_ms {
                    continue;
                }
                let why = if self.fleet.get(&h.host).is_some() {
                    "missed its deadline: the agent is still connected but did not finish in time"
                } else {
                    "missed its deadline: the agent disconnected and did not come back"
                };
                if self.blocking(|s| {
                    s.finish_host(&sweep.id, &h.host, HostState::Failed, Some(why), &[], now)
                })? {
                    tracing::warn!(sweep = %sweep.id, host = %h.host, "{why}");
                    // Best effort: the verdict is stored, and an agent that
                    // misses this message is not sent the sweep again.
                    self.fleet
                        .send(&h.host, cancel_message(&sweep.id, "deadline passed"));
                    self.changed(&sweep.id);
                }
            }
            self.maybe_end(&sweep.id)?;
        }
        Ok(())
    }

    pub fn cancel_sweep(&self, id: &str) -> Result<super::SweepView, SweepError> {
        let sweep = self
            .blocking(|s| s.sweep(id))?
            .ok_or_else(|| SweepError::NotFound(id.to_string()))?;
        if sweep.state.is_running() {
            let now = now_unix_ms();
            for h in self.blocking(|s| s.sweep_hosts(id))? {
                if self.blocking(|s| {
                    s.finish_host(
                        id,
                        &h.host,
                        HostState::Cancelled,
                        Some("cancelled by the operator"),
                        &[],
                        now,
                    )
                })? {
                    // Best effort, as for deadlines.
                    self.fleet
                        .send(&h.host, cancel_message(id, "cancelled by the operator"));
                }
            }
            self.changed(id);
            self.maybe_end(id)?;
        }
        self.view(id)
    }

    /// Ends the sweep when no host is still running, and writes its reports.
    pub(super) fn maybe_end(&self, id: &str) -> Result<(), SweepError> {
        let Some(sweep) = self.blocking(|s| s.sweep(id))? else {
            return Ok(());
        };
        if !sweep.state.is_running() {
            return Ok(());
        }
        // Cheap (an index range) and asked after every host's verdict, so
        // the full host list is read only once, when the sweep really ends.
        if self.blocking(|s| s.unfinished_hosts(id))? > 0 {
            return Ok(());
        }
        let hosts: Vec<HostState> = self
            .blocking(|s| s.sweep_hosts(id))?
            .iter()
            .map(|h| h.state)
            .collect();
        let Some(state) = SweepState::ended_from(&hosts) else {
            return Ok(()); // a host is running again: cannot happen, verdicts are final
        };
        if !self.blocking(|s| s.end_sweep(id, state, now_unix_ms()))? {
            return Ok(()); // another session's verdict ended it first
        }
        tracing::info!(sweep = id, %state, "sweep ended");
        self.write_reports(id)?;
        self.changed(id);
        Ok(())
    }

    /// Writes an ended sweep's reports and records where. The sweep has
    /// ended whether or not they can be written: a failure is logged, the
    /// sweep shows no reports directory, and the next start tries again
    /// ([`Coordinator::write_missing_reports`]).
    fn write_reports(&self, id: &str) -> Result<(), SweepError> {
        match self.blocking(|s| {
            reports::write_sweep_reports(s, &self.config.data_dir, id, self.config.prices.as_ref())
        }) {
            Ok(dir) => {
                let dir = dir.display().to_string();
                self.blocking(|s| s.set_reports_dir(id, &dir))?;
                tracing::info!(sweep = id, reports = %dir, "reports written");
            }
            Err(e) => {
                tracing::error!(sweep = id, error = %e, "the sweep's reports could not be written")
            }
        }
        Ok(())
    }

    /// The directory of an ended sweep's reports, for `GetReports`: written
    /// again first when its fleet report is not on disk (a lost volume, a
    /// cleaned data directory, a coordinator stopped before writing them).
    pub fn ensure_reports(&self, id: &str) -> Result<std::path::PathBuf, SweepError> {
        let view = self.view(id)?;
        if view.summary.state_code() == v1::SweepState::Running {
            return Err(SweepError::BadRequest(format!(
                "sweep '{id}' is still running: its reports are written when it ends (`fleetbench sweep --wait --out DIR` waits and fetches them)"
            )));
        }
        let dir = reports::sweep_reports_dir(&self.config.data_dir, id);
        let complete = |dir: &std::path::Path| {
            reports::report_formats()
                .iter()
                .all(|ext| dir.join(format!("fleet.{ext}")).is_file())
        };
        if !complete(&dir) {
            tracing::info!(
                sweep = id,
                "writing this sweep's reports again: they are not on disk"
            );
            self.write_reports(id)?;
            if !complete(&dir) {
                return Err(SweepError::ReportsUnavailable(id.to_string()));
            }
        }
        Ok(dir)
    }

    /// At start: writes the reports of every ended sweep that has none (the
    /// coordinator stopped after the sweep's commit and before its reports,
    /// which would otherwise leave it without reports forever). Returns how
    /// many sweeps it wrote.
    pub fn write_missing_reports(&self) -> Result<usize, SweepError> {
        let missing = self.blocking(|s| s.ended_sweeps_without_reports())?;
        for id in &missing {
            tracing::info!(sweep = %id, "writing the reports this ended sweep never got");
            self.write_reports(id)?;
        }
        Ok(missing.len())
    }
}

fn cancel_message(sweep_id: &str, reason: &str) -> v1::CoordinatorMessage {
    v1::CoordinatorMessage {
        body: Some(coordinator_message::Body::CancelSweep(v1::CancelSweep {
            sweep_id: sweep_id.to_string(),
            reason: reason.into(),
        })),
    }
}
