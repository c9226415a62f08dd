//! The circuit breaker, resilience4j's state machine (`shared/docs/resilience.md`, "Circuit
//! breaker"; rule numbers below are that section's).
//!
//! | state | on | to |
//! |---|---|---|
//! | Closed | a result, with at least `minimum_calls` in the window and failure rate ≥ threshold or slow rate ≥ slow threshold (or `consecutive_failures` in a row) | Open (until now + wait) |
//! | Open | `try_acquire` before `open_until` | Open; `Rejected { retry_after }` |
//! | Open | `try_acquire` at or after `open_until` (lazy, rule 5) | HalfOpen with `half_open_permits` permits, a fresh window |
//! | HalfOpen | the last permitted probe's result: rate ≥ threshold | Open (attempts + 1) |
//! | HalfOpen | the last permitted probe's result: rate below | Closed, window reset |
//! | HalfOpen | a probe released (cancelled before running) | HalfOpen, its permit back (rule 7) |
//! | any | `force_open` / `force_close` | ForcedOpen (rejects all) / ForcedClosed (admits all: resilience4j's DISABLED), no further transitions (rule 9) |
//! | any | `reset` | Closed, empty |
//!
//! Results of calls admitted in an earlier state (a permit from before the last transition) only
//! count in the current window when it is Closed, never in a half-open trial (rule 8). Each
//! transition is recorded with its time and cause (rule 10: only real changes).

use std::collections::VecDeque;

use super::Nanos;

/// How a breaker judges the calls it sees.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    pub window: Window,
    /// Below this many calls in the window nothing trips (rates read as unknown, rule 1).
    pub minimum_calls: u32,
    /// Percent, `(0, 100]`.
    pub failure_rate_threshold: f64,
    /// A call slower than this is slow (rule 2); `None`: no slow-call rule.
    pub slow_call_duration: Option<Nanos>,
    /// Percent, `(0, 100]`.
    pub slow_call_rate_threshold: f64,
    /// Also trip after this many failures in a row, whatever the rate.
    pub consecutive_failures: Option<u32>,
    /// How long it stays open before a probe.
    pub open_wait: Nanos,
    /// Probes allowed while half-open.
    pub half_open_permits: u32,
}

impl Default for BreakerConfig {
    /// resilience4j's defaults: last 100 calls, minimum 100, 50 % failures, 60 s slow calls at
    /// 100 %, open 60 s, 10 probes.
    fn default() -> Self {
        BreakerConfig {
            window: Window::Count(100),
            minimum_calls: 100,
            failure_rate_threshold: 50.0,
            slow_call_duration: Some(60_000_000_000),
            slow_call_rate_threshold: 100.0,
            consecutive_failures: None,
            open_wait: 60_000_000_000,
            half_open_permits: 10,
        }
    }
}

/// The sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last N calls.
    Count(u32),
    /// The last N seconds, in one-second buckets.
    Time(u32),
}

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open {
        until: Nanos,
        attempts: u32,
    },
    HalfOpen,
    ForcedOpen,
    /// resilience4j's DISABLED (Polly's manual close): admits all, never trips.
    ForcedClosed,
}

impl BreakerState {
    pub fn label(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen => "half-open",
            BreakerState::ForcedOpen => "forced-open",
            BreakerState::ForcedClosed => "forced-closed",
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    /// Counted as neither (rule 3).
    Ignored,
}

/// Leave to make a call: hand it back with the result, or release it if the call did not run.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a permit must end in `record` or `release`, or a half-open probe leaks"]
pub struct Permit {
    /// The transition count when it was granted.
    generation: u64,
    probe: bool,
}

/// A refused call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// `None` when forced open (no time is known).
    pub retry_after: Option<Nanos>,
}

/// One recorded transition.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub at: Nanos,
    pub from: BreakerState,
    pub to: BreakerState,
    pub cause: String,
}

/// Most transitions kept.
pub const TRANSITIONS_KEPT: usize = 50;

/// The window's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Metrics {
    pub calls: u32,
    pub failures: u32,
    pub slow: u32,
    /// Percent; `None` below the minimum number of calls.
    pub failure_rate: Option<f64>,
    pub slow_rate: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    second: u64,
    calls: u32,
    failures: u32,
    slow: u32,
}

/// A circuit breaker: configuration, state, window, transitions.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: BreakerState,
    generation: u64,
    /// Count window: (failed, slow) per call, oldest first, and its running totals.
    calls: VecDeque<(bool, bool)>,
    failed_calls: u32,
    slow_calls: u32,
    /// Time window: one bucket per second.
    buckets: VecDeque<Bucket>,
    in_a_row: u32,
    /// Half-open: permits left to grant, probes granted and not yet ended, results in.
    probes_left: u32,
    probes_out: u32,
    probe_results: Vec<(bool, bool)>,
    transitions: VecDeque<Transition>,
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> CircuitBreaker {
        CircuitBreaker {
            config,
            state: BreakerState::Closed,
            generation: 0,
            calls: VecDeque::new(),
            failed_calls: 0,
            slow_calls: 0,
            buckets: VecDeque::new(),
            in_a_row: 0,
            probes_left: 0,
            probes_out: 0,
            probe_results: Vec::new(),
            transitions: VecDeque::new(),
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Half-open probes that may still be granted (0 in other states).
    pub fn probes_left(&self) -> u32 {
        match self.state {
            BreakerState::HalfOpen => self.probes_left,
            _ => 0,
        }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The last transitions, oldest first.
    pub fn transitions(&self) -> impl Iterator<Item = &Transition> {
        self.transitions.iter()
    }

    /// Asks to make a call at `now`.
    pub fn try_acquire(&mut self, now: Nanos) -> Result<Permit, Rejected> {
        match self.state {
            BreakerState::ForcedClosed | BreakerState::Closed => Ok(self.permit(false)),
            BreakerState::ForcedOpen => Err(Rejected { retry_after: None }),
            BreakerState::Open { until, .. } if now < until => Err(Rejected {
                retry_after: Some(until - now),
            }),
            BreakerState::Open { .. } => {
                self.move_to(now, BreakerState::HalfOpen, "the open wait is over");
                self.probes_left = self.config.half_open_permits.max(1);
                self.probes_out = 0;
                self.probe_results.clear();
                self.probe()
            }
            BreakerState::HalfOpen => self.probe(),
        }
    }

    fn probe(&mut self) -> Result<Permit, Rejected> {
        if self.probes_left == 0 {
            return Err(Rejected { retry_after: None });
        }
        self.probes_left -= 1;
        self.probes_out += 1;
        Ok(self.permit(true))
    }

    fn permit(&self, probe: bool) -> Permit {
        Permit {
            generation: self.generation,
            probe,
        }
    }

    /// A call that got no chance to run: its half-open permit goes back (rule 7).
    pub fn release(&mut self, permit: Permit) {
        if permit.probe && permit.generation == self.generation {
            self.probes_out -= 1;
            self.probes_left += 1;
        }
    }

    /// Records how the permitted call ended, and how long it took.
    pub fn record(&mut self, permit: Permit, now: Nanos, outcome: Outcome, took: Nanos) {
        let current = permit.generation == self.generation;
        if permit.probe && current {
            self.probes_out -= 1;
        }
        if outcome == Outcome::Ignored {
            if permit.probe && current {
                self.probes_left += 1; // an ignored probe proves nothing: another may go
            }
            return;
        }
        let failed = outcome == Outcome::Failure;
        let slow = self.config.slow_call_duration.is_some_and(|d| took > d);
        match self.state {
            BreakerState::Closed => {
                self.push(now, failed, slow);
                self.in_a_row = if failed { self.in_a_row + 1 } else { 0 };
                self.trip_if_needed(now);
            }
            BreakerState::HalfOpen if permit.probe && current => {
                self.probe_results.push((failed, slow));
                if self.probe_results.len() as u32 >= self.config.half_open_permits.max(1) {
                    self.judge_probes(now);
                }
            }
            // Open, forced, disabled, or a stale result during a trial: metrics only (rule 8).
            BreakerState::ForcedClosed => {}
            _ => {}
        }
    }

    fn judge_probes(&mut self, now: Nanos) {
        let n = self.probe_results.len() as f64;
        let failures = self.probe_results.iter().filter(|r| r.0).count() as f64;
        let slow = self.probe_results.iter().filter(|r| r.1).count() as f64;
        let failure_rate = 100.0 * failures / n;
        let slow_rate = 100.0 * slow / n;
        let attempts = self.attempts();
        if failure_rate >= self.config.failure_rate_threshold
            || slow_rate >= self.config.slow_call_rate_threshold
        {
            let cause = format!("probes: {failure_rate:.0}% failed, {slow_rate:.0}% slow");
            self.open(now, attempts + 1, &cause);
        } else {
            self.clear_window();
            self.move_to(now, BreakerState::Closed, "the probes succeeded");
        }
    }

    fn attempts(&self) -> u32 {
        self.transitions
            .iter()
            .rev()
            .find_map(|t| match t.to {
                BreakerState::Open { attempts, .. } => Some(attempts),
                _ => None,
            })
            .unwrap_or(0)
    }

    fn trip_if_needed(&mut self, now: Nanos) {
        let m = self.metrics(now);
        let cause = if let Some(n) = self.config.consecutive_failures
            && self.in_a_row >= n
        {
            Some(format!("{} failures in a row", self.in_a_row))
        } else if m
            .failure_rate
            .is_some_and(|r| r >= self.config.failure_rate_threshold)
        {
            Some(format!(
                "failure rate {:.0}% of {} calls",
                m.failure_rate.unwrap_or(0.0),
                m.calls
            ))
        } else if self.config.slow_call_duration.is_some()
            && m.slow_rate
                .is_some_and(|r| r >= self.config.slow_call_rate_threshold)
        {
            Some(format!(
                "slow-call rate {:.0}% of {} calls",
                m.slow_rate.unwrap_or(0.0),
                m.calls
            ))
        } else {
            None
        };
        if let Some(cause) = cause {
            self.open(now, 1, &cause);
        }
    }

    fn open(&mut self, now: Nanos, attempts: u32, cause: &str) {
        let until = now.saturating_add(self.config.open_wait);
        self.move_to(now, BreakerState::Open { until, attempts }, cause);
        self.in_a_row = 0;
    }

    fn push(&mut self, now: Nanos, failed: bool, slow: bool) {
        match self.config.window {
            Window::Count(n) => {
                if self.calls.len() as u32 >= n.max(1)
                    && let Some((f, s)) = self.calls.pop_front()
                {
                    self.failed_calls -= u32::from(f);
                    self.slow_calls -= u32::from(s);
                }
                self.calls.push_back((failed, slow));
                self.failed_calls += u32::from(failed);
                self.slow_calls += u32::from(slow);
            }
            Window::Time(seconds) => {
                let second = now / 1_000_000_000;
                self.expire(second, seconds);
                if self.buckets.back().is_none_or(|b| b.second != second) {
                    self.buckets.push_back(Bucket {
                        second,
                        ..Bucket::default()
                    });
                }
                if let Some(b) = self.buckets.back_mut() {
                    b.calls += 1;
                    b.failures += u32::from(failed);
                    b.slow += u32::from(slow);
                }
            }
        }
    }

    fn expire(&mut self, second: u64, seconds: u32) {
        while self
            .buckets
            .front()
            .is_some_and(|b| b.second + u64::from(seconds.max(1)) <= second)
        {
            self.buckets.pop_front();
        }
    }

    fn clear_window(&mut self) {
        self.calls.clear();
        self.failed_calls = 0;
        self.slow_calls = 0;
        self.buckets.clear();
        self.in_a_row = 0;
    }

    /// The window's figures at `now`.
    pub fn metrics(&mut self, now: Nanos) -> Metrics {
        let (calls, failures, slow) = match self.config.window {
            Window::Count(_) => (self.calls.len() as u32, self.failed_calls, self.slow_calls),
            Window::Time(seconds) => {
                self.expire(now / 1_000_000_000, seconds);
                self.buckets.iter().fold((0, 0, 0), |(c, f, s), b| {
                    (c + b.calls, f + b.failures, s + b.slow)
                })
            }
        };
        // A count window caps the minimum at its size (rule 1).
        let minimum = match self.config.window {
            Window::Count(n) => self.config.minimum_calls.min(n),
            Window::Time(_) => self.config.minimum_calls,
        };
        let rate = |part: u32| {
            (calls >= minimum.max(1)).then(|| 100.0 * f64::from(part) / f64::from(calls))
        };
        Metrics {
            calls,
            failures,
            slow,
            failure_rate: rate(failures),
            slow_rate: rate(slow),
        }
    }

    /// Rejects every call until [`CircuitBreaker::reset`] (an operator's verb).
    pub fn force_open(&mut self, now: Nanos, reason: &str) {
        self.move_to(now, BreakerState::ForcedOpen, reason);
    }

    /// Admits every call and never trips until [`CircuitBreaker::reset`].
    pub fn force_close(&mut self, now: Nanos, reason: &str) {
        self.move_to(now, BreakerState::ForcedClosed, reason);
    }

    /// Back to an empty Closed.
    pub fn reset(&mut self, now: Nanos, reason: &str) {
        self.clear_window();
        self.move_to(now, BreakerState::Closed, reason);
    }

    fn move_to(&mut self, now: Nanos, to: BreakerState, cause: &str) {
        if self.state == to {
            return;
        }
        self.generation += 1;
        if self.transitions.len() >= TRANSITIONS_KEPT {
            self.transitions.pop_front();
        }
        self.transitions.push_back(Transition {
            at: now,
            from: self.state,
            to,
            cause: cause.to_owned(),
        });
        self.state = to;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn small() -> BreakerConfig {
        BreakerConfig {
            window: Window::Count(10),
            minimum_calls: 4,
            failure_rate_threshold: 50.0,
            slow_call_duration: Some(S),
            slow_call_rate_threshold: 100.0,
            consecutive_failures: None,
            open_wait: 10 * S,
            half_open_permits: 3,
        }
    }

    fn call(b: &mut CircuitBreaker, now: Nanos, outcome: Outcome) -> Result<(), Rejected> {
        let permit = b.try_acquire(now)?;
        b.record(permit, now, outcome, 1);
        Ok(())
    }

    #[test]
    fn below_the_minimum_nothing_trips_then_the_failure_rate_opens_it() {
        let mut b = CircuitBreaker::new(small());
        for _ in 0..3 {
            call(&mut b, 0, Outcome::Failure).unwrap();
        }
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "3 calls: below the minimum of 4"
        );
        assert_eq!(b.metrics(0).failure_rate, None);
        call(&mut b, S, Outcome::Success).unwrap();
        assert_eq!(
            b.state(),
            BreakerState::Open {
                until: 11 * S,
                attempts: 1
            },
            "3 of 4 failed: 75 % ≥ 50 %"
        );
        assert_eq!(
            b.try_acquire(5 * S),
            Err(Rejected {
                retry_after: Some(6 * S)
            })
        );
        let t = b.transitions().last().unwrap();
        assert_eq!((t.at, t.cause.as_str()), (S, "failure rate 75% of 4 calls"));
    }

    #[test]
    fn half_open_lets_exactly_the_configured_probes_through_and_returns_released_ones() {
        let mut b = CircuitBreaker::new(small());
        b.force_open(0, "test");
        b.reset(0, "test");
        for _ in 0..4 {
            call(&mut b, 0, Outcome::Failure).unwrap();
        }
        // Lazy: the first request after the wait moves it to half-open (rule 5).
        let p1 = b.try_acquire(10 * S).unwrap();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let p2 = b.try_acquire(10 * S).unwrap();
        let p3 = b.try_acquire(10 * S).unwrap();
        assert!(b.try_acquire(10 * S).is_err(), "only 3 probes");
        b.release(p3);
        let p3 = b
            .try_acquire(10 * S)
            .expect("a released probe's permit comes back");
        assert!(b.try_acquire(10 * S).is_err());
        b.record(p1, 10 * S, Outcome::Success, 1);
        b.record(p2, 10 * S, Outcome::Success, 1);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.record(p3, 10 * S, Outcome::Failure, 1);
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "1 of 3 failed: 33 % < 50 %"
        );
        assert_eq!(b.metrics(10 * S).calls, 0, "a fresh window");
    }

    #[test]
    fn failing_probes_reopen_it_with_one_more_attempt() {
        let mut b = CircuitBreaker::new(small());
        for _ in 0..4 {
            call(&mut b, 0, Outcome::Failure).unwrap();
        }
        for _ in 0..3 {
            call(&mut b, 10 * S, Outcome::Failure).unwrap();
        }
        assert_eq!(
            b.state(),
            BreakerState::Open {
                until: 20 * S,
                attempts: 2
            }
        );
    }

    #[test]
    fn slow_calls_and_consecutive_failures_trip_it_too() {
        let mut b = CircuitBreaker::new(small());
        for _ in 0..4 {
            let p = b.try_acquire(0).unwrap();
            b.record(p, 0, Outcome::Success, 2 * S);
        }
        assert!(matches!(b.state(), BreakerState::Open { .. }), "100 % slow");
        let mut b = CircuitBreaker::new(BreakerConfig {
            consecutive_failures: Some(2),
            minimum_calls: 100,
            ..small()
        });
        call(&mut b, 0, Outcome::Failure).unwrap();
        call(&mut b, 0, Outcome::Success).unwrap();
        call(&mut b, 0, Outcome::Failure).unwrap();
        assert_eq!(b.state(), BreakerState::Closed);
        call(&mut b, 0, Outcome::Failure).unwrap();
        assert_eq!(b.transitions().last().unwrap().cause, "2 failures in a row");
    }

    #[test]
    fn forced_states_neither_move_nor_count_and_stale_results_do_not_judge_a_trial() {
        let mut b = CircuitBreaker::new(small());
        b.force_close(0, "maintenance");
        for _ in 0..20 {
            call(&mut b, 0, Outcome::Failure).unwrap();
        }
        assert_eq!(b.state(), BreakerState::ForcedClosed);
        b.force_open(0, "incident");
        assert_eq!(b.try_acquire(100 * S), Err(Rejected { retry_after: None }));
        b.reset(100 * S, "over");
        let before = b.try_acquire(100 * S).unwrap();
        for _ in 0..4 {
            call(&mut b, 100 * S, Outcome::Failure).unwrap();
        }
        let probe = b.try_acquire(110 * S).unwrap();
        // A result from before the trial lands: it does not count as a probe.
        b.record(before, 110 * S, Outcome::Failure, 1);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.record(probe, 110 * S, Outcome::Success, 1);
        let kinds: Vec<&str> = b.transitions().map(|t| t.to.label()).collect();
        assert_eq!(
            kinds,
            [
                "forced-closed",
                "forced-open",
                "closed",
                "open",
                "half-open"
            ]
        );
    }

    #[test]
    fn a_time_window_forgets_calls_older_than_its_seconds() {
        let mut b = CircuitBreaker::new(BreakerConfig {
            window: Window::Time(5),
            ..small()
        });
        for _ in 0..3 {
            call(&mut b, 0, Outcome::Failure).unwrap();
        }
        assert_eq!(b.metrics(4 * S).calls, 3);
        assert_eq!(
            b.metrics(5 * S).calls,
            0,
            "the bucket of second 0 left the 5 s window"
        );
        call(&mut b, 5 * S, Outcome::Failure).unwrap();
        assert_eq!(b.state(), BreakerState::Closed, "one call in the window");
    }

    #[test]
    fn never_more_probes_than_permits_whatever_the_order() {
        // A property over pseudo-random interleavings of acquire, release and record.
        let mut seed = 0xDEAD_BEEF_u64;
        let mut rnd = move |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        for _ in 0..200 {
            let mut b = CircuitBreaker::new(small());
            for _ in 0..4 {
                call(&mut b, 0, Outcome::Failure).unwrap();
            }
            let now = 10 * S;
            let mut out: Vec<Permit> = Vec::new();
            let mut max_out = 0;
            for _ in 0..30 {
                match rnd(3) {
                    0 => {
                        if let Ok(p) = b.try_acquire(now) {
                            out.push(p);
                        }
                    }
                    1 if !out.is_empty() => b.release(out.remove(0)),
                    _ if !out.is_empty() => {
                        b.record(out.remove(0), now, Outcome::Success, 1);
                    }
                    _ => {}
                }
                if b.state() == BreakerState::HalfOpen {
                    max_out = max_out.max(out.len());
                }
                assert!(max_out <= 3, "{max_out} probes out");
            }
        }
    }
}
