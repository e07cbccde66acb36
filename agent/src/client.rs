//! The agent's session with the coordinator: dial out, say Hello, run the
//! sweeps it is sent, stream every result through the spool, and keep doing
//! so across lost connections (exponential backoff with full jitter) until
//! told to stop.
//!
//! The benchmark itself runs on a plain thread (candle's CPU kernels use
//! their own thread pool and must not block the async runtime); it talks to
//! the session through a channel, so results keep flowing into the spool
//! while the connection is down.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fleetbench_common::rng::SplitMix64;
use fleetbench_common::{HostInventory, SweepSpec};
use fleetbench_proto::security::{BearerAuth, ClientTls, SecurityError, Token};
use fleetbench_proto::v1::agent_session_client::AgentSessionClient;
use fleetbench_proto::v1::{self, agent_message, coordinator_message};
use fleetbench_proto::{ConvertError, PROTOCOL_VERSION};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Endpoint;

use crate::devices::{self, SystemCuda};
use crate::policy::{CrashMarker, MAX_CRASHES_PER_POINT, ModelPolicy, RunningPoint};
use crate::probe::{GpuProbe, host_inventory, process_memory};
use crate::runner::{self, RunEvent};
use crate::simulate::SimulatedGpu;
use crate::spool::{Spool, SpoolError};

/// How this agent answers sweeps.
#[derive(Debug, Clone)]
pub enum Backend {
    /// candle on the host's devices.
    Real(Arc<dyn GpuProbe>),
    /// A performance model of a GPU; labelled simulated everywhere.
    Simulated(SimulatedGpu),
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// e.g. `http://127.0.0.1:7070`.
    pub coordinator: String,
    pub name: String,
    pub spool_dir: PathBuf,
    pub backend: Backend,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Only tests set this to something else, to check that a mismatch is refused.
    pub protocol_version: u32,
    /// TLS files for an https:// coordinator.
    pub tls: ClientTls,
    /// The agent token, when the coordinator requires one.
    pub token: Option<Token>,
    /// Stop once the first sweep has ended and its results are acknowledged
    /// (one agent per Slurm job).
    pub once: bool,
    /// Most bytes of unacknowledged results kept in the spool: beyond it the
    /// benchmark waits (before its next point) for acknowledgements instead
    /// of filling the disk while the coordinator is away.
    pub max_spool_bytes: u64,
    /// Which models a coordinator's sweep may make this agent load.
    pub policy: ModelPolicy,
}

impl AgentConfig {
    pub fn new(
        coordinator: impl Into<String>,
        name: impl Into<String>,
        spool_dir: PathBuf,
        backend: Backend,
    ) -> Self {
        AgentConfig {
            coordinator: coordinator.into(),
            name: name.into(),
            spool_dir,
            backend,
            max_backoff: Duration::from_secs(10),
            protocol_version: PROTOCOL_VERSION,
            tls: ClientTls::default(),
            token: None,
            once: false,
            max_spool_bytes: 256 << 20,
            policy: ModelPolicy::default(),
        }
    }
}

#[derive(Debug, Error)]
pub enum AgentError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Settings(#[from] SecurityError),
    /// TLS failed in a way retrying cannot fix (an untrusted certificate).
    #[error("TLS with the coordinator at {url} failed: {why}")]
    Tls { url: String, why: String },
    /// The coordinator refused us for good (e.g. another protocol version).
    #[error("the coordinator refused this agent: {0}")]
    Refused(String),
}

/// What ended one connection.
enum SessionEnd {
    Shutdown,
    /// Worth another try after a pause.
    Lost(String),
}

/// Events from the benchmark thread.
#[derive(Debug)]
enum JobEvent {
    Progress(v1::SweepProgress),
    Result(v1::PointResultMsg),
    Finished(v1::SweepFinished),
}

#[derive(Debug)]
struct ActiveJob {
    sweep_id: String,
    cancel: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

/// Everything that outlives a single connection.
struct Agent {
    config: AgentConfig,
    inventory: HostInventory,
    spool: Spool,
    job: Option<ActiveJob>,
    job_tx: mpsc::UnboundedSender<JobEvent>,
    /// A sweep has ended here since the agent started (for `once`).
    ended_a_sweep: bool,
}

/// Runs the agent until `shutdown` turns true. Returns an error only for
/// problems that retrying cannot fix.
pub async fn run_agent(
    config: AgentConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let endpoint = config.tls.endpoint(&config.coordinator)?;
    let spool = Spool::open(&config.spool_dir)?;
    let inventory = match &config.backend {
        Backend::Real(gpu) => {
            let mut inv = host_inventory(gpu.as_ref());
            inv.hostname = config.name.clone();
            inv
        }
        Backend::Simulated(sim) => sim.inventory(&config.name),
    };
    let marker = CrashMarker::in_dir(&config.spool_dir);
    match marker.settle() {
        Ok(Some(point)) => tracing::warn!(
            sweep = %point.sweep_id,
            device = %point.device_id,
            batch = point.batch_size,
            "this agent died while measuring a point last time: that point will not be run again"
        ),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or record the point that was running at the last crash")
        }
    }
    let (job_tx, mut job_rx) = mpsc::unbounded_channel();
    let mut agent = Agent {
        config,
        inventory,
        spool,
        job: None,
        job_tx,
        ended_a_sweep: false,
    };
    if !agent.spool.is_empty() {
        tracing::info!(
            pending = agent.spool.len(),
            "unacknowledged results from an earlier run will be sent again"
        );
    }
    let mut backoff = Backoff::new(Duration::from_millis(200), agent.config.max_backoff);

    loop {
        if *shutdown.borrow() {
            break;
        }
        match agent
            .session(&endpoint, &mut job_rx, &mut shutdown, &mut backoff)
            .await
        {
            Ok(SessionEnd::Shutdown) => break,
            Ok(SessionEnd::Lost(why)) => {
                let pause = backoff.next_delay();
                tracing::warn!(%why, retry_in = ?pause, "connection to the coordinator lost");
                let sleep = tokio::time::sleep(pause);
                tokio::pin!(sleep);
                // Keep spooling results while we wait.
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        _ = shutdown.changed() => break,
                        Some(ev) = job_rx.recv() => { agent.record(ev)?; }
                    }
                }
            }
            Err(e) => {
                agent.stop_job().await;
                return Err(e);
            }
        }
    }
    tracing::info!("shutting down: abandoning the current point, keeping the spool");
    agent.stop_job().await;
    while let Ok(ev) = job_rx.try_recv() {
        agent.record(ev)?;
    }
    Ok(())
}

impl Agent {
    async fn session(
        &mut self,
        endpoint: &Endpoint,
        job_rx: &mut mpsc::UnboundedReceiver<JobEvent>,
        shutdown: &mut watch::Receiver<bool>,
        backoff: &mut Backoff,
    ) -> Result<SessionEnd, AgentError> {
        let channel = tokio::select! {
            c = endpoint.connect() => match c {
                Ok(c) => c,
                Err(e) => {
                    let fallback = format!("cannot connect to {}: {e}", self.config.coordinator);
                    return self.connection_failed(&e, fallback);
                }
            },
            _ = shutdown.changed() => return Ok(SessionEnd::Shutdown),
        };
        let mut client = AgentSessionClient::with_interceptor(
            channel,
            BearerAuth::new(self.config.token.as_ref()),
        );
        let (out_tx, out_rx) = mpsc::channel::<v1::AgentMessage>(1024);
        let hello = v1::Hello {
            protocol_version: self.config.protocol_version,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            agent_name: self.config.name.clone(),
            inventory: Some((&self.inventory).into()),
            instance_id: self.spool.instance_id().to_string(),
        };
        let _ = out_tx.send(msg(agent_message::Body::Hello(hello))).await;
        let mut inbound = match client.session(ReceiverStream::new(out_rx)).await {
            Ok(r) => r.into_inner(),
            Err(status) => return self.refused_or_lost(status),
        };
        let welcome = match inbound.message().await {
            Ok(Some(v1::CoordinatorMessage {
                body: Some(coordinator_message::Body::Welcome(w)),
            })) => w,
            Ok(_) => {
                return Ok(SessionEnd::Lost(
                    "the coordinator did not answer Hello with Welcome".into(),
                ));
            }
            Err(status) => return self.refused_or_lost(status),
        };
        if welcome.protocol_version != self.config.protocol_version {
            return Err(AgentError::Refused(format!(
                "the coordinator speaks protocol version {} and this agent {}: run the same fleetbench release on both",
                welcome.protocol_version, self.config.protocol_version
            )));
        }
        tracing::info!(coordinator = %self.config.coordinator, version = %welcome.coordinator_version, "registered with the coordinator");
        backoff.reset();

        // Whatever was not acknowledged before goes again, oldest first.
        for m in self.spool.pending() {
            if out_tx.send(m.clone()).await.is_err() {
                return Ok(SessionEnd::Lost(
                    "session closed while resending the spool".into(),
                ));
            }
        }
        let mut heartbeat = tokio::time::interval(Duration::from_millis(
            welcome.heartbeat_interval_ms.max(100) as u64,
        ));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                incoming = inbound.message() => match incoming {
                    Ok(Some(m)) => {
                        self.handle(m, &out_tx).await?;
                        if self.config.once && self.ended_a_sweep && self.job.is_none() && self.spool.is_empty() {
                            tracing::info!("the sweep has ended and every result is acknowledged; exiting (--once)");
                            return Ok(SessionEnd::Shutdown);
                        }
                    }
                    Ok(None) => return Ok(SessionEnd::Lost("the coordinator closed the session".into())),
                    Err(status) => return self.refused_or_lost(status),
                },
                Some(ev) = job_rx.recv() => {
                    if let Some(m) = self.record(ev)?
                        && out_tx.send(m).await.is_err()
                    {
                        return Ok(SessionEnd::Lost("session closed".into()));
                    }
                }
                _ = heartbeat.tick() => {
                    let hb = v1::Heartbeat {
                        sent_unix_ms: fleetbench_common::time::now_unix_ms(),
                        active_sweep_id: self.job.as_ref().map(|j| j.sweep_id.clone()).unwrap_or_default(),
                        rss_bytes: process_memory::rss_bytes().unwrap_or(0),
                    };
                    if out_tx.send(msg(agent_message::Body::Heartbeat(hb))).await.is_err() {
                        return Ok(SessionEnd::Lost("session closed".into()));
                    }
                }
                _ = shutdown.changed() => return Ok(SessionEnd::Shutdown),
            }
        }
    }

    fn refused_or_lost(&self, status: tonic::Status) -> Result<SessionEnd, AgentError> {
        match status.code() {
            Code::FailedPrecondition
            | Code::InvalidArgument
            | Code::PermissionDenied
            | Code::Unauthenticated => Err(AgentError::Refused(status.message().to_string())),
            // With mutual TLS the coordinator judges our certificate after
            // the handshake, so its refusal arrives with the first call.
            _ => {
                let fallback = format!("{}: {}", status.code(), status.message());
                self.connection_failed(&status, fallback)
            }
        }
    }

    /// A broken connection: fatal when TLS says retrying cannot help (an
    /// untrusted certificate), else lost, with a hint where there is one.
    fn connection_failed(
        &self,
        error: &(dyn std::error::Error + 'static),
        fallback: String,
    ) -> Result<SessionEnd, AgentError> {
        let url = &self.config.coordinator;
        match self.config.tls.explain(url, error) {
            Some((why, true)) => Err(AgentError::Tls {
                url: url.clone(),
                why,
            }),
            Some((why, false)) => Ok(SessionEnd::Lost(why)),
            None => Ok(SessionEnd::Lost(fallback)),
        }
    }

    /// Spools what must survive; returns the message to send, if any.
    fn record(&mut self, ev: JobEvent) -> Result<Option<v1::AgentMessage>, AgentError> {
        Ok(Some(match ev {
            JobEvent::Progress(p) => msg(agent_message::Body::Progress(p)),
            JobEvent::Result(r) => self.spool.append(msg(agent_message::Body::Result(r)))?,
            JobEvent::Finished(f) => {
                if self.job.as_ref().is_some_and(|j| j.sweep_id == f.sweep_id) {
                    self.job = None;
                }
                self.ended_a_sweep = true;
                self.spool.append(msg(agent_message::Body::Finished(f)))?
            }
        }))
    }

    async fn handle(
        &mut self,
        m: v1::CoordinatorMessage,
        out: &mpsc::Sender<v1::AgentMessage>,
    ) -> Result<(), AgentError> {
        match m.body {
            Some(coordinator_message::Body::Ack(ack)) => {
                if !ack.accepted {
                    tracing::warn!(seq = ack.seq, reason = %ack.reason, "the coordinator refused a result; dropping it");
                }
                self.spool.ack(ack.seq);
            }
            Some(coordinator_message::Body::RunSweep(run)) => self.start_job(run, out).await?,
            Some(coordinator_message::Body::CancelSweep(c)) => {
                if let Some(job) = self.job.as_ref().filter(|j| j.sweep_id == c.sweep_id) {
                    tracing::info!(sweep = %c.sweep_id, reason = %c.reason, "sweep cancelled by the coordinator");
                    job.cancel.store(true, Ordering::Relaxed);
                }
            }
            Some(coordinator_message::Body::Welcome(_)) | None => {}
        }
        Ok(())
    }

    async fn start_job(
        &mut self,
        run: v1::RunSweep,
        out: &mpsc::Sender<v1::AgentMessage>,
    ) -> Result<(), AgentError> {
        if let Some(job) = &self.job {
            if job.sweep_id == run.sweep_id {
                // The coordinator restarted and sent the sweep again; we are on it.
                return Ok(());
            }
            let busy = format!("this agent is busy with sweep {}", job.sweep_id);
            return self.finish_at_once(&run.sweep_id, busy, out).await;
        }
        let spec: Result<SweepSpec, ConvertError> = run
            .spec
            .clone()
            .ok_or(ConvertError::Missing("spec"))
            .and_then(TryInto::try_into);
        let spec = match spec {
            Ok(s) => s,
            Err(e) => return self.finish_at_once(&run.sweep_id, e.to_string(), out).await,
        };
        // The agent's own policy decides what a remote spec may load (and
        // may pin the model to a commit).
        let mut spec = spec;
        match self.config.policy.check(&spec) {
            Ok(model) => spec.model = model,
            Err(refused) => return self.finish_at_once(&run.sweep_id, refused, out).await,
        }
        let mut done: HashSet<(String, usize)> = run
            .completed
            .iter()
            .map(|k| (k.device_id.clone(), k.batch_size as usize))
            .collect();
        done.extend(self.spool.points_of(&run.sweep_id));
        // Points that killed this agent before are not run again: the
        // sweep ends failed with why, instead of the agent crash-looping.
        let marker = CrashMarker::in_dir(&self.config.spool_dir);
        let mut crashed = Vec::new();
        for (device_id, batch_size) in marker.given_up_in(&run.sweep_id) {
            if done.insert((device_id.clone(), batch_size)) {
                crashed.push(format!(
                    "{device_id} batch {batch_size}: the agent died while measuring this point {MAX_CRASHES_PER_POINT} times (out of memory, or a driver fault?) and does not run it again"
                ));
            }
        }
        tracing::info!(sweep = %run.sweep_id, spec = %spec.summary(), already_done = done.len(), "starting sweep");
        let cancel = Arc::new(AtomicBool::new(false));
        let ctx = JobContext {
            sweep_id: run.sweep_id.clone(),
            spec,
            done,
            backend: self.config.backend.clone(),
            hostname: self.config.name.clone(),
            cpu_name: self.inventory.cpu_model.clone(),
            cancel: cancel.clone(),
            events: self.job_tx.clone(),
            spool_bytes: self.spool.usage(),
            max_spool_bytes: self.config.max_spool_bytes,
            marker,
            crashed,
        };
        let thread = std::thread::Builder::new()
            .name(format!("sweep-{}", run.sweep_id))
            .spawn(move || ctx.run())
            .map_err(|e| AgentError::Refused(format!("cannot start the benchmark thread: {e}")))?;
        self.job = Some(ActiveJob {
            sweep_id: run.sweep_id,
            cancel,
            thread,
        });
        Ok(())
    }

    /// Reports a sweep this agent cannot run as finished with an error.
    async fn finish_at_once(
        &mut self,
        sweep_id: &str,
        error: String,
        out: &mpsc::Sender<v1::AgentMessage>,
    ) -> Result<(), AgentError> {
        tracing::warn!(sweep = %sweep_id, %error, "cannot run sweep");
        let f = v1::SweepFinished {
            seq: 0,
            sweep_id: sweep_id.to_string(),
            ok: false,
            error,
            notes: Vec::new(),
        };
        let m = self.spool.append(msg(agent_message::Body::Finished(f)))?;
        self.ended_a_sweep = true;
        let _ = out.send(m).await;
        Ok(())
    }

    /// Cancels the running sweep and waits for its thread: the current point
    /// is abandoned at the next iteration boundary.
    async fn stop_job(&mut self) {
        if let Some(job) = self.job.take() {
            job.cancel.store(true, Ordering::Relaxed);
            let _ = tokio::task::spawn_blocking(move || job.thread.join()).await;
        }
    }
}

fn msg(body: agent_message::Body) -> v1::AgentMessage {
    v1::AgentMessage { body: Some(body) }
}

/// What the benchmark thread needs.
struct JobContext {
    sweep_id: String,
    spec: SweepSpec,
    done: HashSet<(String, usize)>,
    backend: Backend,
    hostname: String,
    cpu_name: String,
    cancel: Arc<AtomicBool>,
    events: mpsc::UnboundedSender<JobEvent>,
    spool_bytes: Arc<std::sync::atomic::AtomicU64>,
    max_spool_bytes: u64,
    /// Names the point being measured on disk while it runs.
    marker: CrashMarker,
    /// Why points were left out: they crashed the agent before.
    crashed: Vec<String>,
}

impl JobContext {
    /// Backpressure: while the spool holds more than its limit, wait for
    /// acknowledgements (or cancellation) before measuring the next point.
    fn wait_for_spool_room(&self) {
        let over = || self.spool_bytes.load(Ordering::Relaxed) > self.max_spool_bytes;
        if !over() {
            return;
        }
        tracing::warn!(
            limit_bytes = self.max_spool_bytes,
            "the spool is full (--max-spool-mb): pausing the sweep until the coordinator acknowledges results"
        );
        while over() && !self.cancel.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
        if !self.cancel.load(Ordering::Relaxed) {
            tracing::info!("the spool has room again: resuming the sweep");
        }
    }

    fn run(self) {
        let environment: v1::RunEnvironment = (&runner::environment()).into();
        let sweep_id = self.sweep_id.clone();
        let events = self.events.clone();
        let marker = self.marker.clone();
        let mut sink = |ev: RunEvent| {
            let is_point = matches!(ev, RunEvent::Point { .. });
            match &ev {
                // A point's first phase after loading: from here until its
                // result, a crash is this point's doing.
                RunEvent::Progress {
                    device_id,
                    batch_size,
                    phase: runner::Phase::Warmup | runner::Phase::Timed,
                    ..
                } => {
                    let running = RunningPoint {
                        sweep_id: sweep_id.clone(),
                        device_id: device_id.clone(),
                        batch_size: *batch_size,
                    };
                    if let Err(e) = marker.begin(&running) {
                        tracing::warn!(error = %e, "cannot mark the running point on disk");
                    }
                }
                RunEvent::Point { .. } => marker.end(),
                RunEvent::Progress { .. } => {}
            }
            let _ = events.send(match ev {
                RunEvent::Progress {
                    device_id,
                    batch_size,
                    phase,
                    done,
                    total,
                } => JobEvent::Progress(v1::SweepProgress {
                    sweep_id: sweep_id.clone(),
                    device_id,
                    batch_size: batch_size as u32,
                    phase: phase.as_str().into(),
                    points_done: done as u32,
                    points_total: total as u32,
                }),
                RunEvent::Point {
                    device,
                    model,
                    point,
                } => JobEvent::Result(v1::PointResultMsg {
                    seq: 0,
                    sweep_id: sweep_id.clone(),
                    device: Some((&device).into()),
                    model: Some((&model).into()),
                    point: Some((&point).into()),
                    environment: Some(environment.clone()),
                }),
            });
            if is_point {
                self.wait_for_spool_room();
            }
        };
        let mut errors = self.crashed.clone();
        let mut notes = Vec::new();
        match &self.backend {
            Backend::Simulated(sim) => {
                let skip = |b: usize| self.done.contains(&("cuda:0".to_string(), b));
                let out = sim.run(&self.spec, &self.hostname, &skip, &self.cancel, &mut sink);
                notes.extend(out.notes);
            }
            Backend::Real(gpu) => {
                match devices::resolve_devices(
                    self.spec.device,
                    self.spec.dtype,
                    gpu.as_ref(),
                    &SystemCuda,
                    &self.cpu_name,
                ) {
                    Err(e) => errors.push(e.to_string()),
                    Ok(resolution) => {
                        // A GPU that cannot be used fails alone: the host's
                        // sweep ends failed with its reason, after the others ran.
                        errors.extend(resolution.failed.iter().map(ToString::to_string));
                        notes.extend(resolution.notes);
                        for dev in resolution.devices {
                            let id = dev.description.id.clone();
                            let skip = |b: usize| self.done.contains(&(id.clone(), b));
                            match runner::run_device(
                                &self.spec,
                                &dev,
                                gpu.as_ref(),
                                &skip,
                                &self.cancel,
                                &mut sink,
                            ) {
                                Ok(out) => notes.extend(out.notes),
                                Err(e) => errors.push(format!("{id}: {e}")),
                            }
                            if self.cancel.load(Ordering::Relaxed) {
                                break;
                            }
                        }
                    }
                }
            }
        }
        self.marker.end();
        if self.cancel.load(Ordering::Relaxed) {
            errors.push("cancelled".to_string());
        }
        notes.dedup();
        let _ = self.events.send(JobEvent::Finished(v1::SweepFinished {
            seq: 0,
            sweep_id: self.sweep_id,
            ok: errors.is_empty(),
            error: errors.join("; "),
            notes,
        }));
    }
}

/// Exponential backoff with "full jitter" (Brooker, "Exponential Backoff And
/// Jitter", AWS Architecture Blog, 2015): a uniform delay in [0, base·2ⁿ],
/// capped, so a fleet that lost its coordinator does not return in lockstep.
#[derive(Debug)]
struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    rng: SplitMix64,
}

impl Backoff {
    fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            attempt: 0,
            rng: SplitMix64::from_entropy(),
        }
    }

    fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt += 1;
        // Never zero: a tight reconnect loop helps nobody.
        ceiling
            .mul_f64(self.rng.next_f64())
            .max(Duration::from_millis(50))
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let delays: Vec<Duration> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!(delays[0] <= Duration::from_millis(100));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
