//! Cross-site request forgery defence for every mutating request.
//!
//! Browsers label each request with where it came from: `Sec-Fetch-Site` (modern browsers) and
//! `Origin` (on every non-GET request). A mutating request (anything but GET, HEAD, OPTIONS) is
//! refused with 403 when `Sec-Fetch-Site` says it was started by another site, or when `Origin`
//! names a different host than the one addressed. Requests that carry neither header are not
//! from a browser page (scripts, curl) and cannot be forged by one, so they pass; authorisation
//! still applies to them. This is OWASP's "verifying origin with standard headers" defence; it
//! needs no token and no state.

use axum::{
    extract::Request,
    http::{HeaderMap, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

/// Why a request was refused, for the log line.
fn cross_site(headers: &HeaderMap) -> Option<String> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("invalid");
        if site != "same-origin" && site != "none" {
            return Some(format!("Sec-Fetch-Site: {site}"));
        }
    }
    let origin = headers.get(header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or("invalid");
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    match authority {
        Some(authority) if !host.is_empty() && authority.eq_ignore_ascii_case(host) => None,
        _ => Some(format!("Origin {origin} does not match Host {host}")),
    }
}

/// Middleware: refuses cross-site mutating requests with 403.
pub async fn verify_origin(request: Request, next: Next) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    if let Some(reason) = cross_site(request.headers()) {
        tracing::warn!(method = %request.method(), path = %request.uri().path(), %reason, "refused a cross-site request");
        return (
            StatusCode::FORBIDDEN,
            "cross-site request refused: this action must come from the Switchyard dashboard itself",
        )
            .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn same_origin_and_headerless_requests_pass() {
        assert_eq!(cross_site(&headers(&[])), None);
        assert_eq!(
            cross_site(&headers(&[
                ("host", "127.0.0.1:3000"),
                ("origin", "http://127.0.0.1:3000"),
                ("sec-fetch-site", "same-origin"),
            ])),
            None
        );
    }

    #[test]
    fn cross_site_requests_are_refused() {
        assert!(cross_site(&headers(&[("sec-fetch-site", "cross-site")])).is_some());
        assert!(cross_site(&headers(&[("sec-fetch-site", "same-site")])).is_some());
        assert!(
            cross_site(&headers(&[
                ("host", "127.0.0.1:3000"),
                ("origin", "http://evil.example"),
            ]))
            .is_some()
        );
        assert!(cross_site(&headers(&[("host", "127.0.0.1:3000"), ("origin", "null")])).is_some());
    }
}
