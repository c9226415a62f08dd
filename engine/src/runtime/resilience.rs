//! The live resilience primitives activities go through: named limiters and circuit breakers,
//! per-activity concurrency limits, and the start intake (load levelling). Each wraps a pure
//! state machine of [`crate::resilience`] with a lock, counters for the dashboard and, where a
//! caller waits, the waiting; time comes from the runtime's [`Clock`].
//!
//! **Limiters** ([`Limiter`]). A call takes one cell. If nobody is waiting and a cell is free it
//! passes at once; otherwise callers queue in arrival order on a fair async lock and only the
//! head waits on the clock (one timer, as aiolimiter wakes only its head; with every amount 1,
//! its smallest-first order is arrival order). A call that would wait past the limiter's
//! `max_wait` fails at once with [`RATE_LIMITED`] and the retry-after the limiter computed,
//! instead of hanging. A GCRA limiter with [`LimiterScope::Shared`] keeps its budget in the
//! store: the head leases `chunk` cells with one [`ResilienceStore::take_budget`] (the store runs
//! [`Gcra::check`] on the stored TAT in one transaction) and later calls spend them locally;
//! cells not spent within the time they stand for are dropped, so a process never sits on
//! budget. At most one store call per limiter is in flight per process, and after a refusal the
//! store is not asked again before the retry-after it gave.
//!
//! **Breakers** ([`Breaker`]). A call asks for a permit: refused while open with
//! [`CIRCUIT_OPEN`] and the time until a probe may go as its retry-after (a
//! [`RetryPolicy`](crate::context::RetryPolicy) then waits that long instead of hammering). A
//! permit ends in [`BreakerCall::finish`] (success or failure, with the call's duration for the
//! slow-call rule) or, dropped unfinished (the call was cancelled, or its limiter refused it),
//! is released: a half-open probe goes back (resilience.md breaker rule 7).
//!
//! **Concurrency limits** ([`Limit`]): a fair semaphore per activity name, taken before a worker
//! slot so calls waiting for their own limit never hold slots other activities need.
//!
//! **Intake** ([`Intake`]): with `RuntimeOptions::max_live_instances`, a start is refused with a
//! retry-after while that many instances are live (pending, running or suspended), instead of
//! queueing without bound; the HTTP API answers 429 with `Retry-After`.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Clock;
use crate::{
    history::{Failure, RuntimeStatus},
    registry::Registry,
    resilience::{
        CIRCUIT_OPEN, Nanos, RATE_LIMITED, ResilienceError,
        breaker::{BreakerConfig, BreakerState, CircuitBreaker, Outcome, Permit, Window},
        bucket::{Acquire, LeakyBucket},
        bulkhead::retry_after_secs,
        config::{LimiterConfig, LimiterKind, LimiterScope},
        gcra::{Decision, Gcra},
        view::{
            BreakerAction, BreakerView, ConcurrencyView, HISTORY_SECONDS, IntakeView, LimiterView,
            ResilienceSnapshot, SecondCount, TransitionView,
        },
    },
    store::ResilienceStore,
};

const SECOND: u64 = 1_000_000_000;

fn millis(nanos: Nanos) -> u64 {
    nanos.div_ceil(1_000_000)
}

/// Admissions and refusals per second over the last [`HISTORY_SECONDS`].
#[derive(Debug, Default)]
struct History {
    /// The second the last entry counts.
    last: u64,
    seconds: VecDeque<SecondCount>,
}

impl History {
    fn roll(&mut self, now: Nanos) {
        let second = now / SECOND;
        if self.seconds.is_empty() {
            self.last = second;
            self.seconds.push_back(SecondCount::default());
            return;
        }
        let gap = second.saturating_sub(self.last).min(HISTORY_SECONDS as u64);
        for _ in 0..gap {
            if self.seconds.len() == HISTORY_SECONDS {
                self.seconds.pop_front();
            }
            self.seconds.push_back(SecondCount::default());
        }
        self.last = self.last.max(second);
    }

    fn count(&mut self, now: Nanos, admitted: bool) {
        self.roll(now);
        let current = self.seconds.back_mut().expect("rolled");
        if admitted {
            current.admitted += 1;
        } else {
            current.refused += 1;
        }
    }

    fn view(&mut self, now: Nanos) -> Vec<SecondCount> {
        self.roll(now);
        self.seconds.iter().copied().collect()
    }
}

enum Algorithm {
    Gcra {
        gcra: Gcra,
        tat: Nanos,
    },
    Bucket(LeakyBucket),
    Shared {
        gcra: Gcra,
        chunk: u32,
        /// Cells leased from the store and not yet spent, and when they lapse.
        cells: u32,
        until: Nanos,
        /// The store refused until then: no need to ask it again before.
        refused_until: Nanos,
    },
}

struct LimiterState {
    algorithm: Algorithm,
    admitted: u64,
    refused: u64,
    store_writes: u64,
    history: History,
}

/// What one look at a limiter decided.
enum Step {
    Admitted,
    Wait(Nanos),
    /// The cell never fits (a leaky bucket smaller than one cell).
    Never,
    /// The store could not be asked.
    Unavailable,
}

/// A named rate limiter (see the module's doc).
pub struct Limiter {
    name: String,
    config: LimiterConfig,
    clock: Arc<dyn Clock>,
    store: Option<Arc<dyn ResilienceStore>>,
    state: Mutex<LimiterState>,
    /// Held by the caller at the head of the queue while it waits; fair, so FIFO.
    turn: tokio::sync::Mutex<()>,
    waiters: AtomicU32,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Takes a waiter off the count however its wait ends.
struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Limiter {
    /// A limiter configured by `config`; a shared one needs `store`.
    pub fn new(
        name: &str,
        config: LimiterConfig,
        clock: Arc<dyn Clock>,
        store: Option<Arc<dyn ResilienceStore>>,
    ) -> Result<Limiter, ResilienceError> {
        config.validate()?;
        let algorithm = match (config.kind, config.scope) {
            (
                LimiterKind::Gcra {
                    rate,
                    period,
                    burst,
                },
                scope,
            ) => {
                let gcra = Gcra::new(rate, period, burst)?;
                match scope {
                    LimiterScope::Process => Algorithm::Gcra { gcra, tat: 0 },
                    LimiterScope::Shared { chunk } => {
                        if store.is_none() {
                            return Err(ResilienceError::Config(format!(
                                "limiter {name:?} is shared, but this store cannot share it"
                            )));
                        }
                        Algorithm::Shared {
                            gcra,
                            chunk,
                            cells: 0,
                            until: 0,
                            refused_until: 0,
                        }
                    }
                }
            }
            (LimiterKind::LeakyBucket { max_rate, period }, _) => {
                Algorithm::Bucket(LeakyBucket::new(max_rate, period)?)
            }
        };
        Ok(Limiter {
            name: name.to_owned(),
            config,
            clock,
            store,
            state: Mutex::new(LimiterState {
                algorithm,
                admitted: 0,
                refused: 0,
                store_writes: 0,
                history: History::default(),
            }),
            turn: tokio::sync::Mutex::new(()),
            waiters: AtomicU32::new(0),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LimiterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides one cell at `now` without the store: every local algorithm, and a shared one's
    /// leased cells. `None`: only the store can say (a shared limiter with no cells left).
    fn step_local(&self, now: Nanos) -> Option<Step> {
        let mut state = self.lock();
        let step = match &mut state.algorithm {
            Algorithm::Gcra { gcra, tat } => match gcra.check(tat, now, 1) {
                Decision::Allowed { .. } => Step::Admitted,
                Decision::Denied { retry_after } => Step::Wait(retry_after),
                Decision::Insufficient => Step::Never,
            },
            Algorithm::Bucket(bucket) => match bucket.try_acquire(now, 1.0) {
                Acquire::Acquired => Step::Admitted,
                Acquire::WaitUntil(at) => Step::Wait(at.saturating_sub(now).max(1)),
                Acquire::Never => Step::Never,
            },
            Algorithm::Shared {
                cells,
                until,
                refused_until,
                ..
            } => {
                if *cells > 0 && now < *until {
                    *cells -= 1;
                    Step::Admitted
                } else if now < *refused_until {
                    *cells = 0;
                    Step::Wait(*refused_until - now)
                } else {
                    *cells = 0;
                    return None;
                }
            }
        };
        if let Step::Admitted = step {
            state.admitted += 1;
            state.history.count(now, true);
        }
        Some(step)
    }

    /// Leases a chunk from the store and spends one cell of it.
    async fn step_shared(&self, now: Nanos) -> Step {
        let (gcra, chunk) = match &self.lock().algorithm {
            Algorithm::Shared { gcra, chunk, .. } => (*gcra, *chunk),
            _ => unreachable!("only shared limiters ask the store"),
        };
        let Some(store) = &self.store else {
            return Step::Unavailable;
        };
        match store.take_budget(&self.name, gcra, chunk, now).await {
            Ok(Decision::Allowed { .. }) => {
                let mut state = self.lock();
                state.store_writes += 1;
                state.admitted += 1;
                state.history.count(now, true);
                if let Algorithm::Shared { cells, until, .. } = &mut state.algorithm {
                    *cells = chunk - 1;
                    // The chunk stands for `chunk` emission intervals of budget.
                    *until = now + gcra.interval() * u64::from(chunk);
                }
                Step::Admitted
            }
            Ok(Decision::Denied { retry_after }) => {
                if let Algorithm::Shared { refused_until, .. } = &mut self.lock().algorithm {
                    *refused_until = now.saturating_add(retry_after);
                }
                Step::Wait(retry_after)
            }
            Ok(Decision::Insufficient) => Step::Never,
            Err(e) => {
                tracing::warn!(limiter = %self.name, error = %e, "cannot lease budget from the store");
                Step::Unavailable
            }
        }
    }

    fn refuse(&self, now: Nanos, why: String, retry_after: Option<Nanos>) -> Failure {
        let mut state = self.lock();
        state.refused += 1;
        state.history.count(now, false);
        match retry_after {
            Some(after) => Failure::refused(RATE_LIMITED, why, millis(after).max(1)),
            None => Failure::new(RATE_LIMITED, why),
        }
    }

    /// Waits for one cell, in arrival order, up to the limiter's `max_wait`.
    pub async fn acquire(&self) -> Result<(), Failure> {
        let now = self.clock.now_nanos();
        // Nobody is queued: try at once without the queue.
        if self.waiters.load(Ordering::Relaxed) == 0
            && let Some(Step::Admitted) = self.step_local(now)
        {
            return Ok(());
        }
        self.waiters.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiters);
        let max_wait = u64::try_from(self.config.max_wait.as_nanos()).unwrap_or(u64::MAX);
        let deadline = now.saturating_add(max_wait);
        let deadline_ms = i64::try_from(millis(deadline)).unwrap_or(i64::MAX);
        let _turn = tokio::select! {
            // The queue first: a caller whose deadline is now still gets its turn if it is free.
            biased;
            turn = self.turn.lock() => turn,
            () = self.clock.sleep_until(deadline_ms) => {
                // Everyone ahead takes at least one emission interval.
                let ahead = u64::from(self.waiters.load(Ordering::Relaxed));
                let interval = (SECOND as f64 / self.config.rate_per_sec()) as u64;
                return Err(self.refuse(
                    self.clock.now_nanos(),
                    format!("limiter {} did not admit the call within {:?}: {ahead} calls wait ahead of it", self.name, self.config.max_wait),
                    Some(interval.saturating_mul(ahead.max(1))),
                ));
            }
        };
        loop {
            let now = self.clock.now_nanos();
            let step = match self.step_local(now) {
                Some(step) => step,
                None => self.step_shared(now).await,
            };
            match step {
                Step::Admitted => return Ok(()),
                Step::Wait(wait) if now.saturating_add(wait) <= deadline => {
                    let at = i64::try_from(millis(now + wait)).unwrap_or(i64::MAX);
                    self.clock.sleep_until(at).await;
                }
                Step::Wait(wait) => {
                    return Err(self.refuse(
                        now,
                        format!(
                            "limiter {} would admit the call only after {:?}, past its longest wait {:?}",
                            self.name,
                            Duration::from_nanos(wait),
                            self.config.max_wait
                        ),
                        Some(wait),
                    ));
                }
                Step::Never => {
                    return Err(self.refuse(
                        now,
                        format!(
                            "limiter {} can never admit one call: its capacity is below 1",
                            self.name
                        ),
                        None,
                    ));
                }
                Step::Unavailable => {
                    return Err(self.refuse(
                        now,
                        format!(
                            "limiter {}'s shared budget could not be read from the store",
                            self.name
                        ),
                        Some(SECOND),
                    ));
                }
            }
        }
    }

    /// The limiter now.
    pub fn view(&self) -> LimiterView {
        let now = self.clock.now_nanos();
        let mut state = self.lock();
        let (kind, scope, available) = match &state.algorithm {
            Algorithm::Gcra { gcra, tat } => {
                let mut peek = *tat;
                let remaining = match gcra.check(&mut peek, now, 0) {
                    Decision::Allowed { remaining } => remaining,
                    _ => 0,
                };
                ("gcra", "process", f64::from(remaining))
            }
            Algorithm::Bucket(bucket) => (
                "leaky-bucket",
                "process",
                bucket.capacity() - bucket.level(now),
            ),
            Algorithm::Shared { cells, until, .. } => (
                "gcra",
                "shared",
                if now < *until { f64::from(*cells) } else { 0.0 },
            ),
        };
        LimiterView {
            name: self.name.clone(),
            kind: kind.into(),
            scope: scope.into(),
            rate_per_sec: self.config.rate_per_sec(),
            burst: self.config.burst(),
            available,
            waiters: self.waiters.load(Ordering::Relaxed),
            admitted: state.admitted,
            refused: state.refused,
            store_writes: state.store_writes,
            per_second: state.history.view(now),
        }
    }
}

struct BreakerCell {
    breaker: CircuitBreaker,
    succeeded: u64,
    failed: u64,
    rejected: u64,
}

/// A named circuit breaker (see the module's doc).
pub struct Breaker {
    name: String,
    clock: Arc<dyn Clock>,
    cell: Mutex<BreakerCell>,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A permitted call: [`finish`](BreakerCall::finish) it with its outcome, or drop it unfinished
/// to give the permit back.
#[must_use = "finish the call with its outcome, or drop it if it did not run"]
pub struct BreakerCall {
    breaker: Arc<Breaker>,
    permit: Option<Permit>,
    started: Nanos,
}

impl BreakerCall {
    /// Records the call's outcome and duration. `Outcome::Ignored` counts as neither.
    pub fn finish(mut self, outcome: Outcome) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let now = self.breaker.clock.now_nanos();
        let mut cell = self.breaker.lock();
        match outcome {
            Outcome::Success => cell.succeeded += 1,
            Outcome::Failure => cell.failed += 1,
            Outcome::Ignored => {}
        }
        let took = now.saturating_sub(self.started);
        cell.breaker.record(permit, now, outcome, took);
    }

    /// Measures the call's duration from now (after a limiter's wait, which is not the
    /// dependency's slowness).
    pub fn restart_clock(&mut self) {
        self.started = self.breaker.clock.now_nanos();
    }
}

impl Drop for BreakerCall {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.breaker.lock().breaker.release(permit);
        }
    }
}

impl Breaker {
    pub fn new(name: &str, config: BreakerConfig, clock: Arc<dyn Clock>) -> Breaker {
        Breaker {
            name: name.to_owned(),
            clock,
            cell: Mutex::new(BreakerCell {
                breaker: CircuitBreaker::new(config),
                succeeded: 0,
                failed: 0,
                rejected: 0,
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerCell> {
        self.cell.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks to make a call now: a permit, or the `CircuitOpen` failure to answer with.
    pub fn try_call(self: &Arc<Self>) -> Result<BreakerCall, Failure> {
        let now = self.clock.now_nanos();
        let mut cell = self.lock();
        match cell.breaker.try_acquire(now) {
            Ok(permit) => Ok(BreakerCall {
                breaker: self.clone(),
                permit: Some(permit),
                started: now,
            }),
            Err(rejected) => {
                cell.rejected += 1;
                let state = cell.breaker.state();
                // Forced open has no end; half-open with every probe out waits for their results.
                let after = rejected.retry_after.unwrap_or(match state {
                    BreakerState::ForcedOpen => cell.breaker.config().open_wait,
                    _ => SECOND,
                });
                Err(Failure::refused(
                    CIRCUIT_OPEN,
                    format!(
                        "circuit breaker {} is {}: the call was not made",
                        self.name,
                        state.label()
                    ),
                    millis(after).max(1),
                ))
            }
        }
    }

    /// An operator's verb, with the reason recorded on the transition.
    pub fn act(&self, action: BreakerAction, reason: &str) {
        let now = self.clock.now_nanos();
        let mut cell = self.lock();
        let cause = if reason.trim().is_empty() {
            format!("{} by an operator", action.as_str())
        } else {
            format!("{} by an operator: {}", action.as_str(), reason.trim())
        };
        match action {
            BreakerAction::ForceOpen => cell.breaker.force_open(now, &cause),
            BreakerAction::ForceClose => cell.breaker.force_close(now, &cause),
            BreakerAction::Reset => cell.breaker.reset(now, &cause),
        }
    }

    /// The breaker now.
    pub fn view(&self) -> BreakerView {
        let now = self.clock.now_nanos();
        let mut cell = self.lock();
        let metrics = cell.breaker.metrics(now);
        let config = cell.breaker.config().clone();
        let state = cell.breaker.state();
        let half_open_in_ms = match state {
            BreakerState::Open { until, .. } => {
                Some(i64::try_from(millis(until.saturating_sub(now))).unwrap_or(i64::MAX))
            }
            _ => None,
        };
        BreakerView {
            name: self.name.clone(),
            status: state.into(),
            failure_rate: metrics.failure_rate,
            slow_rate: metrics.slow_rate,
            failure_threshold: config.failure_rate_threshold,
            slow_threshold: config.slow_call_rate_threshold,
            calls_in_window: metrics.calls,
            window: match config.window {
                Window::Count(n) => format!("last {n} calls"),
                Window::Time(s) => format!("last {s} s"),
            },
            minimum_calls: config.minimum_calls,
            half_open_in_ms,
            probes_left: cell.breaker.probes_left(),
            succeeded: cell.succeeded,
            failed: cell.failed,
            rejected: cell.rejected,
            transitions: cell
                .breaker
                .transitions()
                .map(|t| TransitionView {
                    at_ms: i64::try_from(t.at / 1_000_000).unwrap_or(i64::MAX),
                    from: t.from.into(),
                    to: t.to.into(),
                    cause: t.cause.clone(),
                })
                .collect(),
        }
    }
}

/// A per-activity concurrency limit.
#[derive(Debug)]
pub struct Limit {
    activity: &'static str,
    max: u32,
    permits: Arc<Semaphore>,
    waiting: AtomicU32,
}

impl Limit {
    fn new(activity: &'static str, max: u32) -> Limit {
        Limit {
            activity,
            max,
            permits: Arc::new(Semaphore::new(max as usize)),
            waiting: AtomicU32::new(0),
        }
    }

    /// Waits for a slot, in arrival order; the slot is free again when the permit drops.
    pub async fn enter(&self) -> OwnedSemaphorePermit {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        self.permits
            .clone()
            .acquire_owned()
            .await
            .expect("a limit's semaphore is never closed")
    }

    fn view(&self) -> ConcurrencyView {
        ConcurrencyView {
            activity: self.activity.to_owned(),
            max: self.max,
            in_flight: self.max - self.permits.available_permits() as u32,
            waiting: self.waiting.load(Ordering::Relaxed),
        }
    }
}

/// What one activity's calls go through.
#[derive(Debug, Clone, Default)]
pub(crate) struct Guards {
    pub limit: Option<Arc<Limit>>,
    pub breaker: Option<Arc<Breaker>>,
    pub limiter: Option<Arc<Limiter>>,
}

/// The start intake's bound and its view of the live instances.
#[derive(Debug, Default)]
pub(crate) struct Intake {
    max: Option<u64>,
    /// Live instances as of the last refresh, plus starts accepted since.
    live: AtomicU64,
    /// Starts accepted so far, so a refresh can add those accepted while it read the counts.
    accepted: AtomicU64,
    refused: AtomicU64,
    /// Instances finished per second, as of the last two refreshes (for the retry-after).
    finish_rate: Mutex<(f64, u64, Nanos)>,
}

impl Intake {
    /// The bound, if any.
    pub(crate) fn max(&self) -> Option<u64> {
        self.max
    }

    /// Whether a start may go now, or after how many whole seconds to retry.
    pub(crate) fn admit(&self) -> Result<(), u64> {
        let Some(max) = self.max else {
            return Ok(());
        };
        let live = self.live.load(Ordering::Relaxed);
        if live < max {
            return Ok(());
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        let rate = self.finish_rate.lock().map(|r| r.0).unwrap_or(0.0).max(1.0);
        let excess = (live + 1 - max) as f64;
        let wait = (excess / rate * SECOND as f64) as u64;
        Err(retry_after_secs(wait).min(60))
    }

    /// Counts a start the store accepted. (Checked before, counted after: concurrent starts
    /// may pass the bound by as many as run at once, never more.)
    pub(crate) fn started(&self) {
        self.live.fetch_add(1, Ordering::Relaxed);
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// Taken before the counts are read, for [`refresh`](Intake::refresh).
    pub(crate) fn mark(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Sets the live count from the store's maintained counts (read after `mark`), plus the
    /// starts accepted since `mark`, which the counts may not include yet.
    pub(crate) fn refresh(&self, counts: &BTreeMap<RuntimeStatus, i64>, now: Nanos, mark: u64) {
        let live: i64 = counts
            .iter()
            .filter(|(status, _)| !status.is_terminal())
            .map(|(_, n)| *n)
            .sum();
        let finished: i64 = counts
            .iter()
            .filter(|(status, _)| status.is_terminal())
            .map(|(_, n)| *n)
            .sum();
        let since = self.accepted.load(Ordering::Relaxed).saturating_sub(mark);
        self.live
            .store(live.max(0) as u64 + since, Ordering::Relaxed);
        if let Ok(mut rate) = self.finish_rate.lock() {
            let (_, before, at) = *rate;
            let finished = finished.max(0) as u64;
            if at > 0 && now > at {
                let per_sec =
                    finished.saturating_sub(before) as f64 / ((now - at) as f64 / SECOND as f64);
                *rate = (per_sec, finished, now);
            } else {
                *rate = (0.0, finished, now);
            }
        }
    }

    fn view(&self) -> IntakeView {
        IntakeView {
            live: self.live.load(Ordering::Relaxed),
            max: self.max,
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// Every live primitive of one runtime.
pub(crate) struct Resilience {
    pub process: String,
    clock: Arc<dyn Clock>,
    limiters: BTreeMap<String, Arc<Limiter>>,
    breakers: BTreeMap<String, Arc<Breaker>>,
    limits: BTreeMap<&'static str, Arc<Limit>>,
    guards: HashMap<&'static str, Guards>,
    pub intake: Intake,
}

impl Resilience {
    /// Builds the registry's limiters and breakers and each activity's guards.
    pub(crate) fn new(
        registry: &Registry,
        clock: Arc<dyn Clock>,
        store: Option<Arc<dyn ResilienceStore>>,
        process: String,
        max_live: Option<u64>,
    ) -> Result<Resilience, String> {
        registry.check_resilience()?;
        let mut limiters = BTreeMap::new();
        for (name, config) in registry.limiters() {
            let limiter = Limiter::new(name, *config, clock.clone(), store.clone())
                .map_err(|e| format!("limiter {name:?}: {e}"))?;
            limiters.insert(name.clone(), Arc::new(limiter));
        }
        let breakers: BTreeMap<String, Arc<Breaker>> = registry
            .breakers()
            .iter()
            .map(|(name, config)| {
                (
                    name.clone(),
                    Arc::new(Breaker::new(name, config.clone(), clock.clone())),
                )
            })
            .collect();
        let mut limits = BTreeMap::new();
        let mut guards = HashMap::new();
        for (activity, options) in registry.guarded_activities() {
            let limit = options.concurrency.map(|max| {
                let limit = Arc::new(Limit::new(activity, max));
                limits.insert(activity, limit.clone());
                limit
            });
            guards.insert(
                activity,
                Guards {
                    limit,
                    breaker: options.breaker.and_then(|b| breakers.get(b).cloned()),
                    limiter: options.limiter.and_then(|l| limiters.get(l).cloned()),
                },
            );
        }
        Ok(Resilience {
            process,
            clock,
            limiters,
            breakers,
            limits,
            guards,
            intake: Intake {
                max: max_live,
                ..Intake::default()
            },
        })
    }

    pub(crate) fn guards(&self, activity: &str) -> Option<&Guards> {
        self.guards.get(activity)
    }

    pub(crate) fn limit(&self, activity: &str) -> Option<Arc<Limit>> {
        self.guards.get(activity)?.limit.clone()
    }

    pub fn breaker(&self, name: &str) -> Option<&Arc<Breaker>> {
        self.breakers.get(name)
    }

    /// Everything, now.
    pub fn snapshot(&self) -> ResilienceSnapshot {
        ResilienceSnapshot {
            process: self.process.clone(),
            at_ms: self.clock.now_ms(),
            limiters: self.limiters.values().map(|l| l.view()).collect(),
            breakers: self.breakers.values().map(|b| b.view()).collect(),
            concurrency: self.limits.values().map(|l| l.view()).collect(),
            intake: self.intake.view(),
        }
    }
}

/// Runs an activity's code behind its guards: its concurrency slot is already taken; the
/// breaker may refuse; the limiter may make it wait or refuse; the breaker records the outcome.
pub(crate) async fn guarded<F>(guards: &Guards, run: F) -> Result<String, Failure>
where
    F: std::future::Future<Output = Result<String, Failure>>,
{
    let mut call = match &guards.breaker {
        Some(breaker) => Some(breaker.try_call()?),
        None => None,
    };
    if let Some(limiter) = &guards.limiter {
        // Refused here, the call is dropped unfinished: its permit goes back.
        limiter.acquire().await?;
        if let Some(call) = call.as_mut() {
            call.restart_clock();
        }
    }
    let result = run.await;
    if let Some(call) = call {
        let outcome = match &result {
            Ok(_) => Outcome::Success,
            // Another primitive's refusal inside the call says nothing about this dependency.
            Err(f) if f.error_type == CIRCUIT_OPEN || f.error_type == RATE_LIMITED => {
                Outcome::Ignored
            }
            Err(_) => Outcome::Failure,
        };
        call.finish(outcome);
    }
    result
}

/// This process's default name: host name and process id.
pub fn default_process_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}-{}", std::process::id())
}
