//! `fleetbench demo`: the whole product on one machine in one process: a
//! coordinator with its embedded store, one real agent on the local device,
//! one sweep, reports written. On a GPU it runs the seed's full sweep; on a
//! CPU a short one that finishes in about a minute on 2 cores.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use fleetbench_agent::client::{AgentConfig, Backend, run_agent};
use fleetbench_agent::policy::ModelPolicy;
use fleetbench_agent::probe::{GpuProbe, NvmlProbe};
use fleetbench_common::{SweepSpec, WeightsChoice};
use fleetbench_proto::v1;
use tokio::net::TcpListener;

use crate::operator;
use crate::sweeps::{Coordinator, CoordinatorConfig};

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub data_dir: PathBuf,
    pub model: String,
    pub weights: WeightsChoice,
    /// Force the short CPU sweep even where a GPU exists.
    pub quick: bool,
    /// Where the web console listens (loopback, no login: the demo's
    /// coordinator has no tokens).
    pub console: std::net::SocketAddr,
    /// After the sweep: keep serving the console until Ctrl-C, or end.
    pub after: AfterSweep,
}

/// What the demo does once its sweep has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterSweep {
    /// Keep the coordinator, the agent and the console up until Ctrl-C
    /// (or SIGTERM), so that the sweep can be looked at in a browser.
    ServeUntilInterrupted,
    /// End at once (`--exit`, for scripts).
    Exit,
}

#[derive(Debug, Clone)]
pub struct DemoOutcome {
    pub sweep_id: String,
    pub state: String,
    pub reports_dir: PathBuf,
}

/// The sweep the demo runs on this host.
pub fn demo_spec(opts: &DemoOptions, has_gpu: bool) -> SweepSpec {
    let base = SweepSpec {
        model: opts.model.clone(),
        weights: opts.weights,
        ..SweepSpec::default()
    };
    if has_gpu && !opts.quick {
        base
    } else {
        // About 350 samples of DistilBERT at sequence 128: well under two
        // minutes at the 15-25 samples/s two cores reach.
        SweepSpec {
            batch_sizes: vec![1, 4, 8, 16],
            warmup: 2,
            iterations: 10,
            device: fleetbench_common::DeviceSelector::Cpu,
            ..base
        }
    }
}

pub async fn run_demo(opts: DemoOptions) -> anyhow::Result<DemoOutcome> {
    let coordinator = Coordinator::open(CoordinatorConfig::new(opts.data_dir.clone()))
        .with_context(|| format!("cannot open the store in {}", opts.data_dir.display()))?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot listen on loopback")?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    let server = {
        let coordinator = coordinator.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.changed().await;
            };
            crate::server::serve(
                coordinator,
                listener,
                &crate::security::ServerSecurity::default(),
                shutdown,
            )
            .await
        })
    };
    println!(
        "coordinator listening on {url}, store in {}",
        opts.data_dir.display()
    );
    if !opts.console.ip().is_loopback() {
        anyhow::bail!(
            "the demo's console has no login: give --http-listen a loopback address (127.0.0.1:PORT), or run `fleetbench serve` with tokens"
        );
    }
    let console_listener = TcpListener::bind(opts.console)
        .await
        .with_context(|| format!("cannot listen on --http-listen {}", opts.console))?;
    let console_url = format!("http://{}/", console_listener.local_addr()?);
    let console = {
        let coordinator = coordinator.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.changed().await;
            };
            let sessions = crate::console::Sessions::new(Arc::default(), false);
            crate::console::serve(coordinator, console_listener, None, sessions, shutdown).await
        })
    };
    println!("console on {console_url}");

    let probe = Arc::new(NvmlProbe::new());
    let has_gpu = fleetbench_agent::runner::CUDA_COMPILED
        && probe.gpus().is_ok_and(|list| !list.gpus.is_empty());
    // A host name outside the fleet's character set (see
    // `fleetbench_common::names`) would be refused: the demo is `localhost`.
    let name = sysinfo::System::host_name()
        .ok()
        .filter(|n| fleetbench_common::names::check_host_name(n).is_ok())
        .unwrap_or_else(|| "localhost".into());
    let agent = {
        let mut config = AgentConfig::new(
            url.clone(),
            name.clone(),
            opts.data_dir.join("agent-spool"),
            Backend::Real(probe),
        );
        // The demo's user is the host's owner: the model they named is allowed.
        let model_dir = Path::new(&opts.model);
        let dirs: Vec<PathBuf> = if model_dir.is_dir() {
            vec![model_dir.to_path_buf()]
        } else {
            Vec::new()
        };
        config.policy =
            ModelPolicy::new(vec![opts.model.clone()], &dirs).map_err(anyhow::Error::msg)?;
        let stop = stop_rx.clone();
        tokio::spawn(async move { run_agent(config, stop).await })
    };
    wait_for_agent(&coordinator, &name).await?;

    let spec = demo_spec(&opts, has_gpu);
    println!("sweep: {}", spec.summary());
    let (sweep_id, _) = coordinator
        .start_sweep(v1::StartSweepRequest {
            spec: Some((&spec).into()),
            hosts: vec![name],
            gpu_model: String::new(),
            deadline_seconds: 0,
            baseline: String::new(),
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("sweep id: {sweep_id}; watch it at {console_url}sweeps/{sweep_id}");
    let last = operator::watch(
        &operator::ControlTarget::plain(&url),
        &sweep_id,
        &mut std::io::stdout(),
    )
    .await?;

    let summary = last.sweep.unwrap_or_default();
    let reports_dir = PathBuf::from(&summary.reports_dir);
    print_reports(&reports_dir);
    if opts.after == AfterSweep::ServeUntilInterrupted {
        println!(
            "\nthe sweep in a browser: {console_url}sweeps/{sweep_id}\n\
             serving the console until Ctrl-C (`fleetbench demo --exit` ends after the sweep)"
        );
        fleetbench_proto::shutdown::signal().await;
    }
    let _ = stop_tx.send(true);
    let _ = agent.await;
    let _ = server.await;
    let _ = console.await;
    Ok(DemoOutcome {
        sweep_id,
        state: summary.state,
        reports_dir,
    })
}

async fn wait_for_agent(coordinator: &Coordinator, name: &str) -> anyhow::Result<()> {
    for _ in 0..300 {
        if coordinator.fleet.get(name).is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!(
        "the local agent did not register within 30 s; run with RUST_LOG=debug to see why"
    )
}

fn print_reports(dir: &Path) {
    println!("reports in {}:", dir.display());
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files {
            println!("  {}", f.display());
        }
    }
}
