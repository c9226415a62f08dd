//! The Switchyard server: configuration, the axum router, and the serve loop.
//!
//! [`app`] builds the complete router from an [`AppState`] and performs no I/O, so tests drive it
//! in-process. [`Server::start`] does the side effects in order (open and migrate the database,
//! bind the socket, start the engine with the sample orchestrations) and [`Server::run`] serves
//! until the shutdown future resolves, then drains requests in flight, shuts the engine down and
//! closes the database.

pub mod api;
pub mod auth;
pub mod config;
pub mod csrf;
pub mod ctl;
pub mod export;
pub mod health;
pub mod hosts;
pub mod limits;
pub mod live;
pub mod metrics;
pub mod paths;
pub mod state;
pub mod telemetry;

use std::{future::Future, io, net::SocketAddr, path::Path};

use app::{App, shell};
use axum::Router;
use engine::{Database, DbError, Runtime, RuntimeOptions, SqliteStore, db::ConnectOptions};
use leptos::prelude::provide_context;
use leptos_axum::{LeptosRoutes, generate_route_list};
use tokio::net::TcpListener;
use tower_http::{
    compression::{Predicate, predicate::DefaultPredicate},
    trace::TraceLayer,
};

pub use crate::config::Config;
pub use crate::state::AppState;

/// Failures while starting the server, each one line that says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Database(#[from] DbError),
    #[error(
        "address {addr} is already in use: stop the other process or choose another with --bind"
    )]
    AddressInUse { addr: SocketAddr },
    #[error("{0}")]
    Auth(#[from] auth::AuthError),
    #[error("cannot start the engine: {0}")]
    Engine(#[source] engine::store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// The full HTTP surface: probes, login, Leptos pages and server functions, static files.
///
/// Layers, outermost first: tracing (the path only: queries can carry secrets such as the
/// login callback's code), request figures for `/metrics`, response compression (brotli or
/// gzip), allowed hosts (421), security and cache headers, the body size limit
/// (413), path normalisation, CSRF (refuses cross-site mutations before anything reads the
/// session), the queue for page renders, server functions and API calls (before the session is
/// loaded: that is a database query too), sessions, then authentication (attaches the current
/// user or turns the request away).
pub fn app(state: AppState) -> Router {
    let routes = generate_route_list(App);
    let (db, engine) = (state.db.clone(), state.engine.clone());
    let form_targets = state.auth.form_targets();
    let context = move || {
        provide_context(db.clone());
        if let Some(engine) = &engine {
            provide_context(engine.clone());
        }
        // Pages get a policy with this render's script nonce (server functions have none).
        if let (Some(nonce), Some(response)) = (
            leptos::nonce::use_nonce(),
            leptos::prelude::use_context::<leptos_axum::ResponseOptions>(),
        ) && let Ok(value) =
            axum::http::HeaderValue::from_str(&limits::page_csp(&nonce, &form_targets))
        {
            response.insert_header(axum::http::header::CONTENT_SECURITY_POLICY, value);
        }
    };
    let routes = Router::new()
        .merge(static_files(Path::new(state.leptos.site_root.as_ref())))
        .merge(health::router())
        .merge(auth::router())
        .merge(live::router())
        .merge(metrics::router())
        .merge(api::router())
        .leptos_routes_with_context(&state, routes, context.clone(), {
            let options = state.leptos.clone();
            move || shell(options.clone())
        })
        // Unknown paths render the app's not-found page with the same context (and so the same
        // script policy), so it hydrates like any page.
        .fallback(leptos_axum::file_and_error_handler_with_context::<
            AppState,
            _,
        >(context, shell))
        .with_state(state.clone());
    // The layers wrap the finished router once. (`Router::layer` would wrap every route
    // separately, and each middleware clones the service it wraps per request: that cloned the
    // whole per-route stack, about 100 KB of allocations per request, measured with massif.)
    let secure = state.auth.secure_cookies();
    let sessions = match &state.db {
        Database::Sqlite(pool) => tower::util::Either::Left(session_layer(
            tower_sessions_sqlx_store::SqliteStore::new(pool.clone()),
            secure,
        )),
        Database::Postgres(pool) => tower::util::Either::Right(session_layer(
            tower_sessions_sqlx_store::PostgresStore::new(pool.clone()),
            secure,
        )),
    };
    let service = tower::ServiceBuilder::new()
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
                tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
            }),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::record,
        ))
        // Brotli or gzip as the client asks, for pages and JSON. The bundle comes precompressed
        // (`static_files`); a large file without a precompressed copy goes as it is rather than
        // costing every first load a compression. The live channel's event stream stays plain.
        .layer(
            tower_http::compression::CompressionLayer::new()
                .compress_when(DefaultPredicate::new().and(not_large)),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.allowed_hosts.clone(),
            hosts::check,
        ))
        .layer(axum::middleware::from_fn(limits::security_headers))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            limits::MAX_BODY_BYTES,
        ))
        .map_request(|request: axum::http::Request<_>| request.map(axum::body::Body::new))
        .layer(axum::middleware::from_fn(paths::normalise))
        .layer(axum::middleware::from_fn(csrf::verify_origin))
        // Outside the sessions: loading a session is a database query too.
        .layer(axum::middleware::from_fn_with_state(
            state.heavy.clone(),
            limits::queue_heavy,
        ))
        .layer(sessions)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .service(routes);
    Router::new().fallback_service(service)
}

/// The browser bundle under `/pkg` and the favicon, with `Last-Modified` (a revalidation gets
/// 304) and the precompressed `.br`/`.gz` copies `cargo xtask build` writes beside the
/// fingerprinted files, chosen by the request's `Accept-Encoding`. Cache headers are set by
/// [`limits::security_headers`].
fn static_files(site_root: &Path) -> Router<AppState> {
    use tower_http::services::{ServeDir, ServeFile};
    Router::new()
        .nest_service(
            "/pkg",
            ServeDir::new(site_root.join("pkg"))
                .precompressed_br()
                .precompressed_gzip(),
        )
        .route_service(
            "/favicon.svg",
            ServeFile::new(site_root.join("favicon.svg")),
        )
}

/// Largest response the server compresses on the fly, in bytes.
const MAX_DYNAMIC_COMPRESSION: u64 = 1 << 20;

/// Compression predicate: not for a response known to be over [`MAX_DYNAMIC_COMPRESSION`].
fn not_large(
    _: axum::http::StatusCode,
    _: axum::http::Version,
    headers: &axum::http::HeaderMap,
    _: &axum::http::Extensions,
) -> bool {
    headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_none_or(|length| length <= MAX_DYNAMIC_COMPRESSION)
}

use auth::SESSION_IDLE;

/// Session cookies: HttpOnly, SameSite=Lax, Secure behind https, expiring after idle time.
fn session_layer<S: tower_sessions::SessionStore + Clone>(
    store: S,
    secure: bool,
) -> tower_sessions::SessionManagerLayer<S> {
    tower_sessions::SessionManagerLayer::new(store)
        .with_name(auth::COOKIE)
        .with_http_only(true)
        .with_same_site(tower_sessions::cookie::SameSite::Lax)
        .with_secure(secure)
        .with_expiry(tower_sessions::Expiry::OnInactivity(SESSION_IDLE))
}

/// Deletes expired sessions every ten minutes (a pending login lives ten minutes), for as long
/// as the server runs.
fn spawn_session_cleanup(db: &Database) {
    use tower_sessions::ExpiredDeletion;
    const PERIOD: std::time::Duration = std::time::Duration::from_secs(600);
    let task = match db {
        Database::Sqlite(pool) => tokio::spawn(
            tower_sessions_sqlx_store::SqliteStore::new(pool.clone())
                .continuously_delete_expired(PERIOD),
        ),
        Database::Postgres(pool) => tokio::spawn(
            tower_sessions_sqlx_store::PostgresStore::new(pool.clone())
                .continuously_delete_expired(PERIOD),
        ),
    };
    tokio::spawn(async move {
        if let Ok(Err(e)) = task.await {
            tracing::error!(error = %e, "expired-session cleanup stopped");
        }
    });
}

/// Connections the kernel queues for `accept` (capped by `net.core.somaxconn`). Tokio's default,
/// 1,024, overflowed under 2,000 simultaneous page loads: the dropped handshakes were retried by
/// the clients after 1, 3, 7… seconds, which showed as 30–100 s tail latencies and resets.
const LISTEN_BACKLOG: u32 = 4_096;

/// Binds `addr` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as `TcpListener::bind` does).
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A started server: socket bound, database open and migrated, engine running.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    state: AppState,
    runtime: Option<Runtime<SqliteStore>>,
}

impl Server {
    /// Binds the configured address, then opens and migrates the database. Binding first makes a
    /// busy port fail fast, before anything touches the database.
    pub async fn start(config: &Config) -> Result<Server, StartError> {
        let listener = listen(config.bind).map_err(|source| match source.kind() {
            io::ErrorKind::AddrInUse => StartError::AddressInUse { addr: config.bind },
            _ => StartError::Bind {
                addr: config.bind,
                source,
            },
        })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.bind,
            source,
        })?;

        let options = ConnectOptions {
            durability: config.durability,
            ..ConnectOptions::default()
        };
        let auth = match &config.auth {
            config::AuthConfig::Local => {
                tracing::warn!(
                    "local mode: no login, everyone on this machine is an administrator"
                );
                auth::Auth::Local
            }
            config::AuthConfig::Oidc(settings) => {
                let oidc = auth::Oidc::new((**settings).clone())?;
                // Fail at start, with the reason, rather than at the first login; but give a
                // provider that starts alongside this server a few seconds to come up.
                let mut delay = std::time::Duration::from_millis(250);
                loop {
                    match oidc.discover().await {
                        Ok(()) => break,
                        // Only an unanswered request is worth retrying; a provider that
                        // answered with unusable metadata (an issuer mismatch) will not change.
                        Err(e @ auth::AuthError::Discovery { .. })
                            if delay < std::time::Duration::from_secs(4) =>
                        {
                            tracing::warn!(error = %e, "identity provider not reachable yet; retrying");
                            tokio::time::sleep(delay).await;
                            delay *= 2;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                auth::Auth::Oidc(std::sync::Arc::new(oidc))
            }
        };

        let db = Database::connect(&config.database_url, &options).await?;
        // The engine's store first: it takes the database file's lock, so a second server on
        // the same file stops here, before it migrates or serves anything.
        let store = match &db {
            Database::Sqlite(pool) => Some(
                SqliteStore::new(pool.clone())
                    .await
                    .map_err(StartError::Engine)?,
            ),
            Database::Postgres(_) => None,
        };
        db.migrate().await?;
        tracing::info!(database = %config.database_url, "database ready");
        spawn_session_cleanup(&db);

        // The engine runs on SQLite; the PostgreSQL store is not built yet.
        let runtime = match store {
            Some(store) => {
                let registry = engine::samples::registry();
                tracing::info!(orchestrations = ?registry.orchestration_names(), "engine started");
                let options = RuntimeOptions {
                    turn_journal: config
                        .database_url
                        .sqlite_path()
                        .map(|db| engine::journal::beside(&db)),
                    max_live_instances: config.max_live_instances,
                    ..RuntimeOptions::default()
                };
                Some(Runtime::start(store, registry, options))
            }
            None => {
                tracing::warn!(
                    "the engine does not run on PostgreSQL yet: orchestration pages are unavailable"
                );
                None
            }
        };
        let bundle = config
            .site_root
            .join(state::bundle_dir(&config.site_root))
            .join("app.js");
        if !bundle.is_file() {
            tracing::warn!(
                site_root = %config.site_root.display(),
                "no browser bundle found: pages render but will not hydrate (build with `cargo xtask serve`)"
            );
        }
        let engine = runtime.as_ref().map(Runtime::client);
        if let Err(e) = app::routes::bulk::ssr::report_retired(&db).await {
            tracing::warn!(error = %e, "cannot read the bulk jobs retired by the upgrade");
        }
        let mut state = AppState::new(db, engine, auth, &config.site_root, addr);
        if let Some(names) = &config.allowed_hosts {
            state = state.with_allowed_hosts(hosts::AllowedHosts::new(names));
        }
        tracing::info!(hosts = ?state.allowed_hosts.names(), "answering to these host names");
        Ok(Server {
            listener,
            state,
            runtime,
        })
    }

    /// The state the router will be built from.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.state.leptos.site_addr
    }

    /// Serves until `shutdown` resolves, lets requests in flight finish, then closes the database.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
        let Server {
            listener,
            state,
            runtime,
        } = self;
        let db = state.db.clone();
        let live = state.live.clone();
        tracing::info!(address = %state.leptos.site_addr, "serving http://{}", state.leptos.site_addr);
        let shutdown = async move {
            shutdown.await;
            // Ends the open event streams, which would otherwise hold the drain open.
            if let Some(live) = live {
                live.stop();
            }
        };
        axum::serve(listener, app(state))
            .with_graceful_shutdown(shutdown)
            .await?;
        if let Some(runtime) = runtime {
            // Lets turns and activities in flight commit; the rest is picked up on next start.
            runtime.shutdown().await;
        }
        db.close().await;
        tracing::info!("shut down cleanly");
        Ok(())
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received Ctrl-C, shutting down"),
        () = terminate => tracing::info!("received SIGTERM, shutting down"),
    }
}
