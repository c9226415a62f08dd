//! The leaky bucket in aiolimiter's mode (`shared/docs/resilience.md`, "Leaky bucket"; rule
//! numbers below are that section's).
//!
//! Capacity `C = max_rate` per period `P`; the level drains continuously at `C/P` (rule 1).
//! Stored as one TAT per key (rule 6: `TAT = last + level·P/C`, GCRA with fractional amounts), so
//! `level(now) = max(0, TAT − now)·C/P`. Waiting callers queue in a [`WaitQueue`]: smallest
//! amount first, FIFO among equals (rule 5), and only the head is woken.
//!
//! | on | when | result |
//! |---|---|---|
//! | `has_capacity(n)` | `level + n ≤ C` | true; nothing consumed (rule 2) |
//! | `try_acquire(n)` | `n > C`, `n < 0`, NaN | `Never` (rule 3) |
//! | `try_acquire(n)` | `level + n ≤ C` | `Acquired`: `level += n` |
//! | `try_acquire(n)` | otherwise | `WaitUntil(t)`: the first time `level + n ≤ C` |

use std::{collections::BTreeMap, time::Duration};

use super::{Nanos, ResilienceError};

/// A bucket's configuration and its key's state.
#[derive(Debug, Clone, PartialEq)]
pub struct LeakyBucket {
    capacity: f64,
    /// Nanoseconds one unit takes to drain: `P / C`.
    per_unit: f64,
    /// `P` in nanoseconds: a full bucket's drain time.
    period: u64,
    /// Theoretical arrival time: when the level reaches 0 (integer nanoseconds, so absolute
    /// clock values keep their precision).
    tat: Nanos,
}

/// What `try_acquire` decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Acquire {
    Acquired,
    /// Retry at this time (the amount fits then, if nobody else takes it first).
    WaitUntil(Nanos),
    /// The amount exceeds the capacity (or is not a positive number): it never fits.
    Never,
}

impl LeakyBucket {
    /// `max_rate` units per `time_period`.
    pub fn new(max_rate: f64, time_period: Duration) -> Result<LeakyBucket, ResilienceError> {
        let period = time_period.as_nanos() as f64;
        if !(max_rate.is_finite() && max_rate > 0.0 && period > 0.0) {
            return Err(ResilienceError::Config(
                "a leaky bucket needs a positive max_rate and time_period".into(),
            ));
        }
        Ok(LeakyBucket {
            capacity: max_rate,
            per_unit: period / max_rate,
            period: period as u64,
            tat: 0,
        })
    }

    pub fn capacity(&self) -> f64 {
        self.capacity
    }

    /// The level at `now`, in `[0, C]` (rule 1).
    pub fn level(&self, now: Nanos) -> f64 {
        (self.tat.saturating_sub(now) as f64 / self.per_unit).min(self.capacity)
    }

    /// `amount` in drain time, nanoseconds (rounded to the nearest).
    fn cost(&self, amount: f64) -> u64 {
        (amount * self.per_unit).round() as u64
    }

    /// Nanoseconds of drain time in use at `now`.
    fn used(&self, now: Nanos) -> u64 {
        self.tat.saturating_sub(now)
    }

    /// Whether `amount` fits at `now`, without consuming (rule 2).
    pub fn has_capacity(&self, now: Nanos, amount: f64) -> bool {
        valid(amount, self.capacity) && self.used(now) + self.cost(amount) <= self.period
    }

    /// Takes `amount` if it fits at `now`; otherwise when to retry, or never (rule 3).
    pub fn try_acquire(&mut self, now: Nanos, amount: f64) -> Acquire {
        if !valid(amount, self.capacity) {
            return Acquire::Never;
        }
        let (used, cost) = (self.used(now), self.cost(amount));
        if used + cost <= self.period {
            self.tat = self.tat.max(now) + cost;
            return Acquire::Acquired;
        }
        // Fits once the level has drained by the excess.
        Acquire::WaitUntil(now + (used + cost - self.period))
    }
}

fn valid(amount: f64, capacity: f64) -> bool {
    amount.is_finite() && amount >= 0.0 && amount <= capacity
}

/// Callers waiting for a bucket, served smallest amount first, FIFO among equals (rule 5).
#[derive(Debug, Default)]
pub struct WaitQueue {
    /// (amount's order-preserving bits, arrival) → ticket.
    waiting: BTreeMap<(u64, u64), u64>,
    amounts: BTreeMap<u64, f64>,
    arrivals: u64,
}

impl WaitQueue {
    /// Queues a caller for `amount` (already checked to fit some day); returns its ticket.
    pub fn push(&mut self, amount: f64) -> u64 {
        let ticket = self.arrivals;
        self.arrivals += 1;
        // Non-negative finite floats order like their bit patterns.
        self.waiting.insert((amount.to_bits(), ticket), ticket);
        self.amounts.insert(ticket, amount);
        ticket
    }

    /// Withdraws a caller that gave up.
    pub fn cancel(&mut self, ticket: u64) {
        if let Some(amount) = self.amounts.remove(&ticket) {
            self.waiting.remove(&(amount.to_bits(), ticket));
        }
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Admits waiters from the head while they fit at `now`; returns their tickets, in order,
    /// and when to look again for the new head (`None`: nobody waits).
    pub fn serve(&mut self, bucket: &mut LeakyBucket, now: Nanos) -> (Vec<u64>, Option<Nanos>) {
        let mut served = Vec::new();
        while let Some((&key, &ticket)) = self.waiting.iter().next() {
            let amount = self.amounts[&ticket];
            match bucket.try_acquire(now, amount) {
                Acquire::Acquired => {
                    self.waiting.remove(&key);
                    self.amounts.remove(&ticket);
                    served.push(ticket);
                }
                Acquire::WaitUntil(at) => return (served, Some(at)),
                Acquire::Never => {
                    // Not queued by a correct caller; drop it rather than block the queue.
                    self.waiting.remove(&key);
                    self.amounts.remove(&ticket);
                }
            }
        }
        (served, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn from_empty_the_capacity_passes_at_once_then_one_per_period_over_capacity() {
        // aiolimiter's (4, 8 s): 4 at t = 0, then one every 2 s.
        let mut b = LeakyBucket::new(4.0, Duration::from_secs(8)).unwrap();
        let t0 = 100 * S;
        for _ in 0..4 {
            assert_eq!(b.try_acquire(t0, 1.0), Acquire::Acquired);
        }
        assert_eq!(b.try_acquire(t0, 1.0), Acquire::WaitUntil(t0 + 2 * S));
        assert!(!b.has_capacity(t0 + 2 * S - 1, 1.0));
        assert!(b.has_capacity(t0 + 2 * S, 1.0));
        assert_eq!(b.try_acquire(t0 + 2 * S, 1.0), Acquire::Acquired);
        assert_eq!(
            b.try_acquire(t0 + 3 * S, 1.0),
            Acquire::WaitUntil(t0 + 4 * S)
        );
    }

    #[test]
    fn up_to_twice_the_capacity_passes_within_one_period() {
        // A meter, not a window (rule 4): C at t = 0, and C more as it drains during P.
        let mut b = LeakyBucket::new(4.0, Duration::from_secs(8)).unwrap();
        let (t0, mut passed) = (0, 0);
        for step in 0..=8 {
            let now = t0 + step * S;
            while b.try_acquire(now, 1.0) == Acquire::Acquired {
                passed += 1;
            }
        }
        assert_eq!(passed, 8, "4 at once, then 4 drained within the 8 s");
    }

    #[test]
    fn has_capacity_never_consumes() {
        let mut b = LeakyBucket::new(2.0, Duration::from_secs(1)).unwrap();
        for _ in 0..10 {
            assert!(b.has_capacity(0, 2.0));
        }
        assert_eq!(b.try_acquire(0, 2.0), Acquire::Acquired);
        assert!(!b.has_capacity(0, 0.5));
        assert!((b.level(0) - 2.0).abs() < 1e-9);
        assert!((b.level(S / 2) - 1.0).abs() < 1e-9, "drains continuously");
    }

    #[test]
    fn an_amount_larger_than_the_capacity_fails_at_once() {
        let mut b = LeakyBucket::new(3.0, Duration::from_secs(1)).unwrap();
        for bad in [3.5, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(b.try_acquire(0, bad), Acquire::Never, "{bad}");
            assert!(!b.has_capacity(0, bad));
        }
        assert!(LeakyBucket::new(0.0, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn waiters_go_smallest_first_fifo_among_equals_and_only_the_head_is_woken() {
        let mut b = LeakyBucket::new(4.0, Duration::from_secs(4)).unwrap();
        assert_eq!(b.try_acquire(0, 4.0), Acquire::Acquired);
        let mut q = WaitQueue::default();
        let big = q.push(3.0);
        let small_1 = q.push(1.0);
        let small_2 = q.push(1.0);
        let (served, wake) = q.serve(&mut b, 0);
        assert!(served.is_empty());
        assert_eq!(wake, Some(S), "the head (1 unit) fits after 1 s");
        let (served, wake) = q.serve(&mut b, S);
        assert_eq!(served, [small_1]);
        assert_eq!(wake, Some(2 * S));
        let (served, _) = q.serve(&mut b, 2 * S);
        assert_eq!(served, [small_2]);
        // The large one waits until three units have drained.
        let (served, wake) = q.serve(&mut b, 3 * S);
        assert!(served.is_empty());
        assert_eq!(wake, Some(5 * S));
        let (served, wake) = q.serve(&mut b, 5 * S);
        assert_eq!((served, wake), (vec![big], None));
        let t = q.push(1.0);
        q.cancel(t);
        assert!(q.is_empty());
    }
}
