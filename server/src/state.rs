//! The state shared by every request handler.

use std::{net::SocketAddr, path::Path};

use axum::extract::FromRef;
use engine::Database;
use leptos::config::LeptosOptions;

use crate::auth::Auth;

/// What handlers and server functions need: the database, the engine's management client (absent
/// when the engine does not run on this backend), how users sign in, and Leptos' rendering
/// options.
#[derive(Clone, Debug)]
pub struct AppState {
    pub db: Database,
    pub engine: Option<app::EngineClient>,
    pub auth: Auth,
    /// Live dashboard figures (absent without the engine).
    pub live: Option<crate::live::LiveFeed>,
    pub leptos: LeptosOptions,
    /// Host names requests may address.
    pub allowed_hosts: crate::hosts::AllowedHosts,
    /// At most this many page renders and server-function calls run at once; the rest wait.
    pub heavy: std::sync::Arc<tokio::sync::Semaphore>,
    /// HTTP request figures for `/metrics`.
    pub metrics: crate::metrics::HttpMetrics,
}

impl AppState {
    /// State for a server whose browser bundle lives in `site_root/pkg` and which is reachable at
    /// `addr`.
    pub fn new(
        db: Database,
        engine: Option<app::EngineClient>,
        auth: Auth,
        site_root: &Path,
        addr: SocketAddr,
    ) -> AppState {
        let pkg_dir = bundle_dir(site_root);
        let leptos = LeptosOptions::builder()
            .output_name("app")
            .site_root(site_root.display().to_string())
            .site_pkg_dir(pkg_dir)
            .site_addr(addr)
            .build();
        // The feed's task needs a runtime; outside one (route listing) it is simply absent.
        let live = engine
            .clone()
            .filter(|_| tokio::runtime::Handle::try_current().is_ok())
            .map(crate::live::start);
        let allowed_hosts =
            crate::hosts::AllowedHosts::defaults(addr, auth.redirect_host().as_deref());
        AppState {
            db,
            engine,
            auth,
            live,
            leptos,
            allowed_hosts,
            heavy: std::sync::Arc::new(tokio::sync::Semaphore::new(crate::limits::HEAVY_AT_ONCE)),
            metrics: crate::metrics::HttpMetrics::default(),
        }
    }

    /// Replaces the allowed host names.
    pub fn with_allowed_hosts(mut self, hosts: crate::hosts::AllowedHosts) -> AppState {
        self.allowed_hosts = hosts;
        self
    }
}

impl FromRef<AppState> for crate::hosts::AllowedHosts {
    fn from_ref(state: &AppState) -> Self {
        state.allowed_hosts.clone()
    }
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos.clone()
    }
}

impl FromRef<AppState> for Auth {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

/// The bundle's folder under the site root, as Leptos' `site_pkg_dir`: `cargo xtask build` puts
/// the bundle in `pkg/<hash of its content>/` and names that folder in `build.txt`; pages then
/// load it from there, and browsers keep it (see `limits`). Without the file (a hand-made site),
/// the bundle is read from `pkg/`.
pub fn bundle_dir(site_root: &Path) -> String {
    std::fs::read_to_string(site_root.join("build.txt"))
        .ok()
        .map(|id| id.trim().to_owned())
        .filter(|id| crate::limits::is_build_id(id))
        .map_or_else(|| "pkg".to_owned(), |id| format!("pkg/{id}"))
}
