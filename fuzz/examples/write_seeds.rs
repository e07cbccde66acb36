//! Writes the seed corpus (`corpus/<target>/seed-*`): valid inputs of every
//! shape, so the fuzzer starts from real specs, price files and messages.
//! The binary seeds are encoded with the project's own message types, so a
//! schema change is one `cargo run --example write_seeds` away.

use std::path::Path;

use fleetbench_common::{DeviceDescription, DeviceKind, GpuInfo, HostInventory, SweepSpec};
use fleetbench_fuzz::{sample_model, sample_point};
use fleetbench_proto::v1::{self, agent_message};
use prost::Message;

fn write(target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("seed-{name}")), bytes)
}

fn agent(body: agent_message::Body) -> Vec<u8> {
    v1::AgentMessage { body: Some(body) }.encode_to_vec()
}

fn main() -> std::io::Result<()> {
    // sweep_spec: CLI values and specs as JSON.
    for (name, text) in [
        ("batch-sizes", "8,16,32"),
        ("batch-sizes-spaced", "8, 16,32,64,128"),
        ("dtype", "bf16"),
        ("device", "cuda:1"),
        ("engine", "candle-transformers"),
        ("weights", "random"),
        ("seq-len", "128"),
    ] {
        write("sweep_spec", name, text.as_bytes())?;
    }
    let default = SweepSpec::default();
    write(
        "sweep_spec",
        "spec-default.json",
        serde_json::to_string(&default)?.as_bytes(),
    )?;
    let gpu = SweepSpec {
        device: fleetbench_common::DeviceSelector::Cuda(Some(0)),
        dtype: fleetbench_common::Precision::Bf16,
        batch_sizes: vec![1, 64, 512],
        seq_len: 512,
        min_seconds: 2.5,
        ..SweepSpec::default()
    };
    write(
        "sweep_spec",
        "spec-cuda.json",
        serde_json::to_string_pretty(&gpu)?.as_bytes(),
    )?;

    // config: price files (JSON and CSV) and a token file.
    write(
        "config",
        "prices.json",
        br#"{"H100-SXM": 3.5, "T4": 0.35, "A100-80GB": 1.9}"#,
    )?;
    write(
        "config",
        "prices.csv",
        b"# GPU model, dollars per hour\nH100-SXM, 3.50\nT4,0.35 # spot\n\nCPU,0.04\n",
    )?;
    write(
        "config",
        "token",
        b"s3cr3t-t0ken-for-fuzzing-AAAAAAAAAAAAAAAAAAA\n",
    )?;
    write("config", "bearer", b"Bearer fuzz-gate-token-0123456789")?;

    // agent_message: every body an agent sends.
    let inventory = HostInventory {
        hostname: "gpu-host-01".into(),
        os: "Ubuntu 24.04".into(),
        kernel: "6.8.0".into(),
        cpu_model: "AMD EPYC 9654".into(),
        cpu_logical_cores: 192,
        cpu_physical_cores: Some(96),
        memory_bytes: 1 << 40,
        gpus: vec![GpuInfo {
            index: 0,
            name: "NVIDIA H100 80GB HBM3".into(),
            uuid: "GPU-00000000-0000-0000-0000-000000000000".into(),
            memory_total_bytes: 80 << 30,
            driver_version: "570.86".into(),
            cuda_version: Some("12.8".into()),
            pcie_generation: Some(5),
            pcie_width: Some(16),
            power_limit_watts: Some(700.0),
        }],
        gpu_note: None,
        simulated: false,
    };
    write(
        "agent_message",
        "hello",
        &agent(agent_message::Body::Hello(v1::Hello {
            protocol_version: fleetbench_proto::PROTOCOL_VERSION,
            agent_version: "0.1.0".into(),
            agent_name: "gpu-host-01".into(),
            inventory: Some((&inventory).into()),
            instance_id: "5f0c3a9e1d2b4c68".into(),
        })),
    )?;
    write(
        "agent_message",
        "heartbeat",
        &agent(agent_message::Body::Heartbeat(v1::Heartbeat {
            sent_unix_ms: 1_767_225_600_000,
            active_sweep_id: "sweep-1".into(),
            rss_bytes: 1 << 30,
        })),
    )?;
    write(
        "agent_message",
        "progress",
        &agent(agent_message::Body::Progress(v1::SweepProgress {
            sweep_id: "sweep-1".into(),
            device_id: "cuda:0".into(),
            batch_size: 8,
            phase: "timed".into(),
            points_done: 1,
            points_total: 5,
        })),
    )?;
    let cuda = DeviceDescription {
        id: "cuda:0".into(),
        kind: DeviceKind::Cuda,
        name: "NVIDIA H100 80GB HBM3".into(),
        simulated: false,
    };
    let env = fleetbench_common::RunEnvironment {
        agent_version: "0.1.0".into(),
        candle_version: "0.11.1".into(),
        threads: Some(16),
        build_features: vec!["cuda".into()],
    };
    let result = |device: &DeviceDescription, point: &fleetbench_common::PointResult| {
        agent(agent_message::Body::Result(v1::PointResultMsg {
            seq: 7,
            sweep_id: "sweep-1".into(),
            device: Some(device.into()),
            model: Some((&sample_model()).into()),
            point: Some(point.into()),
            environment: Some((&env).into()),
        }))
    };
    write(
        "agent_message",
        "result-cuda",
        &result(&cuda, &sample_point()),
    )?;
    write(
        "agent_message",
        "result-cpu",
        &result(&DeviceDescription::cpu("AMD EPYC 9654"), &sample_point()),
    )?;
    let failed = fleetbench_common::PointResult {
        batch_size: 512,
        seq_len: 128,
        outcome: fleetbench_common::PointOutcome::Failed {
            error: "CUDA out of memory".into(),
        },
    };
    write("agent_message", "result-failed", &result(&cuda, &failed))?;
    write(
        "agent_message",
        "finished",
        &agent(agent_message::Body::Finished(v1::SweepFinished {
            seq: 8,
            sweep_id: "sweep-1".into(),
            ok: false,
            error: "cancelled".into(),
            notes: vec!["synthetic weights".into()],
        })),
    )?;

    // control_request: first byte picks the request (see control_request()).
    let start = v1::StartSweepRequest {
        spec: Some((&gpu).into()),
        hosts: vec!["gpu-host-01".into()],
        gpu_model: "H100".into(),
        deadline_seconds: 3600,
        baseline: "T4".into(),
    };
    let mut bytes = vec![0u8];
    bytes.extend(start.encode_to_vec());
    write("control_request", "start-sweep", &bytes)?;
    let mut bytes = vec![0u8];
    bytes.extend(
        v1::StartSweepRequest {
            spec: Some((&SweepSpec::default()).into()),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    write("control_request", "start-sweep-default", &bytes)?;
    let mut bytes = vec![2u8];
    bytes.extend(
        v1::WatchSweepRequest {
            sweep_id: "sweep-1".into(),
        }
        .encode_to_vec(),
    );
    write("control_request", "watch-sweep", &bytes)?;
    let mut bytes = vec![4u8];
    bytes.extend(v1::ListSweepsRequest { limit: 20 }.encode_to_vec());
    write("control_request", "list-sweeps", &bytes)?;
    println!("seed corpus written to corpus/");
    Ok(())
}
