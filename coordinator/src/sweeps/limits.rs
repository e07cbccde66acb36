//! Bounds that keep one misbehaving agent or sweep from exhausting the
//! coordinator, and the result counts they are checked against.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::store::StoreError;

/// Defaults sit far above a real fleet's needs (a sweep of the seed's 5
/// batch sizes on 8 GPUs is 40 results per host).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Agent sessions held at once; more are refused until some leave.
    pub max_agents: usize,
    /// Largest gRPC message accepted, in bytes (tonic enforces it when it
    /// decodes; see `server`). Results are a few kB; the default leaves room
    /// for long `--min-seconds` runs (100,000 latency samples of 8 bytes) and
    /// no more.
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

impl Limits {
    /// Whether one more agent session may open, with `sessions` open now. An
    /// agent that already holds a session replaces it, so it always may.
    pub fn admits_agent(&self, sessions: usize, already_connected: bool) -> bool {
        already_connected || sessions < self.max_agents
    }
}

/// A result limit that refused a result; its text is the refusal's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitHit {
    #[error(
        "sweep '{sweep}' already has {stored} results, the coordinator's limit (--max-results-per-sweep); this one is not stored"
    )]
    PerSweep { sweep: String, stored: u64 },
    #[error(
        "host '{host}' already has {stored} results in sweep '{sweep}', the coordinator's limit (--max-results-per-host); this one is not stored"
    )]
    PerHost {
        sweep: String,
        host: String,
        stored: u64,
    },
}

impl LimitHit {
    /// The `limit` label of `fleetbench_limit_hits_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            LimitHit::PerSweep { .. } => "results_per_sweep",
            LimitHit::PerHost { .. } => "results_per_host",
        }
    }
}

/// Stored results per sweep and per host, for the result limits. Counting in
/// memory spares a COUNT query per result; a sweep's counts are loaded from
/// the store the first time it is seen (after a restart, or after the cache
/// was dropped).
#[derive(Debug, Default)]
pub(super) struct ResultCounter {
    sweeps: Mutex<HashMap<String, ResultCounts>>,
}

#[derive(Debug, Default)]
struct ResultCounts {
    total: u64,
    per_host: HashMap<String, u64>,
}

/// Sweeps whose counts are kept; older ones are reloaded on demand.
const CACHED_SWEEPS: usize = 64;

impl ResultCounter {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ResultCounts>> {
        // A panic elsewhere while counting leaves at worst one count off by
        // one: far better than switching the limits off.
        self.sweeps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The limit that storing one more result of `host` in `sweep` would
    /// pass, if any. `load` reads the sweep's stored results per host
    /// (`store.result_counts`); if it fails, so does the check: a limit is
    /// never skipped because its count could not be read.
    pub(super) fn check(
        &self,
        limits: &Limits,
        sweep: &str,
        host: &str,
        load: impl FnOnce() -> Result<HashMap<String, (i64, i64)>, StoreError>,
    ) -> Result<Option<LimitHit>, StoreError> {
        let mut sweeps = self.lock();
        if !sweeps.contains_key(sweep) {
            if sweeps.len() >= CACHED_SWEEPS {
                sweeps.clear();
            }
            let loaded = load()?;
            sweeps.insert(
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
        let Some(counts) = sweeps.get(sweep) else {
            return Ok(None); // just inserted
        };
        if counts.total >= limits.max_results_per_sweep {
            return Ok(Some(LimitHit::PerSweep {
                sweep: sweep.to_string(),
                stored: counts.total,
            }));
        }
        let of_host = counts.per_host.get(host).copied().unwrap_or(0);
        if of_host >= limits.max_results_per_host {
            return Ok(Some(LimitHit::PerHost {
                sweep: sweep.to_string(),
                host: host.to_string(),
                stored: of_host,
            }));
        }
        Ok(None)
    }

    /// A new result of `host` in `sweep` was stored.
    pub(super) fn count(&self, sweep: &str, host: &str) {
        // A sweep not in the cache is counted from the store when next seen.
        if let Some(c) = self.lock().get_mut(sweep) {
            c.total += 1;
            *c.per_host.entry(host.to_string()).or_insert(0) += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_sweep: u64, per_host: u64) -> Limits {
        Limits {
            max_results_per_sweep: per_sweep,
            max_results_per_host: per_host,
            ..Limits::default()
        }
    }

    fn none_stored() -> Result<HashMap<String, (i64, i64)>, StoreError> {
        Ok(HashMap::new())
    }

    #[test]
    fn the_per_host_limit_counts_each_host_apart() {
        let counter = ResultCounter::default();
        let limits = limits(100, 2);
        for _ in 0..2 {
            assert_eq!(
                counter
                    .check(&limits, "s", "a", none_stored)
                    .expect("check"),
                None
            );
            counter.count("s", "a");
        }
        assert_eq!(
            counter
                .check(&limits, "s", "a", none_stored)
                .expect("check"),
            Some(LimitHit::PerHost {
                sweep: "s".into(),
                host: "a".into(),
                stored: 2
            })
        );
        assert_eq!(
            counter
                .check(&limits, "s", "b", none_stored)
                .expect("check"),
            None
        );
    }

    #[test]
    fn the_per_sweep_limit_counts_all_hosts_and_starts_from_the_store() {
        let counter = ResultCounter::default();
        let limits = limits(3, 100);
        // After a restart the counts come from the store.
        let stored = || Ok(HashMap::from([("a".to_string(), (2, 1))]));
        assert_eq!(
            counter.check(&limits, "s", "b", stored).expect("check"),
            None
        );
        counter.count("s", "b");
        let hit = counter
            .check(&limits, "s", "c", none_stored)
            .expect("check")
            .expect("over the sweep's limit");
        assert_eq!(hit.metric_label(), "results_per_sweep");
        assert_eq!(
            hit.to_string(),
            "sweep 's' already has 3 results, the coordinator's limit (--max-results-per-sweep); this one is not stored"
        );
    }

    #[test]
    fn a_store_error_fails_the_check_instead_of_reading_as_zero() {
        let counter = ResultCounter::default();
        let broken = || Err(StoreError::NoOutcome("test"));
        assert!(counter.check(&limits(1, 1), "s", "a", broken).is_err());
        // Nothing was cached from the failed load: the next check loads again.
        let stored = || Ok(HashMap::from([("a".to_string(), (1, 1))]));
        assert!(
            counter
                .check(&limits(1, 1), "s", "a", stored)
                .expect("check")
                .is_some()
        );
    }

    #[test]
    fn the_agent_limit_refuses_newcomers_but_not_reconnects() {
        let limits = Limits {
            max_agents: 2,
            ..Limits::default()
        };
        assert!(limits.admits_agent(1, false));
        assert!(!limits.admits_agent(2, false));
        assert!(limits.admits_agent(2, true));
    }
}
