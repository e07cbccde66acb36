//! Transport security shared by every gRPC peer: bearer tokens (loaded from a
//! file or an environment variable, checked in constant time), the client
//! side of TLS and mutual TLS, and one-line explanations of TLS failures.
//!
//! Agents present an agent token on the session stream, operators an
//! operator token on the control API; which token (or client certificate)
//! admits what is decided by the coordinator (its `auth` module).

use std::path::{Path, PathBuf};
use std::time::Duration;

use subtle::ConstantTimeEq as _;
use thiserror::Error;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

#[derive(Debug, Error)]
pub enum SecurityError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|source| SecurityError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// A bearer token. Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Shortest token accepted: 16 characters leave guessing out of reach
    /// even for tokens typed by hand; `dev-certs` writes 43.
    pub const MIN_LEN: usize = 16;

    /// A token from its text; surrounding whitespace (a file's newline) is
    /// not part of it.
    pub fn new(text: &str, source: &str) -> Result<Token, SecurityError> {
        let t = text.trim();
        if t.len() < Self::MIN_LEN {
            return Err(SecurityError::Invalid(format!(
                "the token in {source} is {} characters long: use at least {} (e.g. `openssl rand -base64 32`)",
                t.len(),
                Self::MIN_LEN
            )));
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SecurityError::Invalid(format!(
                "the token in {source} has spaces or non-ASCII characters: use printable ASCII only"
            )));
        }
        Ok(Token(t.to_string()))
    }

    /// The token from `file` if given, else from the environment variable
    /// `env_var`, else none.
    pub fn load(file: Option<&Path>, env_var: &str) -> Result<Option<Token>, SecurityError> {
        if let Some(path) = file {
            let bytes = read("token file", path)?;
            let text = String::from_utf8(bytes).map_err(|_| {
                SecurityError::Invalid(format!("token file {} is not UTF-8", path.display()))
            })?;
            return Token::new(&text, &path.display().to_string()).map(Some);
        }
        match std::env::var(env_var) {
            Ok(v) if !v.trim().is_empty() => Token::new(&v, env_var).map(Some),
            _ => Ok(None),
        }
    }

    /// Constant-time comparison: how long it takes says nothing about how
    /// many leading bytes matched.
    pub fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }

    fn header(&self) -> AsciiMetadataValue {
        // Token::new admits printable ASCII only, which is always a valid header value.
        AsciiMetadataValue::try_from(format!("Bearer {}", self.0))
            .unwrap_or_else(|_| AsciiMetadataValue::from_static("Bearer invalid"))
    }

    /// Random token: 32 bytes from the OS, base64url without padding.
    pub fn generate() -> Result<Token, SecurityError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| {
            SecurityError::Invalid(format!("the OS random number generator failed: {e}"))
        })?;
        Ok(Token(base64url(&bytes)))
    }

    /// The token's text, for writing it to a file.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// Client side: adds `authorization: Bearer TOKEN` to every request.
#[derive(Debug, Clone, Default)]
pub struct BearerAuth {
    header: Option<AsciiMetadataValue>,
}

impl BearerAuth {
    pub fn new(token: Option<&Token>) -> BearerAuth {
        BearerAuth {
            header: token.map(Token::header),
        }
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(h) = &self.header {
            request.metadata_mut().insert("authorization", h.clone());
        }
        Ok(request)
    }
}

/// Server side: the token a request presents (`authorization: Bearer
/// TOKEN`); `Some("")` when the header is there but malformed. Which token
/// admits what is the server's business (the coordinator's `auth` module).
pub fn presented_token(metadata: &MetadataMap) -> Option<&str> {
    metadata.get("authorization").map(|value| {
        value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("")
    })
}

/// The files a client uses for TLS: the CA that signed the coordinator's
/// certificate, and for mutual TLS its own certificate and key.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl ClientTls {
    fn config(&self) -> Result<ClientTlsConfig, SecurityError> {
        let Some(ca) = &self.ca else {
            return Err(SecurityError::Invalid(
                "an https:// coordinator needs --tls-ca FILE (or FLEETBENCH_TLS_CA): the CA certificate that signed the coordinator's".into(),
            ));
        };
        let mut config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("--tls-ca", ca)?));
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                config = config.identity(Identity::from_pem(
                    read("--tls-cert", cert)?,
                    read("--tls-key", key)?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(SecurityError::Invalid(
                    "--tls-cert and --tls-key go together: give both for mutual TLS, or neither"
                        .into(),
                ));
            }
        }
        Ok(config)
    }

    /// An endpoint for `url`: TLS for `https://`, plain for `http://`.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, SecurityError> {
        let bad_url = || {
            SecurityError::Invalid(format!(
                "invalid coordinator address '{url}': use a URL such as http://127.0.0.1:7070 or https://coordinator:7070"
            ))
        };
        let mut endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|_| bad_url())?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            // A connection that silently stops carrying bytes (a stalled
            // link, a dead NAT entry) is noticed within about 20 s.
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        match endpoint.uri().scheme_str() {
            Some("https") => {
                endpoint = endpoint
                    .tls_config(self.config()?)
                    .map_err(|e| SecurityError::Invalid(format!("TLS settings for {url}: {e}")))?;
            }
            Some("http") => {
                if self.ca.is_some() || self.cert.is_some() {
                    return Err(SecurityError::Invalid(format!(
                        "TLS files were given but the coordinator address '{url}' is http://: use https://"
                    )));
                }
            }
            _ => return Err(bad_url()),
        }
        Ok(endpoint)
    }
}

/// Which end of a TLS connection is explaining a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

/// Why a TLS connection failed, in words an operator can act on, when the
/// error chain holds a TLS failure (a rustls error, or a TLS alert from the
/// peer); `None` for other errors.
pub fn explain_tls_failure(
    error: &(dyn std::error::Error + 'static),
    side: Side,
) -> Option<String> {
    let mut alert_text: Option<String> = None;
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = tls {
            return Some(describe_rustls(tls, side));
        }
        // Alerts often reach us only as text inside an I/O error; the
        // innermost error that mentions one says it most plainly.
        let text = e.to_string();
        if text.contains(ALERT) {
            alert_text = Some(text);
        }
        next = e.source();
    }
    let text = alert_text?;
    let alert: String = text
        .split(ALERT)
        .nth(1)
        .unwrap_or("")
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    Some(describe_alert(&alert, side))
}

const ALERT: &str = "received fatal alert: ";

fn describe_alert(alert: &str, side: Side) -> String {
    let fix = match (side, alert) {
        (Side::Client, "CertificateRequired") => {
            "the coordinator requires a client certificate: give --tls-cert and --tls-key (mutual TLS)"
        }
        (Side::Client, "UnknownCA" | "BadCertificate" | "DecryptError" | "CertificateUnknown") => {
            "the coordinator does not trust this client's certificate: it must be signed by the coordinator's --client-ca"
        }
        (Side::Server, "UnknownCA" | "BadCertificate" | "DecryptError" | "CertificateUnknown") => {
            "the client does not trust this coordinator's certificate: give clients the CA that signed --tls-cert as their --tls-ca"
        }
        _ => "TLS failed",
    };
    format!("{fix} (the peer's TLS alert: {alert})")
}

fn describe_rustls(e: &rustls::Error, side: Side) -> String {
    use rustls::{CertificateError, Error};
    let peer = match side {
        Side::Client => "the coordinator's certificate",
        Side::Server => "the client's certificate",
    };
    let fix: String = match (side, e) {
        (
            _,
            Error::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature),
        ) => match side {
            Side::Client => format!("{peer} is not signed by the CA in --tls-ca"),
            Side::Server => format!("{peer} is not signed by --client-ca"),
        },
        (
            Side::Client,
            Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ),
        ) => format!(
            "{peer} does not name the host in the URL: use a name it has (dev-certs --san NAME adds one)"
        ),
        (
            _,
            Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            ),
        ) => format!("{peer} has expired"),
        (_, Error::InvalidCertificate(_)) => format!("{peer} was refused"),
        (Side::Server, Error::NoCertificatesPresented) => {
            "the client sent no certificate: with --client-ca, agents and operators need --tls-cert and --tls-key".into()
        }
        (Side::Client, Error::InvalidMessage(_)) => {
            "the coordinator does not speak TLS here: use http://".into()
        }
        (Side::Server, Error::InvalidMessage(_)) => {
            "the client does not speak TLS: its coordinator URL must start with https://".into()
        }
        _ => "TLS failed".into(),
    };
    format!("{fix} ({e})")
}

impl ClientTls {
    /// What went wrong connecting to `url`, with what to fix: TLS failures,
    /// and the two mistakes that show up only as a broken connection (plain
    /// HTTP to a TLS port, no client certificate for mutual TLS). The bool
    /// says whether retrying is pointless.
    pub fn explain(
        &self,
        url: &str,
        error: &(dyn std::error::Error + 'static),
    ) -> Option<(String, bool)> {
        if let Some(why) = explain_tls_failure(error, Side::Client) {
            return Some((why, true));
        }
        let mut chain = String::new();
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = next {
            chain.push_str(&e.to_string());
            chain.push_str(": ");
            next = e.source();
        }
        if url.starts_with("http://") && chain.contains("frame with invalid size") {
            return Some((
                "the coordinator answered with something that is not plain HTTP/2: if it serves TLS, use https:// and --tls-ca".into(),
                true,
            ));
        }
        if url.starts_with("https://")
            && (chain.contains("connection closed") || chain.contains("canceled"))
        {
            let fix = if self.cert.is_none() {
                "if it requires client certificates (mutual TLS), give --tls-cert and --tls-key"
            } else {
                "if it requires client certificates, --tls-cert must be signed by its --client-ca"
            };
            return Some((
                format!(
                    "the coordinator closed the connection after the TLS handshake ({}): {fix}",
                    chain.trim_end_matches(": ")
                ),
                false,
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert(
            "authorization",
            AsciiMetadataValue::try_from(value).expect("ascii"),
        );
        m
    }

    fn token(s: &str) -> Token {
        Token::new(s, "test").expect("token")
    }

    #[test]
    fn short_or_spaced_tokens_are_refused_with_the_fix() {
        let e = Token::new("short", "FLEETBENCH_AGENT_TOKEN")
            .expect_err("too short")
            .to_string();
        assert!(e.contains("at least 16"), "{e}");
        let e = Token::new("has a space in the middle", "f")
            .expect_err("space")
            .to_string();
        assert!(e.contains("printable ASCII"), "{e}");
        assert_eq!(
            token("  0123456789abcdef\n").expose(),
            "0123456789abcdef",
            "a file's trailing newline is not part of the token"
        );
    }

    #[test]
    fn the_presented_token_is_read_from_the_bearer_header() {
        assert_eq!(
            presented_token(&with_auth("Bearer agent-token-0123456789")),
            Some("agent-token-0123456789")
        );
        assert_eq!(presented_token(&with_auth("Basic abc")), Some(""));
        assert_eq!(presented_token(&MetadataMap::new()), None);
    }

    #[test]
    fn generated_tokens_are_long_distinct_and_valid() {
        let a = Token::generate().expect("random");
        let b = Token::generate().expect("random");
        assert_eq!(a.expose().len(), 43);
        assert_ne!(a.expose(), b.expose());
        assert!(Token::new(a.expose(), "generated").is_ok());
    }

    #[test]
    fn base64url_matches_rfc4648_vectors() {
        // RFC 4648 section 10, unpadded, with the URL-safe alphabet.
        for (input, want) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url(input.as_bytes()), want, "{input}");
        }
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn https_needs_a_ca_and_http_refuses_tls_files() {
        let e = ClientTls::default()
            .endpoint("https://127.0.0.1:7070")
            .expect_err("no CA")
            .to_string();
        assert!(e.contains("--tls-ca"), "{e}");
        let tls = ClientTls {
            ca: Some("ca.pem".into()),
            ..ClientTls::default()
        };
        let e = tls
            .endpoint("http://127.0.0.1:7070")
            .expect_err("plain URL with TLS files")
            .to_string();
        assert!(e.contains("use https://"), "{e}");
        let e = ClientTls::default()
            .endpoint("ftp://x")
            .expect_err("scheme")
            .to_string();
        assert!(e.contains("invalid coordinator address"), "{e}");
    }
}
