//! Resource limits: each one refuses what passes it with a reason, and each
//! hit is counted in /metrics.

use std::time::Duration;

use fleetbench_tests::{
    AgentProc, CoordinatorProc, http_get, sweep_id_of, text, wait_for_agents, wait_sweep_end,
    wait_until,
};

fn limit_hits(metrics: &str, limit: &str) -> f64 {
    let key = format!("fleetbench_limit_hits_total{{limit=\"{limit}\"}} ");
    http_get(metrics)
        .1
        .lines()
        .find_map(|l| l.strip_prefix(&key).and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

#[test]
fn session_and_result_limits_refuse_with_a_reason_and_are_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let coordinator = CoordinatorProc::start(
        &dir.path().join("data"),
        None,
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--max-agents",
            "1",
            "--max-results-per-host",
            "2",
        ],
    );
    let metrics = coordinator.metrics_url.clone().expect("metrics");
    let first = AgentProc::start(
        &coordinator.url,
        "first",
        &dir.path().join("spool-first"),
        &["--simulate", "T4", "--simulate-point-ms", "20"],
    );
    wait_for_agents(&coordinator, 1);
    let second = AgentProc::start(
        &coordinator.url,
        "second",
        &dir.path().join("spool-second"),
        &["--simulate", "T4"],
    );
    wait_until(
        Duration::from_secs(20),
        "the second agent to be refused",
        || {
            second
                .log_text()
                .contains("limit of 1 agent sessions (--max-agents)")
        },
    );
    assert!(limit_hits(&metrics, "agents") >= 1.0);

    // Three batch sizes, two results allowed: the third is refused with the reason.
    let out = coordinator.cli(&[
        "sweep",
        "--hosts",
        "first",
        "--batch-sizes",
        "8,16,32",
        "--iterations",
        "2",
        "--warmup",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let sweep = sweep_id_of(&out);
    wait_sweep_end(&coordinator, &sweep, Duration::from_secs(60));
    assert_eq!(coordinator.stored(&sweep).len(), 2);
    wait_until(
        Duration::from_secs(10),
        "the refusal in the agent's log",
        || first.log_text().contains("--max-results-per-host"),
    );
    assert_eq!(limit_hits(&metrics, "results_per_host"), 1.0);
    assert!(
        coordinator
            .log_text()
            .contains("the coordinator's limit (--max-results-per-host)"),
        "{}",
        coordinator.log_text()
    );
}
