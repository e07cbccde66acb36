//! Harness for the end-to-end tests: real `fleetbench` coordinators and
//! `fleetbench-agent` agents as child processes on loopback ports chosen by
//! the OS, the CLI run as a user would, and the store read back directly.
//!
//! The programs are this package's own binaries `e2e-fleetbench` and
//! `e2e-fleetbench-agent` (src/bin/), each one line calling the real
//! program's `cli::main()`: Cargo builds them before the integration tests,
//! so `cargo test -p fleetbench-tests` alone runs the programs of this
//! checkout, never stale ones.

pub mod creds;
pub mod proxy;
pub mod webdriver;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The path of the program `name` (`fleetbench` or `fleetbench-agent`) as
/// built for these tests: this package's binary `e2e-<name>`.
///
/// Cargo passes it as `CARGO_BIN_EXE_e2e-<name>`: at compile time to the
/// integration tests (`env!`), and also in the environment of the test
/// processes `cargo test` runs (cargo 1.95, this workspace's minimum). This
/// library is compiled as a plain dependency of the tests, where `env!` has
/// no such variable, so it reads the environment;
/// `tests/bad_input.rs::the_programs_are_this_packages_binaries` checks that
/// both agree.
pub fn bin(name: &str) -> PathBuf {
    let var = format!("CARGO_BIN_EXE_e2e-{name}");
    let path = std::env::var_os(&var)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!("{var} is not set: run these tests with `cargo test -p fleetbench-tests`")
        });
    assert!(path.exists(), "{} is missing", path.display());
    path
}

/// The repository's root (files the tests check, such as deploy/).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

/// The tiny DistilBERT fixture shipped in the repository.
pub fn fixture_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/tiny-distilbert-sst2")
        .canonicalize()
        .expect("fixture")
}

/// Polls `f` every 50 ms until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, sig: i32) {
    // kill(1) rather than libc::kill: the workspace denies `unsafe`.
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status();
}

/// A coordinator process.
#[derive(Debug)]
pub struct CoordinatorProc {
    pub child: Child,
    pub url: String,
    pub addr: String,
    pub data: PathBuf,
    pub log: PathBuf,
    /// `http://ADDR/metrics` when started with `--metrics-listen`.
    pub metrics_url: Option<String>,
    /// `http(s)://ADDR/` when started with `--http-listen` (the web console).
    pub console_url: Option<String>,
}

impl CoordinatorProc {
    /// Starts `fleetbench serve` on an OS-chosen port (or `addr`) with fast heartbeats.
    pub fn start(data: &Path, addr: Option<&str>, extra: &[&str]) -> CoordinatorProc {
        let log = data.with_extension(format!("coordinator-{}.log", std::process::id()));
        let mut child = Command::new(bin("fleetbench"))
            .args(["serve", "--listen", addr.unwrap_or("127.0.0.1:0"), "--data"])
            .arg(data)
            .args(["--heartbeat-interval", "0.5"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .expect("log file"),
            )
            .spawn()
            .expect("start coordinator");
        let stdout = child.stdout.take().expect("stdout");
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read address");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        let metrics_url = extra.contains(&"--metrics-listen").then(|| {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("read metrics address");
            line.trim()
                .strip_prefix("metrics on ")
                .unwrap_or_else(|| panic!("unexpected second line: {line:?}"))
                .to_string()
        });
        let console_url = extra.contains(&"--http-listen").then(|| {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("read console address");
            line.trim()
                .strip_prefix("console on ")
                .unwrap_or_else(|| panic!("unexpected console line: {line:?}"))
                .to_string()
        });
        CoordinatorProc {
            console_url,
            child,
            url: format!("http://{addr}"),
            addr,
            data: data.to_path_buf(),
            log,
            metrics_url,
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.data.join("fleetbench.db")).expect("open store")
    }

    /// Number of stored results per (host, batch size) in a sweep.
    pub fn stored(&self, sweep: &str) -> Vec<(String, String, i64)> {
        let db = self.db();
        let mut st = db
            .prepare("SELECT host, device_id, batch_size FROM results WHERE sweep_id = ?1 ORDER BY host, device_id, batch_size")
            .expect("query");
        st.query_map([sweep], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    pub fn sweep_state(&self, sweep: &str) -> String {
        self.db()
            .query_row("SELECT state FROM sweeps WHERE id = ?1", [sweep], |r| {
                r.get(0)
            })
            .unwrap_or_else(|_| "missing".into())
    }

    pub fn host_state(&self, sweep: &str, host: &str) -> (String, Option<String>) {
        self.db()
            .query_row(
                "SELECT state, error FROM sweep_hosts WHERE sweep_id = ?1 AND host = ?2",
                [sweep, host],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap_or_else(|_| ("missing".into(), None))
    }

    /// Runs a `fleetbench` client command against this coordinator.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.url, args)
    }
}

impl Drop for CoordinatorProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `fleetbench ARGS --coordinator URL`.
pub fn cli(url: &str, args: &[&str]) -> Output {
    Command::new(bin("fleetbench"))
        .args(args)
        .args(["--coordinator", url])
        .output()
        .expect("run fleetbench")
}

/// An agent process.
#[derive(Debug)]
pub struct AgentProc {
    pub child: Child,
    pub name: String,
    pub spool: PathBuf,
    pub log: PathBuf,
    args: Vec<String>,
    url: String,
}

impl AgentProc {
    /// `fleetbench-agent run` with `extra` arguments (e.g. `--simulate H100-SXM`).
    pub fn start(url: &str, name: &str, spool: &Path, extra: &[&str]) -> AgentProc {
        let log = spool.with_extension("log");
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let child = Self::spawn(url, name, spool, &args, &log);
        AgentProc {
            child,
            name: name.into(),
            spool: spool.into(),
            log,
            args,
            url: url.into(),
        }
    }

    fn spawn(url: &str, name: &str, spool: &Path, args: &[String], log: &Path) -> Child {
        Command::new(bin("fleetbench-agent"))
            .args(["run", "--coordinator", url, "--name", name, "--spool"])
            .arg(spool)
            .args(["--max-backoff", "0.5"])
            // Like a host owner allowing their own model directory: every
            // test agent may load the repository's fixture model.
            .arg("--allow-model-dir")
            .arg(fixture_model())
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .expect("log file"),
            )
            .spawn()
            .expect("start agent")
    }

    /// Starts the same agent again (same name, spool and arguments).
    pub fn restart(&mut self) {
        self.kill9();
        self.child = Self::spawn(&self.url, &self.name, &self.spool, &self.args, &self.log);
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        signal(&self.child, 15);
        self.child.wait().expect("wait")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Waits until `n` agents are connected according to `fleetbench agents`.
pub fn wait_for_agents(coordinator: &CoordinatorProc, n: usize) {
    wait_until(
        Duration::from_secs(30),
        &format!("{n} connected agents"),
        || {
            let out = coordinator.cli(&["agents"]);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains(" connected "))
                .count()
                >= n
        },
    );
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `GET url` over plain HTTP/1.1 (no client library needed for a scrape);
/// returns the status line and the body.
pub fn http_get(url: &str) -> (String, String) {
    use std::io::{Read as _, Write as _};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut conn = std::net::TcpStream::connect(host).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        conn,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    conn.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// Waits until the sweep is no longer `running`; returns its final state.
pub fn wait_sweep_end(coordinator: &CoordinatorProc, sweep: &str, timeout: Duration) -> String {
    let mut state = String::new();
    wait_until(timeout, &format!("sweep {sweep} to end"), || {
        state = coordinator.sweep_state(sweep);
        state != "running" && state != "missing"
    });
    state
}

/// Writes straight to the test's stderr, past libtest's output capture, so
/// tables show in CI's log.
pub fn show(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// The sweep id `fleetbench sweep` prints on its first line.
pub fn sweep_id_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}
