//! The web console in a real browser (headless Chromium through
//! chromedriver): log in, see the fleet, start a sweep on simulated agents,
//! watch its progress change without a reload, open the fleet report and a
//! host report, compare two sweeps, download a CSV; the read-only role sees
//! no buttons and is refused by the server; no console errors. A screenshot
//! of each page is kept in target/console-screenshots/.

use std::path::PathBuf;
use std::time::Duration;

use fleetbench_tests::creds::{dev_certs, file, operator};
use fleetbench_tests::webdriver::Browser;
use fleetbench_tests::{AgentProc, CoordinatorProc, repo_root, text, wait_until};
use serde_json::json;

fn shots() -> PathBuf {
    repo_root().join("target").join("console-screenshots")
}

/// Logs in at the login form with the token in `token_file`.
fn log_in(browser: &Browser, console: &str, token_file: &std::path::Path) {
    browser.goto(console);
    browser.wait_for(Duration::from_secs(10), "the login form", |b| {
        b.find("#login").is_some()
    });
    let token = std::fs::read_to_string(token_file).expect("token");
    browser.fill("#login input[name=token]", token.trim());
    browser.click("#login button");
    browser.wait_for(Duration::from_secs(10), "the fleet page", |b| {
        b.find("#fleet").is_some()
    });
}

/// The sweep id of the sweep page the browser is on.
fn sweep_on_page(browser: &Browser) -> String {
    let url = browser.current_url();
    url.rsplit('/').next().unwrap_or_default().to_string()
}

/// Starts a sweep from the fleet page's form; returns its id once its page is open.
fn start_from_form(browser: &Browser, console: &str, batch_sizes: &str) -> String {
    browser.goto(console);
    browser.fill("#start-sweep input[name=batch_sizes]", batch_sizes);
    browser.fill("#start-sweep input[name=iterations]", "3");
    browser.click("#start-sweep button");
    browser.wait_for(Duration::from_secs(10), "the sweep page", |b| {
        b.find("#sweep-state").is_some() || b.find("#error").is_some()
    });
    if browser.find("#error").is_some() {
        panic!("starting a sweep failed: {}", browser.text("#error"));
    }
    sweep_on_page(browser)
}

#[test]
fn the_console_in_a_browser_logs_in_watches_a_sweep_live_and_opens_every_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dev_certs(&dir.path().join("certs"), &["unused"]);
    let coordinator = CoordinatorProc::start(
        &dir.path().join("data"),
        None,
        &[
            "--http-listen",
            "127.0.0.1:0",
            "--operator-token-file",
            &file(&certs, "operator.token"),
            "--reader-token-file",
            &file(&certs, "reader.token"),
        ],
    );
    let console = coordinator.console_url.clone().expect("console address");
    // Each point takes 300 ms, so that progress is seen changing.
    let _a10 = AgentProc::start(
        &coordinator.url,
        "sim-a10",
        &dir.path().join("spool-a"),
        &["--simulate", "A10", "--simulate-point-ms", "300"],
    );
    let _t4 = AgentProc::start(
        &coordinator.url,
        "sim-t4",
        &dir.path().join("spool-t"),
        &["--simulate", "T4", "--simulate-point-ms", "300"],
    );
    let operator_token = vec![
        "--operator-token-file".to_string(),
        file(&certs, "operator.token"),
    ];
    wait_until(Duration::from_secs(30), "2 connected agents", || {
        text(&operator(&coordinator.url, &operator_token, &["agents"]))
            .matches("connected")
            .count()
            >= 2
    });

    let browser = Browser::start();
    // Not logged in: every page sends the browser to the login form.
    browser.goto(&format!("{console}sweeps"));
    browser.wait_for(Duration::from_secs(10), "the login redirect", |b| {
        b.current_url().ends_with("/login")
    });
    browser.screenshot(&shots().join("1-login.png"));
    log_in(&browser, &console, &certs.join("operator.token"));

    // The fleet.
    let counts = browser.text("#fleet-counts");
    assert!(
        counts.contains("2 agents") && counts.contains("2 connected"),
        "{counts}"
    );
    assert!(browser.text("#fleet").contains("SIMULATED"));
    browser.screenshot(&shots().join("2-fleet.png"));

    // A sweep started from the form; its progress changes on the page
    // while the page itself is not reloaded (a marker set in this page's
    // window survives).
    let first = start_from_form(&browser, &console, "8,16,32,64,128");
    browser.exec("window.notReloaded = true;", json!([]));
    let at_start = browser.text("#hosts");
    browser.wait_for(Duration::from_secs(20), "progress to change live", |b| {
        b.exec("return window.notReloaded === true;", json!([])) == json!(true)
            && b.find("#hosts")
                .is_some_and(|_| b.text("#hosts") != at_start)
    });
    browser.screenshot(&shots().join("3-sweep-running.png"));
    // Meanwhile the fleet page shows each agent's sweep and point.
    browser.goto(&console);
    let fleet = browser.text("#fleet");
    assert!(fleet.contains(&first) && fleet.contains("batch"), "{fleet}");
    browser.screenshot(&shots().join("3b-fleet-busy.png"));
    browser.goto(&format!("{console}sweeps/{first}"));
    // When it ends the page reloads into its ended form, with the reports.
    browser.wait_for(Duration::from_secs(30), "the sweep to end", |b| {
        b.find("#fleet-report").is_some()
    });
    assert!(
        browser.text("#sweep-state").contains("completed"),
        "{}",
        browser.text("#sweep-state")
    );
    browser.screenshot(&shots().join("4-sweep-ended.png"));
    let links = browser.text("#report-links");
    for name in ["fleet.html", "fleet.csv", "sim-a10.html", "sim-t4.md"] {
        assert!(links.contains(name), "{name} not in {links}");
    }

    // The fleet report and a host report open in the browser.
    browser.click("#fleet-report");
    browser.wait_for(Duration::from_secs(10), "the fleet report", |b| {
        b.current_url().ends_with("/reports/fleet.html")
    });
    let report = browser.exec("return document.body.innerText;", json!([]));
    assert!(
        report.as_str().unwrap_or_default().contains("sim-a10"),
        "{report}"
    );
    browser.screenshot(&shots().join("5-fleet-report.png"));
    browser.goto(&format!("{console}sweeps/{first}/reports/sim-t4.html"));
    let host = browser.exec("return document.body.innerText;", json!([]));
    assert!(host.as_str().unwrap_or_default().contains("T4"), "{host}");
    browser.screenshot(&shots().join("6-host-report.png"));

    // Download a CSV with the session (same origin, the cookie goes along).
    browser.goto(&format!("{console}sweeps/{first}"));
    let csv = browser.exec_async(&format!(
        "const done = arguments[arguments.length - 1];\
         fetch('/sweeps/{first}/reports/fleet.csv').then(r => r.text().then(t => done([r.status, r.headers.get('content-disposition'), t])));"
    ));
    assert_eq!(csv[0], json!(200), "{csv}");
    assert!(
        csv[1]
            .as_str()
            .unwrap_or_default()
            .starts_with("attachment"),
        "{csv}"
    );
    assert!(
        csv[2].as_str().unwrap_or_default().contains("sim-a10"),
        "{csv}"
    );

    // A second sweep, then the two compared.
    let second = start_from_form(&browser, &console, "8,16,32,64,128");
    browser.wait_for(Duration::from_secs(40), "the second sweep to end", |b| {
        b.find("#fleet-report").is_some()
    });
    browser.goto(&format!("{console}sweeps"));
    let history = browser.text("#sweeps");
    assert!(
        history.contains(&first) && history.contains(&second),
        "{history}"
    );
    assert!(
        history.contains("(simulated)"),
        "best throughput groups labelled: {history}"
    );
    browser.screenshot(&shots().join("7-sweeps.png"));
    // The GPU-model filter (from the hosts' inventories).
    browser.goto(&format!("{console}sweeps?gpu=a10"));
    assert!(
        browser.text("main").contains("2 sweeps"),
        "{}",
        browser.text("main")
    );
    browser.goto(&format!("{console}sweeps?gpu=h100"));
    assert!(
        browser.text("main").contains("0 sweeps"),
        "{}",
        browser.text("main")
    );
    browser.goto(&format!("{console}compare?before={first}&after={second}"));
    let summary = browser.text("#compare-summary");
    assert!(
        summary.contains("regressions beyond noise in 10 points"),
        "{summary}"
    );
    browser.screenshot(&shots().join("8-compare.png"));
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors as operator: {errors:?}");

    // The read-only role: no buttons, and the server refuses anyway.
    browser.click("header form button");
    browser.wait_for(Duration::from_secs(10), "the login form", |b| {
        b.find("#login").is_some()
    });
    log_in(&browser, &console, &certs.join("reader.token"));
    assert!(
        browser.find("#start-sweep").is_none(),
        "a reader sees no start form"
    );
    browser.goto(&format!("{console}sweeps/{second}"));
    assert!(browser.find("#cancel-sweep").is_none());
    let refused = browser.exec_async(
        "const done = arguments[arguments.length - 1];\
         fetch('/sweeps', {method: 'POST', body: 'batch_sizes=8&csrf=' + document.querySelector('header input[name=csrf]').value,\
         headers: {'Content-Type': 'application/x-www-form-urlencoded'}}).then(r => r.text().then(t => done([r.status, t])));",
    );
    assert_eq!(refused[0], json!(403), "{refused}");
    assert!(
        refused[1]
            .as_str()
            .unwrap_or_default()
            .contains("needs the operator token"),
        "{refused}"
    );
    browser.screenshot(&shots().join("9-reader.png"));
    let errors: Vec<String> = browser
        .console_errors()
        .into_iter()
        .filter(|e| !e.contains("403"))
        .collect();
    assert!(errors.is_empty(), "console errors as reader: {errors:?}");
}
