//! `/metrics` scraped from a real coordinator after a sweep over real agent
//! processes; and `--once` agents leaving when their sweep is over.

use std::collections::BTreeMap;
use std::time::Duration;

use fleetbench_tests::{AgentProc, CoordinatorProc, http_get, text, wait_for_agents, wait_until};

/// `name{labels} value` lines of a Prometheus/OpenMetrics text.
fn samples(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

#[test]
fn metrics_count_agents_sweeps_results_and_ack_latency() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut coordinator = CoordinatorProc::start(
        &dir.path().join("data"),
        None,
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--metrics-refresh",
            "0.2",
        ],
    );
    let metrics = coordinator.metrics_url.clone().expect("metrics address");

    let (status, body) = http_get(&metrics);
    assert!(status.contains("200"), "{status}");
    let before = samples(&body);
    assert_eq!(before.get("fleetbench_agents_connected"), Some(&0.0));
    assert_eq!(before.get("fleetbench_results_stored_total"), Some(&0.0));

    let _h100 = AgentProc::start(
        &coordinator.url,
        "sim-h100",
        &dir.path().join("spool-h100"),
        &["--simulate", "H100-SXM", "--simulate-point-ms", "20"],
    );
    let mut t4 = AgentProc::start(
        &coordinator.url,
        "sim-t4",
        &dir.path().join("spool-t4"),
        &["--simulate", "T4", "--simulate-point-ms", "20", "--once"],
    );
    wait_for_agents(&coordinator, 2);

    let out = coordinator.cli(&[
        "sweep",
        "--batch-sizes",
        "8,16,32",
        "--iterations",
        "3",
        "--warmup",
        "1",
        "--wait",
    ]);
    assert!(out.status.success(), "{}", text(&out));

    // The --once agent leaves by itself, cleanly, once its results are acknowledged.
    wait_until(Duration::from_secs(30), "the --once agent to exit", || {
        matches!(t4.child.try_wait(), Ok(Some(_)))
    });
    let exit = t4.child.wait().expect("wait");
    assert!(exit.success(), "{exit:?}: {}", t4.log_text());
    assert!(
        t4.log_text().contains("exiting (--once)"),
        "{}",
        t4.log_text()
    );

    wait_until(
        Duration::from_secs(15),
        "the lost agent in the metrics",
        || samples(&http_get(&metrics).1).get("fleetbench_agents_lost") == Some(&1.0),
    );
    let (_, body) = http_get(&metrics);
    let m = samples(&body);
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in:\n{body}"));
    assert_eq!(get("fleetbench_agents_connected"), 1.0);
    assert_eq!(get("fleetbench_agents_lost"), 1.0);
    assert_eq!(get("fleetbench_sweeps{state=\"completed\"}"), 1.0);
    assert_eq!(get("fleetbench_sweeps{state=\"running\"}"), 0.0);
    // 2 hosts x 3 batch sizes, each stored once and acknowledged once.
    assert_eq!(get("fleetbench_results_stored_total"), 6.0);
    assert_eq!(get("fleetbench_result_ack_seconds_count"), 6.0);
    assert_eq!(
        get("fleetbench_result_ack_seconds_bucket{le=\"+Inf\"}"),
        6.0
    );
    assert!(get("fleetbench_result_ack_seconds_sum") > 0.0);
    let best: Vec<(&String, &f64)> = m
        .iter()
        .filter(|(k, _)| k.starts_with("fleetbench_host_best_throughput_samples_per_second{"))
        .collect();
    assert_eq!(best.len(), 2, "{body}");
    let h100 = best
        .iter()
        .find(|(k, _)| k.contains("host=\"sim-h100\""))
        .expect("h100 line");
    let t4_best = best
        .iter()
        .find(|(k, _)| k.contains("host=\"sim-t4\""))
        .expect("t4 line");
    assert!(h100.0.contains("simulated=\"true\"") && h100.0.contains("gpu_model=\""));
    assert!(
        *h100.1 > *t4_best.1 && *t4_best.1 > 0.0,
        "an H100 outruns a T4: {best:?}"
    );
    // The best throughput is the best of the stored results.
    let stored_best: f64 = coordinator
        .db()
        .query_row(
            "SELECT MAX(json_extract(point_json, '$.outcome.throughput')) FROM results WHERE host = 'sim-h100'",
            [],
            |r| r.get(0),
        )
        .expect("query");
    assert!(
        (stored_best - *h100.1).abs() < 1e-6 * stored_best,
        "{stored_best} vs {}",
        h100.1
    );

    dashboard_queries_name_only_exported_metrics(&body);

    let (status, _) = http_get(&metrics.replace("/metrics", "/nothing"));
    assert!(status.contains("404"), "{status}");
    coordinator.kill9();
}

/// Every metric the Grafana dashboard queries is one this coordinator's
/// `/metrics` (`body`) exports: a sample line, or (for a family with no
/// series yet, such as limit refusals) its `# TYPE` line.
fn dashboard_queries_name_only_exported_metrics(body: &str) {
    let path = fleetbench_tests::repo_root()
        .join("deploy/helm/fleetbench/dashboards/fleetbench-coordinator.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read the dashboard"))
            .expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "fleetbench-coordinator");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut names = std::collections::BTreeSet::new();
    for panel in panels {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(at) = rest.find("fleetbench_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                names.insert(name);
            }
        }
    }
    assert!(names.len() >= 10, "{names:?}");
    for name in &names {
        let sampled = body.lines().any(|l| {
            l.strip_prefix(name.as_str())
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        });
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        let typed = body
            .lines()
            .any(|l| l.starts_with(&format!("# TYPE {family} ")));
        assert!(
            sampled || typed,
            "the dashboard queries {name}, which /metrics does not export:\n{body}"
        );
    }
}
