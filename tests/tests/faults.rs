//! The fault-injection suite: real coordinator and agent processes on
//! loopback, with network faults made by a TCP proxy between them, processes
//! killed mid-sweep, and the store locked under the coordinator. One test per
//! fault, so they can be filtered (`cargo test --test faults stalled`) and run
//! in parallel.
//!
//! After each fault the sweep must end in a definite state; every point of
//! every host that should finish must be stored; each stored result must have
//! been applied exactly once (the coordinator's `fleetbench_results_stored_total`
//! equals the rows in the store, so a resent result stored again or written
//! over the first copy shows), and a row stored before the fault must be
//! unchanged at the end (the first measurement, not a resend or a
//! re-measurement); the finishing agents' spools must be empty (nothing
//! unacknowledged left behind, nothing dropped); and the coordinator must
//! still serve. Each test prints its row of the fault table, including how
//! many resent results the coordinator answered "already stored"
//! (`fleetbench_results_duplicate_total`): resending is the agents' way to
//! get through a fault, so that count may be anything; storing twice is not.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use fleetbench_tests::proxy::FaultProxy;
use fleetbench_tests::{
    AgentProc, CoordinatorProc, http_get, show, sweep_id_of, text, wait_for_agents, wait_sweep_end,
    wait_until,
};

const BATCH_SIZES: &str = "8,16,32,64";
const POINTS: i64 = 4;
const END: Duration = Duration::from_secs(90);
/// Each fault is injected this many times, each time on fresh processes.
const RUNS: usize = 2;

/// What one fault left behind.
#[derive(Debug)]
struct Row {
    fault: &'static str,
    state: String,
    /// Points of the hosts that should finish.
    expected: i64,
    /// Of those, points stored.
    stored: i64,
    /// Rows of the sweep in the store, every host.
    rows: i64,
    /// Results the coordinator stored (its counter; over both lives of a
    /// restarted coordinator).
    applied: i64,
    /// Results the coordinator answered "already stored".
    resent: i64,
    /// Rows stored before the fault that differ at the end.
    changed: i64,
    note: String,
}

impl Row {
    /// A fault that must stop something from starting: no sweep, no results.
    fn refused(fault: &'static str, note: &str) -> Row {
        Row {
            fault,
            state: "-".into(),
            expected: 0,
            stored: 0,
            rows: 0,
            applied: 0,
            resent: 0,
            changed: 0,
            note: note.into(),
        }
    }

    fn lost(&self) -> i64 {
        self.expected - self.stored
    }

    /// Two runs of the same fault as one row.
    fn add(self, other: Row) -> Row {
        Row {
            state: if self.state == other.state {
                self.state
            } else {
                format!("{}/{}", self.state, other.state)
            },
            expected: self.expected + other.expected,
            stored: self.stored + other.stored,
            rows: self.rows + other.rows,
            applied: self.applied + other.applied,
            resent: self.resent + other.resent,
            changed: self.changed + other.changed,
            ..self
        }
    }
}

/// A stored result as first written: its measurement and when it arrived.
type Snapshot = BTreeMap<(String, String, i64), (String, i64)>;

fn snapshot(coordinator: &CoordinatorProc, sweep: &str) -> Snapshot {
    let db = coordinator.db();
    let mut st = db
        .prepare(
            "SELECT host, device_id, batch_size, point_json, received_ms FROM results WHERE sweep_id = ?1",
        )
        .expect("query");
    st.query_map([sweep], |r| {
        Ok(((r.get(0)?, r.get(1)?, r.get(2)?), (r.get(3)?, r.get(4)?)))
    })
    .expect("rows")
    .collect::<Result<_, _>>()
    .expect("rows")
}

/// What was stored before the fault, and what a coordinator that did not
/// survive it had counted.
#[derive(Debug, Default)]
struct Before {
    rows: Snapshot,
    applied_by_earlier: i64,
    resent_to_earlier: i64,
}

impl Before {
    fn now(coordinator: &CoordinatorProc, sweep: &str) -> Before {
        Before {
            rows: snapshot(coordinator, sweep),
            ..Before::default()
        }
    }
}

const APPLIED: &str = "fleetbench_results_stored_total";
const RESENT: &str = "fleetbench_results_duplicate_total";

/// A counter from the coordinator's `/metrics`.
fn counter(coordinator: &CoordinatorProc, name: &str) -> i64 {
    let url = coordinator
        .metrics_url
        .as_deref()
        .expect("--metrics-listen");
    let (status, body) = http_get(url);
    assert!(status.contains("200"), "{url}: {status}");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}")) as i64
}

/// `fleetbench serve` with its metrics on an OS-chosen port.
fn coordinator_in(data: &Path) -> CoordinatorProc {
    CoordinatorProc::start(data, None, &["--metrics-listen", "127.0.0.1:0"])
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

/// Counts what the store holds for the hosts that should have finished and
/// what the coordinator applied, compares the rows stored before the fault,
/// and checks that the spools drained and the coordinator still answers.
fn tally(
    fault: &'static str,
    coordinator: &CoordinatorProc,
    sweep: &str,
    finishing: &[&AgentProc],
    before: Before,
    note: String,
) -> Row {
    let state = wait_sweep_end(coordinator, sweep, END);
    for agent in finishing {
        wait_until(
            Duration::from_secs(15),
            &format!("{}'s spool to drain", agent.name),
            || spool_entries(&agent.spool) == 0,
        );
    }
    let after = snapshot(coordinator, sweep);
    let stored = after
        .keys()
        .filter(|(host, _, _)| finishing.iter().any(|a| &a.name == host))
        .count() as i64;
    let changed = before
        .rows
        .iter()
        .filter(|(key, first)| after.get(*key) != Some(*first))
        .count() as i64;
    let serving = coordinator.cli(&["agents"]);
    assert!(
        serving.status.success(),
        "{fault}: the coordinator stopped serving: {}",
        text(&serving)
    );
    Row {
        fault,
        state,
        expected: POINTS * finishing.len() as i64,
        stored,
        rows: after.len() as i64,
        applied: before.applied_by_earlier + counter(coordinator, APPLIED),
        resent: before.resent_to_earlier + counter(coordinator, RESENT),
        changed,
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
    let coordinator = coordinator_in(&dir.join("data"));
    let mut victim = simulated(&coordinator.url, "victim", dir, "400");
    let other = simulated(&coordinator.url, "other", dir, "400");
    wait_for_agents(&coordinator, 2);
    let sweep = start_sweep(&coordinator, &[]);
    wait_stored(&coordinator, &sweep, 1);
    // Mid-point: the next point is being measured when the kill lands.
    std::thread::sleep(Duration::from_millis(150));
    let before = Before::now(&coordinator, &sweep);
    victim.kill9();
    std::thread::sleep(Duration::from_millis(500));
    victim.restart();
    tally(
        "agent SIGKILL mid-point, restarted",
        &coordinator,
        &sweep,
        &[&victim, &other],
        before,
        String::new(),
    )
}

fn coordinator_killed_mid_sweep(dir: &Path) -> Row {
    let data = dir.join("data");
    let mut first = coordinator_in(&data);
    let proxy = FaultProxy::start(&first.addr);
    let a = simulated(&proxy.url(), "a", dir, "300");
    let b = simulated(&proxy.url(), "b", dir, "300");
    wait_for_agents(&first, 2);
    let sweep = start_sweep(&first, &[]);
    wait_stored(&first, &sweep, 2);
    // Its duplicate count as of just before the kill (a resend answered in
    // the last milliseconds is missed: this column is informative only).
    let resent_to_earlier = counter(&first, RESENT);
    first.kill9();
    // Exact: only the coordinator writes results, and this one is dead.
    let before = Before::now(&first, &sweep);
    let before = Before {
        applied_by_earlier: before.rows.len() as i64,
        resent_to_earlier,
        ..before
    };
    proxy.drop_connections();
    let second = coordinator_in(&data);
    proxy.set_upstream(&second.addr);
    tally(
        "coordinator SIGKILL mid-sweep, restarted on the same data",
        &second,
        &sweep,
        &[&a, &b],
        before,
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
    let coordinator = coordinator_in(&dir.join("data"));
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
    let before = Before::now(&coordinator, &sweep);
    proxy.drop_connections();
    wait_stored(&coordinator, &sweep, 4);
    proxy.drop_connections();
    tally(
        "connections dropped twice mid-sweep",
        &coordinator,
        &sweep,
        &[&a, &b],
        before,
        String::new(),
    )
}

fn acks_lost(dir: &Path) -> Row {
    let ProxiedFleet {
        coordinator,
        proxy,
        agents: [a, b],
        sweep,
    } = proxied_fleet(dir);
    let before = Before::now(&coordinator, &sweep);
    // Results still arrive and are stored; their acks wait in the proxy and
    // die with the connections, so the agents must resend what was stored.
    proxy.hold_replies(true);
    wait_stored(&coordinator, &sweep, before.rows.len() + 2);
    proxy.drop_connections();
    proxy.hold_replies(false);
    let row = tally(
        "acks lost: replies held, then connections dropped",
        &coordinator,
        &sweep,
        &[&a, &b],
        before,
        "results stored while their acks were held are resent and answered 'already stored'".into(),
    );
    assert!(
        row.resent >= 2,
        "at least the 2 results stored while their acks were held must come back: {row:?}"
    );
    row
}

fn connections_stalled(dir: &Path) -> Row {
    // Heartbeats every 0.5 s: the coordinator gives up on a silent agent after 1.5 s.
    let ProxiedFleet {
        coordinator,
        proxy,
        agents: [a, b],
        sweep,
    } = proxied_fleet(dir);
    let before = Before::now(&coordinator, &sweep);
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
        before,
        "coordinator marked both agents lost, they came back".into(),
    )
}

fn slow_agent_misses_deadline(dir: &Path) -> Row {
    let coordinator = coordinator_in(&dir.join("data"));
    let fast = simulated(&coordinator.url, "fast", dir, "50");
    let _slow = simulated(&coordinator.url, "slow", dir, "3000");
    wait_for_agents(&coordinator, 2);
    let sweep = start_sweep(&coordinator, &["--deadline", "3"]);
    let row = tally(
        "slow agent misses its 3 s deadline while another finishes",
        &coordinator,
        &sweep,
        &[&fast],
        Before::default(),
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
    let coordinator = coordinator_in(&dir.join("data"));
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
        Before::default(),
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
    let coordinator = coordinator_in(&dir.join("data"));
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
    Row::refused(
        "agent spool directory not writable",
        "agent refuses to start (exit 2): 'spool directory ... is not usable'",
    )
}

fn database_locked(dir: &Path) -> Row {
    let coordinator = coordinator_in(&dir.join("data"));
    let a = simulated(&coordinator.url, "a", dir, "250");
    let b = simulated(&coordinator.url, "b", dir, "250");
    wait_for_agents(&coordinator, 2);
    let sweep = start_sweep(&coordinator, &[]);
    wait_stored(&coordinator, &sweep, 1);
    let before = Before::now(&coordinator, &sweep);
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
        before,
        "results refused with 'could not store result', resent after".into(),
    )
}

/// Runs `scenario` [`RUNS`] times on fresh processes, prints its row of the
/// fault table, and checks what every fault must leave behind.
fn check(scenario: fn(&Path) -> Row) {
    let started = Instant::now();
    let mut total: Option<Row> = None;
    for run in 0..RUNS {
        let dir = tempfile::tempdir().expect("tempdir");
        let here = dir.path().join(format!("run-{run}"));
        std::fs::create_dir_all(&here).expect("scenario directory");
        let row = scenario(&here);
        total = Some(match total {
            None => row,
            Some(t) => t.add(row),
        });
    }
    let r = total.expect("at least one run");
    let table = format!(
        "\n| fault | runs | sweep | results expected | stored | lost | applied | answered \"already stored\" | changed after the fault | seconds | what happened |\n|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|\n| {} | {RUNS} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} |\n",
        r.fault,
        r.state,
        r.expected,
        r.stored,
        r.lost(),
        r.applied,
        r.resent,
        r.changed,
        started.elapsed().as_secs_f64(),
        r.note
    );
    show(&table);
    assert_eq!(r.stored, r.expected, "lost results:{table}");
    assert_eq!(
        r.applied, r.rows,
        "the coordinator stored {} results into {} rows: some were applied twice:{table}",
        r.applied, r.rows
    );
    assert_eq!(
        r.changed, 0,
        "rows stored before the fault were rewritten (a resend or a re-measurement replaced the first copy):{table}"
    );
    assert!(
        ["completed", "partial", "-"].contains(&r.state.as_str()),
        "{}: {}",
        r.fault,
        r.state
    );
}

#[test]
fn agent_killed() {
    check(agent_killed_mid_point);
}

#[test]
fn coordinator_killed() {
    check(coordinator_killed_mid_sweep);
}

#[test]
fn connections_dropped_twice() {
    check(connections_dropped);
}

#[test]
fn acks_lost_and_resent() {
    check(acks_lost);
}

#[test]
fn stalled() {
    check(connections_stalled);
}

#[test]
fn deadline_missed() {
    check(slow_agent_misses_deadline);
}

#[test]
fn same_name() {
    check(two_agents_one_name);
}

#[test]
fn spool_unwritable() {
    check(spool_not_writable);
}

#[test]
fn store_locked() {
    check(database_locked);
}
