//! `fleetbench dev-certs DIR`: a throw-away certificate authority with
//! certificates for the coordinator, an agent and an operator, and the two
//! bearer tokens, so mutual TLS can be tried in a minute. For production, use
//! the organisation's own CA (cert-manager, Vault, ...): these keys are
//! written unencrypted.

use std::path::{Path, PathBuf};

use fleetbench_proto::security::Token;
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
    sans: &[String],
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(String, String), DevCertsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    for name in sans {
        params.subject_alt_names.push(match name.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.clone().try_into()?),
        });
    }
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

/// Writes ca.pem, ca-key.pem, coordinator.pem, coordinator-key.pem,
/// agent.pem, agent-key.pem, operator.pem, operator-key.pem, agent.token and
/// operator.token into `dir`. The coordinator's certificate names
/// localhost, 127.0.0.1, ::1 and `extra_sans`. Refuses to overwrite.
pub fn write_dev_certs(dir: &Path, extra_sans: &[String]) -> Result<DevCerts, DevCertsError> {
    let names = [
        "ca.pem",
        "ca-key.pem",
        "coordinator.pem",
        "coordinator-key.pem",
        "agent.pem",
        "agent-key.pem",
        "operator.pem",
        "operator-key.pem",
        "agent.token",
        "operator.token",
    ];
    if let Some(existing) = names.iter().map(|n| dir.join(n)).find(|p| p.exists()) {
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

    let mut server_names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    server_names.extend(extra_sans.iter().cloned());
    let coordinator = leaf(
        "fleetbench coordinator",
        &server_names,
        ExtendedKeyUsagePurpose::ServerAuth,
        &issuer,
    )?;
    let agent = leaf(
        "fleetbench agent",
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
        &issuer,
    )?;
    let operator = leaf(
        "fleetbench operator",
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
        &issuer,
    )?;
    let agent_token = Token::generate().map_err(|e| DevCertsError::Refused(e.to_string()))?;
    let operator_token = Token::generate().map_err(|e| DevCertsError::Refused(e.to_string()))?;

    let contents = [
        (names[0], ca_cert.pem(), false),
        (names[1], ca_key_pem, true),
        (names[2], coordinator.0, false),
        (names[3], coordinator.1, true),
        (names[4], agent.0, false),
        (names[5], agent.1, true),
        (names[6], operator.0, false),
        (names[7], operator.1, true),
        (names[8], format!("{}\n", agent_token.expose()), true),
        (names[9], format!("{}\n", operator_token.expose()), true),
    ];
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

    #[test]
    fn writes_every_file_once_and_never_overwrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = write_dev_certs(dir.path(), &["coordinator.example".into()]).expect("certs");
        assert_eq!(out.files.len(), 10);
        let ca = std::fs::read_to_string(dir.path().join("ca.pem")).expect("ca");
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        let key = std::fs::read_to_string(dir.path().join("agent-key.pem")).expect("key");
        assert!(key.contains("PRIVATE KEY"));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("operator.token"))
            .expect("token")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = write_dev_certs(dir.path(), &[]).expect_err("second run");
        assert!(again.to_string().contains("already exists"), "{again}");
    }
}
