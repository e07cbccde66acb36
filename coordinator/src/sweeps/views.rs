//! What the control API and `/metrics` show: the store's rows joined with
//! the live fleet, as wire messages. The state conversions to the wire
//! happen here, in `view`, and nowhere else.

use fleetbench_proto::v1;

use super::{Coordinator, SweepError, to_json};
use crate::metrics::{BestThroughput, GaugeSource, Gauges, Metrics};
use crate::state::HostState;
use crate::store::{ResultKey, StoreError};

/// A sweep's current picture, for the control API.
#[derive(Debug, Clone)]
pub struct SweepView {
    pub summary: v1::SweepSummary,
    pub hosts: Vec<v1::HostStatus>,
}

impl Coordinator {
    pub fn view(&self, id: &str) -> Result<SweepView, SweepError> {
        let sweep = self
            .blocking(|s| s.sweep(id))?
            .ok_or_else(|| SweepError::NotFound(id.to_string()))?;
        let hosts = self.blocking(|s| s.sweep_hosts(id))?;
        let spec = sweep.spec()?;
        let batches = spec.batch_sizes.len() as u32;
        let counts = self.blocking(|s| s.result_counts(id))?;
        let mut statuses = Vec::new();
        for h in &hosts {
            // A host measures every batch size on each of its devices; the
            // devices are known once they report. No results yet: zero.
            let (done, devices) = counts.get(&h.host).copied().unwrap_or((0, 0));
            let done = done as u32;
            let live = self.fleet.get(&h.host);
            let (state, state_code) = h.state.to_wire(live.is_some());
            let mut status = v1::HostStatus {
                host: h.host.clone(),
                state,
                error: h.error.clone().unwrap_or_default(),
                points_done: done,
                points_total: (batches * devices.max(1) as u32).max(done),
                current: match live {
                    Some(c) if h.state == HostState::Running && c.active_sweep == id => c.current,
                    _ => String::new(),
                },
                simulated: h.simulated,
                deadline_unix_ms: h.deadline_ms,
                ..Default::default()
            };
            status.set_state_code(state_code);
            statuses.push(status);
        }
        let count = |st: HostState| hosts.iter().filter(|h| h.state == st).count() as u32;
        let mut summary = v1::SweepSummary {
            sweep_id: sweep.id.clone(),
            state: sweep.state.as_str().into(),
            spec: Some((&spec).into()),
            created_unix_ms: sweep.created_ms,
            // The wire's "not ended yet".
            ended_unix_ms: sweep.ended_ms.unwrap_or(0),
            hosts: hosts.len() as u32,
            hosts_done: count(HostState::Completed),
            hosts_failed: count(HostState::Failed) + count(HostState::Cancelled),
            reports_dir: sweep.reports_dir.clone().unwrap_or_default(),
            ..Default::default()
        };
        summary.set_state_code(sweep.state.into());
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

    /// Every stored result of a sweep; a row that does not decode is an
    /// error naming it, not a silent gap in `fleetbench show`.
    pub fn results(&self, id: &str) -> Result<Vec<v1::StoredResult>, SweepError> {
        let rows = self.blocking(|s| s.results(id))?;
        rows.into_iter().map(stored_result).collect()
    }

    /// One page of a sweep's results (see `GetSweepRequest`) and the token
    /// of the next page, empty after the last.
    pub fn results_page(
        &self,
        id: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<v1::StoredResult>, String), SweepError> {
        let size = match page_size {
            0 => DEFAULT_PAGE,
            n => (n as usize).min(MAX_PAGE),
        };
        let after = if page_token.is_empty() {
            None
        } else {
            Some(decode_page_token(page_token)?)
        };
        let rows = self.blocking(|s| s.results_page(id, after.as_ref(), size))?;
        let next = match rows.last() {
            Some(last) if rows.len() == size => encode_page_token(&ResultKey {
                host: last.host.clone(),
                device_id: last.device_id.clone(),
                batch_size: last.batch_size,
            })?,
            _ => String::new(),
        };
        let results = rows
            .into_iter()
            .map(stored_result)
            .collect::<Result<_, _>>()?;
        Ok((results, next))
    }

    /// The ids of the sweeps with a host that has a GPU named like `gpu`.
    pub fn sweeps_with_gpu(
        &self,
        gpu: &str,
    ) -> Result<std::collections::HashSet<String>, SweepError> {
        Ok(self.blocking(|s| s.sweeps_with_gpu(gpu))?)
    }

    /// Two sweeps compared point by point (`fleetbench compare`'s verdicts).
    pub fn compare_sweeps(
        &self,
        before: &str,
        after: &str,
    ) -> Result<fleetbench_report::compare::SweepComparison, SweepError> {
        let a = crate::operator::device_points(&self.results(before)?);
        let b = crate::operator::device_points(&self.results(after)?);
        Ok(fleetbench_report::compare::compare(before, &a, after, &b))
    }

    pub fn list_agents(&self) -> Result<Vec<v1::AgentSummary>, SweepError> {
        let rows = self.blocking(|s| s.agents())?;
        rows.into_iter()
            .map(|a| {
                let live = self.fleet.get(&a.name);
                let inventory = a.inventory()?;
                Ok(v1::AgentSummary {
                    connected: live.is_some(),
                    inventory: Some((&inventory).into()),
                    last_seen_unix_ms: live
                        .as_ref()
                        .map(|c| c.last_seen_ms)
                        .unwrap_or(a.last_seen_ms),
                    active_sweep_id: live.map(|c| c.active_sweep).unwrap_or_default(),
                    name: a.name,
                    agent_version: a.agent_version,
                })
            })
            .collect()
    }

    /// Best measured throughput per host and device in the newest sweep
    /// that has ended.
    fn last_sweep_best_throughput(&self) -> Result<Vec<BestThroughput>, StoreError> {
        let mut best: Vec<BestThroughput> = Vec::new();
        let Some(sweep) = self.store.last_ended_sweep()? else {
            return Ok(best);
        };
        for row in self.store.results(&sweep)? {
            let (device, point) = (row.device()?, row.point()?);
            // A failed point has no throughput.
            let Some(stats) = point.stats() else {
                continue;
            };
            match best.iter_mut().find(|b| {
                b.host == row.host && b.gpu_model == device.name && b.simulated == device.simulated
            }) {
                Some(b) => b.samples_per_second = b.samples_per_second.max(stats.throughput),
                None => best.push(BestThroughput {
                    host: row.host.clone(),
                    gpu_model: device.name,
                    simulated: device.simulated,
                    samples_per_second: stats.throughput.max(0.0),
                }),
            }
        }
        Ok(best)
    }
}

impl GaugeSource for Coordinator {
    type Error = SweepError;

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Read at scrape time from the fleet and the store, so the gauges can
    /// never drift from what `fleetbench agents` and `fleetbench sweeps` say.
    fn gauges(&self) -> Result<Gauges, SweepError> {
        let agents = self.list_agents()?;
        let connected = agents.iter().filter(|a| a.connected).count();
        Ok(Gauges {
            agents_connected: connected as i64,
            agents_lost: (agents.len() - connected) as i64,
            sweeps_by_state: self.store.sweep_state_counts()?,
            best_throughput: self.last_sweep_best_throughput()?,
        })
    }
}

/// Results per `GetSweep` page unless the request says otherwise: about 1 MB
/// for ordinary points, well inside the 4 MB default message limit.
pub const DEFAULT_PAGE: usize = 1000;
/// The largest page a request may ask for.
pub const MAX_PAGE: usize = 5000;

fn stored_result(r: crate::store::ResultRow) -> Result<v1::StoredResult, SweepError> {
    Ok(v1::StoredResult {
        device: Some((&r.device()?).into()),
        point: Some((&r.point()?).into()),
        host: r.host,
        received_unix_ms: r.received_ms,
    })
}

/// The token is the last key of the page, as JSON: opaque to clients,
/// checked on the way back like any other input.
fn encode_page_token(key: &ResultKey) -> Result<String, SweepError> {
    to_json(key, "a page token")
}

fn decode_page_token(token: &str) -> Result<ResultKey, SweepError> {
    serde_json::from_str(token).map_err(|_| {
        SweepError::BadRequest(format!(
            "page_token '{}' is not one this coordinator gave: start again with an empty page_token",
            fleetbench_common::names::clean_text(token, 80)
        ))
    })
}
