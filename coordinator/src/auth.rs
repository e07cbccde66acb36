//! Who is calling and what they may do.
//!
//! Every request on the two APIs passes a gate (a tonic interceptor) that
//! works out its caller from what the connection proves, and puts the answer
//! in the request's extensions for the handler:
//!
//! - **Client certificates** (mutual TLS, `--client-ca`) carry roles as
//!   subject alternative names: `URI:fleetbench:operator` (full control),
//!   `URI:fleetbench:operator:read` (list and read only, for dashboards),
//!   and for agents `URI:fleetbench:agent:NAME` or a DNS name: an agent may
//!   use only a name its certificate carries. A certificate with an operator
//!   role is not an agent's, and an agent's cannot call the control API.
//! - **Bearer tokens**: the shared agent token (any host name not bound
//!   elsewhere), per-host agent tokens (`--agent-tokens FILE`: each binds
//!   one name), the operator token (full control) and the reader token
//!   (read only).
//!
//! When both are configured, both must pass and the narrower answer holds.
//! With neither for an API, that API is open: allowed on loopback, and
//! beyond it only with `--no-auth` (see [`AuthSettings::check_exposure`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use fleetbench_common::names::{check_host_name, clean_text};
use fleetbench_proto::security::{SecurityError, Token, presented_token};
use rustls::pki_types::CertificateDer;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// SAN URI of an operator certificate with full control.
pub const OPERATOR_URI: &str = "fleetbench:operator";
/// SAN URI of a read-only operator certificate (dashboards).
pub const READER_URI: &str = "fleetbench:operator:read";
/// Prefix of an agent certificate's SAN URI; the host name follows.
pub const AGENT_URI_PREFIX: &str = "fleetbench:agent:";

/// What an operator may do on the control API. Ordered: `Read < Full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// List agents and sweeps, read and watch sweeps.
    Read,
    /// Also start and cancel sweeps.
    Full,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read-only",
            Access::Full => "full",
        }
    }
}

/// The roles a client certificate carries, read from its subject
/// alternative names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateRoles {
    /// The certificate's subject, for messages.
    pub subject: String,
    /// The widest operator role it carries, if any.
    pub operator: Option<Access>,
    /// The host names an agent holding it may use.
    pub agent_names: BTreeSet<String>,
}

impl CertificateRoles {
    /// Reads the roles of a DER certificate (the TLS handshake has already
    /// verified it against the client CA).
    pub fn from_der(der: &[u8]) -> Result<CertificateRoles, String> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("the client certificate cannot be read: {e}"))?;
        let mut roles = CertificateRoles {
            subject: clean_text(&cert.subject().to_string(), 200),
            ..CertificateRoles::default()
        };
        let san = cert.subject_alternative_name().map_err(|e| {
            format!("the client certificate's alternative names cannot be read: {e}")
        })?;
        let mut dns_names = BTreeSet::new();
        for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
            match name {
                GeneralName::URI(uri) if *uri == OPERATOR_URI => {
                    roles.operator = Some(Access::Full);
                }
                GeneralName::URI(uri) if *uri == READER_URI => {
                    roles.operator = roles.operator.max(Some(Access::Read));
                }
                GeneralName::URI(uri) => {
                    if let Some(host) = uri.strip_prefix(AGENT_URI_PREFIX)
                        && check_host_name(host).is_ok()
                    {
                        roles.agent_names.insert(host.to_string());
                    }
                }
                // Wildcards and other odd names fail the host-name check and
                // so name nobody.
                GeneralName::DNSName(dns) if check_host_name(dns).is_ok() => {
                    dns_names.insert(dns.to_string());
                }
                _ => {}
            }
        }
        // An operator's certificate names no agent, even through a DNS name
        // (an operator's workstation certificate often carries one).
        if roles.operator.is_none() {
            roles.agent_names.extend(dns_names);
        }
        Ok(roles)
    }

    fn agent_names_text(&self) -> String {
        self.agent_names
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `--agent-tokens FILE`: per-host agent tokens. Each line is `NAME HASH`,
/// HASH being the hex SHA-256 of that host's token (`fleetbench token-hash`
/// prints it); `#` starts a comment. The file holds no secret.
#[derive(Debug, Clone, Default)]
pub struct HostTokens {
    /// Token hash -> the host it binds.
    by_hash: BTreeMap<[u8; 32], String>,
    /// Shared with every session's [`AgentCaller`]: no copy per connection.
    names: Arc<BTreeSet<String>>,
}

/// SHA-256 of a token, the form in which `--agent-tokens` keeps it.
pub fn token_hash(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl HostTokens {
    pub fn parse(text: &str, source: &str) -> Result<HostTokens, SecurityError> {
        let mut by_hash = BTreeMap::new();
        let mut names = BTreeSet::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad =
                |why: String| SecurityError::Invalid(format!("{source} line {}: {why}", i + 1));
            let mut fields = line.split_whitespace();
            let (Some(name), Some(hash), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(bad(
                    "write NAME SHA256HEX (`fleetbench token-hash` prints the line)".into(),
                ));
            };
            check_host_name(name).map_err(|e| bad(e.to_string()))?;
            let hash = parse_hex32(hash).ok_or_else(|| {
                bad("the hash must be 64 hex digits (the SHA-256 of the host's token)".into())
            })?;
            if !names.insert(name.to_string()) {
                return Err(bad(format!("'{name}' is listed twice")));
            }
            if by_hash.insert(hash, name.to_string()).is_some() {
                return Err(bad(
                    "two hosts share one token: give each host its own".into()
                ));
            }
        }
        if names.is_empty() {
            return Err(SecurityError::Invalid(format!(
                "{source} lists no host: write lines of NAME SHA256HEX"
            )));
        }
        let tokens = HostTokens {
            by_hash,
            names: Arc::new(names),
        };
        Ok(tokens)
    }

    pub fn load(path: &Path) -> Result<HostTokens, SecurityError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecurityError::Read {
            what: "--agent-tokens",
            path: path.to_path_buf(),
            source,
        })?;
        HostTokens::parse(&text, &format!("--agent-tokens {}", path.display()))
    }

    pub(crate) fn host_of(&self, token: &str) -> Option<&str> {
        self.by_hash.get(&token_hash(token)).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Every credential the coordinator checks.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// Client certificates are required (`--client-ca`): roles come from them.
    pub mutual_tls: bool,
    pub agent_token: Option<Token>,
    pub host_tokens: Option<HostTokens>,
    pub operator_token: Option<Token>,
    pub reader_token: Option<Token>,
}

impl AuthSettings {
    /// Whether anything authenticates agents.
    pub fn agents_authenticated(&self) -> bool {
        self.mutual_tls || self.agent_token.is_some() || self.host_tokens.is_some()
    }

    /// Whether anything authenticates operators.
    pub fn operators_authenticated(&self) -> bool {
        self.mutual_tls || self.operator_token.is_some() || self.reader_token.is_some()
    }

    /// Beyond loopback, both APIs must authenticate their callers unless the
    /// operator said `--no-auth`: otherwise anyone who reaches the port can
    /// start sweeps or report results as any host.
    pub fn check_exposure(
        &self,
        listen: std::net::SocketAddr,
        no_auth: bool,
    ) -> Result<(), SecurityError> {
        if listen.ip().is_loopback() || no_auth {
            return Ok(());
        }
        let mut open = Vec::new();
        if !self.agents_authenticated() {
            open.push("agents (--agent-token-file or --agent-tokens)");
        }
        if !self.operators_authenticated() {
            open.push("operators (--operator-token-file or --reader-token-file)");
        }
        if open.is_empty() {
            return Ok(());
        }
        Err(SecurityError::Invalid(format!(
            "refusing to listen on {listen} with no authentication for {}: give those, or --client-ca for certificate roles (try `fleetbench dev-certs DIR`), or --no-auth on a network you trust",
            open.join(" and ")
        )))
    }

    /// One line for the log: who is admitted how.
    pub fn describe(&self) -> String {
        let mut agents = Vec::new();
        let mut operators = Vec::new();
        if self.mutual_tls {
            agents.push("certificate names".to_string());
            operators.push("certificate roles".to_string());
        }
        if let Some(t) = &self.host_tokens {
            agents.push(format!("per-host tokens for {} hosts", t.len()));
        }
        if self.agent_token.is_some() {
            agents.push("shared agent token".into());
        }
        if self.operator_token.is_some() {
            operators.push("operator token".into());
        }
        if self.reader_token.is_some() {
            operators.push("reader token".into());
        }
        let or_open = |v: Vec<String>| {
            if v.is_empty() {
                "NOT AUTHENTICATED".to_string()
            } else {
                v.join(" + ")
            }
        };
        format!(
            "agents: {}; operators: {}",
            or_open(agents),
            or_open(operators)
        )
    }

    pub fn agent_gate(self: &Arc<Self>) -> AgentGate {
        AgentGate {
            settings: self.clone(),
        }
    }

    pub fn control_gate(self: &Arc<Self>) -> ControlGate {
        ControlGate {
            settings: self.clone(),
        }
    }
}

/// The roles of the leaf certificate the client presented, if it presented
/// one.
fn client_certificate<T>(request: &Request<T>) -> Option<Result<CertificateRoles, String>> {
    let certs = request.peer_certs()?;
    let leaf: &CertificateDer<'_> = certs.first()?;
    Some(CertificateRoles::from_der(leaf))
}

const AGENT_TOKEN_HINT: &str = "--token-file FILE or FLEETBENCH_AGENT_TOKEN";
const OPERATOR_TOKEN_HINT: &str = "--operator-token-file FILE or FLEETBENCH_OPERATOR_TOKEN";

/// What an authenticated agent's session may call itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCaller {
    /// Names its client certificate carries (`None`: no certificate role).
    pub certificate_names: Option<BTreeSet<String>>,
    /// The host a per-host token binds it to.
    pub token_host: Option<String>,
    /// Names bound to per-host tokens, which only those tokens may use.
    pub bound_names: Arc<BTreeSet<String>>,
    /// For logs: how it proved who it is.
    pub proof: String,
}

impl AgentCaller {
    /// Whether this caller may be the host `name`; the error says what to fix.
    pub fn may_be(&self, name: &str) -> Result<(), String> {
        if let Some(names) = &self.certificate_names
            && !names.contains(name)
        {
            let carried: Vec<&str> = names.iter().map(String::as_str).collect();
            return Err(format!(
                "this agent's certificate is for {}, not '{name}': run it with --name {} or give it a certificate naming {name} (SAN URI:{AGENT_URI_PREFIX}{name})",
                carried.join(", "),
                carried.first().copied().unwrap_or("NAME"),
            ));
        }
        match &self.token_host {
            Some(host) if host != name => Err(format!(
                "this agent's token belongs to host '{host}', not '{name}': run it with --name {host} or give it {name}'s token"
            )),
            None if self.bound_names.contains(name) => Err(format!(
                "host '{name}' has its own token (--agent-tokens): give this agent that token with {AGENT_TOKEN_HINT}"
            )),
            _ => Ok(()),
        }
    }
}

/// What an authenticated operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperatorCaller {
    pub access: Access,
}

/// The agent API's gate: admits agents, refuses operators' credentials with
/// a word on why, and leaves an [`AgentCaller`] for the session handler.
#[derive(Debug, Clone)]
pub struct AgentGate {
    settings: Arc<AuthSettings>,
}

/// The roles of the client certificate mutual TLS requires. The TLS layer
/// demands one; a request without it came over a plain connection that
/// should not exist.
fn required_certificate<T>(request: &Request<T>) -> Result<CertificateRoles, Status> {
    match client_certificate(request) {
        Some(Ok(roles)) => Ok(roles),
        Some(Err(e)) => Err(Status::unauthenticated(e)),
        None => Err(Status::unauthenticated(
            "this coordinator requires a client certificate: connect with https:// and --tls-cert/--tls-key",
        )),
    }
}

impl AgentGate {
    pub fn admit<T>(&self, request: &Request<T>) -> Result<AgentCaller, Status> {
        let s = &self.settings;
        let mut proof = Vec::new();
        let certificate_names = if s.mutual_tls {
            let roles = required_certificate(request)?;
            if roles.agent_names.is_empty() {
                let why = if roles.operator.is_some() {
                    format!(
                        "the certificate {} is an operator's ({OPERATOR_URI}): an agent needs a certificate with SAN URI:{AGENT_URI_PREFIX}NAME",
                        roles.subject
                    )
                } else {
                    format!(
                        "the certificate {} names no host: an agent needs a certificate with SAN URI:{AGENT_URI_PREFIX}NAME or DNS:NAME (`fleetbench dev-certs DIR --agent NAME`)",
                        roles.subject
                    )
                };
                return Err(Status::permission_denied(why));
            }
            proof.push(format!("certificate for {}", roles.agent_names_text()));
            Some(roles.agent_names)
        } else {
            None
        };

        let mut token_host = None;
        if s.agent_token.is_some() || s.host_tokens.is_some() {
            let Some(presented) = presented_token(request.metadata()) else {
                return Err(Status::unauthenticated(format!(
                    "this coordinator requires the agent token: give it with {AGENT_TOKEN_HINT}"
                )));
            };
            if let Some(host) = s.host_tokens.as_ref().and_then(|t| t.host_of(presented)) {
                proof.push(format!("per-host token of {host}"));
                token_host = Some(host.to_string());
            } else if s.agent_token.as_ref().is_some_and(|t| t.matches(presented)) {
                proof.push("shared agent token".into());
            } else if let Some(which) =
                [(&s.operator_token, "operator"), (&s.reader_token, "reader")]
                    .into_iter()
                    .find_map(|(t, which)| {
                        t.as_ref().filter(|t| t.matches(presented)).map(|_| which)
                    })
            {
                return Err(Status::permission_denied(format!(
                    "the {which} token was given where the agent token is needed: give the agent token with {AGENT_TOKEN_HINT}"
                )));
            } else {
                return Err(Status::unauthenticated(format!(
                    "the agent token was rejected: check {AGENT_TOKEN_HINT} against the coordinator's"
                )));
            }
        }
        Ok(AgentCaller {
            certificate_names,
            token_host,
            bound_names: s
                .host_tokens
                .as_ref()
                .map(|t| t.names.clone())
                .unwrap_or_default(),
            proof: if proof.is_empty() {
                "no authentication".into()
            } else {
                proof.join(" + ")
            },
        })
    }
}

impl Interceptor for AgentGate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = self.admit(&request)?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The control API's gate: admits operators at their access level, refuses
/// agents' credentials, and leaves an [`OperatorCaller`] for the handlers.
#[derive(Debug, Clone)]
pub struct ControlGate {
    settings: Arc<AuthSettings>,
}

impl ControlGate {
    pub fn admit<T>(&self, request: &Request<T>) -> Result<OperatorCaller, Status> {
        let s = &self.settings;
        let mut access = Access::Full;
        if s.mutual_tls {
            let roles = required_certificate(request)?;
            match roles.operator {
                Some(level) => access = access.min(level),
                None if !roles.agent_names.is_empty() => {
                    return Err(Status::permission_denied(format!(
                        "the certificate {} is an agent's (for {}): agent certificates cannot call the control API; use an operator certificate (SAN URI:{OPERATOR_URI})",
                        roles.subject,
                        roles.agent_names_text()
                    )));
                }
                None => {
                    return Err(Status::permission_denied(format!(
                        "the certificate {} carries no operator role: operators need SAN URI:{OPERATOR_URI} (or URI:{READER_URI} to read only)",
                        roles.subject
                    )));
                }
            }
        }
        if s.operator_token.is_some() || s.reader_token.is_some() {
            let Some(presented) = presented_token(request.metadata()) else {
                return Err(Status::unauthenticated(format!(
                    "this coordinator requires the operator token: give it with {OPERATOR_TOKEN_HINT}"
                )));
            };
            if s.operator_token
                .as_ref()
                .is_some_and(|t| t.matches(presented))
            {
                access = access.min(Access::Full);
            } else if s
                .reader_token
                .as_ref()
                .is_some_and(|t| t.matches(presented))
            {
                access = access.min(Access::Read);
            } else if s.agent_token.as_ref().is_some_and(|t| t.matches(presented))
                || s.host_tokens
                    .as_ref()
                    .is_some_and(|t| t.host_of(presented).is_some())
            {
                return Err(Status::permission_denied(format!(
                    "the agent token was given where the operator token is needed: give the operator token with {OPERATOR_TOKEN_HINT}"
                )));
            } else {
                return Err(Status::unauthenticated(format!(
                    "the operator token was rejected: check {OPERATOR_TOKEN_HINT} against the coordinator's"
                )));
            }
        }
        Ok(OperatorCaller { access })
    }
}

impl Interceptor for ControlGate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = self.admit(&request)?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// For a control handler: refuses unless the gate admitted the caller with
/// at least `needed` (what the action is named for the message).
pub fn require<T>(request: &Request<T>, needed: Access, action: &str) -> Result<(), Status> {
    let access = request
        .extensions()
        .get::<OperatorCaller>()
        .map(|c| c.access)
        // Every request passes the gate; a missing answer is a wiring bug,
        // and the safe reading of it is "no rights".
        .ok_or_else(|| Status::internal("the request was not authenticated"))?;
    if access >= needed {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "read-only access cannot {action}: use the operator token or an operator certificate (SAN URI:{OPERATOR_URI})"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType};

    fn cert(sans: Vec<SanType>) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = sans;
        let key = KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(s.try_into().expect("uri"))
    }

    fn dns(s: &str) -> SanType {
        SanType::DnsName(s.try_into().expect("dns"))
    }

    #[test]
    fn roles_come_from_the_subject_alternative_names() {
        let agent = CertificateRoles::from_der(&cert(vec![
            uri("fleetbench:agent:gpu-07"),
            dns("gpu-07.example.com"),
            dns("*.example.com"),
            uri("fleetbench:agent:bad name"),
        ]))
        .expect("roles");
        assert_eq!(agent.operator, None);
        assert_eq!(
            agent
                .agent_names
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["gpu-07", "gpu-07.example.com"]
        );

        let operator =
            CertificateRoles::from_der(&cert(vec![uri(OPERATOR_URI), dns("laptop.example.com")]))
                .expect("roles");
        assert_eq!(operator.operator, Some(Access::Full));
        assert!(operator.agent_names.is_empty(), "{operator:?}");

        let reader = CertificateRoles::from_der(&cert(vec![uri(READER_URI)])).expect("roles");
        assert_eq!(reader.operator, Some(Access::Read));
        let nobody = CertificateRoles::from_der(&cert(vec![])).expect("roles");
        assert_eq!((nobody.operator, nobody.agent_names.len()), (None, 0));
    }

    #[test]
    fn host_tokens_bind_names_and_the_file_is_checked() {
        let line = |name: &str, token: &str| format!("{name} {}\n", hex(&token_hash(token)));
        let text = format!(
            "# hosts\n{}{}",
            line("gpu-01", "token-of-gpu-01-abcdef"),
            line("gpu-02", "token-of-gpu-02-abcdef")
        );
        let tokens = HostTokens::parse(&text, "t").expect("parse");
        assert_eq!(tokens.host_of("token-of-gpu-02-abcdef"), Some("gpu-02"));
        assert_eq!(tokens.host_of("token-of-gpu-03-abcdef"), None);

        let caller = |token_host: Option<&str>| AgentCaller {
            certificate_names: None,
            token_host: token_host.map(str::to_string),
            bound_names: tokens.names.clone(),
            proof: String::new(),
        };
        assert!(caller(Some("gpu-01")).may_be("gpu-01").is_ok());
        let e = caller(Some("gpu-01"))
            .may_be("gpu-02")
            .expect_err("other host");
        assert!(e.contains("belongs to host 'gpu-01'"), "{e}");
        let e = caller(None).may_be("gpu-02").expect_err("bound name");
        assert!(e.contains("has its own token"), "{e}");
        assert!(caller(None).may_be("gpu-99").is_ok());

        for (bad, expected) in [
            ("gpu-01\n", "write NAME SHA256HEX"),
            ("gpu~01 00\n", "'~'"),
            ("gpu-01 abc\n", "64 hex digits"),
            (
                &format!("{}{}", line("a", "x"), line("a", "y")),
                "listed twice",
            ),
            (
                &format!("{}{}", line("a", "x"), line("b", "x")),
                "share one token",
            ),
            ("# nothing\n", "lists no host"),
        ] {
            let e = HostTokens::parse(bad, "f").expect_err(bad).to_string();
            assert!(e.contains(expected), "{bad:?}: {e}");
        }
    }

    #[test]
    fn certificate_names_bind_agents() {
        let caller = AgentCaller {
            certificate_names: Some(["gpu-07".to_string()].into()),
            token_host: None,
            bound_names: Arc::default(),
            proof: String::new(),
        };
        assert!(caller.may_be("gpu-07").is_ok());
        let e = caller.may_be("gpu-08").expect_err("another name");
        assert!(e.contains("certificate is for gpu-07, not 'gpu-08'"), "{e}");
    }

    #[test]
    fn beyond_loopback_both_apis_need_authentication_or_no_auth() {
        let token = || Some(Token::new("0123456789abcdef0123", "t").expect("token"));
        let everywhere: std::net::SocketAddr = "0.0.0.0:7070".parse().expect("addr");
        let loopback: std::net::SocketAddr = "127.0.0.1:7070".parse().expect("addr");
        let open = AuthSettings::default();
        assert!(open.check_exposure(loopback, false).is_ok());
        let e = open
            .check_exposure(everywhere, false)
            .expect_err("open")
            .to_string();
        assert!(
            e.contains("agents") && e.contains("operators") && e.contains("--no-auth"),
            "{e}"
        );
        assert!(open.check_exposure(everywhere, true).is_ok());
        let agents_only = AuthSettings {
            agent_token: token(),
            ..AuthSettings::default()
        };
        let e = agents_only
            .check_exposure(everywhere, false)
            .expect_err("half")
            .to_string();
        assert!(!e.contains("agents (") && e.contains("operators"), "{e}");
        let both = AuthSettings {
            agent_token: token(),
            reader_token: token(),
            ..AuthSettings::default()
        };
        assert!(both.check_exposure(everywhere, false).is_ok());
        let mtls = AuthSettings {
            mutual_tls: true,
            ..AuthSettings::default()
        };
        assert!(mtls.check_exposure(everywhere, false).is_ok());
    }
}
