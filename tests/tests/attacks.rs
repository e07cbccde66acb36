//! The attack suite: one test per way a hostile agent, operator or spec
//! could get at the fleet, each against real processes on loopback. Every
//! attack must be refused or contained with a clear message, and the
//! coordinator must keep serving. Each test prints its row of the matrix
//! (attack, what a safe fleet does, what happened).
//!
//! Every one of these attacks succeeded against the code before the change
//! that added this file (see that commit's message).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fleetbench_common::stats::LatencySummary;
use fleetbench_common::{
    DeviceDescription, DeviceKind, Engine, ModelInfo, PointOutcome, PointResult, PointStats,
    Precision, WeightsSource,
};
use fleetbench_proto::v1::agent_session_client::AgentSessionClient;
use fleetbench_proto::v1::{self, agent_message, coordinator_message};
use fleetbench_tests::creds::{client_tls, dev_certs, file, operator, short_lived_agent};
use fleetbench_tests::{
    AgentProc, CoordinatorProc, bin, http_get, show, sweep_id_of, text, wait_for_agents,
    wait_sweep_end, wait_until,
};
use tokio_stream::wrappers::ReceiverStream;

const SWEEP_TIMEOUT: Duration = Duration::from_secs(60);

/// One row of the matrix, on stderr past the test harness's capture.
fn row(attack: &str, safe: &str, seen: &str) {
    show(&format!(
        "ATTACK | {attack:<44} | {safe:<44} | {}\n",
        seen.lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(140)
            .collect::<String>()
    ));
}

/// An agent started with `args` under `name` must give up with exit code 2
/// and `expected` in its log; the attack's row goes into the matrix.
fn agent_refused(
    url: &str,
    name: &str,
    spool: &std::path::Path,
    args: &[String],
    (attack, safe): (&str, &str),
    expected: &str,
) {
    let (code, log) = short_lived_agent(url, name, spool, args);
    row(attack, safe, &log);
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains(expected), "wanted '{expected}' in: {log}");
}

/// The coordinator still answers.
fn still_serving(coordinator: &CoordinatorProc, creds: &[String]) {
    let out = Command::new(bin("fleetbench"))
        .args(["health", "--coordinator", &url_of(coordinator, creds)])
        .args(creds)
        .output()
        .expect("health");
    assert!(out.status.success(), "{}", text(&out));
}

fn url_of(coordinator: &CoordinatorProc, creds: &[String]) -> String {
    if creds.iter().any(|c| c == "--tls-ca") {
        format!("https://{}", coordinator.addr)
    } else {
        coordinator.url.clone()
    }
}

fn tls(certs: &Path, who: &str) -> Vec<String> {
    client_tls(certs, certs, who)
}

fn mtls_coordinator(dir: &Path, certs: &Path, extra: &[&str]) -> CoordinatorProc {
    let mut args = vec![
        "--tls-cert".to_string(),
        file(certs, "coordinator.pem"),
        "--tls-key".into(),
        file(certs, "coordinator-key.pem"),
        "--client-ca".into(),
        file(certs, "ca.pem"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    CoordinatorProc::start(&dir.join("data"), None, &args)
}

// ---------------------------------------------------------------- identity

#[test]
fn impersonation_with_another_hosts_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dev_certs(&dir.path().join("certs"), &["gpu-a", "gpu-b"]);
    let coordinator = mtls_coordinator(dir.path(), &certs, &[]);
    let url = format!("https://{}", coordinator.addr);
    let mut real_args = tls(&certs, "agent-gpu-b");
    real_args.extend(["--simulate".to_string(), "T4".to_string()]);
    let real_args: Vec<&str> = real_args.iter().map(String::as_str).collect();
    let _real = AgentProc::start(&url, "gpu-b", &dir.path().join("spool-b"), &real_args);
    let op = tls(&certs, "operator");
    wait_until(Duration::from_secs(30), "gpu-b to connect", || {
        text(&operator(&url, &op, &["agents"])).contains("gpu-b")
    });
    // gpu-a's certificate, claiming to be gpu-b.
    agent_refused(
        &url,
        "gpu-b",
        &dir.path().join("spool-x"),
        &tls(&certs, "agent-gpu-a"),
        (
            "impersonation: gpu-a's certificate as gpu-b",
            "refused: the certificate names gpu-a",
        ),
        "this agent's certificate is for gpu-a, not 'gpu-b'",
    );
    // The real gpu-b is still connected and the coordinator serves.
    let agents = text(&operator(&url, &op, &["agents"]));
    assert!(
        agents.contains("gpu-b") && agents.contains("connected"),
        "{agents}"
    );
    still_serving(&coordinator, &op);
}

#[test]
fn a_shared_token_cannot_claim_a_host_bound_to_its_own_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dev_certs(&dir.path().join("certs"), &["gpu-a", "gpu-b"]);
    let coordinator = CoordinatorProc::start(
        &dir.path().join("data"),
        None,
        &[
            "--agent-tokens",
            &file(&certs, "agent-tokens"),
            "--agent-token-file",
            &file(&certs, "agent.token"),
        ],
    );
    let token = |name: &str| vec!["--token-file".to_string(), file(&certs, name)];
    for (name, file, expected) in [
        ("gpu-a", "agent.token", "host 'gpu-a' has its own token"),
        (
            "gpu-a",
            "agent-gpu-b.token",
            "this agent's token belongs to host 'gpu-b'",
        ),
    ] {
        agent_refused(
            &coordinator.url,
            name,
            &dir.path().join("spool"),
            &token(file),
            (
                &format!("impersonation: {file} as {name}"),
                "refused: the name is bound to another token",
            ),
            expected,
        );
    }
    // The right token for the right name gets in.
    let args = token("agent-gpu-a.token");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _a = AgentProc::start(
        &coordinator.url,
        "gpu-a",
        &dir.path().join("spool-a"),
        &[&args[..], &["--simulate", "T4"]].concat(),
    );
    wait_for_agents(&coordinator, 1);
    still_serving(&coordinator, &[]);
}

/// A raw agent session: Hello, then whatever the test sends.
struct RawAgent {
    tx: tokio::sync::mpsc::Sender<v1::AgentMessage>,
    inbound: tonic::Streaming<v1::CoordinatorMessage>,
}

fn msg(body: agent_message::Body) -> v1::AgentMessage {
    v1::AgentMessage { body: Some(body) }
}

impl RawAgent {
    async fn connect(
        url: &str,
        name: &str,
        instance_id: &str,
        gpu_name: &str,
    ) -> Result<RawAgent, tonic::Status> {
        let mut client = AgentSessionClient::connect(url.to_string())
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let _ = tx
            .send(msg(agent_message::Body::Hello(v1::Hello {
                protocol_version: fleetbench_proto::PROTOCOL_VERSION,
                agent_version: "attacker".into(),
                agent_name: name.into(),
                inventory: Some(v1::HostInventory {
                    hostname: name.into(),
                    gpus: vec![v1::GpuInfo {
                        name: gpu_name.into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                instance_id: instance_id.into(),
            })))
            .await;
        let inbound = client.session(ReceiverStream::new(rx)).await?.into_inner();
        Ok(RawAgent { tx, inbound })
    }

    /// Waits for a RunSweep; answers it with one measured point on a device
    /// called `device_name`, then a failed verdict with `error`.
    async fn answer_one_sweep(&mut self, device_name: &str, error: &str) {
        let sweep = loop {
            let m = tokio::time::timeout(Duration::from_secs(30), self.inbound.message())
                .await
                .expect("a RunSweep within 30 s")
                .expect("stream")
                .expect("open");
            if let Some(coordinator_message::Body::RunSweep(run)) = m.body {
                break run.sweep_id;
            }
        };
        let device = DeviceDescription {
            id: "cuda:0".into(),
            kind: DeviceKind::Cuda,
            name: device_name.into(),
            simulated: false,
        };
        let samples = vec![10.0, 11.0, 12.0];
        let point = PointResult {
            batch_size: 8,
            seq_len: 128,
            outcome: PointOutcome::Measured(PointStats {
                warmup: 1,
                iterations: 3,
                timed_seconds: 0.033,
                latency: LatencySummary::from_samples_ms(&samples).expect("latency"),
                throughput: 727.0,
                samples_ms: samples,
                peak_rss_bytes: None,
                gpu_process_bytes: None,
                gpu_device_bytes: None,
                avg_power_watts: None,
                energy_joules: None,
                throttle_reasons: Vec::new(),
                sm_clock_mhz: None,
                gpu_pool_peak_bytes: None,
                gpu_temperature_c: None,
                energy_method: None,
                gpu_samples: 0,
            }),
        };
        let model = ModelInfo::distilbert_base(
            fleetbench_common::spec::DEFAULT_MODEL,
            WeightsSource::Random { seed: 1 },
            Precision::F32,
            Engine::Fleetbench,
        );
        let _ = self
            .tx
            .send(msg(agent_message::Body::Result(v1::PointResultMsg {
                seq: 1,
                sweep_id: sweep.clone(),
                device: Some((&device).into()),
                model: Some((&model).into()),
                point: Some((&point).into()),
                environment: None,
            })))
            .await;
        let _ = self
            .tx
            .send(msg(agent_message::Body::Finished(v1::SweepFinished {
                seq: 2,
                sweep_id: sweep,
                ok: false,
                error: error.into(),
                notes: Vec::new(),
            })))
            .await;
        let mut acks = 0;
        while acks < 2 {
            let m = tokio::time::timeout(Duration::from_secs(30), self.inbound.message())
                .await
                .expect("acks within 30 s")
                .expect("stream")
                .expect("open");
            if let Some(coordinator_message::Body::Ack(_)) = m.body {
                acks += 1;
            }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_live_hosts_session_cannot_be_hijacked_and_its_results_stay_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let coordinator = CoordinatorProc::start(&dir.path().join("data"), None, &[]);
    let _real = AgentProc::start(
        &coordinator.url,
        "gpu-07",
        &dir.path().join("spool"),
        &["--simulate", "H100-SXM", "--simulate-point-ms", "20"],
    );
    wait_for_agents(&coordinator, 1);
    // Hello { agent_name: "gpu-07", instance_id: "" }: took the session over
    // before, receiving gpu-07's sweeps and storing forged results.
    let refused = runtime().block_on(async {
        match RawAgent::connect(&coordinator.url, "gpu-07", "", "H100").await {
            Ok(_) => "admitted".to_string(),
            Err(s) => format!("{:?}: {}", s.code(), s.message()),
        }
    });
    row(
        "hijack: gpu-07 with an empty instance id",
        "refused: the name is live",
        &refused,
    );
    assert!(
        refused.starts_with("AlreadyExists") && refused.contains("another agent named 'gpu-07'"),
        "{refused}"
    );
    // The real agent's sweep completes with its own (simulated) results.
    let out = coordinator.cli(&[
        "sweep",
        "--batch-sizes",
        "8,16",
        "--iterations",
        "2",
        "--wait",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let id = sweep_id_of(&out);
    let stored = coordinator.stored(&id);
    assert_eq!(stored.len(), 2, "{stored:?}");
    let simulated: i64 = coordinator
        .db()
        .query_row(
            "SELECT COUNT(*) FROM results WHERE sweep_id = ?1 AND json_extract(device_json, '$.simulated') = 1",
            [&id],
            |r| r.get(0),
        )
        .expect("query");
    assert_eq!(simulated, 2, "every stored result is the real agent's");
}

// ---------------------------------------------------------------- roles

#[test]
fn certificates_hold_roles_agents_cannot_operate_and_readers_cannot_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dev_certs(&dir.path().join("certs"), &["gpu-a"]);
    let coordinator = mtls_coordinator(dir.path(), &certs, &[]);
    let url = format!("https://{}", coordinator.addr);
    // An agent's certificate on the control API: before, any certificate
    // from the CA could start, cancel and read sweeps.
    let out = operator(
        &url,
        &tls(&certs, "agent-gpu-a"),
        &["sweep", "--batch-sizes", "8"],
    );
    row(
        "role confusion: agent certificate starts a sweep",
        "refused: agent certificates cannot operate",
        &text(&out),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("agent certificates cannot call the control API"),
        "{}",
        text(&out)
    );
    // The read-only certificate lists, but cannot start or cancel.
    let reader = tls(&certs, "reader");
    let out = operator(&url, &reader, &["sweeps"]);
    assert!(out.status.success(), "{}", text(&out));
    for args in [
        vec!["sweep", "--batch-sizes", "8"],
        vec!["cancel", "no-such-sweep"],
    ] {
        let out = operator(&url, &reader, &args);
        row(
            &format!("role confusion: reader runs `{}`", args[0]),
            "refused: read-only",
            &text(&out),
        );
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            text(&out).contains("read-only access cannot"),
            "{}",
            text(&out)
        );
    }
    // An operator's certificate is not an agent's.
    agent_refused(
        &url,
        "gpu-a",
        &dir.path().join("spool"),
        &tls(&certs, "operator"),
        (
            "role confusion: operator certificate as agent",
            "refused: not an agent certificate",
        ),
        "is an operator's",
    );
    still_serving(&coordinator, &tls(&certs, "operator"));
}

#[test]
fn beyond_loopback_an_unauthenticated_coordinator_does_not_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dev_certs(&dir.path().join("certs"), &["gpu-a"]);
    // TLS but no tokens and no client CA: before, it started silently and
    // anyone reaching the port could start sweeps.
    let out = Command::new(bin("fleetbench"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(dir.path().join("data"))
        .args([
            "--tls-cert",
            &file(&certs, "coordinator.pem"),
            "--tls-key",
            &file(&certs, "coordinator-key.pem"),
        ])
        .output()
        .expect("serve");
    row(
        "no authentication beyond loopback",
        "refused to start, names --no-auth",
        &text(&out),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no authentication for agents") && text(&out).contains("--no-auth"),
        "{}",
        text(&out)
    );
}

// ---------------------------------------------------------------- metrics

#[test]
fn hostile_names_cannot_forge_metrics_and_hosts_are_capped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut coordinator = CoordinatorProc::start(
        &dir.path().join("data"),
        None,
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--metrics-refresh",
            "0.2",
            "--metrics-max-hosts",
            "2",
        ],
    );
    let metrics = coordinator.metrics_url.clone().expect("metrics");
    let forged = "H100\"} 1\nfleetbench_agents_connected{x=\"y\"} 999\n#";
    let rt = runtime();
    let mut raws = Vec::new();
    for name in ["evil-1", "evil-2", "evil-3"] {
        raws.push(
            rt.block_on(RawAgent::connect(&coordinator.url, name, name, forged))
                .expect("connect"),
        );
    }
    wait_for_agents(&coordinator, 3);
    let out = coordinator.cli(&["sweep", "--batch-sizes", "8"]);
    assert!(out.status.success(), "{}", text(&out));
    let id = sweep_id_of(&out);
    rt.block_on(async {
        for raw in &mut raws {
            raw.answer_one_sweep(forged, "x").await;
        }
    });
    wait_sweep_end(&coordinator, &id, SWEEP_TIMEOUT);
    let mut body = String::new();
    wait_until(Duration::from_secs(15), "the per-host series", || {
        body = http_get(&metrics).1;
        body.contains("fleetbench_metrics_hosts_omitted 1")
    });
    let forged_line = body
        .lines()
        .find(|l| l.starts_with("fleetbench_agents_connected{"));
    row(
        "metrics: label injection + 3 hosts, cap 2",
        "no forged series; 2 series, 1 omitted",
        &format!(
            "forged line: {forged_line:?}; host series: {}",
            body.lines()
                .filter(|l| l.starts_with("fleetbench_host_best_throughput"))
                .count()
        ),
    );
    assert_eq!(forged_line, None, "{body}");
    assert_eq!(
        body.lines()
            .filter(|l| l.starts_with("fleetbench_host_best_throughput"))
            .count(),
        2,
        "{body}"
    );
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    coordinator.kill9();
}

#[test]
fn metrics_can_require_a_bearer_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("metrics.token");
    std::fs::write(&token, "metrics-token-0123456789\n").expect("write");
    let coordinator = CoordinatorProc::start(
        &dir.path().join("data"),
        None,
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--metrics-token-file",
            token.to_str().expect("utf-8"),
        ],
    );
    let (status, body) = http_get(coordinator.metrics_url.as_deref().expect("metrics"));
    row("metrics: scrape without the token", "401", &status);
    assert!(status.contains("401"), "{status}");
    assert!(!body.contains("fleetbench_"), "{body}");
}

// ---------------------------------------------------------------- agents decide

#[test]
fn a_remote_spec_cannot_open_local_paths_or_unlisted_models() {
    let dir = tempfile::tempdir().expect("tempdir");
    let coordinator = CoordinatorProc::start(&dir.path().join("data"), None, &[]);
    let _agent = AgentProc::start(&coordinator.url, "cpu-host", &dir.path().join("spool"), &[]);
    wait_for_agents(&coordinator, 1);
    let secret = dir.path().join("secret-model");
    std::fs::create_dir_all(&secret).expect("mkdir");
    for (model, expected) in [
        (
            secret.to_str().expect("utf-8"),
            "does not read local model directories",
        ),
        ("evil/huge-model", "does not run model 'evil/huge-model'"),
    ] {
        let out = coordinator.cli(&[
            "sweep",
            "--model",
            model,
            "--batch-sizes",
            "1",
            "--device",
            "cpu",
            "--wait",
        ]);
        let id = sweep_id_of(&out);
        let (state, error) = coordinator.host_state(&id, "cpu-host");
        let error = error.unwrap_or_default();
        row(
            &format!(
                "spec names model {}",
                if model.starts_with('/') {
                    "<local dir>"
                } else {
                    model
                }
            ),
            "host refuses, says how to allow",
            &error,
        );
        assert_eq!(state, "failed", "{}", text(&out));
        assert!(error.contains(expected), "{error}");
    }
    still_serving(&coordinator, &[]);
}

#[test]
fn an_oversized_tokenizer_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let models = dir.path().join("models");
    let model = models.join("bloated");
    std::fs::create_dir_all(&model).expect("mkdir");
    let fixture = fleetbench_tests::fixture_model();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture.join(f), model.join(f)).expect("copy");
    }
    // 100 MiB of nothing (a sparse file): more than any tokenizer.
    std::fs::File::create(model.join("tokenizer.json"))
        .and_then(|f| f.set_len(100 << 20))
        .expect("sparse file");
    let coordinator = CoordinatorProc::start(&dir.path().join("data"), None, &[]);
    let _agent = AgentProc::start(
        &coordinator.url,
        "cpu-host",
        &dir.path().join("spool"),
        &["--allow-model-dir", models.to_str().expect("utf-8")],
    );
    wait_for_agents(&coordinator, 1);
    let out = coordinator.cli(&[
        "sweep",
        "--model",
        model.to_str().expect("utf-8"),
        "--batch-sizes",
        "1",
        "--seq-len",
        "16",
        "--device",
        "cpu",
        "--wait",
    ]);
    let id = sweep_id_of(&out);
    let (state, error) = coordinator.host_state(&id, "cpu-host");
    let error = error.unwrap_or_default();
    row(
        "oversized tokenizer.json (100 MiB)",
        "refused before reading",
        &error,
    );
    assert_eq!(state, "failed", "{}", text(&out));
    assert!(error.contains("100 MiB, more than the 64 MiB"), "{error}");
    still_serving(&coordinator, &[]);
}

#[test]
fn a_point_that_killed_the_agent_is_not_run_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let coordinator = CoordinatorProc::start(&dir.path().join("data"), None, &[]);
    let mut agent = AgentProc::start(
        &coordinator.url,
        "gpu-x",
        &dir.path().join("spool"),
        &["--simulate", "T4", "--simulate-point-ms", "1500"],
    );
    wait_for_agents(&coordinator, 1);
    let out = coordinator.cli(&["sweep", "--batch-sizes", "8,16", "--iterations", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    let id = sweep_id_of(&out);
    // Dies inside its first point, as the kernel's OOM killer would do it,
    // twice (one death is forgiven: it may have been an operator's kill).
    let marker = dir.path().join("spool").join("running-point.json");
    let history = dir.path().join("spool").join("crashed-points.jsonl");
    let crashes_recorded = || {
        std::fs::read_to_string(&history)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    for crash in 0..2 {
        // The restarted agent has recorded the last crash and is inside the
        // point again.
        wait_until(Duration::from_secs(30), "the first point to run", || {
            crashes_recorded() == crash && marker.exists()
        });
        agent.kill9();
        agent.restart();
    }
    let state = wait_sweep_end(&coordinator, &id, SWEEP_TIMEOUT);
    let (host, error) = coordinator.host_state(&id, "gpu-x");
    let error = error.unwrap_or_default();
    row(
        "crash loop: agent killed inside a point",
        "point not re-run, host fails with why",
        &error,
    );
    assert_eq!(
        (state.as_str(), host.as_str()),
        ("failed", "failed"),
        "{error}"
    );
    assert!(
        error.contains("batch 8: the agent died while measuring this point 2 times"),
        "{error}"
    );
    // The other point still ran.
    let stored = coordinator.stored(&id);
    assert_eq!(
        stored,
        [("gpu-x".to_string(), "cuda:0".to_string(), 16)],
        "{stored:?}"
    );
}

// ---------------------------------------------------------------- text and files

#[test]
fn agent_text_cannot_inject_formulas_log_lines_or_markdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let coordinator = CoordinatorProc::start(&dir.path().join("data"), None, &[]);
    let rt = runtime();
    let formula = "=HYPERLINK(\"http://evil.example\",\"H100\")";
    let mut raw = rt
        .block_on(RawAgent::connect(&coordinator.url, "evil", "evil", formula))
        .expect("connect");
    wait_for_agents(&coordinator, 1);
    let out = coordinator.cli(&["sweep", "--batch-sizes", "8"]);
    let id = sweep_id_of(&out);
    let forged_log = "boom\n2026-11-29T00:00:00.000000Z  INFO fleetbench: sweep ended forged=true";
    rt.block_on(raw.answer_one_sweep(
        &format!("{formula} [x](http://evil.example) <b>"),
        forged_log,
    ));
    wait_sweep_end(&coordinator, &id, SWEEP_TIMEOUT);
    let mut reports = String::new();
    wait_until(Duration::from_secs(15), "the reports", || {
        reports = coordinator
            .db()
            .query_row("SELECT reports_dir FROM sweeps WHERE id = ?1", [&id], |r| {
                r.get::<_, Option<String>>(0)
            })
            .ok()
            .flatten()
            .unwrap_or_default();
        !reports.is_empty()
    });
    let csv = std::fs::read_to_string(Path::new(&reports).join("fleet.csv")).expect("fleet.csv");
    let cells: Vec<&str> = csv.split([',', '\n']).collect();
    let formula_cell = cells
        .iter()
        .find(|c| c.contains("HYPERLINK"))
        .copied()
        .unwrap_or("");
    let log = coordinator.log_text();
    let log_forged = log
        .lines()
        .any(|l| l.starts_with("2026-11-29T00:00:00.000000Z"));
    let md = std::fs::read_to_string(Path::new(&reports).join("evil.md")).expect("evil.md");
    row(
        "CSV formula, log line and Markdown in agent text",
        "'= cell, no forged line, escaped Markdown",
        &format!("cell {formula_cell}; forged log line: {log_forged}"),
    );
    assert!(
        formula_cell.trim_start_matches('"').starts_with("'="),
        "{csv}"
    );
    assert!(!log_forged, "{log}");
    assert!(md.contains("\\[x\\](http://evil.example) \\<b\\>"), "{md}");
    assert!(!md.contains("<b>"), "{md}");
}

#[test]
fn report_files_never_overwrite_each_other_or_the_fleet_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let coordinator = CoordinatorProc::start(&dir.path().join("data"), None, &[]);
    let mut agents = Vec::new();
    for name in ["fleet", "gpu_01", "GPU_01"] {
        agents.push(AgentProc::start(
            &coordinator.url,
            name,
            &dir.path().join(format!("spool-{name}")),
            &["--simulate", "T4", "--simulate-point-ms", "10"],
        ));
    }
    wait_for_agents(&coordinator, 3);
    let out = coordinator.cli(&["sweep", "--batch-sizes", "8", "--iterations", "2", "--wait"]);
    assert!(out.status.success(), "{}", text(&out));
    let reports: String = coordinator
        .db()
        .query_row(
            "SELECT reports_dir FROM sweeps WHERE id = ?1",
            [sweep_id_of(&out)],
            |r| r.get(0),
        )
        .expect("reports");
    let mut files: Vec<String> = std::fs::read_dir(&reports)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .collect();
    files.sort();
    row(
        "report names: fleet, gpu_01, GPU_01",
        "4 distinct files",
        &files.join(" "),
    );
    assert_eq!(
        files,
        ["GPU_01.md", "fleet-2.md", "fleet.md", "gpu_01-2.md"]
    );
    let fleet = std::fs::read_to_string(Path::new(&reports).join("fleet.md")).expect("fleet.md");
    assert!(fleet.contains("**Hosts**: 3"), "{fleet}");
}

#[test]
fn a_sweep_that_ended_without_reports_gets_them_at_the_next_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut coordinator = CoordinatorProc::start(&data, None, &[]);
    let _agent = AgentProc::start(
        &coordinator.url,
        "gpu-r",
        &dir.path().join("spool"),
        &["--simulate", "L4", "--simulate-point-ms", "10"],
    );
    wait_for_agents(&coordinator, 1);
    let out = coordinator.cli(&["sweep", "--batch-sizes", "8", "--iterations", "2", "--wait"]);
    assert!(out.status.success(), "{}", text(&out));
    let id = sweep_id_of(&out);
    coordinator.kill9();
    // As after a crash between the sweep's commit and its reports.
    let db = rusqlite::Connection::open(data.join("fleetbench.db")).expect("db");
    let reports: String = db
        .query_row("SELECT reports_dir FROM sweeps WHERE id = ?1", [&id], |r| {
            r.get(0)
        })
        .expect("reports");
    std::fs::remove_dir_all(&reports).expect("remove");
    db.execute("UPDATE sweeps SET reports_dir = NULL", [])
        .expect("update");
    drop(db);
    let coordinator = CoordinatorProc::start(&data, None, &[]);
    let exists = Path::new(&reports).join("fleet.md").exists();
    row(
        "reports lost at a crash",
        "written again at start",
        &format!("fleet.md exists: {exists}"),
    );
    assert!(exists, "{}", coordinator.log_text());
    assert!(Path::new(&reports).join("gpu-r.md").exists());
}
