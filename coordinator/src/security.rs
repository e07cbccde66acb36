//! How the coordinator admits connections: TLS (and with a client CA, mutual
//! TLS) on the one gRPC listener. Who a connection's caller is and what it
//! may do is `auth`'s business. Health and reflection stay open so that
//! probes and `grpcurl list` work without secrets; they reveal nothing about
//! the fleet.

use std::net::SocketAddr;
use std::path::PathBuf;

use std::sync::Arc;
use std::time::Duration;

use fleetbench_proto::security::{SecurityError, Side, explain_tls_failure};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use crate::auth::AuthSettings;

/// A client that has not finished its handshake by then is dropped, so
/// half-open connections cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The coordinator's certificate and key, and optionally the CA whose
/// client certificates it requires.
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Default)]
pub struct ServerSecurity {
    pub tls: Option<ServerTlsFiles>,
    /// Tokens and certificate roles; its `mutual_tls` follows `tls.client_ca`.
    pub auth: Arc<AuthSettings>,
}

fn read(what: &str, path: &std::path::Path) -> Result<Vec<u8>, SecurityError> {
    let bytes = std::fs::read(path).map_err(|e| {
        SecurityError::Invalid(format!("cannot read {what} {}: {e}", path.display()))
    })?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
        return Err(SecurityError::Invalid(format!(
            "{what} {} is not a PEM file (it has no -----BEGIN line)",
            path.display()
        )));
    }
    Ok(bytes)
}

impl ServerSecurity {
    /// Refuses settings that would expose the fleet by accident: no TLS on
    /// an address beyond loopback without `--insecure`, and beyond loopback
    /// an API that authenticates nobody without `--no-auth`.
    pub fn check(
        &self,
        listen: SocketAddr,
        insecure: bool,
        no_auth: bool,
    ) -> Result<(), SecurityError> {
        if self.tls.is_none() && !listen.ip().is_loopback() && !insecure {
            return Err(SecurityError::Invalid(format!(
                "refusing to listen on {listen} without TLS: give --tls-cert and --tls-key (try `fleetbench dev-certs DIR`), or --insecure on a network you trust"
            )));
        }
        if self.tls.is_none()
            && (self.auth.agents_authenticated() || self.auth.operators_authenticated())
        {
            tracing::warn!(
                "tokens without TLS travel in clear text: anyone who can watch the network can reuse them"
            );
        }
        self.auth.check_exposure(listen, no_auth)
    }

    /// The TLS acceptor, or `None` for plain HTTP/2. Reads and checks the
    /// files now, so a bad certificate fails at start with its name.
    pub fn tls_acceptor(&self) -> Result<Option<TlsAcceptor>, SecurityError> {
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        let invalid = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
            SecurityError::Invalid(format!("{what} {}: {e}", path.display()))
        };
        let cert_pem = read("--tls-cert", &tls.cert)?;
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("--tls-cert", &tls.cert, &e))?;
        let key = PrivateKeyDer::from_pem_slice(&read("--tls-key", &tls.key)?)
            .map_err(|e| invalid("--tls-key", &tls.key, &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| SecurityError::Invalid(format!("TLS versions: {e}")))?;
        let builder = match &tls.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&read("--client-ca", ca)?) {
                    let cert = cert.map_err(|e| invalid("--client-ca", ca, &e))?;
                    roots
                        .add(cert)
                        .map_err(|e| invalid("--client-ca", ca, &e))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| invalid("--client-ca", ca, &e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| {
            SecurityError::Invalid(format!(
                "--tls-cert {} and --tls-key {} do not make a usable pair: {e}",
                tls.cert.display(),
                tls.key.display()
            ))
        })?;
        // gRPC is HTTP/2 only.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Some(TlsAcceptor::from(Arc::new(config))))
    }

    /// One line for the log: what protects this coordinator.
    pub fn describe(&self) -> String {
        let transport = match &self.tls {
            None => "plain HTTP/2 (no TLS)",
            Some(t) if t.client_ca.is_some() => "mutual TLS (client certificates required)",
            Some(_) => "TLS",
        };
        format!("{transport}; {}", self.auth.describe())
    }
}

/// Logs each reason for refusing an address at most once every 10 s: a
/// misconfigured client that retries in a loop must not flood the log, and
/// a new reason is always shown.
#[derive(Debug, Default)]
struct RefusalLog {
    /// When each (address, reason) was last logged, and how many since.
    last: std::sync::Mutex<
        std::collections::HashMap<(std::net::IpAddr, String), (std::time::Instant, u64)>,
    >,
}

impl RefusalLog {
    fn log(&self, peer: SocketAddr, why: &str) {
        let now = std::time::Instant::now();
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last.len() > 10_000 {
            last.retain(|_, (at, _)| now.duration_since(*at) < Duration::from_secs(10));
        }
        let key = (peer.ip(), why.to_string());
        match last.get_mut(&key) {
            Some(entry) if now.duration_since(entry.0) < Duration::from_secs(10) => entry.1 += 1,
            previous => {
                let suppressed = previous.map(|e| e.1).unwrap_or(0);
                last.insert(key, (now, 0));
                tracing::warn!(%peer, %why, suppressed, "refused a TLS connection");
            }
        }
    }
}

/// TLS connections from `listener`: each handshake runs on its own task
/// (a slow or hostile client holds up nobody), and each refusal is logged
/// with the peer and what to fix. Ends when the server drops the stream.
pub fn tls_incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(256);
    let refusals = Arc::new(RefusalLog::default());
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, say: pause rather than spin.
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let refusals = refusals.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => {
                        let why =
                            explain_tls_failure(&e, Side::Server).unwrap_or_else(|| e.to_string());
                        refusals.log(peer, &why);
                    }
                    Err(_) => refusals.log(peer, "no handshake within 10 s"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_listening_beyond_loopback_needs_insecure() {
        let open = ServerSecurity::default();
        let loopback: SocketAddr = "127.0.0.1:7070".parse().expect("addr");
        let everywhere: SocketAddr = "0.0.0.0:7070".parse().expect("addr");
        assert!(open.check(loopback, false, false).is_ok());
        let e = open
            .check(everywhere, false, true)
            .expect_err("0.0.0.0 without TLS")
            .to_string();
        assert!(e.contains("--tls-cert") && e.contains("--insecure"), "{e}");
        assert!(open.check(everywhere, true, true).is_ok());
        let e = open
            .check(everywhere, true, false)
            .expect_err("0.0.0.0 without authentication")
            .to_string();
        assert!(e.contains("--no-auth"), "{e}");
    }

    #[test]
    fn a_certificate_that_is_not_pem_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "not a certificate").expect("write");
        let s = ServerSecurity {
            tls: Some(ServerTlsFiles {
                cert: cert.clone(),
                key: cert,
                client_ca: None,
            }),
            ..ServerSecurity::default()
        };
        let e = match s.tls_acceptor() {
            Ok(_) => panic!("a file that is not PEM was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains("--tls-cert") && e.contains("not a PEM file"),
            "{e}"
        );
    }
}
