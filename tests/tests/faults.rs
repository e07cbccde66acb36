//! The fault-injection suite: real coordinator and agent processes on
//! loopback, with network faults made by a TCP proxy between them, processes
//! killed mid-sweep, and the store locked under the coordinator. After each
//! fault the sweep must end in a definite state, every point of every host
//! that should finish must be stored exactly once, the finishing agents'
//! spools must be empty (nothing unacknowledged left behind, nothing
//! dropped), and the coordinator must still serve. The suite prints a table.

use std::path::Path;
use std::time::Duration;

use fleetbench_tests::proxy::FaultProxy;
use fleetbench_tests::{
    AgentProc, CoordinatorProc, show, sweep_id_of, text, wait_for_agents, wait_sweep_end,
    wait_until,
};

const BATCH_SIZES: &str = "8,16,32,64";
const POINTS: i64 = 4;
const END: Duration = Duration::from_secs(90);
/// Each fault is injected this many times, each time on fresh processes.
const RUNS: usize = 2;

/// One fault, injected into a fresh fleet in the given directory.
type Scenario = fn(&Path) -> Row;

#[derive(Debug)]
struct Row {
    fault: &'static str,
    state: String,
    expected: i64,
    stored: i64,
    duplicates: i64,
    lost: i64,
    note: String,
}

fn start_sweep(coordinator: &CoordinatorProc, extra: &[&str]) -> String {
    let mut args = vec![
        "sweep",
        "--batch-sizes",
        BATCH_SIZES,
        "--iterations",
        "3",
        "--warmup",
        "1",
    ];
    args.extend_from_slice(extra);
    let out = coordinator.cli(&args);
    assert!(out.status.success(), "sweep: {}", text(&out));
    sweep_id_of(&out)
}

fn stored_count(coordinator: &CoordinatorProc, sweep: &str) -> usize {
    coordinator.stored(sweep).len()
}

fn wait_stored(coordinator: &CoordinatorProc, sweep: &str, n: usize) {
    wait_until(
        Duration::from_secs(30),
        &format!("{n} results stored"),
        || stored_count(coordinator, sweep) >= n,
    );
}

fn spool_entries(spool: &Path) -> usize {
    std::fs::read_dir(spool)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "pb"))
                .count()
        })
        .unwrap_or(0)
}

/// Counts what the store holds for the hosts that should have finished, and
/// checks that their spools drained and the coordinator still answers.
fn tally(
    fault: &'static str,
    coordinator: &CoordinatorProc,
    sweep: &str,
    finishing: &[&AgentProc],
    note: String,
) -> Row {
    let state = wait_sweep_end(coordinator, sweep, END);
    let db = coordinator.db();
    let mut stored = 0;
    let mut distinct = 0;
    for agent in finishing {
        let (rows, keys): (i64, i64) = db
            .query_row(
                "SELECT COUNT(*), COUNT(DISTINCT device_id || '/' || batch_size) FROM results WHERE sweep_id = ?1 AND host = ?2",
                [sweep, agent.name.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("count");
        stored += rows;
        distinct += keys;
        wait_until(
            Duration::from_secs(15),
            &format!("{}'s spool to drain", agent.name),
            || spool_entries(&agent.spool) == 0,
        );
    }
    let serving = coordinator.cli(&["agents"]);
    assert!(
        serving.status.success(),
        "{fault}: the coordinator stopped serving: {}",
        text(&serving)
    );
    let expected = POINTS * finishing.len() as i64;
    Row {
        fault,
        state,
        expected,
        stored,
        duplicates: stored - distinct,
        lost: expected - distinct,
        note,
    }
}

fn simulated(url: &str, name: &str, dir: &Path, point_ms: &str) -> AgentProc {
    AgentProc::start(
        url,
        name,
        &dir.join(format!("spool-{name}")),
        &["--simulate", "A100-80GB", "--simulate-point-ms", point_ms],
    )
}

fn agent_killed_mid_point(dir: &Path) -> Row {
    let coordinator = CoordinatorProc::start(&dir.join("data"), None, &[]);
    let mut victim = simulated(&coordinator.url, "victim", dir, "400");
    let other = simulated(&coordinator.url, "other", dir, "400");
    wait_for_agents(&coordinator, 2);
    let sweep = start_sweep(&coordinator, &[]);
    wait_stored(&coordinator, &sweep, 1);
    // Mid-point: the next point is being measured when the kill lands.
    std::thread::sleep(Duration::from_millis(150));
    victim.kill9();
    std::thread::sleep(Duration::from_millis(500));
    victim.restart();
    tally(
        "agent SIGKILL mid-point, restarted",
        &coordinator,
        &sweep,
        &[&victim, &other],
        String::new(),
    )
}

fn coordinator_killed_mid_sweep(dir: &Path) -> Row {
    let data = dir.join("data");
    let mut first = CoordinatorProc::start(&data, None, &[]);
    let proxy = FaultProxy::start(&first.addr);
    let a = simulated(&proxy.url(), "a", dir, "300");
    let b = simulated(&proxy.url(), "b", dir, "300");
    wait_for_agents(&first, 2);
    let sweep = start_sweep(&first, &[]);
    wait_stored(&first, &sweep, 2);
    first.kill9();
    proxy.drop_connections();
    let second = CoordinatorProc::start(&data, None, &[]);
    proxy.set_upstream(&second.addr);
    tally(
        "coordinator SIGKILL mid-sweep, restarted on the same data",
        &second,
        &sweep,
        &[&a, &b],
        String::new(),
    )
}

/// A coordinator, a proxy in front of it, two agents dialling the proxy, and
/// a sweep that has stored its first result.
struct ProxiedFleet {
    coordinator: CoordinatorProc,
    proxy: FaultProxy,
    agents: [AgentProc; 2],
    sweep: String,
}

fn proxied_fleet(dir: &Path) -> ProxiedFleet {
    let coordinator = CoordinatorProc::start(&dir.join("data"), None, &[]);
    let proxy = FaultProxy::start(&coordinator.addr);
    let agents = [
        simulated(&proxy.url(), "a", dir, "300"),
        simulated(&proxy.url(), "b", dir, "300"),
    ];
    wait_for_agents(&coordinator, 2);
    let sweep = start_sweep(&coordinator, &[]);
    wait_stored(&coordinator, &sweep, 1);
    ProxiedFleet {
        coordinator,
        proxy,
        agents,
        sweep,
    }
}

fn connections_dropped(dir: &Path) -> Row {
    let ProxiedFleet {
        coordinator,
        proxy,
        agents: [a, b],
        sweep,
    } = proxied_fleet(dir);
    proxy.drop_connections();
    wait_stored(&coordinator, &sweep, 4);
    proxy.drop_connections();
    tally(
        "connections dropped twice mid-sweep",
        &coordinator,
        &sweep,
        &[&a, &b],
        String::new(),
    )
}

fn connections_stalled(dir: &Path) -> Row {
    // Heartbeats every 0.5 s: the coordinator gives up on a silent agent after 1.5 s.
    let ProxiedFleet {
        coordinator,
        proxy,
        agents: [a, b],
        sweep,
    } = proxied_fleet(dir);
    proxy.stall(true);
    std::thread::sleep(Duration::from_secs(3));
    let log = coordinator.log_text();
    proxy.stall(false);
    assert!(
        log.contains("no heartbeat for"),
        "the stall must outlast the heartbeat timeout:\n{log}"
    );
    tally(
        "connections stalled 3 s (heartbeat timeout 1.5 s)",
        &coordinator,
        &sweep,
        &[&a, &b],
        "coordinator marked both agents lost, they came back".into(),
    )
}

fn slow_agent_misses_deadline(dir: &Path) -> Row {
    let coordinator = CoordinatorProc::start(&dir.join("data"), None, &[]);
    let fast = simulated(&coordinator.url, "fast", dir, "50");
    let _slow = simulated(&coordinator.url, "slow", dir, "3000");
    wait_for_agents(&coordinator, 2);
    let sweep = start_sweep(&coordinator, &["--deadline", "3"]);
    let row = tally(
        "slow agent misses its 3 s deadline while another finishes",
        &coordinator,
        &sweep,
        &[&fast],
        String::new(),
    );
    let (state, error) = coordinator.host_state(&sweep, "slow");
    assert_eq!(state, "failed", "{error:?}");
    assert!(
        error.as_deref().unwrap_or("").contains("deadline"),
        "{error:?}"
    );
    Row {
        note: format!("slow host: {state} ({})", error.unwrap_or_default()),
        ..row
    }
}

fn two_agents_one_name(dir: &Path) -> Row {
    let coordinator = CoordinatorProc::start(&dir.join("data"), None, &[]);
    let first = AgentProc::start(
        &coordinator.url,
        "twin",
        &dir.join("spool-twin-1"),
        &["--simulate", "L4", "--simulate-point-ms", "200"],
    );
    wait_for_agents(&coordinator, 1);
    let second = AgentProc::start(
        &coordinator.url,
        "twin",
        &dir.join("spool-twin-2"),
        &["--simulate", "T4", "--simulate-point-ms", "200"],
    );
    wait_until(
        Duration::from_secs(15),
        "the second twin to be refused",
        || {
            second
                .log_text()
                .contains("another agent named 'twin' is connected")
        },
    );
    let sweep = start_sweep(&coordinator, &[]);
    let row = tally(
        "two agents claim the same name",
        &coordinator,
        &sweep,
        &[&first],
        String::new(),
    );
    let agents = text(&coordinator.cli(&["agents"]));
    assert!(
        agents.contains("L4") && !agents.contains("T4"),
        "the first twin keeps the name:\n{agents}"
    );
    Row {
        note: "second refused with 'another agent named ... is connected', first kept the name"
            .into(),
        ..row
    }
}

fn spool_not_writable(dir: &Path) -> Row {
    let coordinator = CoordinatorProc::start(&dir.join("data"), None, &[]);
    // Root ignores permission bits, so make the spool path impossible: a
    // directory under a regular file.
    let file = dir.join("not-a-directory");
    std::fs::write(&file, b"x").expect("write");
    let out = std::process::Command::new(fleetbench_tests::bin("fleetbench-agent"))
        .args([
            "run",
            "--coordinator",
            &coordinator.url,
            "--name",
            "nospool",
        ])
        .arg("--spool")
        .arg(file.join("spool"))
        .args(["--simulate", "T4"])
        .output()
        .expect("run agent");
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("is not usable") && said.contains("give a writable --spool DIR"),
        "{said}"
    );
    assert!(coordinator.cli(&["agents"]).status.success());
    Row {
        fault: "agent spool directory not writable",
        state: "-".into(),
        expected: 0,
        stored: 0,
        duplicates: 0,
        lost: 0,
        note: "agent refuses to start (exit 2): 'spool directory ... is not usable'".into(),
    }
}

fn database_locked(dir: &Path) -> Row {
    let coordinator = CoordinatorProc::start(&dir.join("data"), None, &[]);
    let a = simulated(&coordinator.url, "a", dir, "250");
    let b = simulated(&coordinator.url, "b", dir, "250");
    wait_for_agents(&coordinator, 2);
    let sweep = start_sweep(&coordinator, &[]);
    wait_stored(&coordinator, &sweep, 1);
    {
        // Longer than the store's 5 s busy timeout: writes fail, nothing may be acked.
        let db = coordinator.db();
        db.execute_batch("BEGIN EXCLUSIVE").expect("lock the store");
        let held_from = stored_count(&coordinator, &sweep);
        std::thread::sleep(Duration::from_secs(7));
        assert_eq!(
            stored_count(&coordinator, &sweep),
            held_from,
            "nothing can be stored while the store is locked"
        );
        db.execute_batch("ROLLBACK").expect("unlock");
    }
    let refused = a.log_text().contains("could not store result")
        || b.log_text().contains("could not store result");
    assert!(
        refused,
        "an agent must hear why its results were not acknowledged:\n{}",
        a.log_text()
    );
    assert!(coordinator.log_text().contains("could not store a result"));
    tally(
        "store locked 7 s (busy timeout 5 s)",
        &coordinator,
        &sweep,
        &[&a, &b],
        "results refused with 'could not store result', resent after".into(),
    )
}

#[test]
fn every_fault_ends_the_sweep_with_nothing_lost_or_duplicated() {
    let scenarios: [(&str, Scenario); 8] = [
        ("agent-killed", agent_killed_mid_point),
        ("coordinator-killed", coordinator_killed_mid_sweep),
        ("dropped", connections_dropped),
        ("stalled", connections_stalled),
        ("deadline", slow_agent_misses_deadline),
        ("same-name", two_agents_one_name),
        ("spool", spool_not_writable),
        ("store-locked", database_locked),
    ];
    let mut rows: Vec<(Row, usize, Duration)> = Vec::new();
    for (name, scenario) in scenarios {
        let started = std::time::Instant::now();
        let mut total: Option<Row> = None;
        for run in 0..RUNS {
            let dir = tempfile::tempdir().expect("tempdir");
            let here = dir.path().join(format!("{name}-{run}"));
            std::fs::create_dir_all(&here).expect("scenario directory");
            let row = scenario(&here);
            total = Some(match total {
                None => row,
                Some(t) => Row {
                    expected: t.expected + row.expected,
                    stored: t.stored + row.stored,
                    duplicates: t.duplicates + row.duplicates,
                    lost: t.lost + row.lost,
                    state: if t.state == row.state {
                        t.state
                    } else {
                        format!("{}/{}", t.state, row.state)
                    },
                    ..t
                },
            });
        }
        if let Some(t) = total {
            rows.push((t, RUNS, started.elapsed()));
        }
    }
    let mut table = String::from(
        "\n| fault | runs | sweep | results expected | stored | duplicates | lost | seconds | what happened |\n|---|---:|---|---:|---:|---:|---:|---:|---|\n",
    );
    for (r, runs, took) in &rows {
        table.push_str(&format!(
            "| {} | {runs} | {} | {} | {} | {} | {} | {:.1} | {} |\n",
            r.fault,
            r.state,
            r.expected,
            r.stored,
            r.duplicates,
            r.lost,
            took.as_secs_f64(),
            r.note
        ));
    }
    show(&table);
    for (r, _, _) in &rows {
        assert_eq!((r.lost, r.duplicates), (0, 0), "{}:{table}", r.fault);
        assert_eq!(r.stored, r.expected, "{}:{table}", r.fault);
        assert!(
            ["completed", "partial", "-"].contains(&r.state.as_str()),
            "{}: {}",
            r.fault,
            r.state
        );
    }
}
