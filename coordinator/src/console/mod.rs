//! The web console (`fleetbench serve --http-listen ADDR`): the fleet, the
//! sweeps, a sweep's live progress and its reports, two sweeps compared, and
//! forms to start and cancel sweeps, for a browser.
//!
//! Server-rendered HTML with one small script of our own and nothing fetched
//! from elsewhere (air-gapped clusters). Live pages use Server-Sent Events:
//! the server renders a page's changing part at most twice a second per
//! connection, from the same in-memory views the gRPC API answers with, so
//! 10,000 agents never poll. Logins exchange the operator or reader token for
//! a session cookie (`session.rs`); every form carries the session's CSRF
//! token, and the server checks the role again on every change.

mod pages;
mod session;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use fleetbench_common::SweepSpec;
use fleetbench_proto::v1;
use tokio::net::TcpListener;

pub use session::Sessions;
use session::{Viewer, same_origin_form};

use crate::state::SweepState;
use crate::sweeps::{Coordinator, SweepError};

/// Sweeps per page of the history.
const SWEEPS_PAGE: usize = 50;
/// Newest sweeps the history looks through for its filters.
const SWEEPS_SCANNED: u32 = 1000;
/// The most a form body may be.
const MAX_FORM_BYTES: usize = 16 << 10;

#[derive(Clone)]
struct App {
    coordinator: Arc<Coordinator>,
    sessions: Sessions,
}

/// TLS connections as axum's listener: the handshakes run in
/// [`crate::security::tls_incoming`], one task each.
struct TlsListener {
    incoming: tokio_stream::wrappers::ReceiverStream<
        std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
    >,
    local: std::net::SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        use tokio_stream::StreamExt as _;
        loop {
            match self.incoming.next().await {
                Some(Ok(stream)) => {
                    let peer = stream.get_ref().0.peer_addr().unwrap_or(self.local);
                    return (stream, peer);
                }
                Some(Err(_)) => continue,
                // The acceptor stopped: nothing more will come.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Serves the console on `listener` (over TLS with `tls`) until `shutdown`
/// completes.
pub async fn serve(
    coordinator: Arc<Coordinator>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    sessions: Sessions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = App {
        coordinator,
        sessions,
    };
    let router = Router::new()
        .route("/", get(fleet))
        .route("/fleet/live", get(fleet_live))
        .route("/sweeps", get(sweeps).post(start_sweep))
        .route("/sweeps/{id}", get(sweep))
        .route("/sweeps/{id}/live", get(sweep_live))
        .route("/sweeps/{id}/cancel", post(cancel_sweep))
        .route("/sweeps/{id}/reports/{file}", get(report_file))
        .route("/compare", get(compare))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/console.js", get(script))
        // Browsers ask for it on every page, reports included: no icon, no error.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app);
    match tls {
        Some(acceptor) => {
            let local = listener.local_addr()?;
            let incoming = crate::security::tls_incoming(listener, acceptor);
            axum::serve(TlsListener { incoming, local }, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

/// Headers on every answer: no framing by other sites, no sniffing, a
/// content policy that allows only this console's own script and inline
/// style, and referrers only to itself (`no-referrer` would make browsers
/// send `Origin: null` with the console's own forms, which the CSRF check
/// refuses).
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// The page for an error, with its status.
fn error_page(status: StatusCode, viewer: Option<&Viewer>, message: &str) -> Response {
    (
        status,
        Html(pages::page(
            "error",
            viewer,
            &format!("<p class=\"bad\" id=\"error\">{}</p>", pages::esc(message)),
        )),
    )
        .into_response()
}

fn sweep_error(e: SweepError, viewer: &Viewer) -> Response {
    let status = match e {
        SweepError::NotFound(_) => StatusCode::NOT_FOUND,
        SweepError::Invalid(_) | SweepError::BadRequest(_) | SweepError::NoHosts(_) => {
            StatusCode::BAD_REQUEST
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error_page(status, Some(viewer), &e.to_string())
}

/// The answer that sends a browser without a session to the login form.
fn to_login() -> Response {
    Redirect::to("/login").into_response()
}

/// `key=value&...` (a query or a form body), percent-decoded.
fn form_fields(raw: &str) -> Vec<(String, String)> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push(hi * 16 + lo);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                },
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// An id from a URL: the coordinator's ids are `[A-Za-z0-9-]`.
fn checked_id(id: &str) -> Option<&str> {
    (!id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .then_some(id)
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        pages::SCRIPT,
    )
}

// ------------------------------------------------------------------ login

async fn login_form(State(app): State<App>, headers: HeaderMap) -> Response {
    if !app.sessions.needs_login() || app.sessions.viewer(&headers).is_some() {
        return Redirect::to("/").into_response();
    }
    Html(pages::page(
        "log in",
        None,
        "<h1>Log in</h1><form method=\"post\" action=\"/login\" id=\"login\">\
         <label>operator or reader token <input type=\"password\" name=\"token\" autocomplete=\"off\" size=\"48\" autofocus></label>\
         <button>Log in</button></form><p class=\"muted\">The token the coordinator was started with \
         (<code>--operator-token-file</code> for full control, <code>--reader-token-file</code> to look only).</p>",
    ))
    .into_response()
}

async fn login(State(app): State<App>, body: String) -> Response {
    if body.len() > MAX_FORM_BYTES {
        return error_page(StatusCode::PAYLOAD_TOO_LARGE, None, "the form is too large");
    }
    let fields = form_fields(&body);
    match app.sessions.access_of(field(&fields, "token")) {
        Some(access) => {
            let cookie = app.sessions.start(access);
            let mut response = Redirect::to("/").into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, v);
            }
            response
        }
        None => {
            // Slows guessing; tokens are long enough that it cannot succeed anyway.
            tokio::time::sleep(Duration::from_millis(300)).await;
            tracing::warn!("console login refused: wrong token");
            error_page(
                StatusCode::UNAUTHORIZED,
                None,
                "that is neither the operator token nor the reader token: paste the contents of the file given to --operator-token-file or --reader-token-file",
            )
        }
    }
}

async fn logout(State(app): State<App>, headers: HeaderMap, body: String) -> Response {
    let Some(viewer) = app.sessions.viewer(&headers) else {
        return Redirect::to("/login").into_response();
    };
    if !same_origin_form(&headers, &viewer, field(&form_fields(&body), "csrf")) {
        return error_page(
            StatusCode::FORBIDDEN,
            Some(&viewer),
            "this form did not come from this console's page",
        );
    }
    let cookie = app.sessions.end(&headers);
    let mut response = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

// ------------------------------------------------------------------ fleet

fn page_number(query: Option<&str>) -> usize {
    form_fields(query.unwrap_or(""))
        .iter()
        .find(|(k, _)| k == "page")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

async fn fleet(State(app): State<App>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let Some(viewer) = app.sessions.viewer(&headers) else {
        return to_login();
    };
    let page_no = page_number(query.as_deref());
    let agents = match app.coordinator.list_agents() {
        Ok(a) => a,
        Err(e) => return sweep_error(e, &viewer),
    };
    let body = format!(
        "<h1>Fleet</h1><div data-live=\"/fleet/live?page={page_no}\">{}</div>{}",
        pages::fleet_fragment(
            &agents,
            &current_points(&app.coordinator, &agents, page_no),
            page_no
        ),
        pages::start_form(&viewer)
    );
    Html(pages::page("fleet", Some(&viewer), &body)).into_response()
}

/// Every 2 s, the fleet table again (agents come and go without a sweep
/// event, so this one refreshes on a timer).
async fn fleet_live(
    State(app): State<App>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if app.sessions.viewer(&headers).is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let page_no = page_number(query.as_deref());
    let stream = async_stream_fleet(app.coordinator.clone(), page_no);
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The point each busy agent of one fleet page is at, from the views of the
/// sweeps running on that page (one view per sweep, not per agent).
fn current_points(
    coordinator: &Coordinator,
    agents: &[v1::AgentSummary],
    page_no: usize,
) -> pages::CurrentPoints {
    let mut sweeps: Vec<&str> = agents
        .iter()
        .skip(page_no * pages::FLEET_PAGE)
        .take(pages::FLEET_PAGE)
        .map(|a| a.active_sweep_id.as_str())
        .filter(|id| !id.is_empty())
        .collect();
    sweeps.sort_unstable();
    sweeps.dedup();
    sweeps
        .into_iter()
        .filter_map(|id| coordinator.view(id).ok())
        .flat_map(|v| v.hosts)
        .filter(|h| !h.current.is_empty())
        .map(|h| (h.host, h.current))
        .collect()
}

/// Sends `html` as an `update` event unless it is what the browser has
/// already; false when the browser has gone.
async fn send_if_changed(
    tx: &tokio::sync::mpsc::Sender<Result<Event, Infallible>>,
    last: &mut String,
    html: String,
) -> bool {
    if html == *last {
        return true;
    }
    let sent = tx
        .send(Ok(Event::default().event("update").data(&html)))
        .await
        .is_ok();
    *last = html;
    sent
}

fn async_stream_fleet(
    coordinator: Arc<Coordinator>,
    page_no: usize,
) -> impl tokio_stream::Stream<Item = Result<Event, Infallible>> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        let mut last = String::new();
        loop {
            tick.tick().await;
            let Ok(agents) = coordinator.list_agents() else {
                return;
            };
            let current = current_points(&coordinator, &agents, page_no);
            let html = pages::fleet_fragment(&agents, &current, page_no);
            if !send_if_changed(&tx, &mut last, html).await {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

// ------------------------------------------------------------------ sweeps

async fn sweeps(State(app): State<App>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let Some(viewer) = app.sessions.viewer(&headers) else {
        return to_login();
    };
    let q = form_fields(query.as_deref().unwrap_or(""));
    let (state_filter, model_filter, gpu_filter) = (
        field(&q, "state").to_string(),
        field(&q, "model").to_lowercase(),
        field(&q, "gpu").to_lowercase(),
    );
    let page_no: usize = field(&q, "page").parse().unwrap_or(0);
    let all = match app.coordinator.list_sweeps(SWEEPS_SCANNED) {
        Ok(s) => s,
        Err(e) => return sweep_error(e, &viewer),
    };
    let with_gpu = if gpu_filter.is_empty() {
        None
    } else {
        match app.coordinator.sweeps_with_gpu(&gpu_filter) {
            Ok(ids) => Some(ids),
            Err(e) => return sweep_error(e, &viewer),
        }
    };
    let matching: Vec<&v1::SweepSummary> = all
        .iter()
        .filter(|s| state_filter.is_empty() || s.state == state_filter)
        .filter(|s| {
            model_filter.is_empty()
                || s.spec
                    .as_ref()
                    .is_some_and(|spec| spec.model.to_lowercase().contains(&model_filter))
        })
        .filter(|s| {
            with_gpu
                .as_ref()
                .is_none_or(|ids| ids.contains(&s.sweep_id))
        })
        .collect();
    let mut rows = String::new();
    for s in matching
        .iter()
        .skip(page_no * SWEEPS_PAGE)
        .take(SWEEPS_PAGE)
    {
        let duration = if s.ended_unix_ms > 0 {
            format!(
                "{:.0} s",
                (s.ended_unix_ms - s.created_unix_ms) as f64 / 1000.0
            )
        } else {
            "running".into()
        };
        rows.push_str(&format!(
            "<tr><td><a href=\"/sweeps/{}\">{}</a></td><td>{}</td><td>{}</td><td class=\"num\">{}/{}</td><td>{duration}</td><td>{}</td></tr>",
            pages::url_part(&s.sweep_id),
            pages::esc(&s.sweep_id),
            pages::esc(&s.state),
            pages::spec_line(s.spec.as_ref()),
            s.hosts_done,
            s.hosts,
            best_by_group(s)
        ));
    }
    let states = ["", "running", "completed", "partial", "failed", "cancelled"]
        .iter()
        .map(|st| {
            format!(
                "<option value=\"{st}\"{}>{}</option>",
                if *st == state_filter { " selected" } else { "" },
                if st.is_empty() { "any state" } else { st }
            )
        })
        .collect::<String>();
    let more = if matching.len() > (page_no + 1) * SWEEPS_PAGE {
        format!(
            "<p><a href=\"/sweeps?state={}&amp;model={}&amp;gpu={}&amp;page={}\">older</a></p>",
            pages::url_part(&state_filter),
            pages::url_part(&model_filter),
            pages::url_part(&gpu_filter),
            page_no + 1
        )
    } else {
        String::new()
    };
    let body = format!(
        "<h1>Sweeps</h1><form method=\"get\" action=\"/sweeps\" id=\"filters\">\
         <select name=\"state\">{states}</select> <input name=\"model\" placeholder=\"model\" value=\"{}\"> \
         <input name=\"gpu\" placeholder=\"GPU model\" value=\"{}\"> <button>Filter</button></form>\
         <p>{} sweeps</p><table id=\"sweeps\"><thead><tr><th>sweep</th><th>state</th><th>spec</th><th>hosts done</th>\
         <th>duration</th><th>best samples/s per hardware group</th></tr></thead><tbody>{rows}</tbody></table>{more}{}",
        pages::esc(&model_filter),
        pages::esc(&gpu_filter),
        matching.len(),
        pages::start_form(&viewer)
    );
    Html(pages::page("sweeps", Some(&viewer), &body)).into_response()
}

/// From the sweep's fleet report (`fleet.json`): each hardware group's best
/// throughput, or nothing while it has none.
fn best_by_group(s: &v1::SweepSummary) -> String {
    if s.reports_dir.is_empty() {
        return String::new();
    }
    let path = std::path::Path::new(&s.reports_dir).join("fleet.json");
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let Ok(report) = serde_json::from_str::<serde_json::Value>(&text) else {
        return String::new();
    };
    report["groups"]
        .as_array()
        .map(|groups| {
            groups
                .iter()
                .filter_map(|g| {
                    let name = g["hardware"].as_str()?;
                    let best = g["median_best_throughput"].as_f64()?;
                    let simulated = g["simulated_devices"].as_u64().unwrap_or(0) > 0;
                    Some(format!(
                        "{}{} {:.1}",
                        pages::esc(name),
                        if simulated { " (simulated)" } else { "" },
                        best
                    ))
                })
                .collect::<Vec<_>>()
                .join(" · ")
        })
        .unwrap_or_default()
}

async fn sweep(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let Some(viewer) = app.sessions.viewer(&headers) else {
        return to_login();
    };
    let Some(id) = checked_id(&id) else {
        return error_page(StatusCode::BAD_REQUEST, Some(&viewer), "not a sweep id");
    };
    let view = match app.coordinator.view(id) {
        Ok(v) => v,
        Err(e) => return sweep_error(e, &viewer),
    };
    let running = view.summary.state_code() == v1::SweepState::Running;
    let mut body = format!(
        "<h1>Sweep {}</h1><p>{}</p>",
        pages::esc(id),
        pages::spec_line(view.summary.spec.as_ref())
    );
    if running {
        body.push_str(&format!(
            "<div data-live=\"/sweeps/{}/live\" data-reload=\"1\">{}</div>",
            pages::url_part(id),
            pages::sweep_fragment(&view.summary, &view.hosts)
        ));
        if viewer.may_change() {
            body.push_str(&format!(
                "<form method=\"post\" action=\"/sweeps/{}/cancel\" id=\"cancel-sweep\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>Cancel this sweep</button></form>",
                pages::url_part(id),
                pages::esc(&viewer.csrf)
            ));
        }
    } else {
        body.push_str(&pages::sweep_fragment(&view.summary, &view.hosts));
        match app.coordinator.ensure_reports(id) {
            Ok(dir) => {
                let files = crate::reports::report_files(&dir, &[]).unwrap_or_default();
                let names: Vec<String> = files
                    .iter()
                    .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect();
                let link = |n: &str| {
                    format!(
                        "<a href=\"/sweeps/{}/reports/{}\">{}</a>",
                        pages::url_part(id),
                        pages::url_part(n),
                        pages::esc(n)
                    )
                };
                body.push_str("<h2>Reports</h2><p id=\"report-links\">");
                body.push_str(
                    &names
                        .iter()
                        .map(|n| link(n))
                        .collect::<Vec<_>>()
                        .join(" · "),
                );
                body.push_str("</p>");
                if names.iter().any(|n| n == "fleet.html") {
                    body.push_str(&format!(
                        "<p><a id=\"fleet-report\" href=\"/sweeps/{}/reports/fleet.html\">Open the fleet report</a> \
                         (charts, groups, outliers, changes since the previous sweep)</p>",
                        pages::url_part(id)
                    ));
                }
            }
            Err(e) => body.push_str(&format!(
                "<p class=\"bad\">{}</p>",
                pages::esc(&e.to_string())
            )),
        }
    }
    Html(pages::page(&format!("sweep {id}"), Some(&viewer), &body)).into_response()
}

/// The sweep's progress on every change, at most twice a second; `end`
/// when it is over (the page then reloads into its ended form).
async fn sweep_live(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if app.sessions.viewer(&headers).is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Some(id) = checked_id(&id).map(str::to_string) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let coordinator = app.coordinator.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(2);
    tokio::spawn(async move {
        let mut changes = coordinator.subscribe();
        let mut last = String::new();
        loop {
            let Ok(view) = coordinator.view(&id) else {
                return;
            };
            let html = pages::sweep_fragment(&view.summary, &view.hosts);
            if !send_if_changed(&tx, &mut last, html).await {
                return;
            }
            if view.summary.state_code() != v1::SweepState::Running {
                let _ = tx
                    .send(Ok(Event::default().event("end").data("ended")))
                    .await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            // The next change of this sweep, or a second at most.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                loop {
                    match changes.recv().await {
                        Ok(changed) if changed != id => continue,
                        _ => break,
                    }
                }
            })
            .await;
        }
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The refusal of a state-changing form that is too large, did not come
/// from this console's own page, or comes from a read-only session.
fn refuse_change(
    headers: &HeaderMap,
    viewer: &Viewer,
    body: &str,
    fields: &[(String, String)],
    what: &str,
) -> Option<Response> {
    if body.len() > MAX_FORM_BYTES || !same_origin_form(headers, viewer, field(fields, "csrf")) {
        return Some(error_page(
            StatusCode::FORBIDDEN,
            Some(viewer),
            "this form did not come from this console's page: reload it and try again",
        ));
    }
    if !viewer.may_change() {
        return Some(error_page(
            StatusCode::FORBIDDEN,
            Some(viewer),
            &format!("{what} needs the operator token; this session has the reader's"),
        ));
    }
    None
}

async fn start_sweep(State(app): State<App>, headers: HeaderMap, body: String) -> Response {
    let Some(viewer) = app.sessions.viewer(&headers) else {
        return to_login();
    };
    let fields = form_fields(&body);
    if let Some(refused) = refuse_change(&headers, &viewer, &body, &fields, "starting sweeps") {
        return refused;
    }
    let mut spec = SweepSpec::default();
    let parsed = (|| -> Result<(), String> {
        let sizes = field(&fields, "batch_sizes");
        if !sizes.trim().is_empty() {
            spec.batch_sizes = sizes
                .split(',')
                .map(|b| {
                    b.trim()
                        .parse::<usize>()
                        .map_err(|_| format!("batch size '{}' is not a whole number", b.trim()))
                })
                .collect::<Result<_, _>>()?;
        }
        let iterations = field(&fields, "iterations").trim();
        if !iterations.is_empty() {
            spec.iterations = iterations
                .parse()
                .map_err(|_| format!("iterations '{iterations}' is not a whole number"))?;
        }
        let dtype = field(&fields, "dtype").trim();
        if !dtype.is_empty() {
            spec.dtype = dtype
                .parse()
                .map_err(|e: fleetbench_common::SpecError| e.to_string())?;
        }
        spec.validate().map_err(|e| e.to_string())
    })();
    if let Err(e) = parsed {
        return error_page(StatusCode::BAD_REQUEST, Some(&viewer), &e);
    }
    let hosts: Vec<String> = field(&fields, "hosts")
        .split(',')
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .collect();
    let request = v1::StartSweepRequest {
        spec: Some((&spec).into()),
        hosts,
        gpu_model: field(&fields, "gpu_model").trim().to_string(),
        deadline_seconds: 0,
        baseline: String::new(),
    };
    match app.coordinator.start_sweep(request) {
        Ok((id, _)) => {
            tracing::info!(sweep = %id, "sweep started from the web console");
            Redirect::to(&format!("/sweeps/{}", pages::url_part(&id))).into_response()
        }
        Err(e) => sweep_error(e, &viewer),
    }
}

async fn cancel_sweep(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: String,
) -> Response {
    let Some(viewer) = app.sessions.viewer(&headers) else {
        return to_login();
    };
    if let Some(refused) = refuse_change(
        &headers,
        &viewer,
        &body,
        &form_fields(&body),
        "cancelling sweeps",
    ) {
        return refused;
    }
    let Some(id) = checked_id(&id) else {
        return error_page(StatusCode::BAD_REQUEST, Some(&viewer), "not a sweep id");
    };
    match app.coordinator.cancel_sweep(id) {
        Ok(_) => Redirect::to(&format!("/sweeps/{}", pages::url_part(id))).into_response(),
        Err(e) => sweep_error(e, &viewer),
    }
}

async fn report_file(
    State(app): State<App>,
    headers: HeaderMap,
    Path((id, file)): Path<(String, String)>,
) -> Response {
    let Some(viewer) = app.sessions.viewer(&headers) else {
        return to_login();
    };
    let Some(id) = checked_id(&id) else {
        return error_page(StatusCode::BAD_REQUEST, Some(&viewer), "not a sweep id");
    };
    let dir = match app.coordinator.ensure_reports(id) {
        Ok(d) => d,
        Err(e) => return sweep_error(e, &viewer),
    };
    // Only a name the directory listing itself gives: no path from the URL
    // ever reaches the file system.
    let files = crate::reports::report_files(&dir, &[]).unwrap_or_default();
    let Some(path) = files
        .iter()
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == file))
    else {
        return error_page(
            StatusCode::NOT_FOUND,
            Some(&viewer),
            "no such report in this sweep",
        );
    };
    let Ok(bytes) = tokio::fs::read(path).await else {
        return error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(&viewer),
            "the report cannot be read",
        );
    };
    let (content_type, disposition) = match path.extension().and_then(|e| e.to_str()) {
        Some("html") => ("text/html; charset=utf-8", "inline"),
        Some("md") => ("text/markdown; charset=utf-8", "attachment"),
        Some("json") => ("application/json", "attachment"),
        Some("csv") => ("text/csv; charset=utf-8", "attachment"),
        _ => ("application/octet-stream", "attachment"),
    };
    let mut response = (StatusCode::OK, bytes).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{disposition}; filename=\"{}\"",
        pages::url_part(&file)
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    response
}

async fn compare(
    State(app): State<App>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(viewer) = app.sessions.viewer(&headers) else {
        return to_login();
    };
    let q = form_fields(query.as_deref().unwrap_or(""));
    let (before, after) = (field(&q, "before").trim(), field(&q, "after").trim());
    let ended: Vec<v1::SweepSummary> = app
        .coordinator
        .list_sweeps(200)
        .unwrap_or_default()
        .into_iter()
        .filter(|s| SweepState::from_wire(s).is_ok_and(|st| st != SweepState::Running))
        .collect();
    let options = |selected: &str| {
        ended
            .iter()
            .map(|s| {
                format!(
                    "<option value=\"{}\"{}>{}</option>",
                    pages::esc(&s.sweep_id),
                    if s.sweep_id == selected {
                        " selected"
                    } else {
                        ""
                    },
                    pages::esc(&s.sweep_id)
                )
            })
            .collect::<String>()
    };
    let mut body = format!(
        "<h1>Compare two sweeps</h1><form method=\"get\" action=\"/compare\" id=\"compare-form\">\
         <label>before <select name=\"before\">{}</select></label> <label>after <select name=\"after\">{}</select></label> \
         <button>Compare</button></form>",
        options(before),
        options(after)
    );
    if let (Some(before), Some(after)) = (checked_id(before), checked_id(after)) {
        match app.coordinator.compare_sweeps(before, after) {
            Ok(c) => {
                // Simulated hosts are labelled here as everywhere.
                let simulated: std::collections::HashSet<String> = [before, after]
                    .iter()
                    .filter_map(|id| app.coordinator.view(id).ok())
                    .flat_map(|v| v.hosts)
                    .filter(|h| h.simulated)
                    .map(|h| h.host)
                    .collect();
                let mut rows = String::new();
                for p in &c.points {
                    let class = match p.verdict {
                        fleetbench_report::compare::Verdict::Regression => "bad",
                        fleetbench_report::compare::Verdict::Improvement => "good",
                        _ => "muted",
                    };
                    rows.push_str(&format!(
                        "<tr><td>{}{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{:.2}</td><td class=\"num\">{:.2}</td>\
                         <td class=\"num\">{:+.1}%</td><td class=\"num\">{}</td><td class=\"{class}\">{}</td></tr>",
                        pages::esc(&p.host),
                        if simulated.contains(&p.host) {
                            " <span class=\"sim\">SIMULATED</span>"
                        } else {
                            ""
                        },
                        pages::esc(&p.device_id),
                        p.batch_size,
                        p.throughput_a,
                        p.throughput_b,
                        100.0 * p.change,
                        p.p_value.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into()),
                        p.verdict.as_str()
                    ));
                }
                body.push_str(&format!(
                    "<p id=\"compare-summary\">{} regressions beyond noise in {} points (Welch's t-test, p &lt; 0.01 and more than 2%)</p>\
                     <table id=\"comparison\"><thead><tr><th>host</th><th>device</th><th>batch</th><th>before samples/s</th>\
                     <th>after samples/s</th><th>change</th><th>p</th><th>verdict</th></tr></thead><tbody>{rows}</tbody></table>",
                    c.regressions(),
                    c.points.len()
                ));
            }
            Err(e) => body.push_str(&format!(
                "<p class=\"bad\">{}</p>",
                pages::esc(&e.to_string())
            )),
        }
    }
    Html(pages::page("compare", Some(&viewer), &body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fleet page of a 10,000-agent fleet (each with 8 GPUs, from a real
    /// store) is read and rendered within the stated 2 s (about 0.2 s
    /// measured on the 2-core development VM in a release build); only one
    /// page of 200 rows goes to the browser.
    #[test]
    fn a_fleet_of_10000_agents_renders_its_page_in_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store =
                crate::store::Store::open(&dir.path().join("fleetbench.db")).expect("store");
            let gpu = fleetbench_common::GpuInfo {
                name: "NVIDIA H100 80GB HBM3".into(),
                driver_version: "580.95.05".into(),
                ..fleetbench_common::GpuInfo::default()
            };
            for i in 0..10_000 {
                let inventory = fleetbench_common::HostInventory {
                    hostname: format!("gpu-{i:05}"),
                    gpus: vec![gpu.clone(); 8],
                    simulated: true,
                    ..fleetbench_common::HostInventory::default()
                };
                let json = serde_json::to_string(&inventory).expect("json");
                store
                    .upsert_agent(&format!("gpu-{i:05}"), "0.1.0", &json, true, 1)
                    .expect("agent");
            }
        }
        let coordinator = Coordinator::open(crate::sweeps::CoordinatorConfig::new(
            dir.path().to_path_buf(),
        ))
        .expect("open");
        let start = std::time::Instant::now();
        let agents = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("runtime")
            .block_on(async { coordinator.list_agents() })
            .expect("agents");
        let html = pages::fleet_fragment(&agents, &pages::CurrentPoints::new(), 3);
        let took = start.elapsed();
        eprintln!(
            "10,000 agents: fleet page in {took:?}, {} bytes",
            html.len()
        );
        assert_eq!(agents.len(), 10_000);
        assert!(html.contains("<strong>10000</strong> agents") && html.contains("page 4 of 50"));
        assert!(html.contains("gpu-00600") && !html.contains("gpu-00800"));
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }

    #[test]
    fn forms_decode_and_ids_are_checked() {
        let f = form_fields("batch_sizes=8%2C16&hosts=a+b&csrf=x%ZZ&empty");
        assert_eq!(field(&f, "batch_sizes"), "8,16");
        assert_eq!(field(&f, "hosts"), "a b");
        assert_eq!(field(&f, "csrf"), "x%ZZ");
        assert_eq!(field(&f, "empty"), "");
        assert_eq!(field(&f, "missing"), "");
        assert_eq!(
            checked_id("20261130-024720-a84c"),
            Some("20261130-024720-a84c")
        );
        for bad in ["", "../x", "a/b", "a%2F", "<script>"] {
            assert_eq!(checked_id(bad), None, "{bad}");
        }
        assert_eq!(
            pages::esc("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }
}
