//! Every state transition of a sweep and its hosts, on a coordinator with a
//! store in a temporary directory and agents that are channels.

use std::path::Path;
use std::sync::Arc;

use fleetbench_common::spec::{Engine, Precision};
use fleetbench_common::time::now_unix_ms;
use fleetbench_common::{
    DeviceDescription, HostInventory, ModelInfo, PointOutcome, PointResult, SweepSpec,
    WeightsSource,
};
use fleetbench_proto::v1::{self, coordinator_message::Body};
use tokio::sync::mpsc;

use super::{Coordinator, CoordinatorConfig, Limits, SweepError};
use crate::state::{HostState, SweepState};

type Inbox = mpsc::Receiver<Result<v1::CoordinatorMessage, tonic::Status>>;

fn open(dir: &Path, limits: Limits) -> Arc<Coordinator> {
    let mut config = CoordinatorConfig::new(dir.to_path_buf());
    config.limits = limits;
    Coordinator::open(config).expect("open the coordinator")
}

/// Connects an agent the way a session does: into the fleet, then Hello.
async fn connect(c: &Coordinator, name: &str) -> Inbox {
    let (tx, rx) = mpsc::channel(64);
    c.fleet
        .connect(name, "instance", "test", tx, now_unix_ms(), 60_000)
        .expect("connect");
    let inventory = HostInventory {
        hostname: name.into(),
        simulated: true,
        ..Default::default()
    };
    c.agent_registered(name, "test", &inventory)
        .await
        .expect("register");
    rx
}

/// The messages waiting for an agent.
fn received(inbox: &mut Inbox) -> Vec<Body> {
    let mut out = Vec::new();
    while let Ok(msg) = inbox.try_recv() {
        if let Some(body) = msg.expect("no error status").body {
            out.push(body);
        }
    }
    out
}

fn start(c: &Coordinator, hosts: &[&str], deadline_seconds: u32) -> String {
    let spec = SweepSpec {
        batch_sizes: vec![8, 16],
        ..SweepSpec::default()
    };
    let (id, _) = c
        .start_sweep(v1::StartSweepRequest {
            spec: Some((&spec).into()),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            deadline_seconds,
            ..Default::default()
        })
        .expect("start");
    id
}

fn model() -> ModelInfo {
    ModelInfo {
        name: "test-model".into(),
        weights: WeightsSource::Random { seed: 1 },
        hidden_size: 8,
        layers: 1,
        heads: 1,
        intermediate_size: 16,
        vocab_size: 32,
        max_positions: 16,
        parameters: 1_000,
        dtype: Precision::F32,
        engine: Engine::Fleetbench,
    }
}

fn result(sweep: &str, seq: u64, batch_size: usize) -> v1::PointResultMsg {
    // A failed point: the coordinator stores it like any other, and the
    // test needs no statistics.
    let point = PointResult {
        batch_size,
        seq_len: 128,
        outcome: PointOutcome::Failed {
            error: "test point".into(),
        },
    };
    v1::PointResultMsg {
        seq,
        sweep_id: sweep.into(),
        device: Some((&DeviceDescription::cpu("Test CPU")).into()),
        model: Some((&model()).into()),
        point: Some((&point).into()),
        environment: None,
    }
}

fn finished(sweep: &str, ok: bool, error: &str) -> v1::SweepFinished {
    v1::SweepFinished {
        seq: 99,
        sweep_id: sweep.into(),
        ok,
        error: error.into(),
        notes: vec![],
    }
}

fn sweep_state(c: &Coordinator, id: &str) -> SweepState {
    c.store.sweep(id).expect("read").expect("exists").state
}

fn host_state(c: &Coordinator, id: &str, host: &str) -> HostState {
    c.store
        .sweep_host(id, host)
        .expect("read")
        .expect("exists")
        .state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_sends_every_selected_host_its_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = open(dir.path(), Limits::default());
    let mut a = connect(&c, "a").await;
    let mut b = connect(&c, "b").await;
    let id = start(&c, &[], 60);
    for inbox in [&mut a, &mut b] {
        match received(inbox).as_slice() {
            [Body::RunSweep(run)] => {
                assert_eq!(run.sweep_id, id);
                assert!(run.completed.is_empty());
                assert!(run.deadline_unix_ms > now_unix_ms());
            }
            other => panic!("expected one RunSweep, got {other:?}"),
        }
    }
    let view = c.view(&id).expect("view");
    assert_eq!(view.summary.state, "running");
    assert_eq!(view.summary.state_code(), v1::SweepState::Running);
    assert_eq!(view.summary.hosts, 2);
    for h in &view.hosts {
        assert_eq!(
            (h.state.as_str(), h.state_code()),
            ("running", v1::HostState::Running)
        );
        assert_eq!(h.points_total, 2);
    }
    // A host that is not connected cannot be selected.
    let err = c
        .start_sweep(v1::StartSweepRequest {
            spec: Some((&SweepSpec::default()).into()),
            hosts: vec!["nobody".into()],
            ..Default::default()
        })
        .expect_err("not connected");
    assert!(matches!(err, SweepError::NoHosts(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_is_stored_once_and_only_for_a_host_of_the_sweep() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = open(dir.path(), Limits::default());
    let _a = connect(&c, "a").await;
    let _b = connect(&c, "b").await;
    let id = start(&c, &["a"], 60);
    let ack = c
        .result_received("a", result(&id, 1, 8))
        .await
        .expect("store");
    assert!(ack.accepted && ack.reason.is_empty(), "{ack:?}");
    let again = c
        .result_received("a", result(&id, 2, 8))
        .await
        .expect("store");
    assert_eq!(
        (again.accepted, again.reason.as_str()),
        (true, "already stored")
    );
    let stranger = c
        .result_received("b", result(&id, 1, 8))
        .await
        .expect("answer");
    assert!(!stranger.accepted, "{stranger:?}");
    let invalid = v1::PointResultMsg {
        device: None,
        ..result(&id, 3, 16)
    };
    let refused = c.result_received("a", invalid).await.expect("answer");
    assert_eq!(refused.reason, "result without a device");
    assert_eq!(c.view(&id).expect("view").hosts[0].points_done, 1);
    assert_eq!(c.results(&id).expect("results").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_verdict_ends_the_sweep_completed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = open(dir.path(), Limits::default());
    let _a = connect(&c, "a").await;
    let _b = connect(&c, "b").await;
    let id = start(&c, &[], 60);
    c.sweep_finished("a", &finished(&id, true, ""))
        .await
        .expect("finish");
    assert_eq!(host_state(&c, &id, "a"), HostState::Completed);
    assert_eq!(sweep_state(&c, &id), SweepState::Running, "b still runs");
    c.sweep_finished("b", &finished(&id, true, ""))
        .await
        .expect("finish");
    let view = c.view(&id).expect("view");
    assert_eq!(view.summary.state_code(), v1::SweepState::Completed);
    assert_eq!(view.summary.state, "completed");
    assert_eq!((view.summary.hosts_done, view.summary.hosts_failed), (2, 0));
    assert!(view.summary.ended_unix_ms > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_host_makes_the_sweep_partial_and_all_failed_makes_it_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = open(dir.path(), Limits::default());
    let _a = connect(&c, "a").await;
    let _b = connect(&c, "b").await;
    let partial = start(&c, &[], 60);
    c.sweep_finished("a", &finished(&partial, true, ""))
        .await
        .expect("finish");
    c.sweep_finished("b", &finished(&partial, false, "out of memory"))
        .await
        .expect("finish");
    assert_eq!(sweep_state(&c, &partial), SweepState::Partial);
    let b = c
        .store
        .sweep_host(&partial, "b")
        .expect("read")
        .expect("row");
    assert_eq!(
        (b.state, b.error.as_deref()),
        (HostState::Failed, Some("out of memory"))
    );

    let failed = start(&c, &[], 60);
    for host in ["a", "b"] {
        c.sweep_finished(host, &finished(&failed, false, "no device"))
            .await
            .expect("finish");
    }
    assert_eq!(sweep_state(&c, &failed), SweepState::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_deadline_fails_the_host_and_the_first_verdict_stands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = open(dir.path(), Limits::default());
    let mut a = connect(&c, "a").await;
    let id = start(&c, &["a"], 5);
    received(&mut a);
    c.check_deadlines_at(now_unix_ms()).expect("check");
    assert_eq!(host_state(&c, &id, "a"), HostState::Running, "not yet due");
    c.check_deadlines_at(now_unix_ms() + 10_000).expect("check");
    let row = c.store.sweep_host(&id, "a").expect("read").expect("row");
    assert_eq!(row.state, HostState::Failed);
    assert!(
        row.error
            .as_deref()
            .is_some_and(|e| e.contains("still connected")),
        "{row:?}"
    );
    assert_eq!(sweep_state(&c, &id), SweepState::Failed);
    assert!(
        matches!(received(&mut a).as_slice(), [Body::CancelSweep(cancel)] if cancel.reason == "deadline passed")
    );
    // The agent's late "finished" does not undo the missed deadline.
    c.sweep_finished("a", &finished(&id, true, ""))
        .await
        .expect("finish");
    assert_eq!(host_state(&c, &id, "a"), HostState::Failed);
    assert_eq!(sweep_state(&c, &id), SweepState::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_running_hosts_and_keeps_completed_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = open(dir.path(), Limits::default());
    let mut a = connect(&c, "a").await;
    let mut b = connect(&c, "b").await;
    let all_cancelled = start(&c, &[], 60);
    let view = c.cancel_sweep(&all_cancelled).expect("cancel");
    assert_eq!(view.summary.state, "cancelled");
    assert_eq!(view.summary.state_code(), v1::SweepState::Cancelled);
    assert_eq!(view.summary.hosts_failed, 2);
    for inbox in [&mut a, &mut b] {
        assert!(
            received(inbox)
                .iter()
                .any(|m| matches!(m, Body::CancelSweep(c) if c.sweep_id == all_cancelled))
        );
    }

    let one_done = start(&c, &[], 60);
    c.sweep_finished("a", &finished(&one_done, true, ""))
        .await
        .expect("finish");
    c.cancel_sweep(&one_done).expect("cancel");
    assert_eq!(host_state(&c, &one_done, "a"), HostState::Completed);
    assert_eq!(host_state(&c, &one_done, "b"), HostState::Cancelled);
    assert_eq!(sweep_state(&c, &one_done), SweepState::Partial);
    // The agent reporting the cancel afterwards changes nothing.
    c.sweep_finished("b", &finished(&one_done, false, "cancelled"))
        .await
        .expect("finish");
    assert_eq!(sweep_state(&c, &one_done), SweepState::Partial);

    assert!(matches!(
        c.cancel_sweep("no-such-sweep"),
        Err(SweepError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cancel_verdict_is_a_cancelled_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = open(dir.path(), Limits::default());
    let _a = connect(&c, "a").await;
    let id = start(&c, &["a"], 60);
    c.sweep_finished("a", &finished(&id, false, "cancelled"))
        .await
        .expect("finish");
    assert_eq!(host_state(&c, &id, "a"), HostState::Cancelled);
    assert_eq!(sweep_state(&c, &id), SweepState::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_coordinator_resends_what_each_agent_still_owes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (id, deadline) = {
        let c = open(dir.path(), Limits::default());
        let _a = connect(&c, "a").await;
        let _b = connect(&c, "b").await;
        let id = start(&c, &[], 60);
        c.result_received("a", result(&id, 1, 8))
            .await
            .expect("store");
        c.sweep_finished("b", &finished(&id, true, ""))
            .await
            .expect("finish");
        let deadline = c
            .store
            .sweep_host(&id, "a")
            .expect("read")
            .expect("row")
            .deadline_ms;
        (id, deadline)
    };
    // A new process on the same data directory.
    let c = open(dir.path(), Limits::default());
    let view = c.view(&id).expect("view");
    assert_eq!(view.summary.state_code(), v1::SweepState::Running);
    let a_status = view.hosts.iter().find(|h| h.host == "a").expect("a");
    assert_eq!(a_status.state_code(), v1::HostState::Disconnected);
    assert_eq!(a_status.state, "disconnected");

    let mut a = connect(&c, "a").await;
    match received(&mut a).as_slice() {
        [Body::RunSweep(run)] => {
            assert_eq!(run.sweep_id, id);
            assert_eq!(run.deadline_unix_ms, deadline, "the deadline holds");
            assert_eq!(
                run.completed,
                vec![v1::PointKey {
                    device_id: "cpu".into(),
                    batch_size: 8
                }]
            );
        }
        other => panic!("expected one RunSweep, got {other:?}"),
    }
    let mut b = connect(&c, "b").await;
    assert!(received(&mut b).is_empty(), "b has finished its part");

    c.sweep_finished("a", &finished(&id, true, ""))
        .await
        .expect("finish");
    assert_eq!(sweep_state(&c, &id), SweepState::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_past_a_limit_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits {
        max_results_per_host: 1,
        max_results_per_sweep: 2,
        ..Limits::default()
    };
    let c = open(dir.path(), limits);
    let _a = connect(&c, "a").await;
    let _b = connect(&c, "b").await;
    let _c = connect(&c, "c").await;
    let id = start(&c, &[], 60);
    assert!(
        c.result_received("a", result(&id, 1, 8))
            .await
            .expect("ack")
            .accepted
    );
    let per_host = c
        .result_received("a", result(&id, 2, 16))
        .await
        .expect("ack");
    assert!(!per_host.accepted);
    assert!(
        per_host.reason.contains("--max-results-per-host"),
        "{per_host:?}"
    );
    assert!(
        c.result_received("b", result(&id, 1, 8))
            .await
            .expect("ack")
            .accepted
    );
    let per_sweep = c
        .result_received("c", result(&id, 1, 8))
        .await
        .expect("ack");
    assert!(!per_sweep.accepted);
    assert!(
        per_sweep.reason.contains("--max-results-per-sweep"),
        "{per_sweep:?}"
    );
    assert_eq!(c.results(&id).expect("results").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_limit_refuses_a_new_name_but_not_a_reconnect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = open(
        dir.path(),
        Limits {
            max_agents: 1,
            ..Limits::default()
        },
    );
    assert!(c.admit_agent("a").is_ok());
    let _a = connect(&c, "a").await;
    assert!(
        c.admit_agent("a").is_ok(),
        "a reconnect replaces its session"
    );
    let refused = c.admit_agent("b").expect_err("at the limit");
    assert!(refused.to_string().contains("--max-agents"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_reports_an_unreadable_result_instead_of_dropping_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = open(dir.path(), Limits::default());
    let _a = connect(&c, "a").await;
    let id = start(&c, &["a"], 60);
    c.result_received("a", result(&id, 1, 8))
        .await
        .expect("store");
    let raw = rusqlite::Connection::open(dir.path().join("fleetbench.db")).expect("raw");
    raw.execute("UPDATE results SET point_json = '{'", [])
        .expect("damage");
    let err = c.results(&id).expect_err("unreadable");
    assert!(
        err.to_string().contains(&format!(
            "result of sweep '{id}', host 'a', device 'cpu', batch size 8, point_json"
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_sweep_without_reports_gets_them_at_the_next_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = {
        let c = open(dir.path(), Limits::default());
        let _a = connect(&c, "a").await;
        let id = start(&c, &["a"], 60);
        c.result_received("a", result(&id, 1, 8))
            .await
            .expect("store");
        c.sweep_finished("a", &finished(&id, true, ""))
            .await
            .expect("finish");
        let reports = c.view(&id).expect("view").summary.reports_dir;
        assert!(!reports.is_empty());
        // As if the coordinator had died between the sweep's commit and its
        // reports: no directory recorded, no files.
        std::fs::remove_dir_all(&reports).expect("remove the reports");
        rusqlite::Connection::open(dir.path().join("fleetbench.db"))
            .and_then(|db| db.execute("UPDATE sweeps SET reports_dir = NULL", []))
            .expect("forget the reports");
        id
    };
    let c = open(dir.path(), Limits::default());
    assert_eq!(c.write_missing_reports().expect("write"), 1);
    let reports = c.view(&id).expect("view").summary.reports_dir;
    assert!(Path::new(&reports).join("fleet.md").exists(), "{reports}");
    assert!(Path::new(&reports).join("a.md").exists(), "{reports}");
    assert_eq!(c.write_missing_reports().expect("again"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_come_in_pages_that_neither_repeat_nor_skip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = open(dir.path(), Limits::default());
    let _a = connect(&c, "a").await;
    let _b = connect(&c, "b").await;
    let id = start(&c, &["a", "b"], 60);
    for (host, seq, batch) in [("a", 1, 8), ("a", 2, 16), ("b", 1, 8)] {
        c.result_received(host, result(&id, seq, batch))
            .await
            .expect("store");
    }
    let (first, token) = c.results_page(&id, 2, "").expect("page 1");
    assert_eq!(first.len(), 2);
    assert!(!token.is_empty());
    // A result stored between pages lands on a later page, never twice.
    c.result_received("b", result(&id, 2, 16))
        .await
        .expect("store");
    let (second, token) = c.results_page(&id, 2, &token).expect("page 2");
    assert!(token.is_empty() || c.results_page(&id, 2, &token).expect("page 3").0.is_empty());
    let keys: Vec<(String, u32)> = first
        .iter()
        .chain(&second)
        .map(|r| (r.host.clone(), r.point.as_ref().map_or(0, |p| p.batch_size)))
        .collect();
    assert_eq!(
        keys,
        [
            ("a".to_string(), 8),
            ("a".to_string(), 16),
            ("b".to_string(), 8),
            ("b".to_string(), 16)
        ]
    );
    let e = c
        .results_page(&id, 2, "garbage\n")
        .expect_err("a forged token");
    assert!(e.to_string().contains("page_token"), "{e}");
}
