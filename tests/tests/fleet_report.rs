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

/// The pixels of an 8-bit RGB or RGBA PNG without interlacing (what
/// Chromium's `--screenshot` writes), as RGB triples.
fn png_pixels(bytes: &[u8]) -> Vec<[u8; 3]> {
    use std::io::Read as _;
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let (mut width, mut channels, mut idat) = (0, 0, Vec::new());
    let mut at = 8;
    while at + 8 <= bytes.len() {
        let len = be(&bytes[at..]);
        let (kind, data) = (&bytes[at + 4..at + 8], &bytes[at + 8..at + 8 + len]);
        match kind {
            b"IHDR" => {
                width = be(data);
                let (depth, colour, interlace) = (data[8], data[9], data[12]);
                assert!(depth == 8 && interlace == 0, "IHDR {data:?}");
                channels = match colour {
                    2 => 3,
                    6 => 4,
                    other => panic!("PNG colour type {other}"),
                };
            }
            b"IDAT" => idat.extend_from_slice(data),
            _ => {}
        }
        at += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .expect("inflate");
    // Undo the per-row filters (PNG spec, section 9).
    let stride = width * channels;
    let mut prev = vec![0u8; stride];
    let mut pixels = Vec::with_capacity(raw.len() / channels);
    for row in raw.chunks_exact(stride + 1) {
        let mut line = row[1..].to_vec();
        for i in 0..stride {
            let a = if i >= channels { line[i - channels] } else { 0 };
            let (b, c) = (prev[i], if i >= channels { prev[i - channels] } else { 0 });
            let predicted = match row[0] {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                4 => {
                    let p = i16::from(a) + i16::from(b) - i16::from(c);
                    let (pa, pb, pc) = (
                        (p - i16::from(a)).abs(),
                        (p - i16::from(b)).abs(),
                        (p - i16::from(c)).abs(),
                    );
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                other => panic!("PNG filter {other}"),
            };
            line[i] = line[i].wrapping_add(predicted);
        }
        pixels.extend(line.chunks_exact(channels).map(|p| [p[0], p[1], p[2]]));
        prev = line;
    }
    pixels
}

/// `#RRGGBB` as bytes.
fn rgb(hex: &str) -> [u8; 3] {
    let v = u32::from_str_radix(hex.trim_start_matches('#'), 16).expect("hex colour");
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
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
            // The charts are drawn: each of the three hardware groups' series
            // colours (the first three of the palette, in the group order
            // above) covers a visible area of the rendered page, not just
            // appears in the HTML source.
            let pixels = png_pixels(&bytes);
            for (group, colour) in ["H100-SXM", "A100-80GB", "T4"]
                .iter()
                .zip(["#0072B2", "#E69F00", "#009E73"])
            {
                assert!(
                    html.contains(colour),
                    "fleet.html does not use {colour} for {group}"
                );
                let want = rgb(colour);
                let near = |p: &[u8; 3]| p.iter().zip(want).all(|(a, b)| a.abs_diff(b) <= 3);
                let n = pixels.iter().filter(|p| near(p)).count();
                assert!(
                    n >= 200,
                    "{group}'s colour {colour} covers {n} pixels of the screenshot: its chart marks were not drawn"
                );
            }
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
