//! TLS, mutual TLS and tokens end to end: a coordinator started with the
//! certificates `fleetbench dev-certs` makes, agents and operator commands
//! with the right and the wrong credentials, and what each refusal says.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fleetbench_tests::creds::{client_tls, dev_certs, file, operator, short_lived_agent};
use fleetbench_tests::{AgentProc, CoordinatorProc, bin, text, wait_until};

#[test]
fn mutual_tls_and_tokens_admit_the_right_peers_and_name_every_refusal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agents = ["gpu-a", "refused", "intruder"];
    let certs = dev_certs(&dir.path().join("certs"), &agents);
    let stranger = dev_certs(&dir.path().join("stranger"), &agents);
    let coordinator = CoordinatorProc::start(
        &dir.path().join("data"),
        None,
        &[
            "--tls-cert",
            &file(&certs, "coordinator.pem"),
            "--tls-key",
            &file(&certs, "coordinator-key.pem"),
            "--client-ca",
            &file(&certs, "ca.pem"),
            "--agent-token-file",
            &file(&certs, "agent.token"),
            "--operator-token-file",
            &file(&certs, "operator.token"),
        ],
    );
    let url = format!("https://{}", coordinator.addr);
    let tls = |who: &str, from: &Path| client_tls(&certs, from, who);
    let with = |mut v: Vec<String>, extra: &[&str]| {
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let operator_creds = with(
        tls("operator", &certs),
        &["--operator-token-file", &file(&certs, "operator.token")],
    );

    // The right agent gets in.
    let agent_args = with(
        tls("agent-gpu-a", &certs),
        &[
            "--token-file",
            &file(&certs, "agent.token"),
            "--simulate",
            "A10",
            "--simulate-point-ms",
            "30",
        ],
    );
    let agent_args: Vec<&str> = agent_args.iter().map(String::as_str).collect();
    let _agent = AgentProc::start(&url, "gpu-a", &dir.path().join("spool-a"), &agent_args);
    wait_until(Duration::from_secs(30), "the agent to connect", || {
        let out = operator(&url, &operator_creds, &["agents"]);
        text(&out).contains("gpu-a") && text(&out).contains("connected")
    });

    // Operators without the operator token can neither see nor start sweeps.
    let no_token = tls("operator", &certs);
    for args in [
        vec!["sweeps"],
        vec!["agents"],
        vec!["sweep", "--batch-sizes", "8", "--iterations", "2"],
    ] {
        let out = operator(&url, &no_token, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("requires the operator token"),
            "{args:?}: {}",
            text(&out)
        );
    }
    let agent_token_as_operator = with(
        tls("operator", &certs),
        &["--operator-token-file", &file(&certs, "agent.token")],
    );
    let out = operator(&url, &agent_token_as_operator, &["sweeps"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("the agent token was given where the operator token is needed"),
        "{}",
        text(&out)
    );

    // Agents with no token, a wrong token or the operator's are refused for good.
    let wrong = dir.path().join("wrong.token");
    std::fs::write(&wrong, "this-is-not-the-agent-token\n").expect("write");
    let wrong = wrong.to_str().expect("utf-8").to_string();
    for (token, expected) in [
        (None, "this coordinator requires the agent token"),
        (Some(wrong.as_str()), "the agent token was rejected"),
        (
            Some(file(&certs, "operator.token").as_str()),
            "the operator token was given where the agent token is needed",
        ),
    ] {
        let mut args = tls("agent-refused", &certs);
        if let Some(t) = token {
            args.extend(["--token-file".to_string(), t.to_string()]);
        }
        let (code, log) =
            short_lived_agent(&url, "refused", &dir.path().join("spool-refused"), &args);
        assert_eq!(code, Some(2), "{expected}: {log}");
        assert!(log.contains(expected), "wanted '{expected}' in: {log}");
    }

    // An agent that does not trust the coordinator's certificate says so and stops.
    let mut args = tls("agent-refused", &certs);
    args[1] = file(&stranger, "ca.pem");
    args.extend(["--token-file".into(), file(&certs, "agent.token")]);
    let (code, log) = short_lived_agent(&url, "refused", &dir.path().join("spool-refused"), &args);
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("the coordinator's certificate is not signed by the CA in --tls-ca"),
        "{log}"
    );

    // A certificate from another CA never gets a session; the coordinator
    // logs why and the agent is told what to fix.
    let stranger_args = with(
        tls("agent-intruder", &stranger),
        &[
            "--token-file",
            &file(&certs, "agent.token"),
            "--simulate",
            "T4",
        ],
    );
    let stranger_args: Vec<&str> = stranger_args.iter().map(String::as_str).collect();
    let mut intruder = AgentProc::start(
        &url,
        "intruder",
        &dir.path().join("spool-intruder"),
        &stranger_args,
    );
    wait_until(
        Duration::from_secs(30),
        "the coordinator to log the refused certificate",
        || {
            coordinator.log_text().contains("refused a TLS connection")
                && coordinator
                    .log_text()
                    .contains("the client's certificate is not signed by --client-ca")
        },
    );
    wait_until(Duration::from_secs(30), "the intruder to be told", || {
        intruder.log_text().contains("--client-ca")
    });
    intruder.kill9();
    let agents = text(&operator(&url, &operator_creds, &["agents"]));
    assert!(!agents.contains("intruder"), "{agents}");

    // Without a client certificate the connection is refused too.
    let out = operator(
        &url,
        &[
            "--tls-ca".into(),
            file(&certs, "ca.pem"),
            "--operator-token-file".into(),
            file(&certs, "operator.token"),
        ],
        &["agents"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--tls-cert"), "{}", text(&out));

    // Plain HTTP to the TLS port is told to use https://.
    let out = operator(
        &coordinator.url,
        &[
            "--operator-token-file".into(),
            file(&certs, "operator.token"),
        ],
        &["agents"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("https://"), "{}", text(&out));

    // With everything right, a sweep runs to the end over mutual TLS.
    let out = operator(
        &url,
        &operator_creds,
        &[
            "sweep",
            "--batch-sizes",
            "8,16",
            "--iterations",
            "3",
            "--warmup",
            "1",
            "--wait",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("1/1 hosts completed"), "{}", text(&out));

    // Health answers over TLS without a token (for probes).
    let out = operator(&url, &tls("operator", &certs), &["health"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "SERVING");
}

#[test]
fn beyond_loopback_a_coordinator_needs_tls_and_authentication_or_says_it_goes_without() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(bin("fleetbench"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(dir.path().join("data"))
        .output()
        .expect("run serve");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("refusing to listen on 0.0.0.0:0 without TLS")
            && said.contains("--insecure")
            && said.lines().count() == 1,
        "{said}"
    );
    // Plain and open to everyone: refused unless --no-auth says so too.
    let out = Command::new(bin("fleetbench"))
        .args(["serve", "--listen", "0.0.0.0:0", "--insecure", "--data"])
        .arg(dir.path().join("data"))
        .output()
        .expect("run serve");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("with no authentication for agents")
            && text(&out).contains("--no-auth"),
        "{}",
        text(&out)
    );
    let coordinator = CoordinatorProc::start(
        &dir.path().join("data"),
        Some("0.0.0.0:0"),
        &["--insecure", "--no-auth"],
    );
    // Said at every start.
    wait_until(Duration::from_secs(10), "the --no-auth warning", || {
        coordinator
            .log_text()
            .contains("--no-auth: anyone who reaches this port")
    });
    assert!(
        coordinator.addr.starts_with("0.0.0.0:"),
        "{}",
        coordinator.addr
    );

    // A token shorter than 16 characters is refused at start with the fix.
    let short = dir.path().join("short.token");
    std::fs::write(&short, "tooshort").expect("write");
    let out = Command::new(bin("fleetbench"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data2"))
        .arg("--agent-token-file")
        .arg(&short)
        .output()
        .expect("run serve");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("at least 16"), "{}", text(&out));
}
