//! Request paths in normal form, before anything decides on them.
//!
//! Browsers resolve `.` and `..` before they send a URL; a crafted request need not, and a check
//! on `/auth/../instances` that sees an `/auth/` prefix would wave through a page that is not
//! public. So every path is put in normal form first: dot segments (also percent-encoded ones)
//! resolved, empty segments (`//`) and a trailing slash dropped. A GET or HEAD for a path not in
//! normal form is redirected (308) to its normal form; any other method gets 400. Everything after
//! this layer (authentication, routing) sees normal paths only.

use axum::{
    extract::Request,
    http::{Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

/// The normal form of `path`, or `None` when it already is in normal form.
fn normal_form(path: &str) -> Option<String> {
    let mut segments: Vec<&str> = Vec::new();
    let mut changed = false;
    let raw: Vec<&str> = path.split('/').skip(1).collect();
    let last = raw.len().saturating_sub(1);
    for (i, segment) in raw.into_iter().enumerate() {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        match decoded.as_str() {
            "" if i == last && i == 0 => {} // the root path "/"
            "" | "." => changed = true,
            ".." => {
                changed = true;
                segments.pop();
            }
            _ => segments.push(segment),
        }
    }
    changed.then(|| format!("/{}", segments.join("/")))
}

/// Middleware: redirects (GET, HEAD) or refuses (other methods) paths not in normal form.
pub async fn normalise(request: Request, next: Next) -> Response {
    let Some(normal) = normal_form(request.uri().path()) else {
        return next.run(request).await;
    };
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        let location = match request.uri().query() {
            Some(query) => format!("{normal}?{query}"),
            None => normal,
        };
        return (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response();
    }
    (
        StatusCode::BAD_REQUEST,
        "the request path is not in normal form (no `.`, `..`, `//` or trailing `/`)",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::normal_form;

    #[test]
    fn dot_segments_empty_segments_and_trailing_slashes_are_resolved() {
        for path in [
            "/",
            "/instances",
            "/instances/a%20b",
            "/pkg/app.wasm",
            "/a.b/c..d",
        ] {
            assert_eq!(normal_form(path), None, "{path}");
        }
        for (path, normal) in [
            ("/auth/../instances", "/instances"),
            ("/pkg/../audit", "/audit"),
            ("/auth/%2e%2e/instances/x", "/instances/x"),
            ("/auth/%2E./instances", "/instances"),
            ("/instances/", "/instances"),
            ("//evil.example", "/evil.example"),
            ("/./instances", "/instances"),
            ("/../..", "/"),
            ("/a//b", "/a/b"),
        ] {
            assert_eq!(normal_form(path).as_deref(), Some(normal), "{path}");
        }
    }
}
