//! Switchyard's dashboard: Leptos components, pages and their server functions.
//!
//! The crate is compiled twice. With the `ssr` feature it is a library of the `server` binary: pages
//! render to HTML and `#[server]` functions run their bodies against the database. With `hydrate` it
//! is the browser bundle (`cdylib`, wasm32): the same components hydrate the server's HTML and the
//! server functions become HTTP calls. Nothing server-only (sqlx, axum, the engine) is reachable
//! from the `hydrate` build; see `ARCHITECTURE.md`.
//!
//! Layout: `routes/` holds one module per page, `components/` the shared pieces, [`models`] the
//! serializable shapes server functions return, [`error`] the typed error they all return.

pub mod audit;
pub mod components;
#[cfg(feature = "ssr")]
pub mod context;
pub mod error;
pub mod json;
pub mod live;
pub mod models;
pub mod routes;
pub mod session;
pub mod tokens;

/// The engine's management client as the server provides it to server functions.
#[cfg(feature = "ssr")]
pub type EngineClient = engine::Client<engine::SqliteStore>;

use leptos::prelude::*;
use leptos_meta::{HashedStylesheet, MetaTags, Title, provide_meta_context};
use leptos_router::{
    components::{Route, Router, Routes},
    path,
};

use crate::components::layout::Layout;
use crate::routes::{
    approvals::Approvals,
    audit::AuditLog,
    detail::InstanceDetailPage,
    entities::{Entities, EntityDetailPage},
    instances::Instances,
    not_found::NotFound,
    overview::Overview,
    resilience::Resilience,
    runaways::Runaways,
    start::Start,
    tokens::ApiTokens,
};

/// The HTML document around the app, rendered on the server only.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <meta name="color-scheme" content="light dark" />
                <link rel="icon" href="/favicon.svg" type="image/svg+xml" />
                <HashedStylesheet options=options.clone() id="switchyard" />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

/// The dashboard's root component: meta tags, stylesheet, layout and routes.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Title formatter=|page: String| {
            if page.is_empty() { "Switchyard".to_owned() } else { format!("{page} · Switchyard") }
        } />
        <Router>
            <Layout>
                <Routes fallback=NotFound>
                    <Route path=path!("") view=Overview />
                    <Route path=path!("/instances") view=Instances />
                    <Route path=path!("/instances/:id") view=InstanceDetailPage />
                    <Route path=path!("/start") view=Start />
                    <Route path=path!("/approvals") view=Approvals />
                    <Route path=path!("/entities") view=Entities />
                    <Route path=path!("/entities/:id") view=EntityDetailPage />
                    <Route path=path!("/resilience") view=Resilience />
                    <Route path=path!("/runaways") view=Runaways />
                    <Route path=path!("/audit") view=AuditLog />
                    <Route path=path!("/tokens") view=ApiTokens />
                </Routes>
            </Layout>
        </Router>
    }
}

/// Browser entry point: hydrates the server-rendered body.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(App);
}
