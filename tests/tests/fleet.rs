//! The fleet end to end: real coordinator and agent processes on loopback,
//! sweeps started from the CLI, results read back from the store and the
//! reports on disk.

use std::time::Duration;

use fleetbench_tests::{
    AgentProc, CoordinatorProc, fixture_model, sweep_id_of, text, wait_for_agents, wait_until,
};

const SWEEP_TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn a_sweep_over_three_agents_stores_every_result_and_writes_both_kinds_of_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let coordinator = CoordinatorProc::start(&dir.path().join("data"), None, &[]);
    let model = fixture_model();
    let _cpu = AgentProc::start(
        &coordinator.url,
        "cpu-host",
        &dir.path().join("spool-cpu"),
        &[],
    );
    let _h100 = AgentProc::start(
        &coordinator.url,
        "sim-h100",
        &dir.path().join("spool-h100"),
        &["--simulate", "H100-SXM", "--simulate-point-ms", "50"],
    );
    let _t4 = AgentProc::start(
        &coordinator.url,
        "sim-t4",
        &dir.path().join("spool-t4"),
        &["--simulate", "T4", "--simulate-point-ms", "50"],
    );
    wait_for_agents(&coordinator, 3);

    let agents = text(&coordinator.cli(&["agents"]));
    assert!(
        agents.contains("sim-h100 (simulated)") && agents.contains("H100-SXM (simulated)"),
        "{agents}"
    );

    let out = coordinator.cli(&[
        "sweep",
        "--model",
        model.to_str().expect("utf-8 path"),
        "--device",
        "cpu",
        "--batch-sizes",
        "1,2,4",
        "--seq-len",
        "32",
        "--warmup",
        "1",
        "--iterations",
        "3",
        "--wait",
    ]);
    let printed = text(&out);
    assert!(out.status.success(), "sweep failed:\n{printed}");
    let sweep = sweep_id_of(&out);
    assert!(
        printed.contains("completed: 3/3 hosts completed"),
        "{printed}"
    );

    // Every host and batch size exactly once (the key makes duplicates
    // impossible; the count proves none is missing).
    let stored = coordinator.stored(&sweep);
    for host in ["cpu-host", "sim-h100", "sim-t4"] {
        let batches: Vec<i64> = stored.iter().filter(|r| r.0 == host).map(|r| r.2).collect();
        assert_eq!(batches, vec![1, 2, 4], "{host}: {stored:?}");
    }
    assert_eq!(coordinator.sweep_state(&sweep), "completed");

    // Reports: one per machine in the standalone format, and the fleet's.
    let reports = coordinator.data.join("reports").join(&sweep);
    for host in ["cpu-host", "sim-h100", "sim-t4"] {
        let md =
            std::fs::read_to_string(reports.join(format!("{host}.md"))).expect("machine report");
        for section in [
            "## Model Information",
            "## System Information",
            "## Benchmark Summary",
            "## Key Performance Metrics",
            "## Performance Insights",
            "## Potential Bottlenecks",
            "## Recommendations",
            "## Conclusion",
        ] {
            assert!(md.contains(section), "{host}.md lacks {section}");
        }
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(reports.join(format!("{host}.json"))).expect("json"),
        )
        .expect("valid json");
        assert_eq!(json["points"].as_array().map(Vec::len), Some(3));
        assert_eq!(
            json["simulated"].as_bool(),
            Some(host.starts_with("sim")),
            "{host}"
        );
    }
    let cpu_md = std::fs::read_to_string(reports.join("cpu-host.md")).expect("cpu report");
    assert!(
        cpu_md.contains("local directory") && !cpu_md.contains("SIMULATED"),
        "{cpu_md}"
    );
    let sim_md = std::fs::read_to_string(reports.join("sim-t4.md")).expect("sim report");
    assert!(sim_md.contains("SIMULATED HOST"), "{sim_md}");

    let fleet: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(reports.join("fleet.json")).expect("fleet.json"),
    )
    .expect("json");
    let rows = fleet["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 3);
    let row = |h: &str| rows.iter().find(|r| r["host"] == h).expect("row").clone();
    assert_eq!(row("sim-h100")["hardware"], "H100-SXM");
    assert_eq!(row("sim-t4")["simulated"], true);
    assert_eq!(row("cpu-host")["hardware"], "CPU");
    // The simulated H100 is faster than the simulated T4.
    let best = |h: &str| row(h)["best_throughput"]["value"].as_f64().expect("best");
    assert!(best("sim-h100") > best("sim-t4"));
    let total = fleet["totals"]["total_best_throughput"]
        .as_f64()
        .expect("total");
    assert!((total - (best("sim-h100") + best("sim-t4") + best("cpu-host"))).abs() < 1e-6);
    assert_eq!(fleet["totals"]["simulated_hosts"], 2);
    let fleet_md = std::fs::read_to_string(reports.join("fleet.md")).expect("fleet.md");
    assert!(
        fleet_md.contains("2 of 3 hosts are SIMULATED") && fleet_md.contains("sim-t4 (simulated)"),
        "{fleet_md}"
    );
    let csv = std::fs::read_to_string(reports.join("fleet.csv")).expect("fleet.csv");
    assert_eq!(csv.lines().count(), 4, "{csv}");

    // The operator's views agree with the store.
    let show = text(&coordinator.cli(&["show", &sweep]));
    assert!(
        show.contains("completed") && show.contains("sim-t4"),
        "{show}"
    );
    let sweeps = text(&coordinator.cli(&["sweeps"]));
    assert!(sweeps.contains(&sweep), "{sweeps}");
}

#[test]
fn an_agent_killed_mid_sweep_resumes_and_every_point_is_stored_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let coordinator = CoordinatorProc::start(&dir.path().join("data"), None, &[]);
    let sim = ["--simulate", "A100-80GB", "--simulate-point-ms", "400"];
    let mut agent = AgentProc::start(&coordinator.url, "victim", &dir.path().join("spool"), &sim);
    wait_for_agents(&coordinator, 1);

    let out = coordinator.cli(&["sweep", "--batch-sizes", "1,2,4,8,16,32,64,128"]);
    assert!(out.status.success(), "{}", text(&out));
    let sweep = sweep_id_of(&out);
    wait_until(SWEEP_TIMEOUT, "two stored results", || {
        coordinator.stored(&sweep).len() >= 2
    });
    agent.kill9();
    let before: Vec<i64> = coordinator.stored(&sweep).iter().map(|r| r.2).collect();
    assert!(
        before.len() < 8,
        "the sweep finished before the kill: {before:?}"
    );

    agent.restart();
    wait_until(SWEEP_TIMEOUT, "the sweep to end", || {
        coordinator.sweep_state(&sweep) != "running"
    });
    assert_eq!(
        coordinator.sweep_state(&sweep),
        "completed",
        "{}",
        agent.log_text()
    );
    let after: Vec<i64> = coordinator.stored(&sweep).iter().map(|r| r.2).collect();
    assert_eq!(after, vec![1, 2, 4, 8, 16, 32, 64, 128]);
    // The restarted agent was told what was already done and did not redo it.
    let log = agent.log_text();
    let resumed_with = log
        .lines()
        .rev()
        .filter(|l| l.contains("starting sweep"))
        .filter_map(|l| {
            l.split("already_done=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<usize>()
                .ok()
        })
        .next()
        .expect("the restarted agent logs what it skips");
    assert!(
        resumed_with >= before.len(),
        "resumed with {resumed_with} done, {} were stored: {log}",
        before.len()
    );
}

#[test]
fn a_coordinator_restarted_mid_sweep_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut coordinator = CoordinatorProc::start(&data, None, &[]);
    let addr = coordinator.addr.clone();
    let sim = |m: &'static str| ["--simulate", m, "--simulate-point-ms", "300"];
    let _a = AgentProc::start(
        &coordinator.url,
        "node-a",
        &dir.path().join("spool-a"),
        &sim("L4"),
    );
    let _b = AgentProc::start(
        &coordinator.url,
        "node-b",
        &dir.path().join("spool-b"),
        &sim("L40S"),
    );
    wait_for_agents(&coordinator, 2);

    let out = coordinator.cli(&["sweep", "--batch-sizes", "1,2,4,8,16,32"]);
    assert!(out.status.success(), "{}", text(&out));
    let sweep = sweep_id_of(&out);
    wait_until(SWEEP_TIMEOUT, "a stored result", || {
        !coordinator.stored(&sweep).is_empty()
    });
    coordinator.kill9();
    // Agents keep measuring into their spools while the coordinator is away.
    std::thread::sleep(Duration::from_millis(1200));
    let coordinator = CoordinatorProc::start(&data, Some(&addr), &[]);
    wait_until(SWEEP_TIMEOUT, "the sweep to end", || {
        coordinator.sweep_state(&sweep) != "running"
    });
    assert_eq!(
        coordinator.sweep_state(&sweep),
        "completed",
        "{}",
        coordinator.log_text()
    );
    let stored = coordinator.stored(&sweep);
    for host in ["node-a", "node-b"] {
        let batches: Vec<i64> = stored.iter().filter(|r| r.0 == host).map(|r| r.2).collect();
        assert_eq!(batches, vec![1, 2, 4, 8, 16, 32], "{host}");
    }
    // The reports are written (and flushed) just after the sweep ends.
    let fleet_md = coordinator
        .data
        .join("reports")
        .join(&sweep)
        .join("fleet.md");
    wait_until(Duration::from_secs(15), "the fleet report", || {
        fleet_md.exists()
    });
}

#[test]
fn an_agent_that_never_returns_fails_at_its_deadline_and_the_sweep_still_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let coordinator = CoordinatorProc::start(&dir.path().join("data"), None, &[]);
    let _ok = AgentProc::start(
        &coordinator.url,
        "steady",
        &dir.path().join("spool-ok"),
        &["--simulate", "H200", "--simulate-point-ms", "100"],
    );
    let mut gone = AgentProc::start(
        &coordinator.url,
        "gone",
        &dir.path().join("spool-gone"),
        &["--simulate", "T4", "--simulate-point-ms", "1000"],
    );
    wait_for_agents(&coordinator, 2);

    let url = coordinator.url.clone();
    let waiter = std::thread::spawn(move || {
        fleetbench_tests::cli(
            &url,
            &[
                "sweep",
                "--batch-sizes",
                "1,2,4,8",
                "--deadline",
                "5",
                "--wait",
            ],
        )
    });
    wait_until(SWEEP_TIMEOUT, "the doomed agent to start", || {
        coordinator
            .db()
            .query_row("SELECT COUNT(*) FROM sweeps", [], |r| r.get::<_, i64>(0))
            .unwrap_or(0)
            == 1
    });
    std::thread::sleep(Duration::from_millis(300));
    gone.kill9();
    let out = waiter.join().expect("cli thread");
    let printed = text(&out);
    assert!(
        !out.status.success(),
        "a failed host must fail the command:\n{printed}"
    );
    let sweep = sweep_id_of(&out);
    assert_eq!(coordinator.sweep_state(&sweep), "partial");
    let (state, error) = coordinator.host_state(&sweep, "gone");
    assert_eq!(state, "failed");
    assert!(error.unwrap_or_default().contains("deadline"));
    assert_eq!(coordinator.host_state(&sweep, "steady").0, "completed");
    let fleet_md = std::fs::read_to_string(
        coordinator
            .data
            .join("reports")
            .join(&sweep)
            .join("fleet.md"),
    )
    .expect("fleet report");
    assert!(
        fleet_md.contains("## Failures") && fleet_md.contains("deadline"),
        "{fleet_md}"
    );
}

#[test]
fn a_protocol_version_mismatch_is_refused_clearly_on_both_sides() {
    let dir = tempfile::tempdir().expect("tempdir");
    // An agent from the future.
    let coordinator = CoordinatorProc::start(&dir.path().join("data"), None, &[]);
    let mut agent = AgentProc::start(
        &coordinator.url,
        "future",
        &dir.path().join("spool-1"),
        &["--simulate", "T4", "--protocol-version", "99"],
    );
    let status = agent.child.wait().expect("agent exits");
    assert!(!status.success());
    let agent_log = agent.log_text();
    assert!(
        agent_log.contains("protocol version 99 is not supported"),
        "{agent_log}"
    );
    wait_until(
        Duration::from_secs(10),
        "the coordinator's log line",
        || {
            coordinator
                .log_text()
                .contains("refused an agent speaking another protocol version")
        },
    );

    // A coordinator from the future.
    let future = CoordinatorProc::start(
        &dir.path().join("data-2"),
        None,
        &["--protocol-version", "99"],
    );
    let mut agent = AgentProc::start(
        &future.url,
        "today",
        &dir.path().join("spool-2"),
        &["--simulate", "T4"],
    );
    let status = agent.child.wait().expect("agent exits");
    assert!(!status.success());
    let agent_log = agent.log_text();
    assert!(agent_log.contains("protocol version"), "{agent_log}");
}

#[test]
fn operators_select_hosts_cancel_sweeps_and_agents_stop_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let coordinator = CoordinatorProc::start(&dir.path().join("data"), None, &[]);
    let mut h100 = AgentProc::start(
        &coordinator.url,
        "gpu-h100",
        &dir.path().join("spool-a"),
        &["--simulate", "H100-PCIe", "--simulate-point-ms", "300"],
    );
    let mut t4 = AgentProc::start(
        &coordinator.url,
        "gpu-t4",
        &dir.path().join("spool-b"),
        &["--simulate", "T4"],
    );
    wait_for_agents(&coordinator, 2);

    // Selection by GPU model, case-insensitive; a selection that matches
    // nothing, or names an unknown host, is refused with what to do.
    let out = coordinator.cli(&[
        "sweep",
        "--gpu-model",
        "h100",
        "--batch-sizes",
        "1,2,4,8,16,32,64",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let sweep = sweep_id_of(&out);
    let hosts: Vec<String> = {
        let db = coordinator.db();
        let mut st = db
            .prepare("SELECT host FROM sweep_hosts WHERE sweep_id = ?1")
            .expect("query");
        st.query_map([&sweep], |r| r.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    assert_eq!(hosts, vec!["gpu-h100".to_string()]);
    let none = coordinator.cli(&["sweep", "--gpu-model", "B200"]);
    assert_eq!(none.status.code(), Some(2));
    assert!(
        text(&none).contains("no connected agent has a GPU matching 'B200'"),
        "{}",
        text(&none)
    );
    let unknown = coordinator.cli(&["sweep", "--hosts", "gpu-h100,nobody"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        text(&unknown).contains("host 'nobody' is not connected"),
        "{}",
        text(&unknown)
    );

    // Cancel mid-sweep: the sweep ends as cancelled, the agent stops, and the
    // reports of what was measured are still written.
    wait_until(SWEEP_TIMEOUT, "a stored result", || {
        !coordinator.stored(&sweep).is_empty()
    });
    let out = coordinator.cli(&["cancel", &sweep]);
    assert!(text(&out).contains("cancelled"), "{}", text(&out));
    assert_eq!(coordinator.sweep_state(&sweep), "cancelled");
    wait_until(
        Duration::from_secs(10),
        "the agent to stop the sweep",
        || {
            h100.log_text()
                .contains("sweep cancelled by the coordinator")
        },
    );
    wait_until(
        Duration::from_secs(10),
        "the reports of the cancelled sweep",
        || {
            coordinator
                .data
                .join("reports")
                .join(&sweep)
                .join("fleet.md")
                .exists()
        },
    );

    // SIGTERM: a clean exit with status 0.
    let status = t4.terminate();
    assert!(status.success(), "{status:?}: {}", t4.log_text());
    assert!(t4.log_text().contains("shutting down"));
    let status = h100.terminate();
    assert!(status.success(), "{status:?}: {}", h100.log_text());
}
