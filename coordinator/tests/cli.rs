//! The `fleetbench` command's own errors: one clear line, a non-zero exit,
//! never a panic.

use std::process::Command;

fn fleetbench(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetbench"))
        .args(args)
        .output()
        .expect("run fleetbench");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn an_unreachable_coordinator_is_named_with_what_to_do() {
    // Port 9 (discard) on loopback: nothing listens there.
    let (code, text) = fleetbench(&["agents", "--coordinator", "http://127.0.0.1:9"]);
    assert_eq!(code, 2);
    assert!(
        text.contains("cannot reach the coordinator at http://127.0.0.1:9"),
        "{text}"
    );
    assert!(text.contains("FLEETBENCH_COORDINATOR"), "{text}");
    let (code, text) = fleetbench(&["sweeps", "--coordinator", "not a url"]);
    assert_eq!(code, 2);
    assert!(text.contains("invalid coordinator address"), "{text}");
}

#[test]
fn bad_sweep_settings_are_refused_before_anything_is_sent() {
    let cases: &[(&[&str], &str)] = &[
        (&["--batch-sizes", "0"], "batch size 0"),
        (&["--batch-sizes", "-8"], "batch size -8"),
        (&["--batch-sizes", "8,x"], "'x' is not a whole number"),
        (&["--batch-sizes", "8,8"], "listed twice"),
        (&["--batch-sizes", ""], "empty"),
        (&["--seq-len", "513"], "sequence length 513"),
        (&["--seq-len", "0"], "sequence length 0"),
        (&["--dtype", "int4"], "unknown dtype"),
        (&["--device", "tpu"], "unknown device"),
        (&["--iterations", "0"], "--iterations"),
    ];
    for (args, expected) in cases {
        let mut all = vec!["sweep", "--coordinator", "http://127.0.0.1:9"];
        all.extend_from_slice(args);
        let (code, text) = fleetbench(&all);
        assert_eq!(code, 2, "{args:?}: {text}");
        assert!(
            text.contains(expected),
            "{args:?}: expected '{expected}' in: {text}"
        );
    }
}

#[test]
fn a_data_directory_that_cannot_be_created_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").expect("write");
    let data = file.join("data");
    let (code, text) = fleetbench(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data",
        data.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 2);
    assert!(
        text.contains("cannot open the store") || text.contains("cannot create data directory"),
        "{text}"
    );
}
