//! Who is looking at the console: the operator or reader token exchanged at
//! the login form for a session cookie (HttpOnly, SameSite=Strict, Secure
//! over TLS, eight hours), and each session's CSRF token for its forms.
//!
//! Sessions live in memory only: a restarted coordinator asks everyone to
//! log in again, which costs a token paste and keeps no secret on disk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use fleetbench_proto::security::Token;

use crate::auth::{Access, AuthSettings};

/// The cookie's name.
pub const COOKIE: &str = "fleetbench_session";
/// How long a session lasts from its login.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Sessions kept at once; past it the oldest go first (a flood of logins
/// cannot grow the coordinator's memory).
const MAX_SESSIONS: usize = 10_000;

/// What a request may do, and the token its forms must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    pub access: Access,
    pub csrf: String,
    /// False when the console needs no login (loopback without tokens).
    pub logged_in: bool,
}

impl Viewer {
    pub fn may_change(&self) -> bool {
        self.access == Access::Full
    }
}

#[derive(Debug)]
struct Session {
    access: Access,
    csrf: String,
    expires: Instant,
}

/// How the console admits browsers.
#[derive(Debug, Clone)]
pub struct Sessions {
    auth: Arc<AuthSettings>,
    /// No tokens configured (the demo, loopback): everyone has full access
    /// without a login, with this one CSRF token.
    open: Option<String>,
    secure: bool,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
}

/// A token of random bytes, for session ids and CSRF tokens.
fn random_token() -> String {
    match Token::generate() {
        Ok(t) => t.expose().to_string(),
        // No system randomness: nothing safe can be handed out.
        Err(e) => panic!("no randomness for a session token: {e}"),
    }
}

impl Sessions {
    /// `secure`: the console is served over TLS, so cookies are `Secure`.
    pub fn new(auth: Arc<AuthSettings>, secure: bool) -> Sessions {
        let open =
            (auth.operator_token.is_none() && auth.reader_token.is_none()).then(random_token);
        Sessions {
            auth,
            open,
            secure,
            sessions: Arc::default(),
        }
    }

    /// Whether browsers log in at all.
    pub fn needs_login(&self) -> bool {
        self.open.is_none()
    }

    /// The viewer of a request, from its cookie; `None`: send it to log in.
    pub fn viewer(&self, headers: &HeaderMap) -> Option<Viewer> {
        if let Some(csrf) = &self.open {
            return Some(Viewer {
                access: Access::Full,
                csrf: csrf.clone(),
                logged_in: false,
            });
        }
        let id = cookie(headers, COOKIE)?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match sessions.get(id) {
            Some(s) if s.expires > Instant::now() => Some(Viewer {
                access: s.access,
                csrf: s.csrf.clone(),
                logged_in: true,
            }),
            Some(_) => {
                sessions.remove(id);
                None
            }
            None => None,
        }
    }

    /// The access a pasted token grants, if any.
    pub fn access_of(&self, token: &str) -> Option<Access> {
        let token = token.trim();
        if self
            .auth
            .operator_token
            .as_ref()
            .is_some_and(|t| t.matches(token))
        {
            Some(Access::Full)
        } else if self
            .auth
            .reader_token
            .as_ref()
            .is_some_and(|t| t.matches(token))
        {
            Some(Access::Read)
        } else {
            None
        }
    }

    /// A new session for `access`; returns its `Set-Cookie` value.
    pub fn start(&self, access: Access) -> String {
        let id = random_token();
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.clone(),
            Session {
                access,
                csrf: random_token(),
                expires: now + SESSION_LIFETIME,
            },
        );
        self.cookie_value(&id, SESSION_LIFETIME.as_secs())
    }

    /// Ends the request's session; returns the `Set-Cookie` that clears it.
    pub fn end(&self, headers: &HeaderMap) -> String {
        if let Some(id) = cookie(headers, COOKIE) {
            self.sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id);
        }
        self.cookie_value("", 0)
    }

    fn cookie_value(&self, id: &str, max_age: u64) -> String {
        format!(
            "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
            if self.secure { "; Secure" } else { "" }
        )
    }
}

/// A cookie's value from the `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether a state-changing request comes from this console's own page:
/// its form's CSRF token matches the session's, and the browser does not
/// call it cross-site (`Sec-Fetch-Site`, `Origin` against `Host`).
pub fn same_origin_form(headers: &HeaderMap, viewer: &Viewer, csrf: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    let token_ok: bool = viewer.csrf.as_bytes().ct_eq(csrf.as_bytes()).into();
    let site_ok = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|s| s == "same-origin" || s == "none");
    let origin_ok = match (
        headers
            .get(axum::http::header::ORIGIN)
            .and_then(|v| v.to_str().ok()),
        headers
            .get(axum::http::header::HOST)
            .and_then(|v| v.to_str().ok()),
    ) {
        (Some(origin), Some(host)) => {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                == Some(host)
        }
        _ => true,
    };
    token_ok && site_ok && origin_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Arc<AuthSettings> {
        Arc::new(AuthSettings {
            operator_token: Some(Token::new("operator-token-0123456789", "test").expect("token")),
            reader_token: Some(Token::new("reader-token-0123456789", "test").expect("token")),
            ..AuthSettings::default()
        })
    }

    fn with_cookie(set_cookie: &str) -> HeaderMap {
        let pair = set_cookie.split(';').next().expect("pair");
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            format!("other=1; {pair}").parse().expect("header"),
        );
        h
    }

    #[test]
    fn tokens_become_sessions_with_their_role_and_logout_ends_them() {
        let sessions = Sessions::new(settings(), true);
        assert!(sessions.needs_login());
        assert_eq!(sessions.viewer(&HeaderMap::new()), None);
        assert_eq!(sessions.access_of("nope"), None);
        assert_eq!(
            sessions.access_of("reader-token-0123456789\n"),
            Some(Access::Read)
        );
        let set = sessions.start(Access::Full);
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.ends_with("Secure")
        );
        let headers = with_cookie(&set);
        let viewer = sessions.viewer(&headers).expect("logged in");
        assert!(viewer.may_change() && viewer.logged_in && viewer.csrf.len() >= 32);
        let reader = sessions
            .viewer(&with_cookie(&sessions.start(Access::Read)))
            .expect("reader");
        assert!(!reader.may_change());
        assert_ne!(reader.csrf, viewer.csrf);
        assert!(sessions.end(&headers).contains("Max-Age=0"));
        assert_eq!(sessions.viewer(&headers), None);
        // A made-up session id is nobody.
        assert_eq!(
            sessions.viewer(&with_cookie("fleetbench_session=forged")),
            None
        );
    }

    #[test]
    fn forms_need_the_sessions_csrf_token_and_a_same_origin_browser() {
        let sessions = Sessions::new(settings(), false);
        let viewer = sessions
            .viewer(&with_cookie(&sessions.start(Access::Full)))
            .expect("viewer");
        let mut h = HeaderMap::new();
        h.insert("host", "127.0.0.1:8080".parse().expect("h"));
        assert!(same_origin_form(&h, &viewer, &viewer.csrf));
        assert!(!same_origin_form(&h, &viewer, "wrong"));
        h.insert("origin", "http://127.0.0.1:8080".parse().expect("h"));
        assert!(same_origin_form(&h, &viewer, &viewer.csrf));
        h.insert("origin", "http://evil.example".parse().expect("h"));
        assert!(!same_origin_form(&h, &viewer, &viewer.csrf));
        h.remove("origin");
        h.insert("sec-fetch-site", "cross-site".parse().expect("h"));
        assert!(!same_origin_form(&h, &viewer, &viewer.csrf));
    }

    #[test]
    fn without_tokens_the_console_is_open() {
        let sessions = Sessions::new(Arc::new(AuthSettings::default()), false);
        assert!(!sessions.needs_login());
        let viewer = sessions.viewer(&HeaderMap::new()).expect("open");
        assert!(viewer.may_change() && !viewer.logged_in);
    }
}
