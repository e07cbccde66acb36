//! Credentials for the security and attack tests: `fleetbench dev-certs`,
//! the flags that present a certificate, operator commands with given
//! credentials, and agents expected to be refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{bin, text};

/// `fleetbench dev-certs DIR --agent NAME...`; returns DIR.
pub fn dev_certs(dir: &Path, agents: &[&str]) -> PathBuf {
    dev_certs_with_sans(dir, agents, &[])
}

/// The same, the coordinator's certificate also valid for `sans`.
pub fn dev_certs_with_sans(dir: &Path, agents: &[&str], sans: &[&str]) -> PathBuf {
    let mut cmd = Command::new(bin("fleetbench"));
    cmd.arg("dev-certs").arg(dir);
    for a in agents {
        cmd.args(["--agent", a]);
    }
    for s in sans {
        cmd.args(["--san", s]);
    }
    let out = cmd.output().expect("run dev-certs");
    assert!(out.status.success(), "dev-certs: {}", text(&out));
    dir.to_path_buf()
}

/// `serve`'s mutual-TLS flags with the certificates of `dev-certs` in `certs`.
pub fn mutual_tls_serve_args(certs: &Path) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        file(certs, "coordinator.pem"),
        "--tls-key".into(),
        file(certs, "coordinator-key.pem"),
        "--client-ca".into(),
        file(certs, "ca.pem"),
    ]
}

/// A file of `dir`, as a command-line argument.
pub fn file(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().expect("utf-8 path").to_string()
}

/// `--tls-ca` from `ca_dir`, and `who`'s certificate and key from `cert_dir`
/// (`agent-gpu-a`, `operator`, ...).
pub fn client_tls(ca_dir: &Path, cert_dir: &Path, who: &str) -> Vec<String> {
    vec![
        "--tls-ca".into(),
        file(ca_dir, "ca.pem"),
        "--tls-cert".into(),
        file(cert_dir, &format!("{who}.pem")),
        "--tls-key".into(),
        file(cert_dir, &format!("{who}-key.pem")),
    ]
}

/// An operator command against `url` with `creds`.
pub fn operator(url: &str, creds: &[String], args: &[&str]) -> Output {
    Command::new(bin("fleetbench"))
        .args(args)
        .args(["--coordinator", url])
        .args(creds)
        .output()
        .expect("run fleetbench")
}

/// A simulated agent `name` that is expected to give up by itself; its exit
/// code and log.
pub fn short_lived_agent(
    url: &str,
    name: &str,
    spool: &Path,
    args: &[String],
) -> (Option<i32>, String) {
    let out = Command::new(bin("fleetbench-agent"))
        .args(["run", "--coordinator", url, "--name", name, "--spool"])
        .arg(spool)
        .args(["--simulate", "T4", "--max-backoff", "0.2"])
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("FLEETBENCH_AGENT_TOKEN")
        .output()
        .expect("run agent");
    (out.status.code(), text(&out))
}
