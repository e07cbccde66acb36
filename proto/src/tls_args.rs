//! The client-side TLS flags, shared by the agent (`fleetbench-agent run`)
//! and the operator commands (`fleetbench agents|sweep|...`), so both read
//! the same flags and environment variables.

use std::path::PathBuf;

use crate::security::ClientTls;
use clap::Args;

#[derive(Args, Debug, Clone, Default)]
pub struct ClientTlsArgs {
    /// CA certificate (PEM) that signed the coordinator's certificate (https:// coordinators).
    #[arg(long, env = "FLEETBENCH_TLS_CA", value_name = "FILE", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM), for a coordinator that requires client certificates.
    #[arg(long, env = "FLEETBENCH_TLS_CERT", value_name = "FILE", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, env = "FLEETBENCH_TLS_KEY", value_name = "FILE", global = true)]
    pub tls_key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// The files as the connection code takes them (it checks that
    /// certificate and key come together).
    pub fn client_tls(&self) -> ClientTls {
        ClientTls {
            ca: self.tls_ca.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
        }
    }
}
