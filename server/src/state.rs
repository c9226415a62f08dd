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
        let leptos = LeptosOptions::builder()
            .output_name("app")
            .site_root(site_root.display().to_string())
            .site_pkg_dir("pkg")
            .site_addr(addr)
            .build();
        // The feed's task needs a runtime; outside one (route listing) it is simply absent.
        let live = engine
            .clone()
            .filter(|_| tokio::runtime::Handle::try_current().is_ok())
            .map(crate::live::start);
        AppState {
            db,
            engine,
            auth,
            live,
            leptos,
        }
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
