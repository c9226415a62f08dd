//! The state shared by every request handler.

use axum::extract::FromRef;
use engine::Database;
use leptos::config::LeptosOptions;

/// What handlers and server functions need: the database and Leptos' rendering options.
#[derive(Clone, Debug)]
pub struct AppState {
    pub db: Database,
    pub leptos: LeptosOptions,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos.clone()
    }
}
