//! The operator's client commands: `agents`, `sweep`, `sweeps`, `show`,
//! `cancel`, each a call to the control API, with tables for people.

use std::io::IsTerminal as _;

use fleetbench_common::SweepSpec;
use fleetbench_proto::security::{
    BearerAuth, ClientTls, SecurityError, Side, Token, explain_tls_failure,
};
use fleetbench_proto::v1;
use fleetbench_proto::v1::control_client::ControlClient;
use thiserror::Error;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::state::SweepState;

#[derive(Debug, Error)]
pub enum OperatorError {
    #[error(transparent)]
    Settings(#[from] SecurityError),
    #[error(
        "cannot reach the coordinator at {url}: {why} (is `fleetbench serve` running? set --coordinator or FLEETBENCH_COORDINATOR)"
    )]
    Unreachable { url: String, why: String },
    #[error("TLS with the coordinator at {url} failed: {why}")]
    Tls { url: String, why: String },
    #[error("{}", rpc_message(.0))]
    Rpc(tonic::Status),
    /// The coordinator's answer is not a report this client will write.
    #[error("refused a report from the coordinator: {0}")]
    BadReport(String),
    #[error("cannot write the report {path}: {source} (is --out a writable directory?)")]
    WriteReport {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<tonic::Status> for OperatorError {
    fn from(status: tonic::Status) -> Self {
        OperatorError::Rpc(status)
    }
}

/// The coordinator's own words for refusals; for a connection broken by TLS,
/// what to fix.
fn rpc_message(status: &tonic::Status) -> String {
    if let Some(why) = explain_tls_failure(status, Side::Client) {
        return format!("TLS with the coordinator failed: {why}");
    }
    if error_chain(status).contains("frame with invalid size") {
        return "the coordinator answered with something that is not plain HTTP/2: if it serves TLS, use https:// and --tls-ca".into();
    }
    match status.code() {
        tonic::Code::Cancelled | tonic::Code::Unavailable | tonic::Code::Unknown => format!(
            "the connection to the coordinator broke ({}): if it serves TLS, use an https:// URL and --tls-ca; if it requires client certificates (mutual TLS), give --tls-cert and --tls-key signed by its --client-ca",
            status.message()
        ),
        _ => status.message().to_string(),
    }
}

/// Which coordinator an operator command talks to, and how it proves who
/// it is.
#[derive(Debug, Clone, Default)]
pub struct ControlTarget {
    pub url: String,
    pub tls: ClientTls,
    pub token: Option<Token>,
}

impl ControlTarget {
    /// A plain, unauthenticated target (the demo's own loopback coordinator).
    pub fn plain(url: impl Into<String>) -> ControlTarget {
        ControlTarget {
            url: url.into(),
            ..ControlTarget::default()
        }
    }
}

pub type OperatorClient = ControlClient<InterceptedService<Channel, BearerAuth>>;

/// Largest answer the operator's commands accept: a big fleet's host list
/// (one `WatchSweep` event, the first `GetSweep` page) passes tonic's 4 MB
/// default; results come in pages well under it.
const MAX_ANSWER_BYTES: usize = 64 << 20;

pub async fn connect(target: &ControlTarget) -> Result<OperatorClient, OperatorError> {
    Ok(ControlClient::with_interceptor(
        channel(target).await?,
        BearerAuth::new(target.token.as_ref()),
    )
    .max_decoding_message_size(MAX_ANSWER_BYTES))
}

async fn channel(target: &ControlTarget) -> Result<Channel, OperatorError> {
    let endpoint = target.tls.endpoint(&target.url)?;
    let channel = endpoint.connect().await.map_err(|e| {
        let url = target.url.clone();
        match target.tls.explain(&url, &e) {
            Some((why, _)) => OperatorError::Tls { url, why },
            None => OperatorError::Unreachable {
                url,
                why: error_chain(&e),
            },
        }
    })?;
    Ok(channel)
}

/// "outer: inner: innermost", as one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut next = e.source();
    while let Some(inner) = next {
        let text = inner.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = inner.source();
    }
    parts.join(": ")
}

fn ago(ms: i64) -> String {
    let secs = (fleetbench_common::time::now_unix_ms() - ms).max(0) / 1000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        _ => format!("{}h ago", secs / 3600),
    }
}

/// Left-aligned plain-text table with a header row.
fn print_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let all: Vec<Vec<String>> = std::iter::once(headers.iter().map(|h| h.to_string()).collect())
        .chain(rows.iter().cloned())
        .collect();
    fleetbench_report::text_table(&all, &[])
}

pub async fn agents(target: &ControlTarget) -> Result<String, OperatorError> {
    let mut client = connect(target).await?;
    let agents = client
        .list_agents(v1::ListAgentsRequest {})
        .await?
        .into_inner()
        .agents;
    if agents.is_empty() {
        return Ok("no agents have registered yet: start `fleetbench-agent run --coordinator URL` on your hosts\n".into());
    }
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            let inv = a.inventory.clone().unwrap_or_default();
            let gpus = if inv.gpus.is_empty() {
                "-".to_string()
            } else {
                let mut names: Vec<String> = inv.gpus.iter().map(|g| g.name.clone()).collect();
                names.dedup();
                format!("{}x {}", inv.gpus.len(), names.join(", "))
            };
            vec![
                if inv.simulated {
                    format!("{} (simulated)", a.name)
                } else {
                    a.name.clone()
                },
                if a.connected {
                    "connected".into()
                } else {
                    "lost".into()
                },
                gpus,
                format!("{} ({} cores)", inv.cpu_model, inv.cpu_logical_cores),
                a.agent_version.clone(),
                ago(a.last_seen_unix_ms),
                if a.active_sweep_id.is_empty() {
                    "-".into()
                } else {
                    a.active_sweep_id.clone()
                },
            ]
        })
        .collect();
    Ok(print_table(
        &[
            "AGENT",
            "STATE",
            "GPUS",
            "CPU",
            "VERSION",
            "LAST SEEN",
            "SWEEP",
        ],
        &rows,
    ))
}

/// What `fleetbench sweep` asks for.
#[derive(Debug, Clone)]
pub struct SweepRequest {
    pub spec: SweepSpec,
    pub hosts: Vec<String>,
    pub gpu_model: Option<String>,
    pub deadline_seconds: u32,
    pub baseline: Option<String>,
}

pub async fn start_sweep(
    target: &ControlTarget,
    req: &SweepRequest,
) -> Result<v1::StartSweepResponse, OperatorError> {
    let mut client = connect(target).await?;
    let request = v1::StartSweepRequest {
        spec: Some((&req.spec).into()),
        hosts: req.hosts.clone(),
        gpu_model: req.gpu_model.clone().unwrap_or_default(),
        deadline_seconds: req.deadline_seconds,
        baseline: req.baseline.clone().unwrap_or_default(),
    };
    Ok(client.start_sweep(request).await?.into_inner())
}

fn host_rows(hosts: &[v1::HostStatus]) -> Vec<Vec<String>> {
    hosts
        .iter()
        .map(|h| {
            vec![
                if h.simulated {
                    format!("{} (simulated)", h.host)
                } else {
                    h.host.clone()
                },
                h.state.clone(),
                format!("{}/{}", h.points_done, h.points_total),
                if !h.error.is_empty() {
                    h.error.clone()
                } else {
                    h.current.clone()
                },
            ]
        })
        .collect()
}

/// Follows a sweep until it ends, redrawing a table of every host (in place
/// on a terminal, one line per change otherwise). Returns the final event.
pub async fn watch(
    target: &ControlTarget,
    sweep_id: &str,
    out: &mut dyn std::io::Write,
) -> Result<v1::SweepEvent, OperatorError> {
    let mut client = connect(target).await?;
    let mut stream = client
        .watch_sweep(v1::WatchSweepRequest {
            sweep_id: sweep_id.to_string(),
        })
        .await?
        .into_inner();
    let tty = std::io::stdout().is_terminal();
    let mut drawn_lines = 0usize;
    let mut last_plain: Vec<Vec<String>> = Vec::new();
    let mut last = None;
    while let Some(event) = stream.message().await? {
        let rows = host_rows(&event.hosts);
        if tty {
            let summary = event
                .sweep
                .as_ref()
                .map(|s| format!("sweep {} {}\n", s.sweep_id, s.state))
                .unwrap_or_default();
            let table = summary + &print_table(&["HOST", "STATE", "POINTS", "NOW"], &rows);
            if drawn_lines > 0 {
                let _ = write!(out, "\x1b[{drawn_lines}A\x1b[J");
            }
            let _ = write!(out, "{table}");
            drawn_lines = table.lines().count();
        } else {
            for r in &rows {
                if !last_plain.contains(r) {
                    let _ = writeln!(out, "{}", r.join("  ").trim_end());
                }
            }
            last_plain = rows;
        }
        let _ = out.flush();
        last = Some(event);
    }
    last.ok_or_else(|| {
        OperatorError::Rpc(tonic::Status::unavailable(
            "the watch ended before any event",
        ))
    })
}

pub async fn sweeps(target: &ControlTarget) -> Result<String, OperatorError> {
    let mut client = connect(target).await?;
    let sweeps = client
        .list_sweeps(v1::ListSweepsRequest { limit: 50 })
        .await?
        .into_inner()
        .sweeps;
    if sweeps.is_empty() {
        return Ok("no sweeps yet: start one with `fleetbench sweep`\n".into());
    }
    let rows: Vec<Vec<String>> = sweeps
        .iter()
        .map(|s| {
            let spec: Option<SweepSpec> = s.spec.clone().and_then(|p| p.try_into().ok());
            vec![
                s.sweep_id.clone(),
                s.state.clone(),
                fleetbench_common::time::rfc3339_from_unix_ms(s.created_unix_ms),
                format!(
                    "{}/{} done, {} failed",
                    s.hosts_done, s.hosts, s.hosts_failed
                ),
                spec.map(|sp| {
                    format!(
                        "{} {} b={}",
                        sp.model,
                        sp.dtype,
                        fleetbench_common::spec::join_batch_sizes(&sp.batch_sizes)
                    )
                })
                .unwrap_or_default(),
            ]
        })
        .collect();
    Ok(print_table(
        &["SWEEP", "STATE", "STARTED", "HOSTS", "SPEC"],
        &rows,
    ))
}

/// A sweep with all its results, page after page (see `GetSweepRequest`).
pub async fn get_sweep(
    client: &mut OperatorClient,
    sweep_id: &str,
) -> Result<v1::SweepDetail, OperatorError> {
    let mut detail = client
        .get_sweep(v1::GetSweepRequest {
            sweep_id: sweep_id.to_string(),
            ..Default::default()
        })
        .await?
        .into_inner();
    while !detail.next_page_token.is_empty() {
        let page = client
            .get_sweep(v1::GetSweepRequest {
                sweep_id: sweep_id.to_string(),
                page_token: std::mem::take(&mut detail.next_page_token),
                ..Default::default()
            })
            .await?
            .into_inner();
        detail.results.extend(page.results);
        detail.next_page_token = page.next_page_token;
    }
    Ok(detail)
}

pub async fn show(target: &ControlTarget, sweep_id: &str) -> Result<String, OperatorError> {
    let mut client = connect(target).await?;
    let d = get_sweep(&mut client, sweep_id).await?;
    let s = d.sweep.unwrap_or_default();
    let mut out = format!("sweep {} ({})\n", s.sweep_id, s.state);
    if let Some(spec) = s.spec.clone().and_then(|p| SweepSpec::try_from(p).ok()) {
        out.push_str(&format!("spec: {}\n", spec.summary()));
    }
    if !s.reports_dir.is_empty() {
        out.push_str(&format!("reports: {}\n", s.reports_dir));
    }
    out.push('\n');
    out.push_str(&print_table(
        &["HOST", "STATE", "POINTS", "NOW / ERROR"],
        &host_rows(&d.hosts),
    ));
    out.push('\n');
    let rows: Vec<Vec<String>> = d
        .results
        .iter()
        .map(|r| {
            let dev = r.device.clone().unwrap_or_default();
            let p = r.point.clone().unwrap_or_default();
            let (lat, thr) = match &p.outcome {
                Some(v1::point_result::Outcome::Measured(m)) => (
                    format!(
                        "{:.2}",
                        m.latency.as_ref().map(|l| l.mean_ms).unwrap_or(0.0)
                    ),
                    format!("{:.2}", m.throughput),
                ),
                Some(v1::point_result::Outcome::Error(e)) => ("failed".into(), e.clone()),
                None => ("-".into(), "-".into()),
            };
            vec![
                r.host.clone(),
                format!("{} {}", dev.id, dev.name),
                p.batch_size.to_string(),
                lat,
                thr,
            ]
        })
        .collect();
    out.push_str(&print_table(
        &["HOST", "DEVICE", "BATCH", "LATENCY (ms)", "SAMPLES/S"],
        &rows,
    ));
    Ok(out)
}

pub async fn cancel(target: &ControlTarget, sweep_id: &str) -> Result<String, OperatorError> {
    let mut client = connect(target).await?;
    let s = client
        .cancel_sweep(v1::CancelSweepRequest {
            sweep_id: sweep_id.to_string(),
        })
        .await?
        .into_inner()
        .sweep
        .unwrap_or_default();
    Ok(format!("sweep {} is {}\n", s.sweep_id, s.state))
}

/// Compares two sweeps from their stored results.
pub async fn compare(
    target: &ControlTarget,
    before: &str,
    after: &str,
) -> Result<fleetbench_report::compare::SweepComparison, OperatorError> {
    let mut client = connect(target).await?;
    let mut points = Vec::new();
    for id in [before, after] {
        let detail = get_sweep(&mut client, id).await?;
        points.push(device_points(&detail.results));
    }
    Ok(fleetbench_report::compare::compare(
        before, &points[0], after, &points[1],
    ))
}

/// Groups stored results by host and device; results that do not decode are skipped.
pub(crate) fn device_points(
    results: &[v1::StoredResult],
) -> Vec<fleetbench_report::compare::DevicePoints> {
    let mut out: Vec<fleetbench_report::compare::DevicePoints> = Vec::new();
    for r in results {
        let (Some(device), Some(point)) = (r.device.clone(), r.point.clone()) else {
            continue;
        };
        let (Ok(device), Ok(point)) = (
            fleetbench_common::DeviceDescription::try_from(device),
            fleetbench_common::PointResult::try_from(point),
        ) else {
            continue;
        };
        match out
            .iter_mut()
            .find(|d| d.host == r.host && d.device_id == device.id)
        {
            Some(d) => d.points.push(point),
            None => out.push(fleetbench_report::compare::DevicePoints {
                host: r.host.clone(),
                hardware: fleetbench_common::hardware::lookup_gpu_model(&device.name)
                    .map(|g| g.key.to_string())
                    .unwrap_or_else(|| device.name.clone()),
                device_id: device.id,
                points: vec![point],
            }),
        }
    }
    out
}

/// Whether the final state of a sweep should make the command fail.
pub fn sweep_failed(event: &v1::SweepEvent) -> bool {
    event.sweep.as_ref().is_none_or(|s| {
        // An unknown state (a newer coordinator) is not a success.
        SweepState::from_wire(s) != Ok(SweepState::Completed) || s.hosts_failed > 0
    })
}

/// Largest report file `fetch_reports` writes: a fleet report of 10,000
/// hosts is a few tens of MB in HTML; anything past this is refused.
const MAX_REPORT_BYTES: u64 = 512 << 20;

/// Whether a name the coordinator sent is a report file name to write in the
/// output directory: a bare name of safe characters (no separator, no `..`,
/// not hidden) with a report format's extension. The coordinator is trusted
/// for reports, not for paths.
fn is_report_file_name(name: &str) -> bool {
    let formats = crate::reports::report_formats();
    name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name
            .rsplit_once('.')
            .is_some_and(|(stem, ext)| !stem.is_empty() && formats.contains(&ext))
}

/// One report being received: written to a hidden temporary file, renamed
/// to its name when its last chunk has come, so that `--out` never holds a
/// torn report.
struct ReportDownload {
    name: String,
    size: u64,
    received: u64,
    tmp: std::path::PathBuf,
    file: std::fs::File,
}

/// `report`: every report of a sweep (of `formats`, or all) from the
/// coordinator into `out_dir`; returns the files written, fleet report first.
pub async fn fetch_reports(
    target: &ControlTarget,
    sweep_id: &str,
    formats: &[String],
    out_dir: &std::path::Path,
) -> Result<Vec<std::path::PathBuf>, OperatorError> {
    use std::io::Write as _;
    let mut stream = connect(target)
        .await?
        .get_reports(v1::GetReportsRequest {
            sweep_id: sweep_id.to_string(),
            formats: formats.to_vec(),
        })
        .await?
        .into_inner();
    let write_err = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| OperatorError::WriteReport { path, source }
    };
    std::fs::create_dir_all(out_dir).map_err(write_err(out_dir))?;
    let mut written = Vec::new();
    let mut current: Option<ReportDownload> = None;
    let result = async {
        while let Some(chunk) = stream.message().await? {
            let shown = fleetbench_common::names::clean_text(&chunk.file_name, 64);
            let download = match current.take() {
                Some(d) if d.name == chunk.file_name => d,
                Some(d) => {
                    let message = format!("'{shown}' began before '{}' ended", d.name);
                    // Kept, so that its temporary file is removed below.
                    current = Some(d);
                    return Err(OperatorError::BadReport(message));
                }
                None => {
                    if !is_report_file_name(&chunk.file_name) {
                        return Err(OperatorError::BadReport(format!(
                            "'{shown}' is not a report file name"
                        )));
                    }
                    if chunk.size > MAX_REPORT_BYTES {
                        return Err(OperatorError::BadReport(format!(
                            "'{shown}' would be {} bytes, over the {MAX_REPORT_BYTES}-byte limit",
                            chunk.size
                        )));
                    }
                    let tmp = out_dir.join(format!(".{}.part", chunk.file_name));
                    let file = std::fs::File::create(&tmp).map_err(write_err(&tmp))?;
                    ReportDownload {
                        name: chunk.file_name.clone(),
                        size: chunk.size,
                        received: 0,
                        tmp,
                        file,
                    }
                }
            };
            let mut download = download;
            download.received += chunk.data.len() as u64;
            if download.received > download.size || chunk.size != download.size {
                let name = download.name.clone();
                current = Some(download);
                return Err(OperatorError::BadReport(format!(
                    "'{name}' is longer than the size it announced"
                )));
            }
            download
                .file
                .write_all(&chunk.data)
                .map_err(write_err(&download.tmp))?;
            if chunk.last {
                if download.received != download.size {
                    let name = download.name.clone();
                    current = Some(download);
                    return Err(OperatorError::BadReport(format!(
                        "'{name}' ended short of the size it announced"
                    )));
                }
                download.file.sync_all().map_err(write_err(&download.tmp))?;
                let path = out_dir.join(&download.name);
                std::fs::rename(&download.tmp, &path).map_err(write_err(&path))?;
                written.push(path);
            } else {
                current = Some(download);
            }
        }
        match &current {
            Some(d) => Err(OperatorError::BadReport(format!(
                "the answer ended in the middle of '{}'",
                d.name
            ))),
            None if written.is_empty() => Err(OperatorError::BadReport(format!(
                "sweep '{sweep_id}' has no reports in the formats asked for"
            ))),
            None => Ok(()),
        }
    }
    .await;
    if let Err(e) = result {
        if let Some(d) = current {
            let _ = std::fs::remove_file(&d.tmp);
        }
        return Err(e);
    }
    Ok(written)
}

/// The coordinator's overall health as its gRPC health service reports it
/// (`SERVING`, `NOT_SERVING`, ...). Probes use it where Kubernetes' own gRPC
/// probe cannot (TLS).
pub async fn health(target: &ControlTarget) -> Result<String, OperatorError> {
    use tonic_health::pb::health_client::HealthClient;
    let response = HealthClient::new(channel(target).await?)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(response.into_inner().status().as_str_name().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetbench_proto::v1::control_server::{Control, ControlServer};
    use tonic::{Request, Response, Status};

    #[test]
    fn only_bare_report_names_are_written() {
        for good in ["fleet.md", "gpu-a.json", "gpu_07.cuda-0.html", "h.csv"] {
            assert!(is_report_file_name(good), "{good}");
        }
        for bad in [
            "../fleet.md",
            "a/b.md",
            "/etc/passwd.md",
            ".hidden.md",
            "fleet.exe",
            "fleet",
            ".md",
            "fleet.md\n",
            "flèet.md",
            "C:evil.md",
        ] {
            assert!(!is_report_file_name(bad), "{bad:?}");
        }
        assert!(!is_report_file_name(&format!("{}.md", "a".repeat(300))));
    }

    /// A coordinator that answers `GetReports` with whatever it is given.
    struct Scripted(Vec<v1::ReportChunk>);

    type Chunks =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<v1::ReportChunk, Status>> + Send>>;
    type Events =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<v1::SweepEvent, Status>> + Send>>;

    #[tonic::async_trait]
    impl Control for Scripted {
        async fn list_agents(
            &self,
            _: Request<v1::ListAgentsRequest>,
        ) -> Result<Response<v1::ListAgentsResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn start_sweep(
            &self,
            _: Request<v1::StartSweepRequest>,
        ) -> Result<Response<v1::StartSweepResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        type WatchSweepStream = Events;
        async fn watch_sweep(
            &self,
            _: Request<v1::WatchSweepRequest>,
        ) -> Result<Response<Events>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn get_sweep(
            &self,
            _: Request<v1::GetSweepRequest>,
        ) -> Result<Response<v1::SweepDetail>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn list_sweeps(
            &self,
            _: Request<v1::ListSweepsRequest>,
        ) -> Result<Response<v1::ListSweepsResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn cancel_sweep(
            &self,
            _: Request<v1::CancelSweepRequest>,
        ) -> Result<Response<v1::CancelSweepResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        type GetReportsStream = Chunks;
        async fn get_reports(
            &self,
            _: Request<v1::GetReportsRequest>,
        ) -> Result<Response<Chunks>, Status> {
            let chunks: Vec<Result<v1::ReportChunk, Status>> =
                self.0.iter().cloned().map(Ok).collect();
            Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
        }
    }

    /// Serves `chunks` on a loopback port and fetches them into a new
    /// directory inside `root`; returns the outcome and that directory.
    async fn fetch_from(
        root: &std::path::Path,
        chunks: Vec<v1::ReportChunk>,
    ) -> (
        Result<Vec<std::path::PathBuf>, OperatorError>,
        std::path::PathBuf,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ControlServer::new(Scripted(chunks)))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let out = root.join("out");
        let result = fetch_reports(&ControlTarget::plain(url), "s", &[], &out).await;
        (result, out)
    }

    fn chunk(name: &str, size: u64, data: &str, last: bool) -> v1::ReportChunk {
        v1::ReportChunk {
            file_name: name.into(),
            size,
            data: data.as_bytes().to_vec(),
            last,
        }
    }

    #[tokio::test]
    async fn a_hostile_coordinator_cannot_write_outside_out_or_leave_torn_files() {
        for (chunks, expected) in [
            (
                vec![chunk("../evil.md", 1, "x", true)],
                "is not a report file name",
            ),
            (
                vec![chunk("fleet.md", 2, "toolong", true)],
                "longer than the size it announced",
            ),
            (
                vec![chunk("fleet.md", 9, "short", true)],
                "ended short of the size",
            ),
            (
                vec![chunk("fleet.md", 10, "part", false)],
                "ended in the middle of 'fleet.md'",
            ),
            (
                vec![
                    chunk("fleet.md", 10, "part", false),
                    chunk("a.md", 1, "x", true),
                ],
                "'a.md' began before 'fleet.md' ended",
            ),
            (vec![chunk("fleet.md", u64::MAX, "", false)], "over the"),
            (vec![], "has no reports"),
        ] {
            let root = tempfile::tempdir().expect("tempdir");
            let (result, out) = fetch_from(root.path(), chunks).await;
            let err = result.expect_err(expected).to_string();
            assert!(err.contains(expected), "wanted '{expected}' in: {err}");
            assert!(!root.path().join("evil.md").exists());
            let left: Vec<_> = std::fs::read_dir(&out)
                .map(|d| d.map(|e| e.expect("entry").file_name()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "{expected}: left {left:?}");
        }
        let root = tempfile::tempdir().expect("tempdir");
        let (result, out) = fetch_from(
            root.path(),
            vec![
                chunk("fleet.md", 7, "# fle", false),
                chunk("fleet.md", 7, "et", true),
                chunk("gpu-a.csv", 3, "a,b", true),
            ],
        )
        .await;
        assert_eq!(result.expect("fetched").len(), 2);
        assert_eq!(
            std::fs::read_to_string(out.join("fleet.md")).expect("md"),
            "# fleet"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("gpu-a.csv")).expect("csv"),
            "a,b"
        );
    }
}
