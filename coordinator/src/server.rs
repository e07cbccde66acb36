//! The gRPC services: the agents' session, the operators' control API, the
//! standard health service and reflection, on one listener.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fleetbench_common::HostInventory;
use fleetbench_proto::v1::agent_session_server::{AgentSession, AgentSessionServer};
use fleetbench_proto::v1::control_server::{Control, ControlServer};
use fleetbench_proto::v1::{self, agent_message, coordinator_message};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Access, AgentCaller, require};
use crate::security::{ServerSecurity, tls_incoming};
use crate::sweeps::{Coordinator, SweepError, SweepView};
use fleetbench_common::names::check_host_name;

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

impl From<SweepError> for Status {
    fn from(e: SweepError) -> Status {
        match &e {
            SweepError::NotFound(_) => Status::not_found(e.to_string()),
            SweepError::Invalid(_) | SweepError::BadRequest(_) => {
                Status::invalid_argument(e.to_string())
            }
            SweepError::NoHosts(_) => Status::failed_precondition(e.to_string()),
            SweepError::Store(_)
            | SweepError::ReportsUnavailable(_)
            | SweepError::Write { .. }
            | SweepError::Encode { .. }
            | SweepError::ResultNotStored { .. } => Status::internal(e.to_string()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SessionService {
    coordinator: Arc<Coordinator>,
}

#[tonic::async_trait]
impl AgentSession for SessionService {
    type SessionStream = ReceiverStream<Result<v1::CoordinatorMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        // The gate put it there; a request without one is refused rather
        // than trusted (see auth::require).
        let caller = request
            .extensions()
            .get::<AgentCaller>()
            .cloned()
            .ok_or_else(|| Status::internal("the session was not authenticated"))?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Hello within 10 s of opening the session"))??
            .ok_or_else(|| Status::invalid_argument("the session closed before Hello"))?;
        let Some(agent_message::Body::Hello(hello)) = first.body else {
            return Err(Status::invalid_argument(
                "the first message of a session must be Hello",
            ));
        };
        let ours = self.coordinator.config.protocol_version;
        if hello.protocol_version != ours {
            tracing::warn!(%peer, agent = %hello.agent_name, theirs = hello.protocol_version, ours, "refused an agent speaking another protocol version");
            return Err(Status::failed_precondition(format!(
                "protocol version {} is not supported: this coordinator speaks version {ours}; run the same fleetbench release on agents and coordinator",
                hello.protocol_version
            )));
        }
        check_host_name(&hello.agent_name).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let name = hello.agent_name.clone();
        // A host's name is its identity: only a caller whose certificate or
        // per-host token carries it may use it.
        if let Err(why) = caller.may_be(&name) {
            tracing::warn!(agent = %name, %peer, proof = %caller.proof, "refused an agent using a name it cannot prove");
            return Err(Status::permission_denied(why));
        }
        if let Err(refused) = self.coordinator.admit_agent(&name) {
            tracing::warn!(agent = %name, %peer, max_agents = refused.max_agents, "refused an agent: at the session limit");
            return Err(Status::resource_exhausted(refused.to_string()));
        }
        let mut inventory: HostInventory = hello.inventory.map(Into::into).unwrap_or_default();
        inventory.hostname = name.clone();

        let (tx, rx) = mpsc::channel(1024);
        let coordinator = self.coordinator.clone();
        let alive_ms = coordinator.config.heartbeat_timeout.as_millis() as i64;
        let session_id = match coordinator.fleet.connect(
            &name,
            &hello.instance_id,
            &peer,
            tx.clone(),
            fleetbench_common::time::now_unix_ms(),
            alive_ms,
        ) {
            Ok(id) => id,
            Err(taken) => {
                tracing::warn!(agent = %name, %peer, holder = %taken.peer, "refused a second agent claiming a connected agent's name");
                return Err(Status::already_exists(format!(
                    "another agent named '{name}' is connected (from {}): give this one its own --name, or stop the other",
                    taken.peer
                )));
            }
        };
        // Welcome goes first on the channel, before any RunSweep the
        // registration below may queue for this agent.
        let _ = tx.send(Ok(coordinator.welcome())).await;
        // Registration (a durable write) happens on the session's own task,
        // after the response is returned: a thousand agents reconnecting at
        // once must not hold their handshakes open behind each other's commits.
        let version = hello.agent_version.clone();
        tokio::spawn(async move {
            if let Err(e) = coordinator
                .agent_registered(&name, &version, &inventory)
                .await
            {
                tracing::error!(agent = %name, error = %e, "could not register the agent; closing its session");
                let _ = tx
                    .send(Err(Status::internal(format!(
                        "could not register the agent: {e}"
                    ))))
                    .await;
                coordinator.fleet.disconnect(&name, session_id);
                return;
            }
            tracing::info!(agent = %name, %peer, gpus = inventory.gpus.len(), simulated = inventory.simulated, "agent connected");
            let timeout = coordinator.config.heartbeat_timeout;
            let why = loop {
                let msg = match tokio::time::timeout(timeout, inbound.message()).await {
                    Err(_) => break format!("no heartbeat for {timeout:?}"),
                    Ok(Err(status)) => {
                        // Tell the agent why (an oversized message, say)
                        // rather than just closing.
                        if status.message().contains("message length too large") {
                            coordinator.metrics.limit_hit("message_size");
                        }
                        let why = format!("stream error: {}", status.message());
                        let _ = tx.send(Err(status)).await;
                        break why;
                    }
                    Ok(Ok(None)) => break "session closed by the agent".to_string(),
                    Ok(Ok(Some(m))) => m,
                };
                if !coordinator.fleet.is_current(&name, session_id) {
                    break "replaced by a newer session".to_string();
                }
                match msg.body {
                    Some(agent_message::Body::Heartbeat(hb)) => {
                        coordinator.agent_seen(&name, session_id, Some(&hb))
                    }
                    Some(agent_message::Body::Progress(p)) => {
                        coordinator.agent_seen(&name, session_id, None);
                        coordinator.agent_progress(&name, session_id, &p);
                    }
                    Some(agent_message::Body::Result(r)) => {
                        coordinator.agent_seen(&name, session_id, None);
                        let arrived = std::time::Instant::now();
                        match coordinator.result_received(&name, r).await {
                            Ok(ack) => {
                                let _ = tx.send(Ok(ack_msg(ack))).await;
                                coordinator.metrics.ack_latency(arrived.elapsed());
                            }
                            Err(e) => {
                                let why = e.to_string();
                                let _ = tx.send(Err(Status::unavailable(why.clone()))).await;
                                break why;
                            }
                        }
                    }
                    Some(agent_message::Body::Finished(f)) => {
                        coordinator.agent_seen(&name, session_id, None);
                        match coordinator.sweep_finished(&name, &f).await {
                            Ok(()) => {
                                let _ = tx
                                    .send(Ok(ack_msg(v1::Ack {
                                        seq: f.seq,
                                        accepted: true,
                                        reason: String::new(),
                                    })))
                                    .await;
                            }
                            Err(e) => {
                                tracing::error!(agent = %name, error = %e, "could not record a finished sweep; the agent will resend it")
                            }
                        }
                    }
                    Some(agent_message::Body::Hello(_)) | None => {
                        tracing::warn!(agent = %name, "ignored an unexpected message on an open session");
                    }
                }
            };
            if coordinator.fleet.disconnect(&name, session_id) {
                coordinator.agent_gone(&name);
                tracing::warn!(agent = %name, %why, "agent disconnected");
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn ack_msg(ack: v1::Ack) -> v1::CoordinatorMessage {
    v1::CoordinatorMessage {
        body: Some(coordinator_message::Body::Ack(ack)),
    }
}

#[derive(Debug, Clone)]
pub struct ControlService {
    coordinator: Arc<Coordinator>,
}

impl ControlService {
    fn event(view: SweepView, message: String) -> v1::SweepEvent {
        v1::SweepEvent {
            sweep: Some(view.summary),
            hosts: view.hosts,
            message,
        }
    }
}

type WatchStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<v1::SweepEvent, Status>> + Send>>;
type ReportStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<v1::ReportChunk, Status>> + Send>>;

/// Bytes per `ReportChunk`: well under tonic's 4 MiB message limit, so a
/// client with default settings reads any report.
const REPORT_CHUNK_BYTES: usize = 1 << 20;

#[tonic::async_trait]
impl Control for ControlService {
    async fn list_agents(
        &self,
        request: Request<v1::ListAgentsRequest>,
    ) -> Result<Response<v1::ListAgentsResponse>, Status> {
        require(&request, Access::Read, "list agents")?;
        Ok(Response::new(v1::ListAgentsResponse {
            agents: self.coordinator.list_agents()?,
        }))
    }

    async fn start_sweep(
        &self,
        request: Request<v1::StartSweepRequest>,
    ) -> Result<Response<v1::StartSweepResponse>, Status> {
        require(&request, Access::Full, "start sweeps")?;
        let (sweep_id, hosts) = self.coordinator.start_sweep(request.into_inner())?;
        Ok(Response::new(v1::StartSweepResponse { sweep_id, hosts }))
    }

    type WatchSweepStream = WatchStream;

    async fn watch_sweep(
        &self,
        request: Request<v1::WatchSweepRequest>,
    ) -> Result<Response<Self::WatchSweepStream>, Status> {
        require(&request, Access::Read, "watch sweeps")?;
        let id = request.into_inner().sweep_id;
        let coordinator = self.coordinator.clone();
        let first = coordinator.view(&id)?;
        let mut changes = coordinator.subscribe();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut view = first;
            let mut refresh = tokio::time::interval(Duration::from_secs(1));
            let mut ended_since: Option<tokio::time::Instant> = None;
            loop {
                let over = view.summary.state_code() != v1::SweepState::Running;
                let reports_ready = !view.summary.reports_dir.is_empty();
                if tx.send(Ok(Self::event(view, String::new()))).await.is_err() {
                    return;
                }
                if over {
                    let since = *ended_since.get_or_insert_with(tokio::time::Instant::now);
                    // The reports are written just after the sweep ends; wait
                    // a little for them, but never forever.
                    if reports_ready || since.elapsed() > Duration::from_secs(10) {
                        return;
                    }
                }
                // At most a few pictures a second: a big fleet changes far
                // more often than anyone can read, and each picture costs a
                // pass over every host.
                tokio::time::sleep(Duration::from_millis(200)).await;
                loop {
                    tokio::select! {
                        changed = changes.recv() => match changed {
                            Ok(changed) if changed != id => continue,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                            _ => break,
                        },
                        _ = refresh.tick() => break,
                    }
                }
                view = match coordinator.view(&id) {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_sweep(
        &self,
        request: Request<v1::GetSweepRequest>,
    ) -> Result<Response<v1::SweepDetail>, Status> {
        require(&request, Access::Read, "read sweeps")?;
        let request = request.into_inner();
        let id = request.sweep_id;
        let view = self.coordinator.view(&id)?;
        let (results, next_page_token) =
            self.coordinator
                .results_page(&id, request.page_size, &request.page_token)?;
        Ok(Response::new(v1::SweepDetail {
            sweep: Some(view.summary),
            // With the first page only: a big fleet's hosts are a page's worth.
            hosts: if request.page_token.is_empty() {
                view.hosts
            } else {
                Vec::new()
            },
            results,
            next_page_token,
        }))
    }

    async fn list_sweeps(
        &self,
        request: Request<v1::ListSweepsRequest>,
    ) -> Result<Response<v1::ListSweepsResponse>, Status> {
        require(&request, Access::Read, "list sweeps")?;
        let sweeps = self.coordinator.list_sweeps(request.into_inner().limit)?;
        Ok(Response::new(v1::ListSweepsResponse { sweeps }))
    }

    async fn cancel_sweep(
        &self,
        request: Request<v1::CancelSweepRequest>,
    ) -> Result<Response<v1::CancelSweepResponse>, Status> {
        require(&request, Access::Full, "cancel sweeps")?;
        let view = self
            .coordinator
            .cancel_sweep(&request.into_inner().sweep_id)?;
        Ok(Response::new(v1::CancelSweepResponse {
            sweep: Some(view.summary),
        }))
    }

    type GetReportsStream = ReportStream;

    async fn get_reports(
        &self,
        request: Request<v1::GetReportsRequest>,
    ) -> Result<Response<Self::GetReportsStream>, Status> {
        require(&request, Access::Read, "read reports")?;
        let request = request.into_inner();
        let known = crate::reports::report_formats();
        if let Some(unknown) = request
            .formats
            .iter()
            .find(|f| !known.contains(&f.as_str()))
        {
            return Err(Status::invalid_argument(format!(
                "unknown report format '{}': use {}",
                fleetbench_common::names::clean_text(unknown, 16),
                known.join(", ")
            )));
        }
        let dir = self.coordinator.ensure_reports(&request.sweep_id)?;
        let files = crate::reports::report_files(&dir, &request.formats).map_err(|e| {
            Status::internal(format!("cannot list the reports in {}: {e}", dir.display()))
        })?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            for path in files {
                if let Err(status) = send_report_file(&path, &tx).await {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// One report file as chunks of at most [`REPORT_CHUNK_BYTES`]. Reports are
/// replaced by renames, so the open file is one whole version.
async fn send_report_file(
    path: &std::path::Path,
    tx: &mpsc::Sender<Result<v1::ReportChunk, Status>>,
) -> Result<(), Status> {
    use tokio::io::AsyncReadExt as _;
    let unreadable = |e: std::io::Error| {
        Status::internal(format!("cannot read the report {}: {e}", path.display()))
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut file = tokio::fs::File::open(path).await.map_err(unreadable)?;
    let size = file.metadata().await.map_err(unreadable)?.len();
    let mut sent = 0u64;
    loop {
        let mut data = Vec::with_capacity(REPORT_CHUNK_BYTES);
        (&mut file)
            .take(REPORT_CHUNK_BYTES as u64)
            .read_to_end(&mut data)
            .await
            .map_err(unreadable)?;
        sent += data.len() as u64;
        let last = data.is_empty() || sent >= size;
        let chunk = v1::ReportChunk {
            file_name: file_name.clone(),
            size,
            data,
            last,
        };
        if tx.send(Ok(chunk)).await.is_err() {
            // The client went away: nothing more to send.
            return Ok(());
        }
        if last {
            return Ok(());
        }
    }
}

/// Serves every service on `listener` until `shutdown` completes; also runs
/// the deadline checker.
pub async fn serve(
    coordinator: Arc<Coordinator>,
    listener: TcpListener,
    security: &ServerSecurity,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ControlServer<ControlService>>()
        .await;
    health_reporter
        .set_serving::<AgentSessionServer<SessionService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(fleetbench_proto::v1::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let ticker = {
        let coordinator = coordinator.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            let mut last_prune: Option<tokio::time::Instant> = None;
            loop {
                tick.tick().await;
                if let Err(e) = coordinator.check_deadlines() {
                    tracing::error!(error = %e, "deadline check failed");
                }
                // At start, then hourly: cheap, and the table stays bounded.
                if last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
                    last_prune = Some(tokio::time::Instant::now());
                    if let Err(e) = coordinator.prune_agents() {
                        tracing::error!(error = %e, "pruning stale agents failed");
                    }
                }
            }
        })
    };
    let max_message_bytes = coordinator.config.limits.max_message_bytes;
    // Each API's gate works out its caller (certificate roles, tokens) before
    // any handler runs; health and reflection stay open for probes.
    let session = InterceptedService::new(
        AgentSessionServer::new(SessionService {
            coordinator: coordinator.clone(),
        })
        .max_decoding_message_size(max_message_bytes),
        security.auth.agent_gate(),
    );
    let control = InterceptedService::new(
        ControlServer::new(ControlService {
            coordinator: coordinator.clone(),
        })
        .max_decoding_message_size(max_message_bytes),
        security.auth.control_gate(),
    );
    // Acks are small writes answered by small writes: without TCP_NODELAY,
    // Nagle's algorithm meets the peer's delayed ACK and each ack waits ~40 ms
    // (both incoming streams below set it).
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(session)
        .add_service(control);
    let result = match security.tls_acceptor()? {
        Some(acceptor) => {
            router
                .serve_with_incoming_shutdown(tls_incoming(listener, acceptor), shutdown)
                .await
        }
        None => {
            let incoming = TcpListenerStream::new(listener).map(|conn| {
                if let Ok(c) = &conn {
                    let _ = c.set_nodelay(true);
                }
                conn
            });
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
    };
    ticker.abort();
    result.map_err(Into::into)
}
