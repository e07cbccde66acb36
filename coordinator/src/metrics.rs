//! Prometheus metrics, served as text on `GET /metrics` by a small HTTP
//! listener of its own (`serve --metrics-listen`), apart from gRPC so that
//! scrapers need neither HTTP/2 nor the coordinator's TLS client settings.
//!
//! Counters and the ack-latency histogram are kept as events happen; the
//! gauges (agents, sweeps by state, best throughput per host) are read from
//! the fleet and the store at scrape time, so they can never drift from what
//! `fleetbench agents` and `fleetbench sweeps` say.

use std::collections::BTreeMap;
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

use crate::sweeps::Coordinator;

/// Buckets of the result-to-ack latency, in seconds: from a fast local
/// commit (~1 ms) to the 10 s beyond which an agent would long have resent.
const ACK_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What the coordinator counts as it runs.
#[derive(Debug, Clone)]
pub struct Metrics {
    results_stored: Counter,
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

    /// The Prometheus text exposition of everything, gauges read now.
    pub fn render(&self, coordinator: &Coordinator) -> Result<String, String> {
        let mut registry = Registry::with_prefix("fleetbench");

        let agents = coordinator.list_agents().map_err(|e| e.to_string())?;
        let connected = agents.iter().filter(|a| a.connected).count() as i64;
        let gauge = |v: i64| {
            let g: Gauge = Gauge::default();
            g.set(v);
            g
        };
        registry.register(
            "agents_connected",
            "Agents with an open session now",
            gauge(connected),
        );
        registry.register(
            "agents_lost",
            "Agents the coordinator knows that are not connected now",
            gauge(agents.len() as i64 - connected),
        );
        registry.register(
            "agent_disconnects",
            "Agent sessions that ended (closed, timed out or replaced)",
            self.agent_disconnects.clone(),
        );

        let sweeps: Family<StateLabel, Gauge> = Family::default();
        // Every state appears, zero or not, so alerts need no `absent()`.
        for state in ["running", "completed", "partial", "failed", "cancelled"] {
            sweeps
                .get_or_create(&StateLabel {
                    state: state.into(),
                })
                .set(0);
        }
        for (state, n) in coordinator
            .store
            .sweep_state_counts()
            .map_err(|e| e.to_string())?
        {
            sweeps.get_or_create(&StateLabel { state }).set(n);
        }
        registry.register("sweeps", "Sweeps in the store by state", sweeps);

        registry.register(
            "results_stored",
            "Results stored (first copies; resent duplicates are not counted)",
            self.results_stored.clone(),
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
        for (labels, value) in last_sweep_best_throughput(coordinator)? {
            best.get_or_create(&labels).set(value);
        }
        registry.register(
            "host_best_throughput_samples_per_second",
            "Best throughput of each host's device in the last ended sweep",
            best,
        );

        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .map_err(|e| format!("cannot encode metrics: {e}"))?;
        Ok(out)
    }
}

/// Best measured throughput per (host, GPU model) in the newest sweep that
/// has ended.
fn last_sweep_best_throughput(
    coordinator: &Coordinator,
) -> Result<BTreeMap<HostLabels, f64>, String> {
    let mut best = BTreeMap::new();
    let Some(sweep) = coordinator
        .store
        .last_ended_sweep()
        .map_err(|e| e.to_string())?
    else {
        return Ok(best);
    };
    for row in coordinator
        .store
        .results(&sweep)
        .map_err(|e| e.to_string())?
    {
        let (Ok(device), Ok(point)) = (
            serde_json::from_str::<fleetbench_common::DeviceDescription>(&row.device_json),
            serde_json::from_str::<fleetbench_common::PointResult>(&row.point_json),
        ) else {
            continue;
        };
        let Some(stats) = point.stats() else {
            continue;
        };
        let labels = HostLabels {
            host: row.host,
            gpu_model: device.name,
            simulated: device.simulated.to_string(),
        };
        let entry = best.entry(labels).or_insert(0.0_f64);
        *entry = entry.max(stats.throughput);
    }
    Ok(best)
}

impl PartialOrd for HostLabels {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for HostLabels {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.host, &self.gpu_model, &self.simulated).cmp(&(
            &other.host,
            &other.gpu_model,
            &other.simulated,
        ))
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    coordinator: Arc<Coordinator>,
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
                let rendered =
                    tokio::task::spawn_blocking(move || coordinator.metrics.render(&coordinator))
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
