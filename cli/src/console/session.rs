//! Who may act through the console: the person who has the token it printed at start.
//!
//! Signing in with the token gives the browser a session cookie (`HttpOnly`, `SameSite=Strict`)
//! and the page a CSRF token it sends with every action. An action needs both, and a request
//! from another origin (`Origin`, `Sec-Fetch-Site`) is refused before either is looked at.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, header};
use subtle::ConstantTimeEq as _;

/// How long a session lasts without use.
const IDLE: Duration = Duration::from_secs(12 * 3600);
/// The session cookie's name.
pub const COOKIE: &str = "trellis_console";
/// The header the page sends its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A random token, 32 bytes as hex.
pub fn token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the system's random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Session {
    csrf: String,
    used: Instant,
}

/// The sign-in token and the sessions it opened.
pub struct Sessions {
    /// `None`: the console holds no operator key, so nobody may act.
    sign_in: Option<String>,
    open: Mutex<HashMap<String, Session>>,
}

/// Why an action is refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(
        "this console is read-only: it holds no operator key (start it with --operator-key, or \
         a context that names one)"
    )]
    ReadOnly,
    #[error("the request comes from another origin")]
    CrossOrigin,
    #[error("not signed in: sign in with the token `trellis console` printed")]
    NotSignedIn,
    #[error("missing or wrong CSRF token: reload the page")]
    Csrf,
    #[error("wrong token")]
    WrongToken,
}

impl Refused {
    pub fn status(&self) -> StatusCode {
        match self {
            Refused::ReadOnly | Refused::CrossOrigin | Refused::Csrf => StatusCode::FORBIDDEN,
            Refused::NotSignedIn | Refused::WrongToken => StatusCode::UNAUTHORIZED,
        }
    }
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("actions", &self.sign_in.is_some()).finish()
    }
}

impl Sessions {
    /// Sessions opened with `sign_in` (`None`: a read-only console).
    pub fn new(sign_in: Option<String>) -> Self {
        Self { sign_in, open: Mutex::default() }
    }

    /// Whether anyone may act at all.
    pub fn actions(&self) -> bool {
        self.sign_in.is_some()
    }

    /// Opens a session for `token`: its id (the cookie) and its CSRF token.
    pub fn sign_in(&self, headers: &HeaderMap, token: &str) -> Result<(String, String), Refused> {
        same_origin(headers)?;
        let expected = self.sign_in.as_deref().ok_or(Refused::ReadOnly)?;
        if !bool::from(expected.as_bytes().ct_eq(token.trim().as_bytes())) {
            return Err(Refused::WrongToken);
        }
        let (id, csrf) = (self::token(), self::token());
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|_, s| s.used.elapsed() < IDLE);
        open.insert(id.clone(), Session { csrf: csrf.clone(), used: Instant::now() });
        Ok((id, csrf))
    }

    /// The CSRF token of the session the request's cookie names, if it is open.
    pub fn csrf_of(&self, headers: &HeaderMap) -> Option<String> {
        let id = cookie(headers)?;
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(id).filter(|s| s.used.elapsed() < IDLE).map(|s| s.csrf.clone())
    }

    /// Checks an action: a same-origin request, of an open session, with its CSRF token.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refused> {
        if !self.actions() {
            return Err(Refused::ReadOnly);
        }
        same_origin(headers)?;
        let id = cookie(headers).ok_or(Refused::NotSignedIn)?;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let session = open.get_mut(id).filter(|s| s.used.elapsed() < IDLE);
        let session = session.ok_or(Refused::NotSignedIn)?;
        let sent = headers.get(CSRF_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
        if !bool::from(session.csrf.as_bytes().ct_eq(sent)) {
            return Err(Refused::Csrf);
        }
        session.used = Instant::now();
        Ok(())
    }
}

/// The session id in the request's cookie.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// Refuses requests a browser says come from another site, or whose `Origin` is not the host
/// they were sent to.
fn same_origin(headers: &HeaderMap) -> Result<(), Refused> {
    let text = |name| headers.get(name).and_then(|v: &axum::http::HeaderValue| v.to_str().ok());
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site"))
        && site != "same-origin"
        && site != "none"
    {
        return Err(Refused::CrossOrigin);
    }
    if let Some(origin) = text(header::ORIGIN) {
        let host = text(header::HOST).ok_or(Refused::CrossOrigin)?;
        let origin_host =
            origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
        if origin_host != Some(host) {
            return Err(Refused::CrossOrigin);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn an_action_needs_the_session_its_csrf_token_and_the_same_origin() {
        let sessions = Sessions::new(Some("t0k".into()));
        let page = [("host", "127.0.0.1:8800"), ("origin", "http://127.0.0.1:8800")];
        assert!(matches!(sessions.sign_in(&headers(&page), "nope"), Err(Refused::WrongToken)));
        let (id, csrf) = sessions.sign_in(&headers(&page), "t0k").unwrap();
        let cookie = format!("other=1; {COOKIE}={id}");
        let mut ok = headers(&page);
        ok.insert("cookie", HeaderValue::from_str(&cookie).unwrap());
        ok.insert(CSRF_HEADER, HeaderValue::from_str(&csrf).unwrap());
        sessions.check(&ok).unwrap();

        let mut no_csrf = ok.clone();
        no_csrf.remove(CSRF_HEADER);
        assert!(matches!(sessions.check(&no_csrf), Err(Refused::Csrf)));
        let mut elsewhere = ok.clone();
        elsewhere.insert("origin", HeaderValue::from_static("http://evil.example"));
        assert!(matches!(sessions.check(&elsewhere), Err(Refused::CrossOrigin)));
        let mut cross_site = ok.clone();
        cross_site.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(matches!(sessions.check(&cross_site), Err(Refused::CrossOrigin)));
        let mut no_cookie = ok.clone();
        no_cookie.remove("cookie");
        assert!(matches!(sessions.check(&no_cookie), Err(Refused::NotSignedIn)));
    }

    #[test]
    fn a_console_without_an_operator_key_refuses_every_action() {
        let sessions = Sessions::new(None);
        assert!(matches!(sessions.sign_in(&HeaderMap::new(), ""), Err(Refused::ReadOnly)));
        assert!(matches!(sessions.check(&HeaderMap::new()), Err(Refused::ReadOnly)));
    }
}
