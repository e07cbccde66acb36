//! Agent sessions as the coordinator's state sees them: admission, Hello,
//! heartbeats, progress, leaving, and the `RunSweep` each agent is owed.

use fleetbench_common::HostInventory;
use fleetbench_common::names::{SHORT_TEXT, clean_text};
use fleetbench_common::time::now_unix_ms;
use fleetbench_proto::v1::{self, coordinator_message};

use super::{Coordinator, SweepError, to_json};
use crate::store::{AgentRecord, SweepRow};

/// An agent session refused by the `max_agents` limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the coordinator holds its limit of {max_agents} agent sessions (--max-agents); try again later"
)]
pub struct AgentRefused {
    pub max_agents: usize,
}

impl Coordinator {
    /// Whether an agent named `name` may open a session now.
    pub fn admit_agent(&self, name: &str) -> Result<(), AgentRefused> {
        let limits = &self.config.limits;
        if limits.admits_agent(self.fleet.len(), self.fleet.get(name).is_some()) {
            return Ok(());
        }
        self.metrics.limit_hit("agents");
        Err(AgentRefused {
            max_agents: limits.max_agents,
        })
    }

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
            inventory_json: to_json(inventory, "the agent's inventory")?,
            simulated: inventory.simulated,
            now: now_unix_ms(),
        };
        self.writer
            .upsert_agent(record)
            .await
            .map_err(|source| SweepError::Write {
                what: format!("agent '{name}'"),
                source,
            })?;
        // Restart resume: every running sweep this host has not finished is
        // sent again, with the points already stored.
        for sweep in self.blocking(|s| s.running_sweeps())? {
            if let Some(h) = self.blocking(|s| s.sweep_host(&sweep.id, name))?
                && !h.state.is_terminal()
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
                c.active_sweep = clean_text(&hb.active_sweep_id, SHORT_TEXT);
            }
        });
        // Liveness lives in memory: persisting every heartbeat would cost an
        // fsync per agent every few seconds. The store learns it on connect
        // and disconnect.
    }

    /// Forgets agents not seen within `agent_retention` that are neither
    /// connected nor awaited by a running sweep; returns how many.
    pub fn prune_agents(&self) -> Result<usize, SweepError> {
        let before = now_unix_ms() - self.config.agent_retention.as_millis() as i64;
        let connected = self.fleet.names();
        let removed = self.blocking(|s| s.prune_agents(before, &connected))?;
        if removed > 0 {
            tracing::info!(removed, retention = ?self.config.agent_retention, "forgot agents not seen within the retention period");
        }
        Ok(removed)
    }

    /// The session ended: remember when the agent was last seen.
    pub fn agent_gone(&self, name: &str) {
        self.metrics.agent_disconnected();
        // Only `fleetbench agents`' "last seen" depends on it, and the session
        // is over either way: log, do not fail.
        if let Err(e) = self.blocking(|s| s.touch_agent(name, now_unix_ms())) {
            tracing::warn!(agent = name, error = %e, "could not record when the agent was last seen");
        }
    }

    pub fn agent_progress(&self, name: &str, session_id: u64, p: &v1::SweepProgress) {
        self.fleet.update(name, session_id, |c| {
            // Shown in `fleetbench agents`: cleaned, so an agent cannot
            // drive the operator's terminal.
            c.active_sweep = clean_text(&p.sweep_id, SHORT_TEXT);
            c.current = clean_text(
                &format!("{} batch {} {}", p.device_id, p.batch_size, p.phase),
                SHORT_TEXT,
            );
            c.points_total = p.points_total;
        });
        self.changed(&p.sweep_id);
    }

    /// Sends `host` its part of `sweep`, minus the points already stored.
    pub(super) fn send_run(
        &self,
        sweep: &SweepRow,
        host: &str,
        deadline_ms: i64,
    ) -> Result<(), SweepError> {
        let spec = sweep.spec()?;
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
}
