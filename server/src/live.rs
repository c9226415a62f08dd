//! `GET /api/live`: server-sent events carrying the dashboard's live figures.
//!
//! One task per server computes a [`LiveSnapshot`] every second while at least one browser is
//! subscribed, and publishes it on a `watch` channel only when it changed; each SSE connection
//! forwards what the channel holds. So the database sees one set of queries per second however
//! many dashboards are open, and none when nobody watches.

use std::{convert::Infallible, sync::Arc, time::Duration};

use app::live::LiveSnapshot;
use axum::{
    Router,
    extract::State,
    http::StatusCode,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::get,
};
use futures_util::stream;
use tokio::sync::{Notify, watch};

use crate::AppState;

/// The latest snapshot, shared by every subscriber, and the switch that stops the publisher
/// (which ends every event stream, so graceful shutdown is not held up by open dashboards).
#[derive(Clone, Debug)]
pub struct LiveFeed {
    feed: watch::Receiver<Option<LiveSnapshot>>,
    stop: Arc<Notify>,
}

impl LiveFeed {
    /// Stops publishing and ends every subscriber's stream.
    pub fn stop(&self) {
        self.stop.notify_one();
    }
}

/// Starts the publishing task for `engine` and returns the feed.
pub fn start(engine: app::EngineClient) -> LiveFeed {
    let (tx, rx) = watch::channel(None);
    let stop = Arc::new(Notify::new());
    let stopped = stop.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stopped.notified() => return,
            }
            // The feed itself holds one receiver; only compute while a browser holds another.
            if tx.receiver_count() <= 1 {
                continue;
            }
            match app::live::ssr::snapshot(&engine, app::context::now_ms()).await {
                Ok(snapshot) => {
                    tx.send_if_modified(|current| {
                        let changed = current.as_ref() != Some(&snapshot);
                        if changed {
                            *current = Some(snapshot);
                        }
                        changed
                    });
                }
                Err(e) => tracing::warn!(error = %e, "live figures unavailable"),
            }
        }
    });
    LiveFeed { feed: rx, stop }
}

/// The `/api/live` route.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/live", get(events))
}

async fn events(State(state): State<AppState>) -> Response {
    let Some(LiveFeed { feed, .. }) = state.live.clone() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "live figures need the engine, which does not run on this database backend yet",
        )
            .into_response();
    };
    let updates = stream::unfold(feed, |mut feed| async move {
        // Sends what is there on connect, then each change; ends when the server stops.
        feed.changed().await.ok()?;
        let json = feed
            .borrow_and_update()
            .as_ref()
            .and_then(|s| serde_json::to_string(s).ok());
        let event = Event::default()
            .event("message")
            .data(json.unwrap_or_default());
        Some((Ok::<_, Infallible>(event), feed))
    });
    Sse::new(updates)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
