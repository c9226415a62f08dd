//! The writer: one thread that group-commits every write op the runtime and the client send.
//!
//! It has a thread of its own because a store may do its I/O on the calling thread (the SQLite
//! store does: a synchronous connection saves a thread hand-off per commit), which must block
//! neither the dispatcher nor the tokio workers that run activities and serve requests.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::sync::mpsc;

use super::{Shared, WriteRequest, health::Alive};
use crate::store::{OpError, Store, StoreError, WriteOp};

pub(crate) fn run_writer<S: Store>(
    shared: Arc<Shared<S>>,
    runtime: tokio::runtime::Handle,
    rx: mpsc::UnboundedReceiver<WriteRequest>,
) {
    let _alive = Alive::new(&shared.health.writer);
    // On this thread, with the runtime's timers and I/O (a server store's connections); the
    // thread sleeps on a futex between batches.
    runtime.block_on(write_batches(shared, rx));
}

async fn write_batches<S: Store>(
    shared: Arc<Shared<S>>,
    mut rx: mpsc::UnboundedReceiver<WriteRequest>,
) {
    let max = shared.options.max_batch_ops.max(1);
    let mut backoff = Backoff::default();
    loop {
        let first = tokio::select! {
            request = rx.recv() => match request {
                Some(r) => r,
                None => return,
            },
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                if shared.stopping.load(Ordering::SeqCst) && rx.is_empty() {
                    return;
                }
                // Nothing to commit: learn whether writes work again by probing.
                if shared.health.failing() {
                    match shared.store.probe_write().await {
                        Ok(()) => {
                            backoff.reset();
                            if shared.health.write_succeeded() {
                                tracing::info!("writes to the store succeed again");
                            }
                        }
                        Err(e) => {
                            shared.health.write_failed(&e, shared.clock.now_ms());
                            tokio::time::sleep(backoff.next()).await;
                        }
                    }
                }
                continue;
            }
        };
        // A request's ops stay together in one batch.
        let mut ops = first.ops;
        let mut replies = vec![(ops.len(), first.reply)];
        while ops.len() < max {
            match rx.try_recv() {
                Ok(r) => {
                    replies.push((r.ops.len(), r.reply));
                    ops.extend(r.ops);
                }
                Err(_) => break,
            }
        }
        shared.writer_busy.store(true, Ordering::SeqCst);
        shared
            .writer_queued
            .fetch_sub(replies.len(), Ordering::SeqCst);
        let committed = commit_batch(&shared, &ops).await;
        shared.writer_busy.store(false, Ordering::SeqCst);
        match committed {
            Ok(outcomes) => {
                backoff.reset();
                let mut outcomes = outcomes.into_iter();
                for (n, reply) in replies {
                    let _ = reply.send(Ok(outcomes.by_ref().take(n).collect()));
                }
            }
            Err(e) => {
                for (_, reply) in replies {
                    let _ = reply.send(Err(e.clone()));
                }
                // Let the store recover (space freed, a lock released) before the next batch;
                // senders wait meanwhile instead of spinning.
                tokio::time::sleep(backoff.next()).await;
            }
        }
    }
}

/// Commits one batch of ops and does what follows a commit: hands the new activities to the
/// workers, wakes whoever the effects concern, keeps the statistics and the health record.
/// Used by the writer and by the dispatcher when it commits a round of turns itself.
pub(crate) async fn commit_batch<S: Store>(
    shared: &Shared<S>,
    ops: &[WriteOp],
) -> Result<Vec<Result<(), OpError>>, Arc<StoreError>> {
    let started = std::time::Instant::now();
    let committed = shared
        .store
        .commit(
            &shared.holder,
            shared.clock.now_ms(),
            shared.lease_ms(),
            ops,
        )
        .await;
    let elapsed = started.elapsed();
    shared
        .stats
        .commit_micros
        .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    shared.stats.commit_latency.record(elapsed);
    match committed {
        Ok((outcomes, mut effects)) => {
            shared.hand_over(std::mem::take(&mut effects.handed_over));
            if shared.health.write_succeeded() {
                tracing::info!("writes to the store succeed again");
            }
            shared.stats.commits.fetch_add(1, Ordering::Relaxed);
            shared
                .stats
                .ops
                .fetch_add(ops.len() as u64, Ordering::Relaxed);
            shared.apply_effects(&effects);
            Ok(outcomes)
        }
        Err(e) => {
            if shared.health.write_failed(&e, shared.clock.now_ms()) {
                tracing::error!(error = %e, ops = ops.len(), "group commit failed; retrying with backoff until writes succeed");
            } else {
                tracing::debug!(error = %e, ops = ops.len(), "group commit failed again");
            }
            Err(Arc::new(e))
        }
    }
}

/// Exponential backoff between failed writes: 50 ms doubling up to 5 s.
#[derive(Debug, Default)]
struct Backoff(Duration);

impl Backoff {
    fn next(&mut self) -> Duration {
        self.0 = (self.0 * 2).clamp(Duration::from_millis(50), Duration::from_secs(5));
        self.0
    }

    fn reset(&mut self) {
        self.0 = Duration::ZERO;
    }
}
