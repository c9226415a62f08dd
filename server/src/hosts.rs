//! Allowed hosts: the names this server answers to, checked before any handler runs.
//!
//! A browser sends the name it looked up in `Host`. A page on `evil.example` whose name an
//! attacker re-points at 127.0.0.1 (DNS rebinding) reaches a loopback-only server with
//! `Host: evil.example`, and to the browser it is same-origin, so the CSRF check alone cannot tell.
//! Refusing unknown names (421 Misdirected Request) closes that door. Ports are not compared: the
//! attacker controls the name, not the port. Requests with no `Host` (HTTP/1.0, in-process
//! tests) carry no name to check and pass.
//!
//! Default list: the bind address's IP (with `localhost`, `127.0.0.1` and `::1` when it is a
//! loopback address) and the OIDC redirect URL's host. `--allowed-hosts` replaces it. The probes
//! (`/healthz`, `/readyz`) answer whatever the name: supervisors and load balancers address them
//! by IP, and they reveal nothing.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

/// Host names (lowercase, without port or brackets) this server answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHosts(Arc<Vec<String>>);

impl AllowedHosts {
    /// An explicit list (names as given, with or without a port).
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(names: I) -> AllowedHosts {
        let mut list: Vec<String> = names
            .into_iter()
            .filter_map(|n| host_name(n.as_ref().trim()))
            .collect();
        list.sort();
        list.dedup();
        AllowedHosts(Arc::new(list))
    }

    /// The defaults for a server bound to `bind`, plus `redirect_host` (the OIDC redirect URL's).
    pub fn defaults(bind: SocketAddr, redirect_host: Option<&str>) -> AllowedHosts {
        let mut names = Vec::new();
        if bind.ip().is_loopback() {
            names.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
        }
        if !bind.ip().is_unspecified() {
            names.push(bind.ip().to_string());
        }
        names.extend(redirect_host.map(str::to_owned));
        AllowedHosts::new(names)
    }

    /// Whether `host` (a `Host` header value: name, optional port) is allowed.
    pub fn allows(&self, host: &str) -> bool {
        host_name(host).is_some_and(|name| self.0.contains(&name))
    }

    /// The names, for the start-up log.
    pub fn names(&self) -> &[String] {
        &self.0
    }
}

/// The name part of `host[:port]` or `[v6]:port`, lowercased; `None` if it is malformed.
fn host_name(host: &str) -> Option<String> {
    if host.is_empty() {
        return None;
    }
    let name = if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.starts_with(':')) {
            return None;
        }
        inside
    } else if host.matches(':').count() > 1 {
        host // a bare IPv6 address
    } else {
        host.split_once(':').map_or(host, |(name, _)| name)
    };
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    valid.then(|| name.to_ascii_lowercase())
}

/// Middleware: 421 for a `Host` this server does not answer to.
pub async fn check(State(allowed): State<AllowedHosts>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("\u{fffd}").to_owned())
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    let probe = matches!(request.uri().path(), "/healthz" | "/readyz");
    match host {
        Some(host) if !probe && !allowed.allows(&host) => {
            tracing::warn!(host = %host.escape_debug(), "refused a request for a host this server does not serve");
            (
                StatusCode::MISDIRECTED_REQUEST,
                "this server does not answer to that host name (see --allowed-hosts)",
            )
                .into_response()
        }
        _ => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_defaults_allow_local_names_on_any_port_and_nothing_else() {
        let hosts = AllowedHosts::defaults("127.0.0.1:3000".parse().unwrap(), None);
        for ok in [
            "127.0.0.1:3000",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:3000",
        ] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example:3000",
            "evil.example",
            "127.0.0.1.evil.example",
            "",
            "[::1]x",
            "local host",
        ] {
            assert!(!hosts.allows(bad), "{bad}");
        }
    }

    #[test]
    fn the_redirect_host_and_explicit_lists() {
        let hosts =
            AllowedHosts::defaults("0.0.0.0:3000".parse().unwrap(), Some("switchyard.example"));
        assert!(hosts.allows("switchyard.example:443"));
        assert!(!hosts.allows("0.0.0.0:3000"));
        assert!(!hosts.allows("localhost:3000"));
        let explicit = AllowedHosts::new(["Ops.Example.com:8443", "10.0.0.5"]);
        assert!(explicit.allows("ops.example.com"));
        assert!(explicit.allows("10.0.0.5:3000"));
        assert!(!explicit.allows("example.com"));
    }
}
