//! The bad-input matrix: every external input fleetbench takes (command
//! lines and sweep specs, model files, the prices file, token files, and the
//! wire protocol), each tried with broken values against the real binaries
//! and a real coordinator. Every one must be refused with a clear error that
//! says what to fix; no process may crash; the coordinator must keep serving.
//! The test prints the matrix with each input's outcome.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fleetbench_common::{
    DeviceDescription, Engine, ModelInfo, PointOutcome, PointResult, Precision, WeightsSource,
};
use fleetbench_proto::v1::agent_session_client::AgentSessionClient;
use fleetbench_proto::v1::{self, agent_message, coordinator_message};
use fleetbench_tests::{CoordinatorProc, bin, fixture_model, show, text};
use tokio_stream::wrappers::ReceiverStream;

/// One input and what came of it.
struct Case {
    input: String,
    outcome: String,
    ok: bool,
}

/// Runs a command that must be refused: exit code 2, an `error:` line that
/// contains `expect`, and no panic.
fn refused(input: &str, cmd: &mut Command, expect: &str) -> Case {
    let out = match run_bounded(cmd) {
        Ok(out) => out,
        Err(why) => {
            return Case {
                input: input.to_string(),
                outcome: why,
                ok: false,
            };
        }
    };
    let said = text(&out);
    let first = said
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or("")
        .to_string();
    let ok = out.status.code() == Some(2)
        && first.contains(expect)
        && !said.contains("panicked")
        && first.len() < 400;
    Case {
        input: input.to_string(),
        outcome: if first.is_empty() {
            format!("exit {:?}: {}", out.status.code(), said.trim())
        } else {
            first
        },
        ok,
    }
}

/// Runs `cmd` to its end, or kills it after 30 s: an input that should be
/// refused must not leave a process running.
fn run_bounded(cmd: &mut Command) -> Result<std::process::Output, String> {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let started = std::time::Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            return Err("still running after 30 s: the input was accepted".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child.wait_with_output().expect("output"))
}

fn agent_bench(args: &[&str]) -> Command {
    let mut c = Command::new(bin("fleetbench-agent"));
    c.args(["bench", "--weights", "random", "--warmup", "0", "--out"])
        .arg(std::env::temp_dir().join("fleetbench-bad-input-reports"))
        .args(args);
    // Defaults that keep a wrongly accepted input short, unless under test.
    for (flag, value) in [("--device", "cpu"), ("--iterations", "1")] {
        if !args.contains(&flag) {
            c.args([flag, value]);
        }
    }
    c
}

fn classify(model: &Path) -> Command {
    let mut c = Command::new(bin("fleetbench-agent"));
    c.args(["classify", "--model"])
        .arg(model)
        .args(["--weights", "hub", "a fine movie"]);
    c
}

fn command_line_cases(coordinator: &CoordinatorProc) -> Vec<Case> {
    let mut cases = Vec::new();
    for (value, expect) in [
        ("0", "batch size 0 is not allowed"),
        ("-1", "batch size -1 is not allowed"),
        ("99999999", "is too large"),
        ("eight", "is not a whole number"),
        ("", "the batch size list is empty"),
        ("8,16,8", "batch size 8 is listed twice"),
    ] {
        cases.push(refused(
            &format!("agent bench --batch-sizes '{value}'"),
            &mut agent_bench(&["--batch-sizes", value]),
            expect,
        ));
        cases.push(refused(
            &format!("fleetbench sweep --batch-sizes '{value}'"),
            Command::new(bin("fleetbench")).args([
                "sweep",
                "--coordinator",
                &coordinator.url,
                "--batch-sizes",
                value,
            ]),
            expect,
        ));
    }
    for (args, expect) in [
        (vec!["--seq-len", "0"], "sequence length 0 is not allowed"),
        (
            vec!["--seq-len", "513"],
            "sequence length 513 is not allowed",
        ),
        (vec!["--dtype", "f8"], "unknown dtype 'f8'"),
        (vec!["--device", "tpu"], "unknown device 'tpu'"),
        (vec!["--iterations", "0"], "--iterations must be between"),
    ] {
        cases.push(refused(
            &format!("agent bench {}", args.join(" ")),
            &mut agent_bench(&args),
            expect,
        ));
    }
    cases.push(refused(
        "fleetbench sweep --seq-len 513 (operator)",
        Command::new(bin("fleetbench")).args([
            "sweep",
            "--coordinator",
            &coordinator.url,
            "--seq-len",
            "513",
        ]),
        "sequence length 513 is not allowed",
    ));
    cases.push(refused(
        "fleetbench show on an unknown sweep",
        Command::new(bin("fleetbench")).args([
            "show",
            "--coordinator",
            &coordinator.url,
            "no-such-sweep",
        ]),
        "no-such-sweep",
    ));
    cases.push(refused(
        "fleetbench agents --coordinator not-a-url",
        Command::new(bin("fleetbench")).args(["agents", "--coordinator", "not a url"]),
        "invalid coordinator address",
    ));
    cases
}

/// Copies the fixture model and lets `edit` break it.
fn broken_model(dir: &Path, name: &str, edit: impl FnOnce(&Path)) -> std::path::PathBuf {
    let model = dir.join(name);
    std::fs::create_dir_all(&model).expect("model dir");
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture_model().join(f), model.join(f)).expect("copy fixture");
    }
    edit(&model);
    model
}

/// Rewrites the safetensors header with `edit`, keeping the data as is.
fn edit_header(model: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = model.join("model.safetensors");
    let bytes = std::fs::read(&path).expect("read");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("header");
    edit(&mut header);
    let mut text = serde_json::to_vec(&header).expect("json");
    // Keep the data 8-byte aligned, as the format asks.
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&path, out).expect("write");
}

fn model_file_cases(dir: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    let missing = dir.join("no-such-model");
    cases.push(refused(
        "model directory missing",
        &mut classify(&missing),
        "no-such-model",
    ));
    let no_config = broken_model(dir, "no-config", |m| {
        std::fs::remove_file(m.join("config.json")).expect("rm")
    });
    cases.push(refused(
        "config.json missing",
        &mut classify(&no_config),
        "config.json",
    ));
    let empty = broken_model(dir, "empty-weights", |m| {
        std::fs::write(m.join("model.safetensors"), b"").expect("write")
    });
    cases.push(refused(
        "model.safetensors empty",
        &mut classify(&empty),
        "model.safetensors",
    ));
    let truncated = broken_model(dir, "truncated", |m| {
        let p = m.join("model.safetensors");
        let b = std::fs::read(&p).expect("read");
        std::fs::write(&p, &b[..b.len() / 2]).expect("write")
    });
    cases.push(refused(
        "model.safetensors truncated to half",
        &mut classify(&truncated),
        "model.safetensors",
    ));
    let shape = broken_model(dir, "wrong-shape", |m| {
        edit_header(m, |h| {
            h["classifier.weight"]["shape"] = serde_json::json!([32, 2]);
        })
    });
    cases.push(refused(
        "a tensor with the wrong shape ([32, 2] for [2, 32])",
        &mut classify(&shape),
        "classifier.weight",
    ));
    let dtype = broken_model(dir, "wrong-dtype", |m| {
        edit_header(m, |h| {
            h["classifier.bias"]["dtype"] = serde_json::json!("I32");
        })
    });
    cases.push(refused(
        "a tensor of the wrong dtype (I32)",
        &mut classify(&dtype),
        "classifier.bias",
    ));
    let vocabulary = broken_model(dir, "other-vocabulary", |m| {
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(m.join("config.json")).expect("config"))
                .expect("json");
        // The tokenizer's ids reach 30521; a model with 1000 rows cannot embed them.
        config["vocab_size"] = serde_json::json!(1000);
        std::fs::write(m.join("config.json"), config.to_string()).expect("write");
        edit_header(m, |h| {
            h["distilbert.embeddings.word_embeddings.weight"]["shape"] =
                serde_json::json!([1000, 32]);
        });
    });
    cases.push(refused(
        "a tokenizer of another vocabulary (30522 ids, model has 1000)",
        &mut classify(&vocabulary),
        "vocabulary",
    ));
    cases
}

fn config_file_cases(dir: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    for (name, content, expect) in [
        ("prices.json", "{\"H100-SXM\": -3}", "--prices"),
        ("prices.csv", "H100-SXM,three dollars\n", "--prices"),
        ("empty-prices", "", "--prices"),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, content).expect("write");
        cases.push(refused(
            &format!("serve --prices with {content:?}"),
            Command::new(bin("fleetbench"))
                .args(["serve", "--listen", "127.0.0.1:0", "--data"])
                .arg(dir.join("prices-data"))
                .arg("--prices")
                .arg(&path),
            expect,
        ));
    }
    let short = dir.join("short.token");
    std::fs::write(&short, "abc\n").expect("write");
    cases.push(refused(
        "serve --agent-token-file with a 3-character token",
        Command::new(bin("fleetbench"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.join("token-data"))
            .arg("--agent-token-file")
            .arg(&short),
        "at least 16",
    ));
    cases.push(refused(
        "serve --tls-cert with a file that is not PEM",
        Command::new(bin("fleetbench"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.join("tls-data"))
            .arg("--tls-cert")
            .arg(&short)
            .arg("--tls-key")
            .arg(&short),
        "not a PEM file",
    ));
    cases
}

fn message(body: agent_message::Body) -> v1::AgentMessage {
    v1::AgentMessage { body: Some(body) }
}

fn hello(name: &str, version: u32) -> v1::AgentMessage {
    message(agent_message::Body::Hello(v1::Hello {
        protocol_version: version,
        agent_version: "bad-input-matrix".into(),
        agent_name: name.into(),
        inventory: Some(v1::HostInventory {
            hostname: name.into(),
            simulated: true,
            ..Default::default()
        }),
        instance_id: name.into(),
    }))
}

fn result(seq: u64, sweep: &str, padding: usize) -> v1::AgentMessage {
    let mut m = result_without_model(seq, sweep, padding);
    if let Some(agent_message::Body::Result(r)) = m.body.as_mut() {
        let model = ModelInfo::distilbert_base(
            fleetbench_common::spec::DEFAULT_MODEL,
            WeightsSource::Simulated,
            Precision::F32,
            Engine::Fleetbench,
        );
        r.model = Some((&model).into());
    }
    m
}

fn result_without_model(seq: u64, sweep: &str, padding: usize) -> v1::AgentMessage {
    let device = DeviceDescription::cpu("matrix CPU");
    let point = PointResult {
        batch_size: 8,
        seq_len: 128,
        outcome: PointOutcome::Failed {
            error: "x".repeat(padding.max(1)),
        },
    };
    message(agent_message::Body::Result(v1::PointResultMsg {
        seq,
        sweep_id: sweep.into(),
        device: Some((&device).into()),
        model: None,
        point: Some((&point).into()),
        environment: None,
    }))
}

/// Opens a session, sends `messages` after Hello, and returns what came
/// back: the first reply after Welcome, or the error.
async fn session(url: &str, name: &str, version: u32, messages: Vec<v1::AgentMessage>) -> String {
    let mut client = match AgentSessionClient::connect(url.to_string()).await {
        Ok(c) => c.max_encoding_message_size(64 << 20),
        Err(e) => return format!("connect failed: {e}"),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let _ = tx.send(hello(name, version)).await;
    let mut inbound = match client.session(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(s) => return format!("refused: {:?}: {}", s.code(), s.message()),
    };
    for m in messages {
        let _ = tx.send(m).await;
    }
    loop {
        match tokio::time::timeout(Duration::from_secs(10), inbound.message()).await {
            Err(_) => return "no answer in 10 s".into(),
            Ok(Err(s)) => return format!("refused: {:?}: {}", s.code(), s.message()),
            Ok(Ok(None)) => return "closed".into(),
            Ok(Ok(Some(m))) => match m.body {
                Some(coordinator_message::Body::Welcome(_)) => continue,
                Some(coordinator_message::Body::Ack(a)) => {
                    return format!("ack seq {} accepted={} {}", a.seq, a.accepted, a.reason);
                }
                other => return format!("{other:?}"),
            },
        }
    }
}

fn protocol_cases(coordinator: &CoordinatorProc) -> Vec<Case> {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let url = coordinator.url.clone();
    let mut cases = Vec::new();
    let mut check = |input: &str, outcome: String, expect: &str| {
        cases.push(Case {
            input: input.into(),
            ok: outcome.contains(expect),
            outcome,
        });
    };
    runtime.block_on(async {
        check(
            "Hello with protocol version 99",
            session(&url, "p-version", 99, vec![]).await,
            "protocol version 99 is not supported",
        );
        check(
            "a result for an unknown sweep",
            session(&url, "p-unknown", 1, vec![result(1, "no-such-sweep", 1)]).await,
            "accepted=false",
        );
        check(
            "a result without model information",
            session(
                &url,
                "p-nomodel",
                1,
                vec![result_without_model(1, "no-such-sweep", 1)],
            )
            .await,
            "without model information",
        );
        // Sequence numbers are the agent's own; a lower one after a higher
        // one is what a restarted agent resending its spool looks like, so
        // it is answered like any other (here: refused for its unknown sweep).
        check(
            "sequence numbers going backwards (9 after 10)",
            session(
                &url,
                "p-backwards",
                1,
                vec![result(10, "s", 1), result(9, "s", 1)],
            )
            .await,
            "ack seq 10",
        );
        check(
            "a 5 MB message (limit 4 MiB)",
            session(&url, "p-huge", 1, vec![result(1, "s", 5 << 20)]).await,
            "message length too large",
        );
        check(
            "the first message is not Hello",
            {
                let mut client = AgentSessionClient::connect(url.clone())
                    .await
                    .expect("connect");
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                let _ = tx
                    .send(message(agent_message::Body::Heartbeat(
                        v1::Heartbeat::default(),
                    )))
                    .await;
                match client.session(ReceiverStream::new(rx)).await {
                    Ok(_) => "accepted".to_string(),
                    Err(s) => format!("refused: {:?}: {}", s.code(), s.message()),
                }
            },
            "the first message of a session must be Hello",
        );
        // A flood of hellos: 300 sessions at once, then the coordinator must
        // still answer an operator.
        let mut flood = Vec::new();
        for i in 0..300 {
            let url = url.clone();
            flood.push(tokio::spawn(async move {
                let mut client = AgentSessionClient::connect(url).await.ok()?;
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                tx.send(hello(&format!("flood-{i}"), 1)).await.ok()?;
                let mut inbound = client
                    .session(ReceiverStream::new(rx))
                    .await
                    .ok()?
                    .into_inner();
                inbound.message().await.ok()?.map(|_| ())
            }));
        }
        let mut welcomed = 0;
        for f in flood {
            if let Ok(Some(())) = f.await {
                welcomed += 1;
            }
        }
        check(
            "a flood of 300 hellos at once",
            format!("{welcomed} of 300 welcomed"),
            "300 of 300 welcomed",
        );
    });
    let serving = coordinator.cli(&["sweeps"]);
    cases.push(Case {
        input: "after all of the above: `fleetbench sweeps`".into(),
        outcome: if serving.status.success() {
            "the coordinator still serves".into()
        } else {
            text(&serving)
        },
        ok: serving.status.success(),
    });
    cases
}

#[test]
fn every_bad_input_is_refused_clearly_and_nothing_crashes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut coordinator = CoordinatorProc::start(&dir.path().join("data"), None, &[]);
    let mut rows: Vec<(&str, Case)> = Vec::new();
    rows.extend(
        command_line_cases(&coordinator)
            .into_iter()
            .map(|c| ("command line", c)),
    );
    rows.extend(
        model_file_cases(dir.path())
            .into_iter()
            .map(|c| ("model files", c)),
    );
    rows.extend(
        config_file_cases(dir.path())
            .into_iter()
            .map(|c| ("config files", c)),
    );
    rows.extend(
        protocol_cases(&coordinator)
            .into_iter()
            .map(|c| ("protocol", c)),
    );
    let alive = coordinator.child.try_wait().expect("try_wait").is_none();
    let log = coordinator.log_text();

    let mut table = String::from("\n| kind | input | outcome | clean |\n|---|---|---|---|\n");
    for (kind, c) in &rows {
        table.push_str(&format!(
            "| {kind} | {} | {} | {} |\n",
            c.input.replace('|', "\\|"),
            c.outcome.replace('|', "\\|"),
            if c.ok { "yes" } else { "NO" }
        ));
    }
    show(&table);
    let bad: Vec<&str> = rows
        .iter()
        .filter(|(_, c)| !c.ok)
        .map(|(_, c)| c.input.as_str())
        .collect();
    assert!(bad.is_empty(), "not refused cleanly: {bad:?}{table}");
    assert!(alive, "the coordinator died:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
    coordinator.kill9();
}

/// The programs under test are this package's own binaries, built from this
/// checkout (the path the library reads at run time is the one Cargo gave the
/// tests at compile time), and they present themselves under the names users
/// type, not as `e2e-...`.
#[test]
fn the_programs_are_this_packages_binaries() {
    assert_eq!(
        bin("fleetbench"),
        Path::new(env!("CARGO_BIN_EXE_e2e-fleetbench"))
    );
    assert_eq!(
        bin("fleetbench-agent"),
        Path::new(env!("CARGO_BIN_EXE_e2e-fleetbench-agent"))
    );
    for (program, subcommand) in [("fleetbench", "serve"), ("fleetbench-agent", "run")] {
        let out = Command::new(bin(program))
            .args([subcommand, "--no-such-flag"])
            .output()
            .expect("run");
        let said = text(&out);
        assert!(
            said.contains(&format!("Usage: {program} {subcommand}")) && !said.contains("e2e-"),
            "{said}"
        );
    }
}
