//! The states of a sweep and of each host in it, and the rules that move
//! between them.
//!
//! A host is `Running` from the sweep's start until its first verdict
//! (finished, failed, cancelled, or its deadline passed); that verdict is
//! final. A sweep is `Running` until no host is, and then takes the state
//! that sums its hosts up ([`SweepState::ended_from`]).
//!
//! The store and the wire keep these as text (`as_str`), the store because
//! existing databases hold it, the wire because earlier `fleetbench` CLIs
//! read it. Text comes back in through `FromStr`, which refuses what it does
//! not know: a misspelt state must not read as "still running".

use std::fmt;
use std::str::FromStr;

use fleetbench_proto::v1;
use thiserror::Error;

/// Where a sweep stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SweepState {
    Running,
    /// Every host completed.
    Completed,
    /// Some hosts completed, some did not.
    Partial,
    /// No host completed (and not because the operator cancelled).
    Failed,
    /// Cancelled before any host completed.
    Cancelled,
}

/// Where one host stands in one sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostState {
    Running,
    Completed,
    /// The agent gave up, or the host missed its deadline.
    Failed,
    Cancelled,
}

/// A state's text that no release wrote.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown {kind} state '{value}'")]
pub struct UnknownState {
    /// "sweep" or "host".
    pub kind: &'static str,
    pub value: String,
}

impl SweepState {
    /// Every state, in the order `/metrics` lists them.
    pub const ALL: [SweepState; 5] = [
        SweepState::Running,
        SweepState::Completed,
        SweepState::Partial,
        SweepState::Failed,
        SweepState::Cancelled,
    ];

    /// The text kept in the store and sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            SweepState::Running => "running",
            SweepState::Completed => "completed",
            SweepState::Partial => "partial",
            SweepState::Failed => "failed",
            SweepState::Cancelled => "cancelled",
        }
    }

    pub fn is_running(self) -> bool {
        self == SweepState::Running
    }

    /// The state a sweep ends in, given its hosts' states; `None` while a
    /// host is still running.
    pub fn ended_from(hosts: &[HostState]) -> Option<SweepState> {
        if hosts.contains(&HostState::Running) {
            return None;
        }
        let count = |st: HostState| hosts.iter().filter(|h| **h == st).count();
        let completed = count(HostState::Completed);
        Some(if count(HostState::Cancelled) > 0 && completed == 0 {
            SweepState::Cancelled
        } else if completed == hosts.len() {
            SweepState::Completed
        } else if completed == 0 {
            SweepState::Failed
        } else {
            SweepState::Partial
        })
    }

    /// The state an operator was sent. Coordinators from before the enum
    /// field send only the text, so an unset enum falls back to it.
    pub fn from_wire(summary: &v1::SweepSummary) -> Result<SweepState, UnknownState> {
        match summary.state_code() {
            v1::SweepState::Unspecified => summary.state.parse(),
            v1::SweepState::Running => Ok(SweepState::Running),
            v1::SweepState::Completed => Ok(SweepState::Completed),
            v1::SweepState::Partial => Ok(SweepState::Partial),
            v1::SweepState::Failed => Ok(SweepState::Failed),
            v1::SweepState::Cancelled => Ok(SweepState::Cancelled),
        }
    }
}

impl HostState {
    pub const ALL: [HostState; 4] = [
        HostState::Running,
        HostState::Completed,
        HostState::Failed,
        HostState::Cancelled,
    ];

    /// The text kept in the store and sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Running => "running",
            HostState::Completed => "completed",
            HostState::Failed => "failed",
            HostState::Cancelled => "cancelled",
        }
    }

    /// A terminal state is final: the first verdict stands.
    pub fn is_terminal(self) -> bool {
        self != HostState::Running
    }

    /// The verdict an agent's `SweepFinished` carries. The agent reports an
    /// operator's cancel as the error text "cancelled".
    pub fn from_finished(f: &v1::SweepFinished) -> HostState {
        if f.ok {
            HostState::Completed
        } else if f.error == "cancelled" {
            HostState::Cancelled
        } else {
            HostState::Failed
        }
    }

    /// The state shown to operators: a running host whose agent is not
    /// connected shows as `disconnected` (a wire-only state: the store
    /// still has it running, and its deadline still holds).
    pub fn to_wire(self, connected: bool) -> (String, v1::HostState) {
        let code = match self {
            HostState::Running if !connected => {
                return ("disconnected".into(), v1::HostState::Disconnected);
            }
            HostState::Running => v1::HostState::Running,
            HostState::Completed => v1::HostState::Completed,
            HostState::Failed => v1::HostState::Failed,
            HostState::Cancelled => v1::HostState::Cancelled,
        };
        (self.as_str().into(), code)
    }
}

impl From<SweepState> for v1::SweepState {
    fn from(s: SweepState) -> v1::SweepState {
        match s {
            SweepState::Running => v1::SweepState::Running,
            SweepState::Completed => v1::SweepState::Completed,
            SweepState::Partial => v1::SweepState::Partial,
            SweepState::Failed => v1::SweepState::Failed,
            SweepState::Cancelled => v1::SweepState::Cancelled,
        }
    }
}

impl FromStr for SweepState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<SweepState, UnknownState> {
        SweepState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState {
                kind: "sweep",
                value: fleetbench_common::spec::one_line(s),
            })
    }
}

impl FromStr for HostState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<HostState, UnknownState> {
        HostState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState {
                kind: "host",
                value: fleetbench_common::spec::one_line(s),
            })
    }
}

impl fmt::Display for SweepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for HostState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HostState::{Cancelled, Completed, Failed, Running};

    #[test]
    fn text_round_trips_and_unknown_text_is_refused() {
        for s in SweepState::ALL {
            assert_eq!(s.as_str().parse::<SweepState>(), Ok(s));
        }
        for s in HostState::ALL {
            assert_eq!(s.as_str().parse::<HostState>(), Ok(s));
        }
        let err = "Running".parse::<SweepState>().expect_err("case matters");
        assert_eq!(err.to_string(), "unknown sweep state 'Running'");
        assert!(
            "partial".parse::<HostState>().is_err(),
            "hosts are never partial"
        );
    }

    #[test]
    fn a_sweep_ends_only_when_no_host_runs_and_sums_its_hosts_up() {
        assert_eq!(SweepState::ended_from(&[Completed, Running]), None);
        assert_eq!(
            SweepState::ended_from(&[Completed, Completed]),
            Some(SweepState::Completed)
        );
        assert_eq!(
            SweepState::ended_from(&[Completed, Failed]),
            Some(SweepState::Partial)
        );
        assert_eq!(
            SweepState::ended_from(&[Failed, Failed]),
            Some(SweepState::Failed)
        );
        assert_eq!(
            SweepState::ended_from(&[Cancelled, Failed]),
            Some(SweepState::Cancelled)
        );
        // A host that completed before the cancel makes the sweep partial.
        assert_eq!(
            SweepState::ended_from(&[Completed, Cancelled]),
            Some(SweepState::Partial)
        );
    }

    #[test]
    fn the_wire_carries_text_and_code_and_old_coordinators_text_is_read() {
        assert_eq!(
            Running.to_wire(false),
            ("disconnected".to_string(), v1::HostState::Disconnected)
        );
        assert_eq!(
            Failed.to_wire(false),
            ("failed".to_string(), v1::HostState::Failed)
        );
        let old = v1::SweepSummary {
            state: "partial".into(),
            ..Default::default()
        };
        assert_eq!(SweepState::from_wire(&old), Ok(SweepState::Partial));
        let mut new = v1::SweepSummary {
            state: "completed".into(),
            ..Default::default()
        };
        new.set_state_code(SweepState::Completed.into());
        assert_eq!(SweepState::from_wire(&new), Ok(SweepState::Completed));
        let garbled = v1::SweepSummary {
            state: "done".into(),
            ..Default::default()
        };
        assert!(SweepState::from_wire(&garbled).is_err());
    }
}
