//! The web console over TLS with the coordinator's own certificates and
//! mutual TLS: a client must present a certificate of the fleet's CA, the
//! login form answers over HTTPS, and the session cookie is `Secure`.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::Arc;

use fleetbench_tests::CoordinatorProc;
use fleetbench_tests::creds::{dev_certs, file, mutual_tls_serve_args};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// One HTTP/1.1 request over TLS to `addr`, presenting `who`'s certificate
/// (or none); the whole answer, or the TLS error.
fn https(
    addr: &str,
    certs: &std::path::Path,
    who: Option<&str>,
    request: &str,
) -> Result<String, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(certs.join("ca.pem")).expect("ca.pem") {
        roots.add(ca.expect("ca")).expect("add ca");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match who {
        Some(who) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_file_iter(certs.join(format!("{who}.pem")))
                    .expect("cert")
                    .map(|c| c.expect("cert"))
                    .collect();
            let key =
                PrivateKeyDer::from_pem_file(certs.join(format!("{who}-key.pem"))).expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client cert")
        }
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    match tls.read_to_end(&mut answer) {
        Ok(_) => {}
        // The server closes without close_notify after "Connection: close".
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[test]
fn the_console_serves_https_with_the_coordinators_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dev_certs(&dir.path().join("certs"), &["gpu-a"]);
    let mut args = mutual_tls_serve_args(&certs);
    args.extend([
        "--operator-token-file".to_string(),
        file(&certs, "operator.token"),
        "--http-listen".to_string(),
        "127.0.0.1:0".to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let coordinator = CoordinatorProc::start(&dir.path().join("data"), None, &args);
    let url = coordinator.console_url.clone().expect("console");
    let addr = url
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("the console is not on https: {url}"))
        .trim_end_matches('/')
        .to_string();

    let get = "GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let page = https(&addr, &certs, Some("operator"), get).expect("the login page");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("id=\"login\""), "{page}");

    let token = std::fs::read_to_string(certs.join("operator.token")).expect("token");
    let form = format!("token={}", token.trim());
    let post = format!(
        "POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    );
    let answer = https(&addr, &certs, Some("operator"), &post).expect("login");
    let cookie = answer
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {answer}"));
    for part in [
        "fleetbench_session=",
        "HttpOnly",
        "SameSite=Strict",
        "Secure",
    ] {
        assert!(cookie.contains(part), "{part} missing: {cookie}");
    }

    // Mutual TLS: without a certificate of the fleet's CA there is no page.
    assert!(
        https(&addr, &certs, None, get).is_err(),
        "a client without a certificate got in"
    );
}
