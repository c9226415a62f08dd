//! Activity workers: fetch activities, run them with bounded concurrency, hand results over.

use std::{
    collections::HashMap, panic::AssertUnwindSafe, sync::Arc, sync::atomic::Ordering,
    time::Duration,
};

use futures_util::FutureExt;
use tokio::sync::Semaphore;

use super::{Shared, health::Alive, journal::ActivityJournal};
use crate::{
    executor::panic_message,
    history::{Failure, Message},
    registry::ActivityContext,
    store::{ActivityItem, MessageRef, QueuedMessage, Store},
};

/// Hands an activity's outcome to the dispatcher; the turn that consumes it deletes the row.
fn deliver_result<S: Store>(
    shared: &Shared<S>,
    (id, instance_id, scheduled_id): (i64, String, u32),
    result: Result<String, Failure>,
) {
    let message = match result {
        Ok(result) => Message::TaskCompleted {
            scheduled_id,
            result,
        },
        Err(failure) => Message::TaskFailed {
            scheduled_id,
            failure,
        },
    };
    let result = QueuedMessage {
        at: MessageRef::Activity(id),
        instance_id,
        message,
    };
    if shared.results.send(result).is_ok() {
        shared.orchestrations.notify_one();
    }
}

pub(crate) async fn run_activities<S: Store>(
    shared: Arc<Shared<S>>,
    journal: Option<Arc<ActivityJournal>>,
    suspects: HashMap<i64, u32>,
) {
    let _alive = Alive::new(&shared.health.activities);
    let permits = shared.options.activity_concurrency.max(1);
    let semaphore = Arc::new(Semaphore::new(permits));
    let limit = shared.options.quarantine_after.max(1);
    let mut cursor = 0;
    while !shared.stopping.load(Ordering::SeqCst) {
        let notified = shared.activities.notified();
        let items = match shared.store.fetch_activities(cursor, 512).await {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!(error = %e, "fetching activities failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if items.is_empty() {
            notified.await;
            continue;
        }
        for item in items {
            cursor = item.id;
            let crashes = suspects.get(&item.id).copied().unwrap_or(0);
            if crashes >= limit {
                tracing::error!(activity = %item.name, instance = %item.instance_id, crashes, "quarantining an activity that crashed the process");
                let failure = Failure::new(
                    "Quarantined",
                    format!(
                        "the process stopped {crashes} times in a row while activity {} ran, so \
                         it was not run again; see the server log of those runs",
                        item.name
                    ),
                );
                deliver_result(
                    &shared,
                    (item.id, item.instance_id, item.scheduled_id),
                    Err(failure),
                );
                continue;
            }
            // A suspect from the last crash runs alone, so a second crash names it alone.
            let permit = if crashes > 0 {
                semaphore.clone().acquire_many_owned(permits as u32).await
            } else {
                semaphore.clone().acquire_owned().await
            };
            let Ok(permit) = permit else {
                return;
            };
            let slot = journal.as_ref().and_then(|j| j.begin(item.id));
            let ctx = ActivityContext {
                instance_id: item.instance_id.clone(),
                scheduled_id: item.scheduled_id,
            };
            let shared = shared.clone();
            shared.stats.activities.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let ActivityItem {
                    id,
                    instance_id,
                    scheduled_id,
                    name,
                    input,
                } = item;
                let run = shared.registry.run_activity(&name, ctx, input);
                let result = AssertUnwindSafe(run)
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|payload| {
                        Err(Failure::new(
                            "Panicked",
                            format!("activity {name} panicked: {}", panic_message(&*payload)),
                        ))
                    });
                drop(slot);
                // The limit bounds activities running, not results waiting for their commit:
                // releasing here lets many results share one group commit.
                drop(permit);
                deliver_result(&shared, (id, instance_id, scheduled_id), result);
            });
        }
    }
    // Wait for activities in flight to record their results.
    let grace = shared.options.shutdown_grace;
    let _ = tokio::time::timeout(grace, semaphore.acquire_many(permits as u32)).await;
    if let Some(journal) = &journal {
        journal.clear_all();
    }
}
