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
    Lazy, LazyRoute,
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
///
/// Every page is a lazy route. `cargo xtask build` splits the wasm at the page groups below, so a
/// first visit downloads the shell (main module) and the group of the page it shows, and the other
/// groups are fetched when first needed.
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
                    <Route path=path!("") view={Lazy::<OverviewRoute>::new()} />
                    <Route path=path!("/instances") view={Lazy::<InstancesRoute>::new()} />
                    <Route path=path!("/instances/:id") view={Lazy::<InstanceRoute>::new()} />
                    <Route path=path!("/start") view={Lazy::<StartRoute>::new()} />
                    <Route path=path!("/approvals") view={Lazy::<ApprovalsRoute>::new()} />
                    <Route path=path!("/entities") view={Lazy::<EntitiesRoute>::new()} />
                    <Route path=path!("/entities/:id") view={Lazy::<EntityRoute>::new()} />
                    <Route path=path!("/resilience") view={Lazy::<ResilienceRoute>::new()} />
                    <Route path=path!("/runaways") view={Lazy::<RunawaysRoute>::new()} />
                    <Route path=path!("/audit") view={Lazy::<AuditRoute>::new()} />
                    <Route path=path!("/tokens") view={Lazy::<TokensRoute>::new()} />
                </Routes>
            </Layout>
        </Router>
    }
}

/// Declares the page groups, each one lazily loaded function (one wasm chunk), and a lazy route
/// per page that renders its page through its group's function. Few groups rather than one chunk
/// per page: the splitter gives every set of splits that shares code a chunk of its own, so eleven
/// splits make hundreds of tiny chunks to fetch, seven a few dozen. A group holds pages that share
/// most of their code, and none is over the first-visit budget (`cargo xtask test` checks it).
macro_rules! page_groups {
    ($($group:ident / $preload:ident: $groups_enum:ident {
        $($route:ident => $page:ident),+ $(,)?
    })+) => {$(
        #[derive(Clone, Copy)]
        enum $groups_enum { $($page),+ }

        #[leptos::prelude::lazy]
        fn $group(page: $groups_enum) -> AnyView {
            match page {
                $($groups_enum::$page => view! { <$page /> }.into_any()),+
            }
        }

        $(
            #[doc = concat!("The route of [`", stringify!($page), "`], loaded with its group.")]
            struct $route;

            impl LazyRoute for $route {
                fn data() -> Self {
                    $route
                }

                async fn view(_this: Self) -> AnyView {
                    $group($groups_enum::$page).await
                }

                // The router awaits this before it hydrates or shows the page, so the view is
                // ready at once: hydrating a view that is still loading would not match the
                // server's HTML. (`#[lazy]` defines the preload function in the browser only.)
                async fn preload() {
                    #[cfg(feature = "hydrate")]
                    $preload().await;
                }
            }
        )+
    )+};
}

page_groups! {
    overview_pages / __preload_overview_pages: OverviewPages { OverviewRoute => Overview }
    instance_list_pages / __preload_instance_list_pages: InstanceListPages { InstancesRoute => Instances }
    instance_detail_pages / __preload_instance_detail_pages: InstanceDetailPages { InstanceRoute => InstanceDetailPage }
    operator_pages / __preload_operator_pages: OperatorPages {
        StartRoute => Start,
        ApprovalsRoute => Approvals,
    }
    entity_pages / __preload_entity_pages: EntityPages {
        EntitiesRoute => Entities,
        EntityRoute => EntityDetailPage,
    }
    resilience_pages / __preload_resilience_pages: ResiliencePages { ResilienceRoute => Resilience }
    admin_pages / __preload_admin_pages: AdminPages {
        RunawaysRoute => Runaways,
        AuditRoute => AuditLog,
        TokensRoute => ApiTokens,
    }
}

/// Browser entry point: loads the current page's chunk, then hydrates the server-rendered body.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_lazy(App);
}
