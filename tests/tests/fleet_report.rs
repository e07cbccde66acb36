//! The fleet report across hardware generations: simulated hosts of three GPU
//! models (one deliberately slow, with a visible cause), grouped, compared
//! against a baseline, priced, charted in a self-contained HTML page that a
//! real browser renders, and compared with the next sweep.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fleetbench_tests::{AgentProc, CoordinatorProc, sweep_id_of, text, wait_for_agents};
use serde_json::Value;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json")
}

fn sweep(coordinator: &CoordinatorProc) -> String {
    let out = coordinator.cli(&[
        "sweep",
        "--batch-sizes",
        "8,16,32,64,128",
        "--iterations",
        "8",
        "--baseline",
        "T4",
        "--wait",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    sweep_id_of(&out)
}

/// The PNG's pixel size from its IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    (be(16), be(20))
}

fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

#[test]
fn the_fleet_report_groups_generations_flags_the_slow_host_charts_and_tracks_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prices = dir.path().join("prices.csv");
    std::fs::write(
        &prices,
        "# dollars per GPU-hour\nH100-SXM,3.00\nA100-80GB,1.80\nT4,0.35\n",
    )
    .expect("prices");
    let coordinator = CoordinatorProc::start(
        &dir.path().join("data"),
        None,
        &["--prices", prices.to_str().expect("utf-8")],
    );
    let fast = ["--simulate-point-ms", "20"];
    let start = |name: &str, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&fast);
        AgentProc::start(
            &coordinator.url,
            name,
            &dir.path().join(format!("spool-{name}")),
            &all,
        )
    };
    let _h1 = start("h100-a", &["--simulate", "H100-SXM"]);
    let mut h2 = start("h100-b", &["--simulate", "H100-SXM"]);
    let _a1 = start("a100-a", &["--simulate", "A100-80GB"]);
    let _a2 = start("a100-b", &["--simulate", "A100-80GB"]);
    let _a3 = start(
        "a100-slow",
        &[
            "--simulate",
            "A100-80GB",
            "--simulate-slowdown",
            "1.5",
            "--simulate-cause",
            "thermal",
        ],
    );
    let _t4 = start("t4-a", &["--simulate", "T4"]);
    wait_for_agents(&coordinator, 6);

    let first = sweep(&coordinator);
    let reports = coordinator.data.join("reports").join(&first);
    let fleet = read_json(&reports.join("fleet.json"));

    // Groups: three hardware models, fastest first, with their device counts.
    let groups = fleet["groups"].as_array().expect("groups");
    let names: Vec<&str> = groups
        .iter()
        .map(|g| g["hardware"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["H100-SXM", "A100-80GB", "T4"]);
    let devices: Vec<u64> = groups
        .iter()
        .map(|g| g["devices"].as_u64().expect("devices"))
        .collect();
    assert_eq!(devices, [2, 3, 1]);
    assert_eq!(fleet["baseline"], "T4");

    // Group medians and speed-ups, recomputed here from the per-host rows.
    let rows = fleet["rows"].as_array().expect("rows");
    let best = |host: &str| {
        rows.iter().find(|r| r["host"] == host).expect("row")["best_throughput"]["value"]
            .as_f64()
            .expect("best")
    };
    let a100_median = median(vec![best("a100-a"), best("a100-b"), best("a100-slow")]);
    let h100_median = median(vec![best("h100-a"), best("h100-b")]);
    let t4 = best("t4-a");
    let group = |name: &str| {
        groups
            .iter()
            .find(|g| g["hardware"] == name)
            .expect("group")
            .clone()
    };
    assert!(
        (group("A100-80GB")["median_best_throughput"]
            .as_f64()
            .expect("median")
            - a100_median)
            .abs()
            < 1e-9
    );
    let speedup = |name: &str| {
        group(name)["speedup_vs_baseline"]
            .as_f64()
            .expect("speed-up")
    };
    assert!((speedup("H100-SXM") - h100_median / t4).abs() < 1e-9);
    assert!((speedup("A100-80GB") - a100_median / t4).abs() < 1e-9);
    assert_eq!(speedup("T4"), 1.0);
    assert!(speedup("H100-SXM") > speedup("A100-80GB") && speedup("A100-80GB") > 1.0);
    // Cost: samples per dollar = median best throughput × 3600 / price.
    let per_dollar = group("T4")["samples_per_dollar"]
        .as_f64()
        .expect("samples/$");
    assert!((per_dollar - t4 * 3600.0 / 0.35).abs() < 1e-6);

    // Exactly one outlier: the slow A100, a third below its group, and why.
    let outliers = fleet["outliers"].as_array().expect("outliers");
    assert_eq!(outliers.len(), 1, "{outliers:?}");
    assert_eq!(outliers[0]["host"], "a100-slow");
    let shortfall = outliers[0]["shortfall"].as_f64().expect("shortfall");
    assert!((0.30..0.37).contains(&shortfall), "shortfall {shortfall}");
    let causes = outliers[0]["causes"].to_string();
    assert!(
        causes.contains("throttled") && causes.contains("sw-thermal"),
        "{causes}"
    );

    let md = std::fs::read_to_string(reports.join("fleet.md")).expect("fleet.md");
    for needle in [
        "## Hardware Generations",
        "Speed-up vs T4",
        "## Outliers",
        "**a100-slow**",
        "sw-thermal",
        "Samples/$",
    ] {
        assert!(md.contains(needle), "fleet.md lacks {needle}:\n{md}");
    }
    let csv = std::fs::read_to_string(reports.join("fleet.csv")).expect("fleet.csv");
    assert!(
        csv.lines()
            .any(|l| l.contains("a100-slow") && l.contains(",true,")),
        "{csv}"
    );

    // The HTML report: self-contained, four inline SVG charts, simulated hosts labelled.
    let html = std::fs::read_to_string(reports.join("fleet.html")).expect("fleet.html");
    assert_eq!(
        html.matches("<svg").count(),
        4,
        "fleet.html must hold its four charts inline"
    );
    assert!(!html.contains("<script") && !html.contains("http://") && !html.contains("https://"));
    assert!(html.contains("simulated"));

    // A real browser renders it (Debian's chromium; CI installs it).
    match chromium() {
        Some(browser) => {
            let png = dir.path().join("fleet.png");
            let profile = tempfile::tempdir().expect("profile");
            let status = Command::new(browser)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--hide-scrollbars",
                    "--window-size=1280,2400",
                ])
                .arg(format!("--user-data-dir={}", profile.path().display()))
                .arg(format!("--screenshot={}", png.display()))
                .arg(format!("file://{}", reports.join("fleet.html").display()))
                .output()
                .expect("run chromium");
            assert!(
                status.status.success(),
                "chromium failed: {}",
                text(&status)
            );
            let bytes = std::fs::read(&png).expect("screenshot written");
            assert_eq!(png_size(&bytes), (1280, 2400));
            // A blank page of this size compresses to a few kB; charts and tables do not.
            assert!(
                bytes.len() > 40_000,
                "the screenshot looks empty ({} bytes)",
                bytes.len()
            );
            if let Ok(keep) = std::env::var("FLEETBENCH_KEEP_SCREENSHOT") {
                let _ = std::fs::copy(&png, keep);
            }
        }
        None if std::env::var_os("CI").is_some() => {
            panic!("chromium is missing: .ci/run installs Debian's chromium package")
        }
        None => eprintln!("chromium not installed: screenshot check skipped (CI runs it)"),
    }

    // History: the same spec again, after one H100 host got slower.
    h2.kill9();
    let _h2_slow = AgentProc::start(
        &coordinator.url,
        "h100-b",
        &dir.path().join("spool-h100-b"),
        &[
            "--simulate",
            "H100-SXM",
            "--simulate-slowdown",
            "1.3",
            "--simulate-point-ms",
            "20",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    wait_for_agents(&coordinator, 6);
    let second = sweep(&coordinator);
    let fleet2 = read_json(
        &coordinator
            .data
            .join("reports")
            .join(&second)
            .join("fleet.json"),
    );
    let history = &fleet2["history"];
    assert_eq!(history["sweep_a"], first.as_str());
    let changed = history["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .find(|h| h["host"] == "h100-b")
        .expect("h100-b")
        .clone();
    assert_eq!(changed["verdict"], "regression", "{changed}");
    let steady = history["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .find(|h| h["host"] == "h100-a")
        .expect("h100-a")
        .clone();
    assert_ne!(steady["verdict"], "regression", "{steady}");

    let out = coordinator.cli(&["compare", &first, &second]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a regression makes compare fail:\n{}",
        text(&out)
    );
    assert!(
        text(&out).contains("h100-b") && text(&out).to_lowercase().contains("regression"),
        "{}",
        text(&out)
    );
}
