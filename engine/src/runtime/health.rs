//! Liveness of the runtime's tasks, whether writes succeed, and counters of what it has done.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
};

use crate::{history::TimestampMs, store::StoreError};

/// Liveness of the runtime's tasks and whether writes succeed.
#[derive(Debug, Default)]
pub(crate) struct HealthState {
    pub(crate) dispatcher: Arc<AtomicBool>,
    pub(crate) writer: Arc<AtomicBool>,
    pub(crate) activities: Arc<AtomicBool>,
    /// When writes started failing (runtime clock, ms); 0 while they succeed.
    failing_since: AtomicI64,
    last_error: Mutex<Option<String>>,
}

/// Clears a task's liveness flag (set when the runtime starts) when the task ends, by returning
/// or by panicking.
pub(crate) struct Alive(Arc<AtomicBool>);

impl Alive {
    pub(crate) fn new(flag: &Arc<AtomicBool>) -> Alive {
        Alive(flag.clone())
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Whether the runtime can do its work, for a readiness probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Every task runs and the last write succeeded.
    pub ready: bool,
    /// What is wrong, one sentence each (empty when ready).
    pub problems: Vec<String>,
}

impl HealthState {
    pub(crate) fn report(&self) -> Health {
        let mut problems = Vec::new();
        for (flag, what) in [
            (&self.dispatcher, "the orchestration dispatcher has stopped"),
            (&self.writer, "the commit writer has stopped"),
            (&self.activities, "the activity workers have stopped"),
        ] {
            if !flag.load(Ordering::SeqCst) {
                problems.push(what.to_owned());
            }
        }
        if self.failing_since.load(Ordering::SeqCst) != 0 {
            let error = self.last_error.lock().expect("health lock").clone();
            problems.push(format!(
                "writes to the store fail: {}",
                error.unwrap_or_default()
            ));
        }
        Health {
            ready: problems.is_empty(),
            problems,
        }
    }

    /// Records a failed write; true if it starts a streak of failures.
    pub(crate) fn write_failed(&self, error: &StoreError, now_ms: TimestampMs) -> bool {
        *self.last_error.lock().expect("health lock") = Some(error.to_string());
        self.failing_since
            .compare_exchange(0, now_ms.max(1), Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Records a successful write; true if it ends a streak of failures.
    pub(crate) fn write_succeeded(&self) -> bool {
        self.failing_since.swap(0, Ordering::SeqCst) != 0
    }

    pub(crate) fn failing(&self) -> bool {
        self.failing_since.load(Ordering::SeqCst) != 0
    }
}

/// Monotonic counters of what the runtime has done.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) commits: AtomicU64,
    pub(crate) ops: AtomicU64,
    pub(crate) turns: AtomicU64,
    pub(crate) activities: AtomicU64,
    pub(crate) dispatcher_rounds: AtomicU64,
    pub(crate) commit_micros: AtomicU64,
    pub(crate) entity_batches: AtomicU64,
    pub(crate) entity_operations: AtomicU64,
    /// Activity runs that ended in a failure (a panic included).
    pub(crate) activities_failed: AtomicU64,
    /// How long store commits take.
    pub(crate) commit_latency: Histogram,
    /// How long activity runs take (their code, behind their limiter and breaker).
    pub(crate) activity_latency: Histogram,
}

/// Upper bounds of the latency buckets, in microseconds: 100 µs to 10 s.
const BUCKETS_MICROS: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// A latency histogram with fixed buckets, recorded with relaxed atomics (no lock on the hot
/// path). Read as a [`HistogramSnapshot`].
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    /// One count per bucket of [`BUCKETS_MICROS`], then one for longer.
    counts: [AtomicU64; BUCKETS_MICROS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub(crate) fn record(&self, elapsed: std::time::Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_MICROS.partition_point(|&bound| bound < micros);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let buckets = BUCKETS_MICROS
            .iter()
            .zip(&self.counts)
            .map(|(&bound, count)| {
                cumulative += count.load(Ordering::Relaxed);
                (bound as f64 / 1e6, cumulative)
            })
            .collect();
        let count = cumulative + self.counts[BUCKETS_MICROS.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            buckets,
            count,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// A latency histogram as Prometheus shows one.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistogramSnapshot {
    /// (upper bound in seconds, observations at or under it), ascending; `+Inf` is `count`.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

/// A snapshot of the runtime's counters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuntimeStats {
    /// Transactions committed by the writer.
    pub commits: u64,
    /// Write ops in those transactions (ops / commits is the group-commit factor).
    pub ops: u64,
    /// Orchestration turns run.
    pub turns: u64,
    /// Activities run.
    pub activities: u64,
    /// Dispatcher fetch rounds.
    pub dispatcher_rounds: u64,
    /// Time spent inside store commits, in microseconds.
    pub commit_micros: u64,
    /// Entity batches run (each commits once).
    pub entity_batches: u64,
    /// Entity operations run in them (operations / batches is the batching factor).
    pub entity_operations: u64,
    /// Activity runs that failed (of `activities`).
    pub activities_failed: u64,
    /// Writes not yet taken into a commit (the writer's queue).
    pub writes_queued: u64,
    /// How long store commits took.
    pub commit_latency: HistogramSnapshot,
    /// How long activity runs took.
    pub activity_latency: HistogramSnapshot,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_into_cumulative_buckets() {
        let h = Histogram::default();
        for micros in [50, 100, 101, 3_000, 20_000_000] {
            h.record(std::time::Duration::from_micros(micros));
        }
        let s = h.snapshot();
        assert_eq!(s.count, 5);
        assert_eq!(
            s.buckets[0],
            (0.0001, 2),
            "100 µs is inside the first bucket"
        );
        assert_eq!(s.buckets[1], (0.00025, 3));
        assert_eq!(s.buckets[5], (0.005, 4));
        assert_eq!(s.buckets.last().unwrap().1, 4, "20 s is only in +Inf");
        assert!((s.sum_seconds - 20.003_251).abs() < 1e-9);
    }

    #[test]
    fn a_task_that_dies_makes_the_runtime_not_ready() {
        let health = HealthState::default();
        for flag in [&health.dispatcher, &health.writer, &health.activities] {
            flag.store(true, Ordering::SeqCst);
        }
        assert!(health.report().ready);
        let flag = health.dispatcher.clone();
        let died = std::thread::spawn(move || {
            let _alive = Alive::new(&flag);
            panic!("a bug outside every catch_unwind");
        })
        .join();
        assert!(died.is_err());
        let report = health.report();
        assert!(!report.ready);
        assert_eq!(
            report.problems,
            ["the orchestration dispatcher has stopped"]
        );
        // A failed write makes it not ready too, until a write succeeds.
        health.dispatcher.store(true, Ordering::SeqCst);
        let full = StoreError::Corrupt("database or disk is full".into());
        assert!(health.write_failed(&full, 5));
        assert!(!health.write_failed(&full, 6), "one streak");
        assert!(health.report().problems[0].contains("disk is full"));
        assert!(health.write_succeeded());
        assert!(health.report().ready);
    }
}
