//! Activity workers: fetch activities under a lease, run them with bounded concurrency, hand
//! the results over.
//!
//! A result goes to this runtime's dispatcher in memory when the store allows it
//! ([`Store::in_memory_handover`]); the dispatcher stores it as a message instead when it does
//! not hold the instance. Without the hand-over a result is committed as
//! [`WriteOp::Complete`]. Leases on running activities are renewed every third of the lease, so
//! a long activity is not taken over by another runtime; fetches continue after a cursor, and
//! once per half lease the worker sweeps from the start, so activities whose holder went away
//! are found again.

use std::{
    collections::{HashMap, HashSet},
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use futures_util::FutureExt;
use tokio::sync::Semaphore;

use super::{
    Shared,
    eager::{EagerItem, Outcome},
    health::Alive,
    journal::{ActivityJournal, activity_identity},
};
use crate::{
    executor::panic_message,
    history::{Failure, Message, TimestampMs},
    registry::ActivityContext,
    store::{ActivityItem, MessageRef, Store, WriteOp},
};

/// An activity's outcome on its way to the instance.
#[derive(Debug)]
pub(crate) struct ActivityResult {
    /// The activity's row ([`MessageRef::Activity`]) or, for an eager activity whose schedule
    /// is not committed, its token ([`MessageRef::Eager`]).
    pub at: MessageRef,
    /// The fence of the activity row's lease, for [`WriteOp::Complete`].
    pub fence: u64,
    pub instance_id: String,
    pub message: Message,
}

impl ActivityResult {
    /// The op that stores the result as a message; `None` for an eager result, which has no
    /// row to complete (its chain was dropped, so it is not wanted).
    pub(crate) fn into_op(self) -> Option<WriteOp> {
        match self.at {
            MessageRef::Activity(activity_id) => Some(WriteOp::Complete {
                activity_id,
                fence: self.fence,
                instance_id: self.instance_id,
                message: self.message,
            }),
            _ => None,
        }
    }
}

pub(crate) fn result_message(scheduled_id: u32, result: Result<String, Failure>) -> Message {
    match result {
        Ok(result) => Message::TaskCompleted {
            scheduled_id,
            result,
        },
        Err(failure) => Message::TaskFailed {
            scheduled_id,
            failure,
        },
    }
}

/// Sends an activity's outcome on: in memory to the dispatcher, or as a committed message.
pub(crate) fn deliver_result<S: Store>(
    shared: &Arc<Shared<S>>,
    item: &ActivityItem,
    result: Result<String, Failure>,
) {
    let result = ActivityResult {
        at: MessageRef::Activity(item.id),
        fence: item.lease.fence,
        instance_id: item.instance_id.clone(),
        message: result_message(item.scheduled_id, result),
    };
    if shared.store.in_memory_handover() {
        shared.send_result(result);
        return;
    }
    shared.store_result(result);
}

impl<S: Store> Shared<S> {
    /// Commits an activity's result as a message for its instance, for whichever runtime holds
    /// it. Refused when the activity's lease has lapsed meanwhile: the activity then runs again.
    pub(crate) fn store_result(self: &Arc<Self>, result: ActivityResult) {
        let Some(op) = result.into_op() else {
            return;
        };
        let shared = self.clone();
        tokio::spawn(async move {
            if let Ok(Err(e)) = shared.write(op).await {
                tracing::warn!(error = %e, "an activity's result was not recorded; it runs again");
            }
        });
    }
}

/// When the worker next renews leases and sweeps, in clock time.
struct Schedule {
    renew_at: TimestampMs,
    sweep_at: TimestampMs,
}

impl Schedule {
    fn new(now: TimestampMs, lease_ms: i64) -> Schedule {
        Schedule {
            renew_at: now + lease_ms / 3,
            sweep_at: now + lease_ms / 2,
        }
    }

    fn next(&self) -> TimestampMs {
        self.renew_at.min(self.sweep_at)
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
    let lease_ms = shared.lease_ms();
    let mut schedule = Schedule::new(shared.clock.now_ms(), lease_ms);
    let running: Arc<Mutex<HashSet<i64>>> = Arc::default();
    let mut cursor = 0;
    // Activities this worker has taken and not yet seen gone: a sweep returns them again.
    let mut known: HashSet<i64> = HashSet::new();
    // During a sweep, the ids it returned: what it did not return is gone.
    let mut swept: Option<HashSet<i64>> = None;
    let mut handed = shared.handed_rx.lock().expect("hand-over lock").take();
    let mut eager = shared.eager_rx.lock().expect("eager lock").take();
    while !shared.stopping.load(Ordering::SeqCst) {
        let notified = shared.activities.notified();
        let now = shared.clock.now_ms();
        if now >= schedule.renew_at {
            schedule.renew_at = now + lease_ms / 3;
            renew(&shared, &running, now).await;
        }
        if now >= schedule.sweep_at && swept.is_none() {
            schedule.sweep_at = now + lease_ms / 2;
            cursor = 0;
            swept = Some(HashSet::new());
        }
        // Activities this runtime's own commits scheduled arrive leased, in memory.
        let mut batch = Vec::new();
        if let Some(handed) = handed.as_mut() {
            while let Ok(items) = handed.try_recv() {
                batch.extend(items);
            }
        }
        // Eager activities, sent by the dispatcher before their schedule is committed.
        let mut eager_batch = Vec::new();
        if let Some(eager) = eager.as_mut() {
            while let Ok(item) = eager.try_recv() {
                eager_batch.push(item);
            }
        }
        for item in eager_batch {
            // An activity with a concurrency limit waits for its own slot before it takes a
            // worker slot, so calls waiting for their limit never hold slots others need.
            if let Some(limit) = shared.resilience.limit(&item.name) {
                let (shared, semaphore, journal) =
                    (shared.clone(), semaphore.clone(), journal.clone());
                tokio::spawn(async move {
                    if let Some(slots) = limited_slots(&limit, semaphore).await {
                        run_eager(shared, journal, item, slots).await;
                    }
                });
                continue;
            }
            let Ok(permit) = semaphore.clone().acquire_owned().await else {
                return;
            };
            tokio::spawn(run_eager(
                shared.clone(),
                journal.clone(),
                item,
                (permit, None),
            ));
        }
        // The store only when a commit scheduled activities not handed over (or a sweep runs).
        let mut full = false;
        if shared.activities_waiting.swap(false, Ordering::SeqCst) || swept.is_some() {
            let fetched = match shared
                .store
                .fetch_activities(&shared.holder, cursor, now, lease_ms, 512)
                .await
            {
                Ok(fetched) => fetched,
                Err(e) => {
                    shared.activities_waiting.store(true, Ordering::SeqCst);
                    tracing::warn!(error = %e, "fetching activities failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            cursor = fetched.scanned_to;
            full = fetched.full;
            if full {
                shared.activities_waiting.store(true, Ordering::SeqCst);
            }
            batch.extend(fetched.items);
        }
        // Rows whose eager activity is still running here (it got its row from its schedule's
        // commit): a fetch returns them, leased to this runtime, but they must not run twice.
        let eager_rows: HashSet<i64> = if batch.is_empty() {
            HashSet::new()
        } else {
            shared
                .eager
                .lock()
                .expect("eager lock")
                .row_ids()
                .into_iter()
                .collect()
        };
        for item in batch {
            if let Some(swept) = swept.as_mut() {
                swept.insert(item.id);
            }
            if eager_rows.contains(&item.id) || !known.insert(item.id) {
                continue;
            }
            let crashes = suspects
                .get(&activity_identity(&item.instance_id, item.scheduled_id))
                .copied()
                .unwrap_or(0);
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
                deliver_result(&shared, &item, Err(failure));
                continue;
            }
            let running = running.clone();
            running.lock().expect("running activities").insert(item.id);
            if crashes == 0
                && let Some(limit) = shared.resilience.limit(&item.name)
            {
                // Its own slot first, then a worker slot (as for eager activities above).
                let (shared, semaphore, journal) =
                    (shared.clone(), semaphore.clone(), journal.clone());
                tokio::spawn(async move {
                    if let Some(slots) = limited_slots(&limit, semaphore).await {
                        run_leased(shared, journal, item, running, slots).await;
                    }
                });
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
            tokio::spawn(run_leased(
                shared.clone(),
                journal.clone(),
                item,
                running,
                (permit, None),
            ));
        }
        if full {
            continue;
        }
        if let Some(swept) = swept.take() {
            // A whole sweep is done: what it did not return was committed or taken over.
            known.retain(|id| swept.contains(id));
            continue;
        }
        tokio::select! {
            () = notified => {}
            () = shared.clock.sleep_until(schedule.next()) => {}
        }
    }
    // Wait for activities in flight to record their results.
    let grace = shared.options.shutdown_grace;
    let _ = tokio::time::timeout(grace, semaphore.acquire_many(permits as u32)).await;
    if let Some(journal) = &journal {
        journal.clear_all();
    }
}

/// A worker slot, and the activity's own concurrency slot when it has a limit. Both are given
/// back when the code has run, before its result is committed.
type Slots = (
    tokio::sync::OwnedSemaphorePermit,
    Option<tokio::sync::OwnedSemaphorePermit>,
);

/// The activity's own concurrency slot, then a worker slot (`None`: the workers are gone).
async fn limited_slots(
    limit: &super::resilience::Limit,
    workers: Arc<tokio::sync::Semaphore>,
) -> Option<Slots> {
    let own = limit.enter().await;
    let permit = workers.acquire_owned().await.ok()?;
    Some((permit, Some(own)))
}

/// Runs a fetched or handed-over activity in its slots and delivers its result.
async fn run_leased<S: Store>(
    shared: Arc<Shared<S>>,
    journal: Option<Arc<ActivityJournal>>,
    item: ActivityItem,
    running: Arc<Mutex<HashSet<i64>>>,
    slots: Slots,
) {
    let slot = journal
        .as_ref()
        .and_then(|j| j.begin(activity_identity(&item.instance_id, item.scheduled_id)));
    let ctx = ActivityContext {
        instance_id: item.instance_id.clone(),
        scheduled_id: item.scheduled_id,
    };
    shared.stats.activities.fetch_add(1, Ordering::Relaxed);
    let result = run_one(&shared, &item.name, ctx, item.input.clone()).await;
    drop(slot);
    running.lock().expect("running activities").remove(&item.id);
    // The limit bounds activities running, not results waiting for their commit: releasing
    // here lets many results share one group commit.
    drop(slots);
    deliver_result(&shared, &item, result);
}

/// Runs an activity's code behind its breaker and limiter, a panic becoming its failure.
async fn run_one<S: Store>(
    shared: &Shared<S>,
    name: &str,
    ctx: ActivityContext,
    input: String,
) -> Result<String, Failure> {
    let run = async {
        let run = shared.registry.run_activity(name, ctx, input);
        AssertUnwindSafe(run)
            .catch_unwind()
            .await
            .unwrap_or_else(|payload| {
                Err(Failure::new(
                    "Panicked",
                    format!("activity {name} panicked: {}", panic_message(&*payload)),
                ))
            })
    };
    let started = std::time::Instant::now();
    let result = match shared.resilience.guards(name) {
        Some(guards) => super::resilience::guarded(guards, run).await,
        None => run.await,
    };
    shared.stats.activity_latency.record(started.elapsed());
    if result.is_err() {
        shared
            .stats
            .activities_failed
            .fetch_add(1, Ordering::Relaxed);
    }
    result
}

/// Runs an eager activity and sends its result where [`Eager::finish`](super::eager::Eager)
/// says: to the dispatcher's chain, or under the row its schedule's commit gave it.
async fn run_eager<S: Store>(
    shared: Arc<Shared<S>>,
    journal: Option<Arc<ActivityJournal>>,
    item: EagerItem,
    slots: Slots,
) {
    let slot = journal
        .as_ref()
        .and_then(|j| j.begin(activity_identity(&item.instance_id, item.scheduled_id)));
    shared.stats.activities.fetch_add(1, Ordering::Relaxed);
    let ctx = ActivityContext {
        instance_id: item.instance_id.clone(),
        scheduled_id: item.scheduled_id,
    };
    let result = run_one(&shared, &item.name, ctx, item.input).await;
    drop(slot);
    drop(slots);
    let outcome = {
        let mut eager = shared.eager.lock().expect("eager lock");
        let outcome = eager.finish(item.token, &result);
        if let Outcome::Chain = outcome {
            // Sent under the lock, so the dispatcher, which looks under it, knows it is coming.
            shared.send_result(ActivityResult {
                at: MessageRef::Eager(item.token),
                fence: 0,
                instance_id: item.instance_id,
                message: result_message(item.scheduled_id, result.clone()),
            });
        }
        outcome
    };
    if let Outcome::Row(row) = outcome {
        deliver_result(&shared, &row, result);
    }
}

/// Renews the leases of the activities running now.
async fn renew<S: Store>(shared: &Shared<S>, running: &Mutex<HashSet<i64>>, now: TimestampMs) {
    let mut ids: Vec<i64> = running
        .lock()
        .expect("running activities")
        .iter()
        .copied()
        .collect();
    ids.extend(shared.eager.lock().expect("eager lock").row_ids());
    if ids.is_empty() {
        return;
    }
    match shared
        .store
        .renew_activities(&shared.holder, &ids, now, shared.lease_ms())
        .await
    {
        Ok(lost) if !lost.is_empty() => {
            tracing::warn!(activities = ?lost, "lost the lease on running activities; another runtime may run them too");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "renewing activity leases failed"),
    }
}
