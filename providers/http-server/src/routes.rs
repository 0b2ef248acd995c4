//! Which link serves a request: several links may share one address, told apart by the
//! request's `Host` and path prefix. Pure logic; the listener asks it for every request.

use std::time::Duration;

/// Where requests that match go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The link this route comes from.
    pub link_key: String,
    /// Only requests for this host name (the `Host` header without port); `None`: any.
    pub host: Option<String>,
    /// Only paths under this prefix (`/api` matches `/api` and `/api/...`); `None`: any.
    pub prefix: Option<String>,
    /// The component to call.
    pub target: String,
    /// Largest request body.
    pub max_body: usize,
    /// Longest a request may take.
    pub timeout: Duration,
}

impl Route {
    fn matches(&self, host: Option<&str>, path: &str) -> bool {
        let host_ok = match (&self.host, host) {
            (None, _) => true,
            (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
            (Some(_), None) => false,
        };
        let path_ok = match &self.prefix {
            None => true,
            Some(prefix) => {
                let prefix = prefix.trim_end_matches('/');
                path.strip_prefix(prefix).is_some_and(|rest| {
                    rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')
                })
            }
        };
        host_ok && path_ok
    }

    /// How specific the route is: a host beats a prefix, a longer prefix a shorter one.
    fn specificity(&self) -> (bool, usize) {
        (self.host.is_some(), self.prefix.as_ref().map_or(0, |p| p.trim_end_matches('/').len() + 1))
    }

    /// Whether two routes would claim exactly the same requests.
    pub fn same_match(&self, other: &Route) -> bool {
        let norm = |p: &Option<String>| p.as_ref().map(|p| p.trim_end_matches('/').to_owned());
        self.host.as_ref().map(|h| h.to_ascii_lowercase())
            == other.host.as_ref().map(|h| h.to_ascii_lowercase())
            && norm(&self.prefix) == norm(&other.prefix)
    }
}

/// The most specific route for a request to `host` (the `Host` header, port included or not)
/// and `path`.
pub fn select<'r>(routes: &'r [Route], host: Option<&str>, path: &str) -> Option<&'r Route> {
    let host = host.map(strip_port);
    routes.iter().filter(|r| r.matches(host, path)).max_by_key(|r| r.specificity())
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host.split_once(']').map_or(host, |(h, _)| h.trim_start_matches('['));
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(key: &str, host: Option<&str>, prefix: Option<&str>) -> Route {
        Route {
            link_key: key.into(),
            host: host.map(Into::into),
            prefix: prefix.map(Into::into),
            target: key.into(),
            max_body: 1,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn the_most_specific_route_wins() {
        let routes = [
            route("any", None, None),
            route("api", None, Some("/api")),
            route("a", Some("a.example"), None),
            route("a-api", Some("a.example"), Some("/api/")),
        ];
        let pick = |host, path| select(&routes, host, path).map(|r| r.link_key.as_str());
        assert_eq!(pick(Some("b.example:8080"), "/"), Some("any"));
        assert_eq!(pick(Some("b.example"), "/api/x"), Some("api"));
        assert_eq!(pick(Some("b.example"), "/api?q=1"), Some("api"));
        assert_eq!(pick(Some("b.example"), "/apix"), Some("any"));
        assert_eq!(pick(Some("A.Example:80"), "/"), Some("a"));
        assert_eq!(pick(Some("a.example"), "/api"), Some("a-api"));
        assert_eq!(pick(None, "/api/v1"), Some("api"));
        assert_eq!(select(&routes[2..3], Some("other"), "/"), None);
        assert_eq!(strip_port("[::1]:80"), "::1");
    }

    #[test]
    fn conflicts_are_the_same_host_and_prefix() {
        assert!(route("x", Some("A"), Some("/p/")).same_match(&route("y", Some("a"), Some("/p"))));
        assert!(!route("x", Some("a"), None).same_match(&route("y", None, None)));
    }
}
