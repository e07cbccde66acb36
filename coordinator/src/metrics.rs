//! Prometheus metrics, served as text on `GET /metrics` by a small HTTP
//! listener of its own (`serve --metrics-listen`), apart from gRPC so that
//! scrapers need neither HTTP/2 nor the coordinator's TLS client settings.
//!
//! Counters and the ack-latency histogram are kept as events happen; the
//! gauges (agents, sweeps by state, best throughput per host) are handed in
//! as plain data at scrape time by a [`GaugeSource`] (the coordinator), so
//! this module knows nothing of sweeps or the store.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::state::SweepState;

/// Buckets of the result-to-ack latency, in seconds: from a fast local
/// commit (~1 ms) to the 10 s beyond which an agent would long have resent.
const ACK_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What the coordinator counts as it runs.
#[derive(Debug, Clone)]
pub struct Metrics {
    results_stored: Counter,
    results_duplicate: Counter,
    results_refused: Counter,
    agent_disconnects: Counter,
    result_ack_seconds: Histogram,
    store_failures: Counter,
    limit_hits: Family<LimitLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            results_stored: Counter::default(),
            results_duplicate: Counter::default(),
            results_refused: Counter::default(),
            agent_disconnects: Counter::default(),
            result_ack_seconds: Histogram::new(ACK_BUCKETS),
            store_failures: Counter::default(),
            limit_hits: Family::default(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

/// What the gauges show, read when scraped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gauges {
    pub agents_connected: i64,
    /// Agents the coordinator knows that are not connected now.
    pub agents_lost: i64,
    /// Sweeps in the store per state; states without sweeps may be missing.
    pub sweeps_by_state: Vec<(SweepState, i64)>,
    pub best_throughput: Vec<BestThroughput>,
}

/// The best throughput of one host's device in the last ended sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct BestThroughput {
    pub host: String,
    pub gpu_model: String,
    pub simulated: bool,
    pub samples_per_second: f64,
}

/// Where `/metrics` gets its counters and gauges.
pub trait GaugeSource: Send + Sync + 'static {
    type Error: std::fmt::Display;
    fn metrics(&self) -> &Metrics;
    fn gauges(&self) -> Result<Gauges, Self::Error>;
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    host: String,
    gpu_model: String,
    /// "true" for simulated hosts: they must never pass for real ones.
    simulated: String,
}

impl Metrics {
    /// A result was stored for the first time (duplicates are not counted).
    pub fn result_stored(&self) {
        self.results_stored.inc();
    }

    /// A result arrived that was stored already (an agent resending what it
    /// had not seen acknowledged); it is acknowledged, not stored again.
    pub fn result_duplicate(&self) {
        self.results_duplicate.inc();
    }

    pub fn result_refused(&self) {
        self.results_refused.inc();
    }

    /// A result could not be stored (disk full, database locked).
    pub fn store_failed(&self) {
        self.store_failures.inc();
    }

    /// A resource limit refused something (`agents`, `results_per_sweep`, ...).
    pub fn limit_hit(&self, limit: &str) {
        self.limit_hits
            .get_or_create(&LimitLabel {
                limit: limit.to_string(),
            })
            .inc();
    }

    pub fn agent_disconnected(&self) {
        self.agent_disconnects.inc();
    }

    /// From a result's arrival to its ack leaving, after the commit.
    pub fn ack_latency(&self, elapsed: Duration) {
        self.result_ack_seconds.observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition of the counters and of `gauges`.
    pub fn render(&self, gauges: &Gauges) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::with_prefix("fleetbench");

        let gauge = |v: i64| {
            let g: Gauge = Gauge::default();
            g.set(v);
            g
        };
        registry.register(
            "agents_connected",
            "Agents with an open session now",
            gauge(gauges.agents_connected),
        );
        registry.register(
            "agents_lost",
            "Agents the coordinator knows that are not connected now",
            gauge(gauges.agents_lost),
        );
        registry.register(
            "agent_disconnects",
            "Agent sessions that ended (closed, timed out or replaced)",
            self.agent_disconnects.clone(),
        );

        let sweeps: Family<StateLabel, Gauge> = Family::default();
        // Every state appears, zero or not, so alerts need no `absent()`.
        for state in SweepState::ALL {
            let n = gauges
                .sweeps_by_state
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            sweeps
                .get_or_create(&StateLabel {
                    state: state.as_str().into(),
                })
                .set(n);
        }
        registry.register("sweeps", "Sweeps in the store by state", sweeps);

        registry.register(
            "results_stored",
            "Results stored (first copies; resent duplicates are not counted)",
            self.results_stored.clone(),
        );
        registry.register(
            "results_duplicate",
            "Results received again after they were stored, acknowledged as already stored",
            self.results_duplicate.clone(),
        );
        registry.register(
            "results_refused",
            "Results refused with a reason (unknown sweep, invalid content)",
            self.results_refused.clone(),
        );
        registry.register(
            "store_failures",
            "Results that could not be stored (and were not acknowledged)",
            self.store_failures.clone(),
        );
        registry.register(
            "limit_hits",
            "Requests refused by a resource limit, by limit",
            self.limit_hits.clone(),
        );
        registry.register(
            "result_ack_seconds",
            "Time from a result's arrival to its acknowledgement, after it is durable",
            self.result_ack_seconds.clone(),
        );

        let best: Family<HostLabels, Gauge<f64, std::sync::atomic::AtomicU64>> = Family::default();
        for b in &gauges.best_throughput {
            let labels = HostLabels {
                host: b.host.clone(),
                gpu_model: b.gpu_model.clone(),
                simulated: b.simulated.to_string(),
            };
            best.get_or_create(&labels).set(b.samples_per_second);
        }
        registry.register(
            "host_best_throughput_samples_per_second",
            "Best throughput of each host's device in the last ended sweep",
            best,
        );

        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    coordinator: Arc<impl GaugeSource>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;

    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let coordinator = coordinator.clone();
            async move {
                // Store reads block: keep them off the async workers.
                let rendered = tokio::task::spawn_blocking(move || {
                    let gauges = coordinator
                        .gauges()
                        .map_err(|e| format!("cannot read the gauges: {e}"))?;
                    coordinator
                        .metrics()
                        .render(&gauges)
                        .map_err(|e| format!("cannot encode metrics: {e}"))
                })
                .await
                .unwrap_or_else(|e| Err(format!("metrics task failed: {e}")));
                match rendered {
                    Ok(text) => (
                        StatusCode::OK,
                        // prometheus-client writes OpenMetrics (counters
                        // end in _total, the text ends with # EOF).
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                        .into_response(),
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
                }
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sweep_state_is_rendered_even_without_sweeps() {
        let gauges = Gauges {
            agents_connected: 2,
            agents_lost: 1,
            sweeps_by_state: vec![(SweepState::Partial, 3)],
            best_throughput: vec![BestThroughput {
                host: "a".into(),
                gpu_model: "T4".into(),
                simulated: true,
                samples_per_second: 12.5,
            }],
        };
        let text = Metrics::default().render(&gauges).expect("render");
        for state in SweepState::ALL {
            let n = if state == SweepState::Partial { 3 } else { 0 };
            let line = format!("fleetbench_sweeps{{state=\"{state}\"}} {n}");
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
        assert!(text.contains("fleetbench_agents_connected 2"), "{text}");
        assert!(text.contains("fleetbench_agents_lost 1"), "{text}");
        assert!(text.contains("host=\"a\""), "{text}");
    }
}
