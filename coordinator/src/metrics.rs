//! Prometheus metrics, served as text on `GET /metrics` by a small HTTP
//! listener of its own (`serve --metrics-listen`), apart from gRPC so that
//! scrapers need neither HTTP/2 nor the coordinator's TLS client settings.
//!
//! Counters and the ack-latency histogram are kept as events happen; the
//! gauges (agents, sweeps by state, best throughput per host) are read from
//! a [`GaugeSource`] (the coordinator) by a background task every few
//! seconds, and a scrape renders the last reading: however often, and by
//! however many, `/metrics` is scraped, it never touches the store.
//!
//! Label values come from agents, so they are hostile until cleaned
//! ([`label_value`]): a quote or a newline would otherwise forge series or
//! break every scrape. The per-host series are capped ([`MetricsOptions`]),
//! and what the cap leaves out is counted, so a flood of hosts cannot blow up
//! the scrape.
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

/// The `limit` label values the coordinator counts: each series exists from
/// the start at 0, so that dashboards and alerts see a rate of 0 rather
/// than no data until the first refusal.
const LIMITS: [&str; 4] = [
    "agents",
    "message_size",
    "results_per_sweep",
    "results_per_host",
];

impl Default for Metrics {
    fn default() -> Self {
        let limit_hits: Family<LimitLabel, Counter> = Family::default();
        for limit in LIMITS {
            // Creating the series is the point; the counter stays at 0.
            drop(limit_hits.get_or_create(&LimitLabel {
                limit: limit.to_string(),
            }));
        }
        Metrics {
            results_stored: Counter::default(),
            results_duplicate: Counter::default(),
            results_refused: Counter::default(),
            agent_disconnects: Counter::default(),
            result_ack_seconds: Histogram::new(ACK_BUCKETS),
            store_failures: Counter::default(),
            limit_hits,
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

/// Longest label value; longer ones are cut (a GPU model name is ~30).
pub const MAX_LABEL_CHARS: usize = 64;

/// `text` as a label value: letters, digits, space and `._-+/:()@` kept,
/// anything else (quotes, backslashes, control and invisible characters,
/// other scripts) replaced by `_`, cut to [`MAX_LABEL_CHARS`]. Nothing in it
/// needs escaping in the text format, whatever the encoder does.
pub fn label_value(text: &str) -> String {
    text.chars()
        .take(MAX_LABEL_CHARS)
        .map(|c| {
            if c.is_ascii_alphanumeric() || " ._-+/:()@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// How `/metrics` is served.
#[derive(Debug, Clone)]
pub struct MetricsOptions {
    /// Most per-host series (`host_best_throughput_...`); hosts beyond it, in
    /// name order, are counted in `metrics_hosts_omitted`.
    pub max_hosts: usize,
    /// How often the gauges are read from the store.
    pub refresh: Duration,
    /// Scrapers must send `Authorization: Bearer TOKEN`.
    pub token: Option<fleetbench_proto::security::Token>,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        MetricsOptions {
            max_hosts: 1000,
            refresh: Duration::from_secs(5),
            token: None,
        }
    }
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

    /// A resource limit refused something (one of [`LIMITS`]).
    pub fn limit_hit(&self, limit: &str) {
        debug_assert!(LIMITS.contains(&limit), "{limit} is not in LIMITS");
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

    /// The Prometheus text exposition of the counters and of `gauges`, with
    /// at most `max_hosts` per-host series.
    pub fn render(&self, gauges: &Gauges, max_hosts: usize) -> Result<String, std::fmt::Error> {
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
        let mut rows: Vec<&BestThroughput> = gauges.best_throughput.iter().collect();
        rows.sort_by(|a, b| a.host.cmp(&b.host).then(a.gpu_model.cmp(&b.gpu_model)));
        let mut hosts = std::collections::BTreeSet::new();
        let mut omitted = std::collections::BTreeSet::new();
        for b in rows {
            let host = label_value(&b.host);
            if !hosts.contains(&host) && hosts.len() >= max_hosts {
                omitted.insert(host);
                continue;
            }
            hosts.insert(host.clone());
            let labels = HostLabels {
                host,
                gpu_model: label_value(&b.gpu_model),
                simulated: b.simulated.to_string(),
            };
            best.get_or_create(&labels).set(b.samples_per_second);
        }
        registry.register(
            "host_best_throughput_samples_per_second",
            "Best throughput of each host's device in the last ended sweep",
            best,
        );
        registry.register(
            "metrics_hosts_omitted",
            "Hosts left out of the per-host series by --metrics-max-hosts",
            gauge(omitted.len() as i64),
        );

        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

/// The last gauges read, or why they could not be read.
type Snapshot = Arc<std::sync::RwLock<Result<Arc<Gauges>, String>>>;

/// Reads the gauges once, off the async workers (store reads block).
async fn read_gauges(source: Arc<impl GaugeSource>) -> Result<Arc<Gauges>, String> {
    tokio::task::spawn_blocking(move || {
        source
            .gauges()
            .map(Arc::new)
            .map_err(|e| format!("cannot read the gauges: {e}"))
    })
    .await
    .unwrap_or_else(|e| Err(format!("metrics task failed: {e}")))
}

/// Reads the gauges into `snapshot` every `refresh`.
async fn refresh_gauges(source: Arc<impl GaugeSource>, snapshot: Snapshot, refresh: Duration) {
    let mut tick = tokio::time::interval(refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let read = read_gauges(source.clone()).await;
        *snapshot.write().unwrap_or_else(|p| p.into_inner()) = read;
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    coordinator: Arc<impl GaugeSource>,
    listener: TcpListener,
    options: MetricsOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;

    // The first reading is taken before the first scrape can arrive.
    let snapshot: Snapshot = Arc::new(std::sync::RwLock::new(
        read_gauges(coordinator.clone()).await,
    ));
    let refresher = tokio::spawn(refresh_gauges(
        coordinator.clone(),
        snapshot.clone(),
        options.refresh,
    ));
    let options = Arc::new(options);
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: HeaderMap| {
            let coordinator = coordinator.clone();
            let snapshot = snapshot.clone();
            let options = options.clone();
            async move {
                if let Some(token) = &options.token {
                    let presented = headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .unwrap_or("");
                    if !token.matches(presented) {
                        return (
                            StatusCode::UNAUTHORIZED,
                            "this /metrics requires a bearer token (--metrics-token-file): set the scraper's authorization credentials\n",
                        )
                            .into_response();
                    }
                }
                let gauges = snapshot.read().unwrap_or_else(|p| p.into_inner()).clone();
                let rendered = gauges.and_then(|g| {
                    coordinator
                        .metrics()
                        .render(&g, options.max_hosts)
                        .map_err(|e| format!("cannot encode metrics: {e}"))
                });
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
                    Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
                }
            }
        }),
    );
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    refresher.abort();
    served
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
        let text = Metrics::default().render(&gauges, 10).expect("render");
        for state in SweepState::ALL {
            let n = if state == SweepState::Partial { 3 } else { 0 };
            let line = format!("fleetbench_sweeps{{state=\"{state}\"}} {n}");
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
        assert!(text.contains("fleetbench_agents_connected 2"), "{text}");
        assert!(text.contains("fleetbench_agents_lost 1"), "{text}");
        assert!(text.contains("host=\"a\""), "{text}");
    }

    #[test]
    fn hostile_label_values_cannot_forge_series_and_hosts_are_capped() {
        let row = |host: &str, gpu: &str| BestThroughput {
            host: host.into(),
            gpu_model: gpu.into(),
            simulated: false,
            samples_per_second: 1.0,
        };
        let mut best = vec![
            row("gpu-01", "H100\"} 1\nfleetbench_agents_connected 999\n#"),
            row("gpu-02", &"A".repeat(100_000)),
        ];
        best.extend((3..=12).map(|i| row(&format!("gpu-{i:02}"), "T4")));
        let gauges = Gauges {
            best_throughput: best,
            ..Gauges::default()
        };
        let text = Metrics::default().render(&gauges, 5).expect("render");
        // One line per series, none forged, none huge.
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("fleetbench_agents_connected 999")),
            "{text}"
        );
        assert!(
            text.lines()
                .all(|l| !l.starts_with('#') || l.starts_with("# ")),
            "{text}"
        );
        assert!(text.lines().all(|l| l.len() < 300), "a line is too long");
        let series = text
            .lines()
            .filter(|l| l.starts_with("fleetbench_host_best_throughput"))
            .count();
        assert_eq!(series, 5, "{text}");
        assert!(
            text.contains("fleetbench_metrics_hosts_omitted 7"),
            "{text}"
        );
        assert_eq!(label_value("a\"b\\c\nd\u{202E}"), "a_b_c_d_");
    }
}
