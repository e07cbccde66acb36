//! fleetbench-loadgen: the coordinator at fleet scale.
//!
//! Starts a real `fleetbench serve` process, opens N simulated agent sessions
//! to it over real gRPC on loopback (one TCP connection per agent by default,
//! as a real fleet has), starts one sweep on all of them, and has every agent
//! stream its results as fast as it can. Measures, per N: sessions held,
//! results stored per second, the time from sending a result to receiving its
//! acknowledgement (which the coordinator sends only after the result is
//! committed to disk), the coordinator's resident memory per session and its
//! CPU use. Prints a Markdown table.
//!
//!   fleetbench-loadgen --agents 100,1000,10000 [--points 5] [--per-connection 1]
//!
//! One process stalls at about 3,000 sessions, so larger fleets are split over
//! several processes against one coordinator (`bench/scale.sh` does this):
//! each runs `--stream URL --agents N --out FILE`, prints `ready HELD/N` once
//! its sessions are welcomed, streams when a sweep starts (one
//! `--start-sweep URL` process starts it on every connected agent), and writes
//! its raw figures to FILE: every accepted result's send-to-ack latency in
//! microseconds and ack time (in ack order), each host's finish time, counts
//! and start/end times on the wall clock, so that the files merge into one
//! distribution and one window.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use fleetbench_common::spec::SweepSpec;
use fleetbench_common::stats::percentile_sorted;
use fleetbench_proto::PROTOCOL_VERSION;
use fleetbench_proto::v1::agent_session_client::AgentSessionClient;
use fleetbench_proto::v1::control_client::ControlClient;
use fleetbench_proto::v1::{self, agent_message, coordinator_message};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

#[derive(Parser, Debug)]
#[command(about = "Load-test a fleetbench coordinator with simulated agent sessions")]
struct Args {
    /// Numbers of agents to try, one coordinator each.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    agents: Vec<usize>,
    /// Results each agent streams (one per batch size).
    #[arg(long, default_value_t = 5)]
    points: usize,
    /// Agent sessions sharing one HTTP/2 connection (1: a connection each, like a real fleet).
    #[arg(long, default_value_t = 1)]
    per_connection: usize,
    /// Sessions opened per second (0: all at once). Real fleets arrive spread
    /// out, agents reconnecting after a coordinator restart with jittered backoff.
    #[arg(long, default_value_t = 0)]
    ramp_per_second: usize,
    /// Only open sessions to this running coordinator, report how many were
    /// welcomed, and exit (for splitting a fleet over several processes).
    #[arg(long)]
    connect_only: Option<String>,
    /// With --connect-only: keep the sessions open this long after counting.
    #[arg(long, default_value_t = 0)]
    hold_seconds: u64,
    /// Prefix of the agent names (distinct per process with --connect-only or --stream).
    #[arg(long, default_value = "load")]
    name_prefix: String,
    /// Open sessions to this running coordinator, print `ready HELD/N` when
    /// they are welcomed, stream every sweep started on them (see
    /// --start-sweep), write the figures to --out and hold the sessions for
    /// --hold-seconds (for measuring one coordinator from several processes).
    #[arg(long, value_name = "URL", conflicts_with = "connect_only")]
    stream: Option<String>,
    /// With --stream: the file for this process's figures (JSON).
    #[arg(long, value_name = "FILE", requires = "stream")]
    out: Option<PathBuf>,
    /// Start a sweep of --points batch sizes on every agent connected to this
    /// running coordinator, print its id and host count, and exit.
    #[arg(long, value_name = "URL", conflicts_with_all = ["connect_only", "stream"])]
    start_sweep: Option<String>,
    /// Milliseconds between one agent's results (0: all at once, as fast as
    /// possible). Agents start at spread-out phases within one interval.
    #[arg(long, default_value_t = 0)]
    interval_ms: u64,
    /// The coordinator binary (default: `fleetbench` next to this one).
    #[arg(long)]
    coordinator_bin: Option<PathBuf>,
}

fn prefix() -> String {
    PREFIX.get().cloned().unwrap_or_else(|| "load".into())
}

static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sessions whose response headers arrived (for diagnosing stalls).
static HEADERS: AtomicUsize = AtomicUsize::new(0);
/// Sessions refused or failed before their Welcome.
static REFUSED: AtomicUsize = AtomicUsize::new(0);
/// Welcomed sessions that the coordinator closed or lost before we stopped.
static LOST: AtomicUsize = AtomicUsize::new(0);

/// What one simulated agent measured in one sweep.
#[derive(Debug, Default)]
struct AgentStats {
    first_send: Option<Instant>,
    /// (ack arrival, send-to-ack in ms) for every accepted result.
    acks: Vec<(Instant, f64)>,
    rejected: usize,
    /// When the SweepFinished was acknowledged (the host's verdict durable;
    /// for the sweep's last host, also its reports written).
    finished_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct Row {
    agents: usize,
    held: usize,
    connect_s: f64,
    results: usize,
    stream_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    rss_idle_mb: f64,
    rss_mb: f64,
    cpu_share: f64,
    end_s: f64,
}

fn proc_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime of a process, in seconds (USER_HZ is 100 on Linux).
fn proc_cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" that ends the command name: utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn start_coordinator(bin: &Path, data: &Path) -> (Child, String) {
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--heartbeat-interval",
            "30",
            "--data",
        ])
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the coordinator");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("read the address");
    let addr = line.trim().trim_start_matches("listening on ").to_string();
    (child, format!("http://{addr}"))
}

fn result_msg(sweep_id: &str, batch: usize) -> v1::AgentMessage {
    // A realistic result: 20 timed iterations, every field filled.
    let samples: Vec<f64> = (0..20).map(|i| 10.0 + i as f64 * 0.01).collect();
    let point = fleetbench_common::PointResult {
        batch_size: batch,
        seq_len: 128,
        outcome: fleetbench_common::PointOutcome::Measured(fleetbench_common::PointStats {
            warmup: 5,
            iterations: 20,
            timed_seconds: samples.iter().sum::<f64>() / 1e3,
            latency: fleetbench_common::stats::LatencySummary::from_samples_ms(&samples)
                .expect("summary"),
            throughput: batch as f64 / 0.0101,
            samples_ms: samples,
            peak_rss_bytes: Some(1 << 30),
            gpu_process_bytes: Some(2 << 30),
            gpu_device_bytes: Some(3 << 30),
            avg_power_watts: Some(500.0),
            energy_joules: Some(100.0),
            throttle_reasons: vec![],
            sm_clock_mhz: Some(1980.0),
            gpu_pool_peak_bytes: None,
            gpu_temperature_c: None,
            energy_method: None,
            gpu_samples: 0,
        }),
    };
    let device = fleetbench_common::DeviceDescription {
        id: "cuda:0".into(),
        kind: fleetbench_common::DeviceKind::Cuda,
        name: "H100-SXM".into(),
        simulated: true,
    };
    let model = fleetbench_common::ModelInfo::distilbert_base(
        fleetbench_common::spec::DEFAULT_MODEL,
        fleetbench_common::WeightsSource::Simulated,
        fleetbench_common::Precision::F32,
        fleetbench_common::Engine::Fleetbench,
    );
    v1::AgentMessage {
        body: Some(agent_message::Body::Result(v1::PointResultMsg {
            seq: 0,
            sweep_id: sweep_id.into(),
            device: Some((&device).into()),
            model: Some((&model).into()),
            point: Some((&point).into()),
            environment: Some(v1::RunEnvironment {
                agent_version: "loadgen".into(),
                ..Default::default()
            }),
        })),
    }
}

/// One simulated agent: connect, send heartbeats at the interval the Welcome
/// asks for, wait for a sweep, stream every result (all at once, or one every
/// `interval` starting at `phase`), record each send-to-ack time, finish,
/// then hold the session until told to stop.
async fn agent(
    channel: Channel,
    name: String,
    pacing: (Duration, Duration),
    connected: mpsc::Sender<()>,
    done: mpsc::Sender<AgentStats>,
    mut stop: watch::Receiver<bool>,
) {
    let (interval, phase) = pacing;
    let mut client = AgentSessionClient::new(channel);
    let (tx, rx) = mpsc::channel(64);
    let inventory = v1::HostInventory {
        hostname: name.clone(),
        simulated: true,
        ..Default::default()
    };
    let hello = v1::Hello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: "loadgen".into(),
        agent_name: name.clone(),
        inventory: Some(inventory),
        instance_id: String::new(),
    };
    let _ = tx
        .send(v1::AgentMessage {
            body: Some(agent_message::Body::Hello(hello)),
        })
        .await;
    let response = match client.session(ReceiverStream::new(rx)).await {
        Ok(r) => r,
        Err(status) => {
            REFUSED.fetch_add(1, Ordering::Relaxed);
            eprintln!("  {name}: session refused: {status}");
            return;
        }
    };
    HEADERS.fetch_add(1, Ordering::Relaxed);
    let mut inbound = response.into_inner();
    let sent_at: Arc<Mutex<Vec<Option<Instant>>>> = Arc::default();
    let mut stats = AgentStats::default();
    let mut expected = 0usize;
    let mut finished_seq = None;
    let mut welcomed = false;
    // Heartbeats keep the session alive however long the others take to
    // connect; the period comes with the Welcome.
    let mut heartbeat = tokio::time::interval(Duration::from_secs(3600));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = inbound.message() => {
                let Ok(Some(msg)) = msg else {
                    if welcomed && !*stop.borrow() {
                        LOST.fetch_add(1, Ordering::Relaxed);
                    } else if !welcomed {
                        REFUSED.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                };
                match msg.body {
                    Some(coordinator_message::Body::Welcome(w)) => {
                        welcomed = true;
                        let period = Duration::from_millis(u64::from(w.heartbeat_interval_ms.max(100)));
                        heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        let _ = connected.send(()).await;
                    }
                    Some(coordinator_message::Body::RunSweep(run)) => {
                        let spec: SweepSpec = run.spec.expect("spec").try_into().expect("valid spec");
                        expected = spec.batch_sizes.len();
                        *sent_at.lock().expect("sent_at") = vec![None; expected];
                        stats = AgentStats::default();
                        finished_seq = Some(expected as u64 + 1);
                        tokio::spawn(send_results(
                            tx.clone(),
                            run.sweep_id,
                            spec.batch_sizes,
                            (interval, phase),
                            sent_at.clone(),
                        ));
                    }
                    Some(coordinator_message::Body::Ack(ack)) => {
                        if (1..=expected as u64).contains(&ack.seq) {
                            let sent = sent_at.lock().expect("sent_at")[ack.seq as usize - 1];
                            if let Some(sent) = sent {
                                if ack.accepted {
                                    let now = Instant::now();
                                    stats.acks.push((now, (now - sent).as_secs_f64() * 1e3));
                                } else {
                                    stats.rejected += 1;
                                }
                            }
                        }
                        if Some(ack.seq) == finished_seq {
                            stats.first_send = sent_at.lock().expect("sent_at").iter().flatten().min().copied();
                            stats.finished_at = Some(Instant::now());
                            let _ = done.send(std::mem::take(&mut stats)).await;
                        }
                    }
                    _ => {}
                }
            }
            _ = heartbeat.tick(), if welcomed => {
                let hb = v1::Heartbeat {
                    sent_unix_ms: unix_us(SystemTime::now()) as i64 / 1000,
                    ..Default::default()
                };
                let _ = tx.send(v1::AgentMessage { body: Some(agent_message::Body::Heartbeat(hb)) }).await;
            }
            _ = stop.changed() => return,
        }
    }
}

/// Sends one sweep's results (seq 1..) and its SweepFinished, each result's
/// send time recorded just before it goes out.
async fn send_results(
    tx: mpsc::Sender<v1::AgentMessage>,
    sweep_id: String,
    batch_sizes: Vec<usize>,
    pacing: (Duration, Duration),
    sent_at: Arc<Mutex<Vec<Option<Instant>>>>,
) {
    let (interval, phase) = pacing;
    let start = tokio::time::Instant::now() + phase;
    for (i, b) in batch_sizes.iter().enumerate() {
        if !interval.is_zero() {
            tokio::time::sleep_until(start + interval * i as u32).await;
        }
        let mut m = result_msg(&sweep_id, *b);
        if let Some(agent_message::Body::Result(r)) = m.body.as_mut() {
            r.seq = i as u64 + 1;
        }
        sent_at.lock().expect("sent_at")[i] = Some(Instant::now());
        if tx.send(m).await.is_err() {
            return;
        }
    }
    let f = v1::SweepFinished {
        seq: batch_sizes.len() as u64 + 1,
        sweep_id,
        ok: true,
        error: String::new(),
        notes: vec![],
    };
    let _ = tx
        .send(v1::AgentMessage {
            body: Some(agent_message::Body::Finished(f)),
        })
        .await;
}

fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as u64
}

/// Where an agent's first result falls within the interval: spread by a hash
/// of its name, so agents of different processes do not line up.
fn phase_of(name: &str, interval: Duration) -> Duration {
    if interval.is_zero() {
        return Duration::ZERO;
    }
    // FNV-1a.
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    interval.mul_f64((h >> 11) as f64 / (1u64 << 53) as f64)
}

async fn run_one(
    bin: &Path,
    n: usize,
    points: usize,
    per_connection: usize,
    ramp: usize,
    interval: Duration,
) -> Row {
    let data = tempfile::tempdir().expect("tempdir");
    let (mut child, url) = start_coordinator(bin, data.path());
    let pid = child.id();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_idle = proc_rss_kb(pid);

    let (stop_tx, stop_rx) = watch::channel(false);
    let (conn_tx, mut conn_rx) = mpsc::channel(n.max(1));
    let (done_tx, mut done_rx) = mpsc::channel(n.max(1));
    let started = Instant::now();
    spawn_agents(
        &url,
        n,
        (per_connection, ramp, interval),
        &conn_tx,
        &done_tx,
        &stop_rx,
    )
    .await;
    drop(conn_tx);
    eprintln!(
        "  spawned {n} agents in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let mut held = 0;
    let mut last_report = Instant::now();
    while held < n {
        match tokio::time::timeout(Duration::from_secs(120), conn_rx.recv()).await {
            Ok(Some(())) => held += 1,
            _ => break,
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "  {held}/{n} sessions welcomed after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
    let connect_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = proc_rss_kb(pid);

    let mut control = ControlClient::connect(url.clone()).await.expect("control");
    let spec = SweepSpec {
        batch_sizes: (1..=points).collect(),
        ..SweepSpec::default()
    };
    let cpu0 = proc_cpu_s(pid);
    let t0 = Instant::now();
    let started_sweep = control
        .start_sweep(v1::StartSweepRequest {
            spec: Some((&spec).into()),
            hosts: vec![],
            gpu_model: String::new(),
            deadline_seconds: 3600,
            baseline: String::new(),
        })
        .await
        .expect("start sweep")
        .into_inner();
    let mut latencies: Vec<f64> = Vec::new();
    let mut finished = 0;
    while finished < held {
        match tokio::time::timeout(Duration::from_secs(300), done_rx.recv()).await {
            Ok(Some(l)) => {
                latencies.extend(l.acks.iter().map(|a| a.1));
                finished += 1;
            }
            _ => break,
        }
    }
    let stream_s = t0.elapsed().as_secs_f64();
    let cpu = proc_cpu_s(pid) - cpu0;
    // The sweep ends when every host finished; then the reports are written.
    let end = Instant::now();
    loop {
        let s = control
            .get_sweep(v1::GetSweepRequest {
                sweep_id: started_sweep.sweep_id.clone(),
                // Only the summary is read: one result keeps the answer small.
                page_size: 1,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().sweep.unwrap_or_default())
            .unwrap_or_default();
        if s.state != "running" && !s.reports_dir.is_empty()
            || end.elapsed() > Duration::from_secs(600)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let end_s = end.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let _ = child.kill();
    let _ = child.wait();

    latencies.sort_by(f64::total_cmp);
    Row {
        agents: n,
        held,
        connect_s,
        results: latencies.len(),
        stream_s,
        p50_ms: percentile_sorted(&latencies, 0.5),
        p99_ms: percentile_sorted(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or(f64::NAN),
        rss_idle_mb: rss_idle as f64 / 1024.0,
        rss_mb: rss as f64 / 1024.0,
        cpu_share: cpu / stream_s,
        end_s,
    }
}

/// Spawns `n` agent tasks, `per_connection` of them sharing an HTTP/2
/// connection, at most `ramp` new sessions a second (0: all at once), each
/// sending a result every `interval` (0: all at once).
async fn spawn_agents(
    url: &str,
    n: usize,
    (per_connection, ramp, interval): (usize, usize, Duration),
    connected: &mpsc::Sender<()>,
    done: &mpsc::Sender<AgentStats>,
    stop: &watch::Receiver<bool>,
) {
    let endpoint = Endpoint::from_shared(url.to_string())
        .expect("url")
        .connect_timeout(Duration::from_secs(30));
    let mut channel = None;
    for i in 0..n {
        if ramp > 0 && i > 0 && i % (ramp / 10).max(1) == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if i % per_connection.max(1) == 0 {
            // Lazy: connects on first use, so 10,000 agents do not wait on each other.
            channel = Some(endpoint.connect_lazy());
        }
        let ch = channel.clone().expect("channel");
        let name = format!("{}-{i:05}", prefix());
        let phase = phase_of(&name, interval);
        tokio::spawn(agent(
            ch,
            name,
            (interval, phase),
            connected.clone(),
            done.clone(),
            stop.clone(),
        ));
    }
}

/// Opens `n` sessions to a running coordinator and counts the Welcomes.
async fn connect_only(url: &str, n: usize, per_connection: usize) -> usize {
    let (stop_tx, stop_rx) = watch::channel(false);
    // The sessions live as long as the process: the sender must not drop.
    std::mem::forget(stop_tx);
    let (conn_tx, mut conn_rx) = mpsc::channel(n.max(1));
    let (done_tx, _done_rx) = mpsc::channel(n.max(1));
    spawn_agents(
        url,
        n,
        (per_connection, 0, Duration::ZERO),
        &conn_tx,
        &done_tx,
        &stop_rx,
    )
    .await;
    drop(conn_tx);
    let started = Instant::now();
    let mut held = 0;
    while held < n && started.elapsed() < Duration::from_secs(60) {
        if let Ok(Some(())) = tokio::time::timeout(Duration::from_secs(5), conn_rx.recv()).await {
            held += 1;
        }
    }
    held
}

/// Starts one sweep of `points` batch sizes (1..=points) on every connected agent.
async fn start_sweep(url: &str, points: usize) {
    let mut control = ControlClient::connect(url.to_string())
        .await
        .expect("connect to the coordinator");
    let spec = SweepSpec {
        batch_sizes: (1..=points).collect(),
        ..SweepSpec::default()
    };
    let started = control
        .start_sweep(v1::StartSweepRequest {
            spec: Some((&spec).into()),
            hosts: vec![],
            gpu_model: String::new(),
            deadline_seconds: 3600,
            baseline: String::new(),
        })
        .await
        .expect("start sweep")
        .into_inner();
    println!("{} {}", started.sweep_id, started.hosts.len());
}

/// `--stream`: open `n` sessions to a running coordinator, say when they are
/// welcomed, stream the sweep someone else starts, and write what this
/// process measured to `out` as JSON (written to a temporary name, then
/// renamed, so a watcher sees it whole). Times are microseconds since the
/// Unix epoch, comparable between processes on one machine.
async fn stream(url: &str, n: usize, pacing: (usize, usize, Duration), out: &Path) {
    let clock = (Instant::now(), SystemTime::now());
    let wall = |t: Instant| unix_us(clock.1 + (t - clock.0));
    let (stop_tx, stop_rx) = watch::channel(false);
    // The sessions live as long as the process: the sender must not drop.
    std::mem::forget(stop_tx);
    let (conn_tx, mut conn_rx) = mpsc::channel(n.max(1));
    let (done_tx, mut done_rx) = mpsc::channel(n.max(1));
    let started = Instant::now();
    spawn_agents(url, n, pacing, &conn_tx, &done_tx, &stop_rx).await;
    drop(conn_tx);
    let mut held = 0;
    while held < n {
        match tokio::time::timeout(Duration::from_secs(120), conn_rx.recv()).await {
            Ok(Some(())) => held += 1,
            _ => break,
        }
    }
    let connect_s = started.elapsed().as_secs_f64();
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "ready {held}/{n}");
        let _ = stdout.flush();
    }
    let pid = std::process::id();
    let cpu_ready = proc_cpu_s(pid);
    let mut agents = Vec::with_capacity(held);
    while agents.len() < held {
        // The first result waits for the sweep, which starts once every
        // process is ready; after that, agents finish close together.
        let wait = if agents.is_empty() { 1800 } else { 300 };
        match tokio::time::timeout(Duration::from_secs(wait), done_rx.recv()).await {
            Ok(Some(stats)) => agents.push(stats),
            _ => break,
        }
    }
    let cpu_stream = proc_cpu_s(pid) - cpu_ready;
    // (ack time, send-to-ack) pairs in ack order, written as two parallel lists.
    let mut acks: Vec<(u64, u32)> = Vec::new();
    let mut rejected = 0;
    for a in &agents {
        rejected += a.rejected;
        for &(at, ms) in &a.acks {
            acks.push((wall(at), (ms * 1e3).round().min(f64::from(u32::MAX)) as u32));
        }
    }
    acks.sort_unstable();
    let first_send = agents.iter().filter_map(|a| a.first_send).min().map(wall);
    let mut finished_us: Vec<u64> = agents
        .iter()
        .filter_map(|a| a.finished_at.map(wall))
        .collect();
    finished_us.sort_unstable();
    let opt = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
    let list = |v: &mut dyn Iterator<Item = String>| v.collect::<Vec<_>>().join(",");
    let json = format!(
        "{{\"prefix\":\"{}\",\"sessions\":{n},\"held\":{held},\"connect_s\":{connect_s:.3},\
         \"refused\":{},\"lost\":{},\"finished\":{},\"accepted\":{},\"rejected\":{rejected},\
         \"first_send_unix_us\":{},\"last_ack_unix_us\":{},\"cpu_s_stream\":{cpu_stream:.2},\
         \"cpu_s_total\":{:.2},\"latency_us\":[{}],\"ack_unix_us\":[{}],\"finished_unix_us\":[{}]}}\n",
        prefix(),
        REFUSED.load(Ordering::Relaxed),
        LOST.load(Ordering::Relaxed),
        agents.len(),
        acks.len(),
        opt(first_send),
        opt(acks.last().map(|a| a.0)),
        proc_cpu_s(pid),
        list(&mut acks.iter().map(|v| v.1.to_string())),
        list(&mut acks.iter().map(|v| v.0.to_string())),
        list(&mut finished_us.iter().map(|v| v.to_string())),
    );
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, json).expect("write the figures");
    std::fs::rename(&tmp, out).expect("rename the figures");
    println!(
        "done {}/{held} sessions finished, {} results acknowledged",
        agents.len(),
        acks.len()
    );
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let _ = PREFIX.set(args.name_prefix.clone());
    if let Some(url) = &args.start_sweep {
        start_sweep(url, args.points).await;
        return;
    }
    if let Some(url) = &args.stream {
        let Some(out) = &args.out else {
            eprintln!("--stream needs --out FILE");
            std::process::exit(2);
        };
        let n = args.agents.first().copied().unwrap_or(0);
        stream(
            url,
            n,
            (
                args.per_connection,
                args.ramp_per_second,
                Duration::from_millis(args.interval_ms),
            ),
            out,
        )
        .await;
        tokio::time::sleep(Duration::from_secs(args.hold_seconds)).await;
        return;
    }
    if let Some(url) = &args.connect_only {
        let n = args.agents.first().copied().unwrap_or(0);
        let held = connect_only(url, n, args.per_connection).await;
        println!("{held}/{n} sessions welcomed");
        tokio::time::sleep(Duration::from_secs(args.hold_seconds)).await;
        return;
    }
    let bin = args.coordinator_bin.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .expect("exe")
            .parent()
            .expect("dir")
            .join("fleetbench")
    });
    assert!(
        bin.exists(),
        "{} not found: build it with `cargo build --release -p fleetbench-coordinator`",
        bin.display()
    );
    let rows: Arc<Mutex<Vec<Row>>> = Arc::default();
    for &n in &args.agents {
        eprintln!("{n} agents ...");
        let row = run_one(
            &bin,
            n,
            args.points,
            args.per_connection,
            args.ramp_per_second,
            Duration::from_millis(args.interval_ms),
        )
        .await;
        rows.lock().expect("rows").push(row);
    }
    println!(
        "| agents | sessions held | connect (s) | results | results/s | ack p50 (ms) | ack p99 (ms) | ack max (ms) | RSS idle (MB) | RSS with sessions (MB) | RSS per session (KB) | CPU during streaming | sweep end to reports (s) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows.lock().expect("rows").iter() {
        println!(
            "| {} | {} | {:.2} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0}% | {:.2} |",
            r.agents,
            r.held,
            r.connect_s,
            r.results,
            r.results as f64 / r.stream_s,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.rss_idle_mb,
            r.rss_mb,
            (r.rss_mb - r.rss_idle_mb) * 1024.0 / r.held.max(1) as f64,
            r.cpu_share * 100.0,
            r.end_s,
        );
    }
}
