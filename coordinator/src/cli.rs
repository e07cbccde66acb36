//! The `fleetbench` program: the coordinator server and the operator's
//! commands, their arguments and one function per command.
//!
//! It lives in the library, not in `main.rs`, so that one program can be
//! linked into more than one binary: the shipped `fleetbench`, and the
//! end-to-end test package's own copy, which Cargo builds before those tests
//! run (`tests/src/bin/`); both are one line calling [`main`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::auth::{AuthSettings, HostTokens};
#[cfg(feature = "demo")]
use crate::demo::{DemoOptions, run_demo};
use crate::operator::{self, ControlTarget, SweepRequest};
use crate::security::{ServerSecurity, ServerTlsFiles};
use crate::sweeps::{Coordinator, CoordinatorConfig, Limits};
use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use fleetbench_common::WeightsChoice;
use fleetbench_common::spec::DEFAULT_MODEL;
use fleetbench_common::sweep_args::SweepArgs;
use fleetbench_proto::security::Token;
use fleetbench_proto::tls_args::ClientTlsArgs;

#[derive(Parser, Debug)]
#[command(
    name = "fleetbench",
    // Fixed rather than taken from argv[0], so that usage and errors say
    // `fleetbench` from the end-to-end tests' copy too.
    bin_name = "fleetbench",
    version,
    about = "Benchmark transformer inference across a fleet of GPU hosts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug, Clone)]
struct Remote {
    /// The coordinator's URL (https:// when it serves TLS).
    #[arg(
        long,
        env = "FLEETBENCH_COORDINATOR",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    coordinator: String,
    #[command(flatten)]
    tls: ClientTlsArgs,
    /// File holding the operator token (or set FLEETBENCH_OPERATOR_TOKEN to the token).
    #[arg(long, value_name = "FILE", global = true)]
    operator_token_file: Option<PathBuf>,
}

impl Remote {
    fn target(&self) -> anyhow::Result<ControlTarget> {
        Ok(ControlTarget {
            url: self.coordinator.clone(),
            tls: self.tls.client_tls(),
            token: Token::load(
                self.operator_token_file.as_deref(),
                "FLEETBENCH_OPERATOR_TOKEN",
            )?,
        })
    }
}

/// `fleetbench serve`'s arguments.
#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on (loopback by default; port 0 picks a free one).
    /// Beyond loopback it needs TLS or --insecure.
    #[arg(long, env = "FLEETBENCH_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Directory for the store (fleetbench.db) and reports.
    #[arg(long, env = "FLEETBENCH_DATA", default_value = "fleetbench-data")]
    data: PathBuf,
    /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 0.0.0.0:9464).
    #[arg(long, env = "FLEETBENCH_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Serve the web console on ADDR (e.g. 127.0.0.1:8080): over TLS with
    /// the same certificates when --tls-cert is given; browsers log in with
    /// the operator or reader token (no login when neither is configured,
    /// which beyond loopback needs --no-auth).
    #[arg(long, env = "FLEETBENCH_HTTP_LISTEN", value_name = "ADDR")]
    http_listen: Option<SocketAddr>,
    /// Scrapers of /metrics must send this bearer token (file; or set
    /// FLEETBENCH_METRICS_TOKEN).
    #[arg(long, value_name = "FILE")]
    metrics_token_file: Option<PathBuf>,
    /// Most hosts with their own series in /metrics; the rest are counted
    /// in fleetbench_metrics_hosts_omitted.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    metrics_max_hosts: u64,
    /// Seconds between readings of the store for /metrics' gauges; scrapes
    /// in between are answered from the last reading.
    #[arg(long, default_value_t = 5.0)]
    metrics_refresh: f64,
    /// The coordinator's TLS certificate chain (PEM); with --tls-key, serves TLS.
    #[arg(
        long,
        env = "FLEETBENCH_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(
        long,
        env = "FLEETBENCH_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (mutual TLS).
    #[arg(
        long,
        env = "FLEETBENCH_CLIENT_CA",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    client_ca: Option<PathBuf>,
    /// File holding the token agents share (or set FLEETBENCH_AGENT_TOKEN).
    /// It admits any host name that --agent-tokens does not bind.
    #[arg(long, value_name = "FILE")]
    agent_token_file: Option<PathBuf>,
    /// Per-host agent tokens: lines of NAME SHA256HEX (`fleetbench
    /// token-hash`); each host's token may be used for that name only, and
    /// that name only with that token.
    #[arg(long, env = "FLEETBENCH_AGENT_TOKENS", value_name = "FILE")]
    agent_tokens: Option<PathBuf>,
    /// File holding the token operators must present (or set FLEETBENCH_OPERATOR_TOKEN).
    #[arg(long, value_name = "FILE")]
    operator_token_file: Option<PathBuf>,
    /// File holding a read-only operator token (or set
    /// FLEETBENCH_READER_TOKEN): list and read sweeps, never start or cancel.
    #[arg(long, value_name = "FILE")]
    reader_token_file: Option<PathBuf>,
    /// Allow listening beyond loopback without TLS (a network you trust).
    #[arg(long)]
    insecure: bool,
    /// Allow listening beyond loopback with an API that authenticates
    /// nobody (no tokens and no --client-ca for it). Logged at every start.
    #[arg(long)]
    no_auth: bool,
    /// Most agent sessions held at once; more are refused until some leave.
    #[arg(long, env = "FLEETBENCH_MAX_AGENTS", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_agents: u64,
    /// Largest gRPC message accepted, in bytes.
    #[arg(long, default_value_t = 4 << 20, value_parser = clap::value_parser!(u64).range(1024..=(256 << 20)))]
    max_message_bytes: u64,
    /// Most results stored per sweep (all hosts); more are refused with a reason.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_results_per_sweep: u64,
    /// Most results stored per host in one sweep; more are refused with a reason.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_results_per_host: u64,
    /// Seconds between agent heartbeats.
    #[arg(long, default_value_t = 5.0)]
    heartbeat_interval: f64,
    /// Forget agents not seen for this long (e.g. 30d, 12h) unless a running
    /// sweep waits for them.
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    agent_retention: Duration,
    /// Seconds a host may take for a sweep unless the sweep says otherwise.
    #[arg(long, default_value_t = 3600)]
    default_deadline: u64,
    /// Prices per GPU-hour for cost efficiency in fleet reports: JSON
    /// ({"H100-SXM": 3.5}) or lines of GPU_MODEL,PRICE.
    #[arg(long, value_name = "FILE")]
    prices: Option<PathBuf>,
    #[arg(long, hide = true, default_value_t = fleetbench_proto::PROTOCOL_VERSION)]
    protocol_version: u32,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the coordinator.
    Serve(ServeArgs),
    /// The one-command local fleet: coordinator, store and one agent in this process, one sweep, reports.
    Demo {
        #[arg(long, default_value = "fleetbench-data")]
        data: PathBuf,
        #[arg(long, default_value = DEFAULT_MODEL)]
        model: String,
        #[arg(long, default_value = "auto")]
        weights: WeightsChoice,
        /// The short CPU sweep even where a GPU exists.
        #[arg(long)]
        quick: bool,
        /// The web console's address (loopback; port 0: any free port).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
        http_listen: SocketAddr,
        /// End once the sweep is over instead of serving the console until Ctrl-C (for scripts).
        #[arg(long)]
        exit: bool,
    },
    /// List the fleet's agents, connected and lost, with their GPUs.
    Agents {
        #[command(flatten)]
        remote: Remote,
    },
    /// Start a sweep on the fleet (every connected agent unless --hosts or --gpu-model narrow it).
    Sweep {
        #[command(flatten)]
        remote: Remote,
        /// Only these agents (comma-separated names).
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
        /// Only agents with a GPU whose name contains this text.
        #[arg(long)]
        gpu_model: Option<String>,
        /// Seconds each host has before it is marked failed (0: the coordinator's default).
        #[arg(long, default_value_t = 0)]
        deadline: u32,
        /// Hardware model the fleet report's speed-ups are relative to (default: the slowest group).
        #[arg(long, value_name = "GPU_MODEL")]
        baseline: Option<String>,
        /// Follow the sweep until it ends; exit non-zero if any host failed.
        #[arg(long)]
        wait: bool,
        /// With --wait: fetch the sweep's reports into DIR when it ends.
        #[arg(long, value_name = "DIR", requires = "wait")]
        out: Option<PathBuf>,
        #[command(flatten)]
        sweep: SweepArgs,
    },
    /// Fetch every report of an ended sweep from the coordinator into DIR.
    Report {
        #[command(flatten)]
        remote: Remote,
        sweep_id: String,
        /// Where to write them (created if missing; files of the same name are replaced).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Only these formats (comma-separated: md, json, csv, html; default all).
        #[arg(long, value_delimiter = ',', value_name = "FORMATS")]
        format: Vec<String>,
    },
    /// List sweeps, newest first.
    Sweeps {
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a sweep with every host and result.
    Show {
        #[command(flatten)]
        remote: Remote,
        sweep_id: String,
    },
    /// Compare two sweeps host by host; exit 1 when a point regressed beyond noise.
    Compare {
        #[command(flatten)]
        remote: Remote,
        /// The earlier sweep.
        before: String,
        /// The later sweep.
        after: String,
    },
    /// Cancel a running sweep.
    Cancel {
        #[command(flatten)]
        remote: Remote,
        sweep_id: String,
    },
    /// Ask the coordinator's gRPC health service; exit 0 when it is serving.
    Health {
        #[command(flatten)]
        remote: Remote,
    },
    /// Make a test CA, certificates for the coordinator, each agent host
    /// (its name in the certificate), an operator and a read-only operator,
    /// and the tokens, in DIR, to try mutual TLS (not for production keys).
    DevCerts {
        dir: PathBuf,
        /// Another name or IP address the coordinator's certificate is valid for.
        #[arg(long = "san", value_name = "NAME")]
        sans: Vec<String>,
        /// An agent host to issue an identity for (certificate and per-host
        /// token); repeat for each host.
        #[arg(long = "agent", value_name = "NAME", required = true)]
        agents: Vec<String>,
    },
    /// Print the `--agent-tokens` line for host NAME, reading its token from
    /// stdin (e.g. `fleetbench token-hash gpu-07 < gpu-07.token`).
    TokenHash { name: String },
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
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::from(2)
        }
    }
}

/// One function per command; each returns the exit status it asks for
/// (1 for "ran, and the answer is bad": a failed sweep, a regression, a
/// coordinator that is not serving).
async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Demo {
            data,
            model,
            weights,
            quick,
            http_listen,
            exit,
        } => demo(data, model, weights, quick, http_listen, exit).await,
        Command::Agents { remote } => {
            print!("{}", operator::agents(&remote.target()?).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Sweep {
            remote,
            hosts,
            gpu_model,
            deadline,
            baseline,
            wait,
            out,
            sweep,
        } => {
            let spec = sweep.spec();
            spec.validate()?;
            let req = SweepRequest {
                spec,
                hosts,
                gpu_model,
                deadline_seconds: deadline,
                baseline,
            };
            start_sweep(&remote.target()?, &req, wait, out.as_deref()).await
        }
        Command::Report {
            remote,
            sweep_id,
            out,
            format,
        } => {
            fetch_reports(&remote.target()?, &sweep_id, &format, &out).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sweeps { remote } => {
            print!("{}", operator::sweeps(&remote.target()?).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { remote, sweep_id } => {
            print!("{}", operator::show(&remote.target()?, &sweep_id).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Compare {
            remote,
            before,
            after,
        } => {
            let comparison = operator::compare(&remote.target()?, &before, &after).await?;
            print!("{}", comparison.render_text());
            Ok(failure_if(comparison.regressions() > 0))
        }
        Command::Cancel { remote, sweep_id } => {
            print!("{}", operator::cancel(&remote.target()?, &sweep_id).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Health { remote } => {
            let status = operator::health(&remote.target()?).await?;
            println!("{status}");
            Ok(failure_if(status != "SERVING"))
        }
        Command::DevCerts { dir, sans, agents } => dev_certs(
            &dir,
            &crate::dev_certs::DevCertsRequest {
                coordinator_sans: sans,
                agents,
            },
        ),
        Command::TokenHash { name } => token_hash_line(&name),
    }
}

/// Exit status 1 when `bad`: the command ran, and its answer is "no".
fn failure_if(bad: bool) -> ExitCode {
    if bad {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// `serve`: checks every setting before the store opens, then serves gRPC
/// (and metrics) until SIGINT or SIGTERM.
async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let (listen, data, metrics_listen) = (args.listen, args.data.clone(), args.metrics_listen);
    let (http_listen, no_auth) = (args.http_listen, args.no_auth);
    let metrics_options = crate::metrics::MetricsOptions {
        max_hosts: args.metrics_max_hosts as usize,
        token: Token::load(
            args.metrics_token_file.as_deref(),
            "FLEETBENCH_METRICS_TOKEN",
        )?,
        refresh: positive_seconds("--metrics-refresh", args.metrics_refresh)?,
    };
    let (security, config) = serve_settings(args)?;
    let console = match http_listen {
        Some(addr) => Some(console_settings(addr, &security, no_auth).await?),
        None => None,
    };
    let coordinator = Coordinator::open(config)
        .with_context(|| format!("cannot open the store in {}", data.display()))?;
    coordinator
        .write_missing_reports()
        .context("cannot write the reports of an ended sweep")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let metrics_listener = match metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on --metrics-listen {addr}"))?,
        ),
        None => None,
    };
    // The first line on stdout is the address, so scripts (and tests)
    // can use port 0 and learn the port; the metrics address follows.
    println!("listening on {}", listener.local_addr()?);
    if let Some(m) = &metrics_listener {
        println!("metrics on http://{}/metrics", m.local_addr()?);
    }
    if let Some((listener, tls, _)) = &console {
        let scheme = if tls.is_some() { "https" } else { "http" };
        println!("console on {scheme}://{}/", listener.local_addr()?);
    }
    tracing::info!(security = %security.describe(), "coordinator ready");
    // One signal stops both listeners.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let metrics = metrics_listener.map(|l| {
        tokio::spawn(crate::metrics::serve(
            coordinator.clone(),
            l,
            metrics_options,
            stopped(stop_rx.clone()),
        ))
    });
    let console = console.map(|(listener, tls, sessions)| {
        tokio::spawn(crate::console::serve(
            coordinator.clone(),
            listener,
            tls,
            sessions,
            stopped(stop_rx.clone()),
        ))
    });
    crate::server::serve(coordinator, listener, &security, stopped(stop_rx))
        .await
        .map_err(|e| anyhow::anyhow!("server error: {e}"))?;
    if let Some(m) = metrics {
        let _ = m.await;
    }
    if let Some(c) = console {
        let _ = c.await;
    }
    tracing::info!("coordinator stopped");
    Ok(ExitCode::SUCCESS)
}

/// The console's listener, TLS and sessions. An open console (no operator
/// or reader token to log in with) is refused where the gRPC API
/// authenticates operators some other way, and beyond loopback unless
/// --no-auth says so.
async fn console_settings(
    addr: SocketAddr,
    security: &crate::security::ServerSecurity,
    no_auth: bool,
) -> anyhow::Result<(
    tokio::net::TcpListener,
    Option<tokio_rustls::TlsAcceptor>,
    crate::console::Sessions,
)> {
    let auth = security.auth.clone();
    let open = auth.operator_token.is_none() && auth.reader_token.is_none();
    if open && auth.operators_authenticated() {
        anyhow::bail!(
            "--http-listen: the console logs in with the operator or reader token, and this coordinator has neither (client certificates alone do not log a browser in): add --operator-token-file or --reader-token-file"
        );
    }
    if open && !addr.ip().is_loopback() && !no_auth {
        anyhow::bail!(
            "--http-listen {addr}: beyond loopback the console must authenticate its users: add --operator-token-file (and --reader-token-file), or --no-auth to serve it open on purpose"
        );
    }
    let tls = security.tls_acceptor()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on --http-listen {addr}"))?;
    Ok((
        listener,
        tls.clone(),
        crate::console::Sessions::new(auth, tls.is_some()),
    ))
}

/// `serve`'s arguments checked and turned into the security settings and the
/// coordinator's configuration. Certificates, tokens and prices are read
/// here, so a bad file fails before the store opens.
fn serve_settings(args: ServeArgs) -> anyhow::Result<(ServerSecurity, CoordinatorConfig)> {
    let ServeArgs {
        listen,
        data,
        metrics_listen: _,
        http_listen: _,
        metrics_token_file: _,
        metrics_max_hosts: _,
        metrics_refresh: _,
        tls_cert,
        tls_key,
        client_ca,
        agent_token_file,
        agent_tokens,
        operator_token_file,
        reader_token_file,
        insecure,
        no_auth,
        max_agents,
        max_message_bytes,
        max_results_per_sweep,
        max_results_per_host,
        heartbeat_interval,
        agent_retention,
        default_deadline,
        prices,
        protocol_version,
    } = args;
    let auth = AuthSettings {
        mutual_tls: client_ca.is_some(),
        agent_token: Token::load(agent_token_file.as_deref(), "FLEETBENCH_AGENT_TOKEN")?,
        host_tokens: agent_tokens.as_deref().map(HostTokens::load).transpose()?,
        operator_token: Token::load(operator_token_file.as_deref(), "FLEETBENCH_OPERATOR_TOKEN")?,
        reader_token: Token::load(reader_token_file.as_deref(), "FLEETBENCH_READER_TOKEN")?,
    };
    let security = ServerSecurity {
        tls: tls_cert.zip(tls_key).map(|(cert, key)| ServerTlsFiles {
            cert,
            key,
            client_ca,
        }),
        auth: std::sync::Arc::new(auth),
    };
    security.check(listen, insecure, no_auth)?;
    if security.tls.is_none() && !listen.ip().is_loopback() {
        tracing::warn!(%listen, "listening beyond loopback without TLS (--insecure): anyone on the network can reach this coordinator");
    }
    if !listen.ip().is_loopback()
        && (!security.auth.agents_authenticated() || !security.auth.operators_authenticated())
    {
        // Said at every start, so nobody forgets that the flag is on.
        tracing::warn!(%listen, auth = %security.auth.describe(), "--no-auth: anyone who reaches this port can act as any host or operator that is not authenticated");
    }
    security.tls_acceptor()?;
    let heartbeat_interval = positive_seconds("--heartbeat-interval", heartbeat_interval)?;
    let mut config = CoordinatorConfig::new(data);
    config.heartbeat_interval = heartbeat_interval;
    config.heartbeat_timeout = config.heartbeat_interval * 3;
    config.default_deadline = Duration::from_secs(default_deadline.max(1));
    config.agent_retention = agent_retention;
    config.protocol_version = protocol_version;
    config.limits = Limits {
        max_agents: max_agents as usize,
        max_message_bytes: max_message_bytes as usize,
        max_results_per_sweep,
        max_results_per_host,
    };
    if let Some(path) = prices {
        config.prices = Some(read_prices(&path)?);
    }
    Ok((security, config))
}

/// A flag's seconds as a duration: positive and at most a day.
fn positive_seconds(flag: &str, seconds: f64) -> anyhow::Result<Duration> {
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0) {
        anyhow::bail!("{flag} must be a positive number of seconds (at most 86400)");
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// `--prices FILE`: JSON or lines of GPU_MODEL,PRICE; an empty table is an
/// error rather than a fleet report without costs.
fn read_prices(path: &Path) -> anyhow::Result<fleetbench_report::PriceTable> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --prices {}", path.display()))?;
    let table = fleetbench_report::PriceTable::parse(&text)
        .map_err(|e| anyhow::anyhow!("--prices {}: {e}", path.display()))?;
    if table.0.is_empty() {
        anyhow::bail!(
            "--prices {}: the file has no prices: write {{\"H100-SXM\": 3.5}} or lines of H100-SXM,3.5",
            path.display()
        );
    }
    Ok(table)
}

/// `demo`: coordinator, store and agent in this process, one sweep; exit 1
/// unless it completed.
#[cfg(feature = "demo")]
async fn demo(
    data: PathBuf,
    model: String,
    weights: WeightsChoice,
    quick: bool,
    console: SocketAddr,
    exit: bool,
) -> anyhow::Result<ExitCode> {
    let outcome = run_demo(DemoOptions {
        data_dir: data,
        model,
        weights,
        quick,
        console,
        after: if exit {
            crate::demo::AfterSweep::Exit
        } else {
            crate::demo::AfterSweep::ServeUntilInterrupted
        },
    })
    .await?;
    println!("sweep {} {}", outcome.sweep_id, outcome.state);
    Ok(failure_if(outcome.state != "completed"))
}

/// Without the `demo` feature there is no agent inside to run the sweep.
#[cfg(not(feature = "demo"))]
async fn demo(
    _data: PathBuf,
    _model: String,
    _weights: WeightsChoice,
    _quick: bool,
    _console: SocketAddr,
    _exit: bool,
) -> anyhow::Result<ExitCode> {
    anyhow::bail!(
        "this fleetbench was built without the `demo` feature (the coordinator image's build, which has no agent inside): use a default build for `fleetbench demo`, or run `fleetbench serve` and a fleetbench-agent"
    )
}

/// `sweep`: prints the new sweep's id; with `--wait`, follows it to its end
/// and exits 1 if any host failed.
async fn start_sweep(
    target: &ControlTarget,
    req: &SweepRequest,
    wait: bool,
    out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let started = operator::start_sweep(target, req).await?;
    println!("{}", started.sweep_id);
    if !wait {
        return Ok(ExitCode::SUCCESS);
    }
    let last = operator::watch(target, &started.sweep_id, &mut std::io::stdout()).await?;
    let summary = last.sweep.clone().unwrap_or_default();
    println!(
        "sweep {} {}: {}/{} hosts completed",
        summary.sweep_id, summary.state, summary.hosts_done, summary.hosts
    );
    match out {
        Some(out) => fetch_reports(target, &summary.sweep_id, &[], out).await?,
        None if !summary.reports_dir.is_empty() => {
            println!("reports (on the coordinator): {}", summary.reports_dir);
        }
        None => {}
    }
    Ok(failure_if(operator::sweep_failed(&last)))
}

/// `report` and `sweep --wait --out`: the files, then where they are.
async fn fetch_reports(
    target: &ControlTarget,
    sweep_id: &str,
    formats: &[String],
    out: &Path,
) -> anyhow::Result<()> {
    let files = operator::fetch_reports(target, sweep_id, formats, out).await?;
    for f in &files {
        println!("{}", f.display());
    }
    eprintln!(
        "{} report files of sweep {sweep_id} in {}",
        files.len(),
        out.display()
    );
    Ok(())
}

/// `dev-certs`: the files on stdout, the commands that use them on stderr.
fn dev_certs(dir: &Path, request: &crate::dev_certs::DevCertsRequest) -> anyhow::Result<ExitCode> {
    let written = crate::dev_certs::write_dev_certs(dir, request)?;
    for f in &written.files {
        println!("{}", f.display());
    }
    let d = dir.display();
    let host = request.agents.first().map(String::as_str).unwrap_or("NAME");
    eprintln!(
        "coordinator: fleetbench serve --listen 0.0.0.0:7070 --tls-cert {d}/coordinator.pem --tls-key {d}/coordinator-key.pem --client-ca {d}/ca.pem --agent-tokens {d}/agent-tokens --operator-token-file {d}/operator.token --reader-token-file {d}/reader.token"
    );
    eprintln!(
        "agent:       fleetbench-agent run --name {host} --coordinator https://HOST:7070 --tls-ca {d}/ca.pem --tls-cert {d}/agent-{host}.pem --tls-key {d}/agent-{host}-key.pem --token-file {d}/agent-{host}.token"
    );
    eprintln!(
        "operator:    fleetbench agents --coordinator https://HOST:7070 --tls-ca {d}/ca.pem --tls-cert {d}/operator.pem --tls-key {d}/operator-key.pem --operator-token-file {d}/operator.token"
    );
    eprintln!(
        "dashboard:   fleetbench sweeps --coordinator https://HOST:7070 --tls-ca {d}/ca.pem --tls-cert {d}/reader.pem --tls-key {d}/reader-key.pem --operator-token-file {d}/reader.token"
    );
    Ok(ExitCode::SUCCESS)
}

/// `token-hash NAME`: the host's token from stdin, its `--agent-tokens` line
/// on stdout.
fn token_hash_line(name: &str) -> anyhow::Result<ExitCode> {
    fleetbench_common::names::check_host_name(name)?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
        .context("cannot read the token from stdin")?;
    let token = Token::new(&text, "stdin")?;
    println!(
        "{name} {}",
        crate::auth::hex(&crate::auth::token_hash(token.expose()))
    );
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    fleetbench_proto::shutdown::signal().await;
    tracing::info!("shutting down");
}
