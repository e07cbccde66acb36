//! `fleetbench dev-certs DIR --agent NAME...`: a throw-away certificate
//! authority with certificates for the coordinator, each agent host (its
//! name in the certificate), an operator and a read-only operator, and the
//! tokens, so mutual TLS and every role can be tried in a minute. For production, use
//! the organisation's own CA (cert-manager, Vault, ...): these keys are
//! written unencrypted.

use std::path::{Path, PathBuf};

use fleetbench_common::names::check_host_name;
use fleetbench_proto::security::Token;

use crate::auth::{AGENT_URI_PREFIX, OPERATOR_URI, READER_URI, hex, token_hash};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DevCertsError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
    #[error("cannot make a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// What `write_dev_certs` wrote, for the command to print.
#[derive(Debug)]
pub struct DevCerts {
    pub files: Vec<PathBuf>,
}

/// One year from today, starting at today's midnight UTC.
fn validity(params: &mut CertificateParams) {
    let today =
        fleetbench_common::time::rfc3339_from_unix_ms(fleetbench_common::time::now_unix_ms());
    let field = |range: std::ops::Range<usize>| -> u32 {
        today.get(range).and_then(|s| s.parse().ok()).unwrap_or(1)
    };
    let (year, month, day) = (field(0..4) as i32, field(5..7) as u8, field(8..10) as u8);
    params.not_before = rcgen::date_time_ymd(year, month, day);
    // Day 28 exists in every month, so the date is always valid.
    params.not_after = rcgen::date_time_ymd(year + 1, month, day.min(28));
}

fn leaf(
    common_name: &str,
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(String, String), DevCertsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = sans;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "fleetbench dev-certs");
    params.use_authority_key_identifier_extension = true;
    params.key_usages.push(KeyUsagePurpose::DigitalSignature);
    params.extended_key_usages.push(usage);
    validity(&mut params);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn uri(text: &str) -> Result<SanType, DevCertsError> {
    Ok(SanType::URI(text.to_string().try_into()?))
}

/// What `fleetbench dev-certs` makes, besides the CA and the coordinator's
/// certificate.
#[derive(Debug, Clone, Default)]
pub struct DevCertsRequest {
    /// More names or addresses the coordinator's certificate is valid for.
    pub coordinator_sans: Vec<String>,
    /// One agent identity (certificate and per-host token) per host name.
    pub agents: Vec<String>,
}

/// Writes into `dir`: `ca.pem` and `ca-key.pem`; `coordinator.pem` (valid for
/// localhost, 127.0.0.1, ::1 and the extra names); `operator.pem` (SAN
/// `URI:fleetbench:operator`) and `reader.pem` (`URI:fleetbench:operator:read`);
/// per host NAME, `agent-NAME.pem` (`URI:fleetbench:agent:NAME`) and
/// `agent-NAME.token`; `agent-tokens` (the per-host tokens' hashes, for
/// `--agent-tokens`); `agent.token` (shared), `operator.token` and
/// `reader.token`. Each certificate's key is beside it as `*-key.pem`.
/// Refuses to overwrite anything.
pub fn write_dev_certs(dir: &Path, request: &DevCertsRequest) -> Result<DevCerts, DevCertsError> {
    if request.agents.is_empty() {
        return Err(DevCertsError::Refused(
            "name at least one agent host (--agent NAME): each host gets its own certificate and token".into(),
        ));
    }
    for name in &request.agents {
        check_host_name(name).map_err(|e| DevCertsError::Refused(format!("--agent: {e}")))?;
    }
    let mut plan: Vec<String> = [
        "ca.pem",
        "ca-key.pem",
        "coordinator.pem",
        "coordinator-key.pem",
        "operator.pem",
        "operator-key.pem",
        "reader.pem",
        "reader-key.pem",
        "agent.token",
        "operator.token",
        "reader.token",
        "agent-tokens",
    ]
    .map(String::from)
    .into();
    for name in &request.agents {
        plan.extend([
            format!("agent-{name}.pem"),
            format!("agent-{name}-key.pem"),
            format!("agent-{name}.token"),
        ]);
    }
    if let Some(existing) = plan.iter().map(|n| dir.join(n)).find(|p| p.exists()) {
        return Err(DevCertsError::Refused(format!(
            "{} already exists: choose an empty directory (dev-certs never overwrites keys)",
            existing.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|source| DevCertsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "fleetbench dev CA");
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "fleetbench dev-certs");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca_params);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let mut server_sans = Vec::new();
    for name in ["localhost", "127.0.0.1", "::1"]
        .into_iter()
        .chain(request.coordinator_sans.iter().map(String::as_str))
    {
        server_sans.push(match name.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.to_string().try_into()?),
        });
    }
    let coordinator = leaf(
        "fleetbench coordinator",
        server_sans,
        ExtendedKeyUsagePurpose::ServerAuth,
        &issuer,
    )?;
    let operator = leaf(
        "fleetbench operator",
        vec![uri(OPERATOR_URI)?],
        ExtendedKeyUsagePurpose::ClientAuth,
        &issuer,
    )?;
    let reader = leaf(
        "fleetbench reader",
        vec![uri(READER_URI)?],
        ExtendedKeyUsagePurpose::ClientAuth,
        &issuer,
    )?;
    let token = || Token::generate().map_err(|e| DevCertsError::Refused(e.to_string()));
    let line = |t: &Token| format!("{}\n", t.expose());

    let mut contents: Vec<(String, String, bool)> = vec![
        ("ca.pem".into(), ca_cert.pem(), false),
        ("ca-key.pem".into(), ca_key_pem, true),
        ("coordinator.pem".into(), coordinator.0, false),
        ("coordinator-key.pem".into(), coordinator.1, true),
        ("operator.pem".into(), operator.0, false),
        ("operator-key.pem".into(), operator.1, true),
        ("reader.pem".into(), reader.0, false),
        ("reader-key.pem".into(), reader.1, true),
        ("agent.token".into(), line(&token()?), true),
        ("operator.token".into(), line(&token()?), true),
        ("reader.token".into(), line(&token()?), true),
    ];
    let mut hashes = String::from(
        "# Per-host agent tokens for `fleetbench serve --agent-tokens`: NAME SHA256(token).\n",
    );
    for name in &request.agents {
        let (cert, key) = leaf(
            &format!("fleetbench agent {name}"),
            vec![uri(&format!("{AGENT_URI_PREFIX}{name}"))?],
            ExtendedKeyUsagePurpose::ClientAuth,
            &issuer,
        )?;
        let host_token = token()?;
        hashes.push_str(&format!(
            "{name} {}\n",
            hex(&token_hash(host_token.expose()))
        ));
        contents.push((format!("agent-{name}.pem"), cert, false));
        contents.push((format!("agent-{name}-key.pem"), key, true));
        contents.push((format!("agent-{name}.token"), line(&host_token), true));
    }
    contents.push(("agent-tokens".into(), hashes, false));

    let mut files = Vec::new();
    for (name, text, secret) in contents {
        let path = dir.join(name);
        write_file(&path, &text, secret).map_err(|source| DevCertsError::Write {
            path: path.clone(),
            source,
        })?;
        files.push(path);
    }
    Ok(DevCerts { files })
}

/// Keys and tokens are readable by their owner only.
fn write_file(path: &Path, text: &str, secret: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject as _;

    #[test]
    fn writes_every_file_once_and_never_overwrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let request = DevCertsRequest {
            coordinator_sans: vec!["coordinator.example".into()],
            agents: vec!["gpu-01".into(), "gpu-02".into()],
        };
        let out = write_dev_certs(dir.path(), &request).expect("certs");
        assert_eq!(out.files.len(), 12 + 2 * 3);
        // Each host's certificate names that host, and its token is in the
        // per-host file under that name.
        let pem = std::fs::read(dir.path().join("agent-gpu-02.pem")).expect("cert");
        let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).expect("pem");
        let roles = crate::auth::CertificateRoles::from_der(&der).expect("roles");
        assert_eq!(
            roles.agent_names.into_iter().collect::<Vec<_>>(),
            ["gpu-02"]
        );
        let tokens =
            crate::auth::HostTokens::load(&dir.path().join("agent-tokens")).expect("tokens");
        assert_eq!(tokens.len(), 2);
        let token = std::fs::read_to_string(dir.path().join("agent-gpu-02.token")).expect("token");
        assert_eq!(tokens.host_of(token.trim()), Some("gpu-02"));
        let pem = std::fs::read(dir.path().join("reader.pem")).expect("cert");
        let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).expect("pem");
        let roles = crate::auth::CertificateRoles::from_der(&der).expect("roles");
        assert_eq!(roles.operator, Some(crate::auth::Access::Read));
        let ca = std::fs::read_to_string(dir.path().join("ca.pem")).expect("ca");
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        let key = std::fs::read_to_string(dir.path().join("agent-gpu-01-key.pem")).expect("key");
        assert!(key.contains("PRIVATE KEY"));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("operator.token"))
            .expect("token")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = write_dev_certs(dir.path(), &request).expect_err("second run");
        assert!(again.to_string().contains("already exists"), "{again}");
    }
}
