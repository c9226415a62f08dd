//! The publisher: about once a second ([`RuntimeOptions::publish_interval`]) it refreshes the
//! start intake's live-instance count from the store's maintained counts and publishes this
//! process's resilience snapshot to the store, so any process can show the cluster's limiters and
//! breakers. It holds the runtime weakly and ends with it.
//!
//! [`RuntimeOptions::publish_interval`]: super::RuntimeOptions::publish_interval

use std::sync::{Arc, Weak, atomic::Ordering};

use super::Shared;
use crate::store::{PublishedState, ResilienceStore, Store, StoreAdmin};

pub(crate) async fn run_publisher<S: Store + StoreAdmin + ResilienceStore>(
    shared: Weak<Shared<S>>,
) {
    loop {
        let (wake, shared_now) = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            if shared.stopping.load(Ordering::SeqCst) {
                return;
            }
            let interval = i64::try_from(shared.options.publish_interval.as_millis())
                .unwrap_or(i64::MAX)
                .max(1);
            (
                shared.clock.sleep_until(shared.clock.now_ms() + interval),
                shared,
            )
        };
        publish_once(&shared_now).await;
        drop(shared_now);
        wake.await;
    }
}

/// One round: refresh the intake, publish the snapshot. Failures are logged and retried next
/// round; they never stop the runtime.
pub(crate) async fn publish_once<S: Store + StoreAdmin + ResilienceStore>(shared: &Arc<Shared<S>>) {
    let mark = shared.resilience.intake.mark();
    match shared.store.status_counts().await {
        Ok(counts) => shared
            .resilience
            .intake
            .refresh(&counts, shared.clock.now_nanos(), mark),
        Err(e) => tracing::warn!(error = %e, "cannot read the instance counts for the intake"),
    }
    let snapshot = shared.resilience.snapshot();
    let state = PublishedState {
        process: snapshot.process.clone(),
        published_at: snapshot.at_ms,
        snapshot: serde_json::to_string(&snapshot).expect("snapshots serialise"),
    };
    if let Err(e) = shared.store.publish(&state).await {
        tracing::warn!(error = %e, "cannot publish the resilience state");
    }
}
