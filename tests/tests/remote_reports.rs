//! `fleetbench report` and `fleetbench sweep --wait --out`: the reports of a
//! sweep fetched through the control API from a coordinator at another
//! address (127.0.0.2, over TLS with tokens), never read from its disk.

use std::path::Path;
use std::time::Duration;

use fleetbench_tests::creds::{
    client_tls, dev_certs_with_sans, file, mutual_tls_serve_args, operator,
};
use fleetbench_tests::{AgentProc, CoordinatorProc, sweep_id_of, text, wait_until};

/// The names of the files in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn reports_come_from_a_remote_coordinator_over_tls_with_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dev_certs_with_sans(
        &dir.path().join("certs"),
        &["gpu-a", "gpu-slow"],
        &["127.0.0.2"],
    );
    let mut args = mutual_tls_serve_args(&certs);
    for (flag, name) in [
        ("--agent-tokens", "agent-tokens"),
        ("--operator-token-file", "operator.token"),
        ("--reader-token-file", "reader.token"),
    ] {
        args.extend([flag.to_string(), file(&certs, name)]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let coordinator = CoordinatorProc::start(&dir.path().join("data"), Some("127.0.0.2:0"), &args);
    assert!(
        coordinator.addr.starts_with("127.0.0.2:"),
        "{}",
        coordinator.addr
    );
    let url = format!("https://{}", coordinator.addr);
    let creds = |who: &str, token: &str| {
        let mut v = client_tls(&certs, &certs, who);
        v.extend(["--operator-token-file".to_string(), file(&certs, token)]);
        v
    };
    let operator_creds = creds("operator", "operator.token");
    let reader_creds = creds("reader", "reader.token");

    // gpu-a answers a point in 20 ms; gpu-slow takes a minute, so that its
    // sweep is still running when asked for reports.
    let start_agent = |name: &str, point_ms: &str| {
        let mut args = client_tls(&certs, &certs, &format!("agent-{name}"));
        args.extend(
            [
                "--token-file",
                &file(&certs, &format!("agent-{name}.token")),
                "--simulate",
                "A10",
                "--simulate-point-ms",
                point_ms,
            ]
            .map(String::from),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        AgentProc::start(&url, name, &dir.path().join(format!("spool-{name}")), &args)
    };
    let _fast = start_agent("gpu-a", "20");
    let _slow = start_agent("gpu-slow", "60000");
    wait_until(Duration::from_secs(30), "the agents to connect", || {
        let listed = text(&operator(&url, &operator_creds, &["agents"]));
        listed.matches("connected").count() >= 2
    });

    // sweep --wait --out: the reports land in the operator's directory.
    let fetched = dir.path().join("laptop").join("first");
    let fetched_arg = fetched.to_str().expect("utf-8").to_string();
    let out = operator(
        &url,
        &operator_creds,
        &[
            "sweep",
            "--hosts",
            "gpu-a",
            "--batch-sizes",
            "8,16",
            "--iterations",
            "2",
            "--wait",
            "--out",
            &fetched_arg,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let sweep = sweep_id_of(&out);
    let on_coordinator = coordinator.data.join("reports").join(&sweep);
    let all = names(&on_coordinator);
    for wanted in [
        "fleet.md",
        "fleet.json",
        "fleet.csv",
        "fleet.html",
        "gpu-a.md",
        "gpu-a.html",
    ] {
        assert!(all.iter().any(|n| n == wanted), "{wanted} not in {all:?}");
    }
    assert_eq!(names(&fetched), all, "every report, nothing else");
    for name in &all {
        assert_eq!(
            std::fs::read(fetched.join(name)).expect("fetched"),
            std::fs::read(on_coordinator.join(name)).expect("original"),
            "{name} differs"
        );
    }
    assert!(text(&out).contains(&format!("{} report files of sweep {sweep}", all.len())));

    // `report` with formats, by the read-only role.
    let second = dir.path().join("laptop").join("second");
    let second_arg = second.to_str().expect("utf-8").to_string();
    let out = operator(
        &url,
        &reader_creds,
        &["report", &sweep, "--out", &second_arg, "--format", "md,csv"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let got = names(&second);
    assert!(!got.is_empty());
    assert!(
        got.iter()
            .all(|n| n.ends_with(".md") || n.ends_with(".csv")),
        "{got:?}"
    );
    assert_eq!(
        got.len(),
        all.iter()
            .filter(|n| n.ends_with(".md") || n.ends_with(".csv"))
            .count()
    );

    // Reports gone from the coordinator's disk are written again on demand.
    std::fs::remove_dir_all(&on_coordinator).expect("remove the reports");
    let third = dir.path().join("laptop").join("third");
    let third_arg = third.to_str().expect("utf-8").to_string();
    let out = operator(
        &url,
        &reader_creds,
        &["report", &sweep, "--out", &third_arg],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(names(&third), all);
    assert_eq!(names(&on_coordinator), all);
    let fleet = std::fs::read_to_string(third.join("fleet.md")).expect("fleet.md");
    assert!(fleet.contains("gpu-a"), "{fleet}");

    // Refusals, one clear line each.
    for (creds, args, expected) in [
        (
            reader_creds.clone(),
            vec![
                "report",
                sweep.as_str(),
                "--out",
                third_arg.as_str(),
                "--format",
                "pdf",
            ],
            "unknown report format 'pdf': use md, json, csv, html",
        ),
        (
            reader_creds.clone(),
            vec!["report", "no-such-sweep", "--out", third_arg.as_str()],
            "no sweep with id 'no-such-sweep'",
        ),
        (
            client_tls(&certs, &certs, "operator"),
            vec!["report", sweep.as_str(), "--out", third_arg.as_str()],
            "requires the operator token",
        ),
    ] {
        let out = operator(&url, &creds, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(expected), "{args:?}: {}", text(&out));
    }

    // A running sweep has no reports yet, and says how to wait for them.
    let out = operator(
        &url,
        &operator_creds,
        &[
            "sweep",
            "--hosts",
            "gpu-slow",
            "--batch-sizes",
            "8",
            "--iterations",
            "2",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let running = sweep_id_of(&out);
    let out = operator(
        &url,
        &reader_creds,
        &["report", &running, "--out", &third_arg],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("is still running"), "{}", text(&out));
    let out = operator(&url, &operator_creds, &["cancel", &running]);
    assert!(out.status.success(), "{}", text(&out));
}
