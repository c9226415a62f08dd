//! Bounds on what one client can make the server do, and the headers every response carries.
//!
//! - **Request bodies** are limited to [`MAX_BODY_BYTES`]; larger ones get 413 before a handler
//!   reads them (`tower-http`'s body limit, which also stops a body that lies about its length).
//! - **Heavy requests** (page renders and server functions: the ones that query the database)
//!   run at most [`HEAVY_AT_ONCE`] at a time and queue in arrival order beyond that, so a burst of
//!   page loads waits a little instead of exhausting the database pool (which answered 503 "pool
//!   timed out" to a tenth of 2,000 concurrent loads). At most [`MAX_WAITING`] wait; past that the
//!   answer is 503 with `Retry-After`, so memory stays bounded. A page's permit is held until its
//!   streamed body ends, since resources resolve while it streams.
//! - **Security headers** on every response: `X-Content-Type-Options: nosniff`,
//!   `Referrer-Policy: same-origin`, `X-Frame-Options: DENY`, a `Content-Security-Policy` (pages
//!   get one with the render's script nonce from [`page_csp`]; everything else a strict default),
//!   and `Cache-Control`: `no-store` for pages and API answers (they carry user data),
//!   `public, max-age=31536000, immutable` for the bundle folder's files (`/pkg/<hash>/app.js`:
//!   a new build has new names, so a browser never asks again), a day for the favicon, and
//!   `no-cache` for the other static files (revalidated with `If-Modified-Since`, answered 304).

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use futures_util::StreamExt;

/// Largest request body accepted, in bytes: the engine's 256 KiB payload limit, form-encoded
/// (up to three bytes per byte), with room for the other fields.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Page renders and server-function calls running at once: the database pool's size.
pub const HEAVY_AT_ONCE: usize = 8;
/// Heavy requests waiting for their turn before new ones are turned away.
pub const MAX_WAITING: usize = 10_000;

static WAITING: AtomicUsize = AtomicUsize::new(0);

/// Requests that neither render a page nor call a server function: static files, probes, the
/// login flow (waits on the identity provider, not the database) and the live event stream
/// (long-lived; it reads one shared snapshot).
fn is_light(path: &str) -> bool {
    path.starts_with("/pkg/")
        || path.starts_with("/auth/")
        || matches!(
            path,
            "/healthz" | "/readyz" | "/api/live" | "/favicon.svg" | "/favicon.ico"
        )
}

/// Middleware: queues heavy requests behind [`HEAVY_AT_ONCE`] permits.
pub async fn queue_heavy(
    State(permits): State<Arc<tokio::sync::Semaphore>>,
    request: Request,
    next: Next,
) -> Response {
    if is_light(request.uri().path()) {
        return next.run(request).await;
    }
    if WAITING.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING {
        WAITING.fetch_sub(1, Ordering::SeqCst);
        tracing::warn!("turned a request away: {MAX_WAITING} are already waiting");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "the server is busy; try again in a moment",
        )
            .into_response();
    }
    let permit = permits.acquire_owned().await;
    WAITING.fetch_sub(1, Ordering::SeqCst);
    let Ok(permit) = permit else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        )
            .into_response();
    };
    let response = next.run(request).await;
    // Keep the permit until the body has been produced: streamed pages query as they stream.
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream().map(move |chunk| {
        let _held = &permit;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// The Content-Security-Policy of a rendered page: scripts from this site or carrying the
/// render's nonce (Leptos puts it on its hydration and streaming scripts), wasm compilation,
/// forms posting here or to the identity provider (logout continues there).
pub fn page_csp(nonce: &str, form_targets: &str) -> String {
    format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; \
         style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
         object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'{form_targets}"
    )
}

/// The policy of everything that is not a rendered page (login pages, JSON, static files).
const DEFAULT_CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// Hex characters in a bundle folder's name (`cargo xtask build` writes `pkg/<16 hex>/`).
const BUILD_ID_CHARS: usize = 16;

/// Whether `name` is a bundle folder's name: the hash of the bundle's content.
pub fn is_build_id(name: &str) -> bool {
    name.len() == BUILD_ID_CHARS && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `path` is a file of a bundle folder, whose name carries its content's hash.
pub fn is_fingerprinted(path: &str) -> bool {
    path.strip_prefix("/pkg/")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(folder, file)| is_build_id(folder) && !file.is_empty())
}

/// Middleware: the security and cache headers described in the module docs.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let (fingerprinted, is_static, favicon) = (
        is_fingerprinted(path),
        path.starts_with("/pkg/") || path.starts_with("/favicon."),
        path == "/favicon.svg",
    );
    let mut response = next.run(request).await;
    // A missing file is not kept: it may be there after the next build.
    let ok = response.status().is_success();
    let cache = if fingerprinted && ok {
        "public, max-age=31536000, immutable"
    } else if favicon && ok {
        // Its name carries no hash and browsers fetch it beside every page: a day is harmless.
        "public, max-age=86400"
    } else if is_static {
        "no-cache"
    } else {
        "no-store"
    };
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(DEFAULT_CSP));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static(cache));
    response
}

#[cfg(test)]
mod tests {
    use super::is_fingerprinted;

    #[test]
    fn only_bundle_files_named_with_their_hash_are_fingerprinted() {
        assert!(is_fingerprinted("/pkg/0123456789abcdef/app.wasm"));
        assert!(is_fingerprinted("/pkg/a1b2c3d4e5f60718/chunk_3.wasm"));
        for path in [
            "/pkg/app.js",
            "/pkg/app.0123456789abcdef.js",
            "/pkg/0123456789abcde/app.js",
            "/pkg/0123456789abcdeg/app.js",
            "/pkg/0123456789abcdef/",
            "/favicon.0123456789abcdef.svg",
            "/pkg/app.0123456789abcdef.js.map.x",
        ] {
            assert!(!is_fingerprinted(path), "{path}");
        }
    }
}
