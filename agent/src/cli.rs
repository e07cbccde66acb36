//! The `fleetbench-agent` program: its arguments and one function per
//! command.
//!
//! It lives in the library, not in `main.rs`, so that one program can be
//! linked into more than one binary: the shipped `fleetbench-agent`, and the
//! end-to-end test package's own copy, which Cargo builds before those tests
//! run (`tests/src/bin/`); both are one line calling [`main`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::bench::run_bench;
use crate::client::{AgentConfig, Backend, run_agent};
use crate::devices::{SystemCuda, resolve_devices};
use crate::model::{LoadedModel, ModelRequest};
use crate::policy::ModelPolicy;
use crate::probe::{NvmlProbe, host_inventory};
use crate::simulate::SimulatedGpu;
use clap::{Parser, Subcommand};
use fleetbench_common::spec::DEFAULT_MODEL;
use fleetbench_common::sweep_args::SweepArgs;
use fleetbench_common::{DeviceSelector, Engine, Precision, WeightsChoice};
use fleetbench_proto::security::Token;
use fleetbench_proto::tls_args::ClientTlsArgs;

#[derive(Parser, Debug)]
#[command(
    name = "fleetbench-agent",
    // Fixed rather than taken from argv[0], so that usage and errors say
    // `fleetbench-agent` from the end-to-end tests' copy too.
    bin_name = "fleetbench-agent",
    version,
    about = "Benchmarks DistilBERT inference on this host and reports to a fleetbench coordinator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print this host's inventory: OS, CPU, memory and every NVIDIA GPU.
    Info {
        #[arg(long)]
        json: bool,
    },
    /// Run the sweep here and write the per-machine report.
    Bench {
        #[command(flatten)]
        sweep: SweepArgs,
        /// Directory for <host>.md, <host>.json and <host>.csv.
        #[arg(long, default_value = "fleetbench-report")]
        out: PathBuf,
    },
    /// Where one forward pass spends its time, step by step (the device is
    /// synchronised after each step).
    Profile {
        #[arg(long, default_value = DEFAULT_MODEL)]
        model: String,
        #[arg(long, default_value = "auto")]
        weights: WeightsChoice,
        #[arg(long, default_value = "f32")]
        dtype: Precision,
        #[arg(long, default_value = "cpu")]
        device: DeviceSelector,
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=65_536))]
        batch_size: u32,
        #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=512))]
        seq_len: u32,
        #[arg(long, default_value_t = 3)]
        warmup: u32,
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        iterations: u32,
    },
    /// Classify texts: the quick proof that the weights are the real ones.
    Classify {
        #[arg(long, default_value = DEFAULT_MODEL)]
        model: String,
        #[arg(long, default_value = "auto")]
        weights: WeightsChoice,
        #[arg(long, default_value = "fleetbench")]
        engine: Engine,
        #[arg(long, default_value = "f32")]
        dtype: Precision,
        #[arg(long, default_value = "cpu")]
        device: DeviceSelector,
        /// Print JSON with the logits.
        #[arg(long)]
        json: bool,
        #[arg(required = true)]
        texts: Vec<String>,
    },
    /// Connect to a coordinator and run the sweeps it sends, until SIGTERM.
    Run {
        /// The coordinator's URL.
        #[arg(
            long,
            env = "FLEETBENCH_COORDINATOR",
            default_value = "http://127.0.0.1:7070"
        )]
        coordinator: String,
        /// This agent's name in the fleet (default: the host name).
        #[arg(long, env = "FLEETBENCH_AGENT_NAME")]
        name: Option<String>,
        /// Where unacknowledged results are kept (default: ~/.local/state/fleetbench-agent/<name>).
        #[arg(long, env = "FLEETBENCH_SPOOL")]
        spool: Option<PathBuf>,
        #[command(flatten)]
        tls: ClientTlsArgs,
        /// File holding the agent token (or set FLEETBENCH_AGENT_TOKEN to the token).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Exit once the first sweep has ended and its results are acknowledged.
        #[arg(long)]
        once: bool,
        /// Most megabytes of unacknowledged results in the spool; beyond it the
        /// sweep pauses until the coordinator acknowledges some.
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
        max_spool_mb: u64,
        /// A hub model a coordinator's sweep may make this agent load
        /// (`*` matches anything; repeat for more); `PATTERN@COMMIT` pins it
        /// to that 40-digit commit, its weights checked against the hub's
        /// SHA-256. Default: the SST-2 DistilBERT only.
        #[arg(long = "allow-model", value_name = "PATTERN")]
        allow_models: Vec<String>,
        /// A directory whose model directories a sweep may name (repeat for
        /// more). Default: none; a sweep never opens local paths otherwise.
        #[arg(long = "allow-model-dir", value_name = "DIR")]
        allow_model_dirs: Vec<PathBuf>,
        /// Answer sweeps from a performance model of this GPU (T4, A10, L4, L40S,
        /// A100-40GB, A100-80GB, H100-PCIe, H100-SXM, H200, B200) instead of running
        /// candle. Every output says "simulated".
        #[arg(long, value_name = "GPU_MODEL")]
        simulate: Option<String>,
        /// With --simulate: multiply latencies (a deliberately slow host).
        #[arg(long, default_value_t = 1.0, requires = "simulate")]
        simulate_slowdown: f64,
        /// With --simulate and a slowdown: what the slow host shows as the cause
        /// (thermal, power-cap, pcie, clocks, driver, unknown).
        #[arg(long, default_value = "unknown", requires = "simulate")]
        simulate_cause: crate::simulate::SimCause,
        /// With --simulate: real milliseconds each point takes.
        #[arg(long, default_value_t = 300, requires = "simulate")]
        simulate_point_ms: u64,
        /// Longest pause between reconnection attempts, in seconds.
        #[arg(long, default_value_t = 10.0)]
        max_backoff: f64,
        #[arg(long, hide = true, default_value_t = fleetbench_proto::PROTOCOL_VERSION)]
        protocol_version: u32,
    },
}

/// Parses the command line, runs the command, and turns an error into one
/// line on stderr and exit status 2.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain of causes, outermost first.
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Info { json } => info(json),
        Command::Bench { sweep, out } => bench(sweep, &out),
        Command::Profile {
            model,
            weights,
            dtype,
            device,
            batch_size,
            seq_len,
            warmup,
            iterations,
        } => {
            let request = ModelRequest {
                weights,
                dtype,
                ..ModelRequest::new(model)
            };
            let loaded = LoadedModel::load(&request, &open_device(device, dtype)?)?;
            let texts: Vec<&str> = crate::runner::SAMPLE_TEXTS
                .iter()
                .cycle()
                .take(batch_size as usize)
                .copied()
                .collect();
            let batch = loaded.encode(&texts, seq_len as usize)?;
            let (rows, plain_ms) =
                crate::profile::profile_forward(&loaded, &batch, warmup, iterations)?;
            println!(
                "{} on {device} ({dtype}), batch {batch_size}, seq {seq_len}, {iterations} passes\n",
                loaded.info().name
            );
            print!("{}", crate::profile::render(&rows, plain_ms));
            Ok(())
        }
        Command::Classify {
            model,
            weights,
            engine,
            dtype,
            device,
            json,
            texts,
        } => classify(
            ModelRequest {
                weights,
                engine,
                dtype,
                ..ModelRequest::new(model)
            },
            device,
            json,
            &texts,
        ),
        Command::Run {
            coordinator,
            name,
            spool,
            tls,
            token_file,
            once,
            max_spool_mb,
            allow_models,
            allow_model_dirs,
            simulate,
            simulate_slowdown,
            simulate_cause,
            simulate_point_ms,
            max_backoff,
            protocol_version,
        } => {
            let name = name.unwrap_or_else(|| {
                sysinfo::System::host_name().unwrap_or_else(|_| "fleetbench-agent".into())
            });
            // The coordinator refuses names outside this set; say so here,
            // before any connection, with the fix.
            fleetbench_common::names::check_host_name(&name)?;
            let spool = spool.unwrap_or_else(|| default_spool_dir(&name));
            let backend = match simulate {
                Some(model) => {
                    let mut sim = SimulatedGpu::new(
                        &model,
                        simulate_slowdown,
                        Duration::from_millis(simulate_point_ms),
                    )
                    .map_err(anyhow::Error::msg)?;
                    sim.cause = simulate_cause;
                    Backend::Simulated(sim)
                }
                None => Backend::Real(Arc::new(NvmlProbe::new())),
            };
            let mut config = AgentConfig::new(coordinator, name, spool, backend);
            config.protocol_version = protocol_version;
            config.tls = tls.client_tls();
            config.token = Token::load(token_file.as_deref(), "FLEETBENCH_AGENT_TOKEN")?;
            config.once = once;
            config.max_spool_bytes = max_spool_mb << 20;
            config.policy =
                ModelPolicy::new(allow_models, &allow_model_dirs).map_err(anyhow::Error::msg)?;
            if !(max_backoff.is_finite() && max_backoff > 0.0) {
                anyhow::bail!("--max-backoff must be a positive number of seconds");
            }
            config.max_backoff = Duration::from_secs_f64(max_backoff);
            run_until_signal(config)
        }
    }
}

/// `info`: the inventory as JSON, or as text with the CUDA build and the
/// visible-devices setting beside it.
fn info(json: bool) -> anyhow::Result<()> {
    let inv = host_inventory(&NvmlProbe::new());
    if json {
        println!("{}", serde_json::to_string_pretty(&inv)?);
    } else {
        let visible = std::env::var(crate::gpu::visible::VISIBLE_DEVICES_VAR).ok();
        println!(
            "{}",
            crate::probe::info_text(
                &inv,
                crate::gpu::compat::CudaBuild::this_build().as_ref(),
                visible.as_deref(),
            )
        );
    }
    Ok(())
}

/// `bench`: the sweep on this host; fails when any selected device could not
/// be measured, after writing the reports of those that could.
fn bench(sweep: SweepArgs, out: &Path) -> anyhow::Result<()> {
    let spec = sweep.spec();
    spec.validate()?;
    let run = run_bench(&spec, out, &NvmlProbe::new(), &AtomicBool::new(false))?;
    for o in &run.outputs {
        println!(
            "{} on {}: {} parameters, weights {}",
            o.report.model.name,
            o.report.device.id,
            o.report.model.parameters,
            o.report.model.weights.describe()
        );
        for f in &o.files {
            println!("wrote {}", f.display());
        }
    }
    if !run.failed.is_empty() {
        anyhow::bail!(
            "{} device(s) could not be measured: {}",
            run.failed.len(),
            run.failed.join("; ")
        );
    }
    Ok(())
}

/// `classify`: labels and probabilities for each text.
fn classify(
    request: ModelRequest,
    device: DeviceSelector,
    json: bool,
    texts: &[String],
) -> anyhow::Result<()> {
    let candle_device = open_device(device, request.dtype)?;
    let loaded = LoadedModel::load(&request, &candle_device)?;
    for note in loaded.notes() {
        eprintln!("warning: {note}");
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let results = loaded.classify(&refs, loaded.info().max_positions.min(512))?;
    print_classifications(&loaded, &results, json)
}

/// The device of a one-off command: the same resolution as a sweep (UUID
/// matching, build and dtype checks); `auto` stays on the CPU here, `cuda`
/// means its first GPU.
fn open_device(device: DeviceSelector, dtype: Precision) -> anyhow::Result<candle_core::Device> {
    Ok(match device {
        DeviceSelector::Cpu | DeviceSelector::Auto => candle_core::Device::Cpu,
        DeviceSelector::Cuda(_) => {
            let resolution = resolve_devices(device, dtype, &NvmlProbe::new(), &SystemCuda, "cpu")?;
            match resolution.devices.into_iter().next() {
                Some(first) => first.device,
                None => anyhow::bail!(
                    "no usable GPU: {}",
                    resolution
                        .failed
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            }
        }
    })
}

fn print_classifications(
    loaded: &LoadedModel,
    results: &[crate::model::Classification],
    json: bool,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for r in results {
            let probs: Vec<String> = loaded
                .labels()
                .iter()
                .zip(&r.probabilities)
                .map(|(l, p)| format!("{l} {p:.4}"))
                .collect();
            println!("{}  ({})  {}", r.label, probs.join(", "), r.text);
        }
    }
    Ok(())
}

/// `run`: the coordinator session until SIGINT or SIGTERM (or, with
/// `--once`, until the first sweep is delivered).
fn run_until_signal(config: AgentConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            fleetbench_proto::shutdown::signal().await;
            let _ = tx.send(true);
        });
        run_agent(config, rx).await
    })?;
    Ok(())
}

fn default_spool_dir(name: &str) -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("fleetbench-agent")
        .join(fleetbench_report::safe_file_stem(name))
}
