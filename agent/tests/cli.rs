//! `fleetbench-agent` as a user runs it: classify, info, bench, and every bad
//! input answered with one clear line and a non-zero exit, never a panic.

use std::path::PathBuf;
use std::process::Command;

fn fixture() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/tiny-distilbert-sst2"
    ))
}

fn agent(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetbench-agent"))
        .args(args)
        .env(
            "HF_HOME",
            std::env::temp_dir().join("fleetbench-test-empty-hf-home"),
        )
        .output()
        .expect("run fleetbench-agent");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

fn golden() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("golden.json")).expect("golden"))
        .expect("json")
}

#[test]
fn classify_prints_the_golden_label_and_probabilities() {
    let model = fixture();
    let (code, out, err) = agent(&[
        "classify",
        "--model",
        model.to_str().expect("utf-8"),
        "I love this movie!",
    ]);
    assert_eq!(code, 0, "{err}");
    let case = &golden()["cases"][0];
    let label = case["label"].as_str().expect("label");
    let p = |i: usize| case["probabilities"][i].as_f64().expect("probability");
    assert!(out.starts_with(label), "{out}");
    assert!(
        out.contains(&format!("NEGATIVE {:.4}", p(0)))
            && out.contains(&format!("POSITIVE {:.4}", p(1))),
        "{out}"
    );

    let (code, out, err) = agent(&[
        "classify",
        "--json",
        "--model",
        model.to_str().expect("utf-8"),
        "I love this movie!",
        "ok",
    ]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("json output");
    for (i, case_index) in [0usize, 4].iter().enumerate() {
        let want = &golden()["cases"][*case_index]["logits"];
        for k in 0..2 {
            let got = json[i]["logits"][k].as_f64().expect("logit");
            assert!(
                (got - want[k].as_f64().expect("golden")).abs() < 1e-4,
                "{got} vs {}",
                want[k]
            );
        }
    }
}

#[test]
fn info_never_fails_without_a_gpu() {
    let (code, out, err) = agent(&["info"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cpu:") && out.contains("memory:"), "{out}");
    let (code, out, _) = agent(&["info", "--json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(json["cpu_logical_cores"].as_u64().expect("cores") >= 1);
}

#[test]
fn bench_with_random_weights_writes_both_reports_with_the_full_parameter_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("out");
    let (code, out, err) = agent(&[
        "bench",
        "--weights",
        "random",
        "--device",
        "cpu",
        "--batch-sizes",
        "1,2",
        "--iterations",
        "3",
        "--warmup",
        "1",
        "--out",
        out_dir.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("66955010 parameters"), "{out}");
    let md_path = std::fs::read_dir(&out_dir)
        .expect("out dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "md"))
        .expect("markdown report");
    let md = std::fs::read_to_string(&md_path).expect("read md");
    let sections = [
        "## Model Information",
        "## System Information",
        "## Benchmark Summary",
        "## Key Performance Metrics",
        "## Performance Insights",
        "## Potential Bottlenecks",
        "## Recommendations",
        "## Conclusion",
    ];
    let mut last = 0;
    for s in sections {
        let at = md.find(s).unwrap_or_else(|| panic!("{s} missing:\n{md}"));
        assert!(at >= last, "{s} out of order");
        last = at;
    }
    assert!(md.contains("**Parameters**: 66,955,010"), "{md}");
    assert!(
        md.contains("synthetic"),
        "the report must say the weights are synthetic:\n{md}"
    );
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(md_path.with_extension("json")).expect("json report"),
    )
    .expect("valid json");
    assert_eq!(json["model"]["parameters"], 66_955_010u64);
    let points = json["points"].as_array().expect("points");
    assert_eq!(points.len(), 2);
    for p in points {
        assert_eq!(p["outcome"]["status"], "measured");
        assert_eq!(p["outcome"]["samples_ms"].as_array().map(Vec::len), Some(3));
    }
    assert!(
        json["environment"]["candle_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("0."))
    );
}

#[test]
fn bad_input_gets_one_clear_line_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty_dir = dir.path().join("empty");
    std::fs::create_dir(&empty_dir).expect("mkdir");
    let corrupt = dir.path().join("corrupt");
    std::fs::create_dir(&corrupt).expect("mkdir");
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(fixture().join(f), corrupt.join(f)).expect("copy");
    }
    let weights = std::fs::read(fixture().join("model.safetensors")).expect("weights");
    std::fs::write(
        corrupt.join("model.safetensors"),
        &weights[..weights.len() / 3],
    )
    .expect("truncate");
    let out = dir.path().join("out");
    let out = out.to_str().expect("utf-8");
    let bench = |extra: &[&str]| {
        let mut args = vec![
            "bench",
            "--weights",
            "random",
            "--iterations",
            "1",
            "--warmup",
            "0",
            "--out",
            out,
        ];
        args.extend_from_slice(extra);
        agent(&args)
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--batch-sizes", "0"], "batch size 0"),
        (vec!["--batch-sizes", "-1"], "batch size -1"),
        (vec!["--batch-sizes", ""], "empty"),
        (vec!["--seq-len", "513"], "sequence length 513"),
        (vec!["--device", "cuda"], "built without the `cuda` feature"),
        (vec!["--dtype", "int8"], "unknown dtype"),
    ];
    for (extra, expected) in cases {
        let (code, _, err) = bench(&extra);
        assert_eq!(code, 2, "{extra:?}: {err}");
        assert!(
            err.to_lowercase().contains(&expected.to_lowercase()),
            "{extra:?}: expected '{expected}' in {err}"
        );
    }
    let model_cases = [
        (empty_dir.to_str().expect("utf-8"), "config.json"),
        (corrupt.to_str().expect("utf-8"), "model.safetensors"),
    ];
    for (model, expected) in model_cases {
        let (code, _, err) = agent(&["classify", "--model", model, "hello"]);
        assert_eq!(code, 2, "{model}: {err}");
        let line = err
            .lines()
            .rfind(|l| l.starts_with("error:"))
            .unwrap_or_default();
        assert!(
            line.contains(expected),
            "{model}: expected '{expected}' in {err}"
        );
    }
    let (code, _, err) = agent(&["classify", "--weights", "hub", "hello"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--model DIR") && err.contains("--weights random"),
        "{err}"
    );
    let (code, _, err) = agent(&[
        "run",
        "--coordinator",
        "http://127.0.0.1:9",
        "--simulate",
        "TPU-v9",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown GPU model 'TPU-v9'"), "{err}");
}
