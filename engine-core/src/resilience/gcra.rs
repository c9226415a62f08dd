//! GCRA, governor's and redis-cell's rate limiter (`shared/docs/resilience.md`, "GCRA"; rule
//! numbers below are that section's).
//!
//! A limiter is its configuration ([`Gcra`]: emission interval `T = period / rate`, burst `B`,
//! tolerance `τ = T·(B − 1)`); a key's whole state is one theoretical arrival time (TAT, in
//! nanoseconds on the caller's clock), so a shared store can hold it in one column.
//!
//! | state | on `check(now, n)` | result, new TAT |
//! |---|---|---|
//! | any | `n > B` | `Insufficient` (never fits), unchanged |
//! | any | `n = 0` | `Allowed` with the remaining count, unchanged (a peek) |
//! | `now ≥ tat + T·(n−1) − τ` | `n` cells | `Allowed`, `max(tat, now) + n·T` |
//! | `now < tat + T·(n−1) − τ` | `n` cells | `Denied { retry_after }`, unchanged |

use std::time::Duration;

use super::{Nanos, ResilienceError};

/// A GCRA configuration: `rate` cells per `period`, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// `T`, nanoseconds per cell.
    interval: u64,
    /// `τ = T·(B − 1)`.
    tolerance: u64,
    burst: u32,
}

/// A decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Admitted; `remaining` cells could pass right after (rule 3).
    Allowed { remaining: u32 },
    /// Not now: try again after this long (rule 2).
    Denied { retry_after: Nanos },
    /// More cells than the burst: this request never fits.
    Insufficient,
}

impl Gcra {
    /// `rate` cells per `period`, bursts of up to `burst` (at least 1).
    pub fn new(rate: u32, period: Duration, burst: u32) -> Result<Gcra, ResilienceError> {
        let period = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
        if rate == 0 || burst == 0 || period == 0 {
            return Err(ResilienceError::Config(
                "a GCRA limiter needs a positive rate, period and burst".into(),
            ));
        }
        let interval = (period / u64::from(rate)).max(1);
        Ok(Gcra {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst) - 1),
            burst,
        })
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Nanoseconds per cell.
    pub fn interval(&self) -> Nanos {
        self.interval
    }

    /// Decides `n` cells at `now` for the key whose TAT is `tat` (0: never used), updating it
    /// when admitted.
    pub fn check(&self, tat: &mut Nanos, now: Nanos, n: u32) -> Decision {
        if n > self.burst {
            return Decision::Insufficient;
        }
        let t = (*tat).max(now);
        if n == 0 {
            return Decision::Allowed {
                remaining: self.remaining(t, now),
            };
        }
        let allow_at = t
            .saturating_add(self.interval * u64::from(n - 1))
            .saturating_sub(self.tolerance);
        // With `t = max(tat, now)`: for a past TAT this is `now + T(n−1) − τ ≤ now` since
        // `n ≤ B`, so a fresh key always admits up to the burst.
        if now < allow_at {
            return Decision::Denied {
                retry_after: allow_at - now,
            };
        }
        *tat = t.saturating_add(self.interval * u64::from(n));
        Decision::Allowed {
            remaining: self.remaining(*tat, now),
        }
    }

    /// Cells that could pass at `now` given `tat` (rule 3).
    fn remaining(&self, tat: Nanos, now: Nanos) -> u32 {
        let used = tat.saturating_sub(now);
        if used > self.tolerance + self.interval {
            return 0;
        }
        let left = (self.tolerance + self.interval - used) / self.interval;
        u32::try_from(left).unwrap_or(u32::MAX).min(self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_fresh_key_admits_the_burst_then_one_per_interval() {
        // 10 per second, bursts of 3: T = 100 ms.
        let g = Gcra::new(10, Duration::from_secs(1), 3).unwrap();
        let mut tat = 0;
        let now = 1_000 * MS;
        for left in [2, 1, 0] {
            assert_eq!(
                g.check(&mut tat, now, 1),
                Decision::Allowed { remaining: left }
            );
        }
        assert_eq!(
            g.check(&mut tat, now, 1),
            Decision::Denied {
                retry_after: 100 * MS
            }
        );
        assert_eq!(
            g.check(&mut tat, now + 100 * MS, 1),
            Decision::Allowed { remaining: 0 }
        );
    }

    #[test]
    fn cells_are_all_or_nothing_and_more_than_the_burst_never_fits() {
        let g = Gcra::new(10, Duration::from_secs(1), 5).unwrap();
        let mut tat = 0;
        let now = 10_000 * MS;
        assert_eq!(g.check(&mut tat, now, 6), Decision::Insufficient);
        assert_eq!(
            g.check(&mut tat, now, 4),
            Decision::Allowed { remaining: 1 }
        );
        let before = tat;
        assert_eq!(
            g.check(&mut tat, now, 2),
            Decision::Denied {
                retry_after: 100 * MS
            }
        );
        assert_eq!(tat, before, "a refusal changes nothing");
        assert_eq!(
            g.check(&mut tat, now, 0),
            Decision::Allowed { remaining: 1 }
        );
        assert_eq!(tat, before, "a peek changes nothing");
    }

    #[test]
    fn never_more_than_rate_times_t_plus_burst_in_any_window() {
        // A property over many pseudo-random request streams: in every window [a, b] the
        // admitted cells are at most (b − a)/T + burst, T = period/rate (as configured, rounded
        // down to a nanosecond).
        let mut seed = 0x1234_5678_9ABC_DEF1_u64;
        let mut rnd = move |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        for _ in 0..50 {
            let rate = 1 + rnd(50) as u32;
            let burst = 1 + rnd(10) as u32;
            let g = Gcra::new(rate, Duration::from_secs(1), burst).unwrap();
            let mut tat = 0;
            let mut now = 5_000 * MS;
            let mut admitted: Vec<(u64, u32)> = Vec::new();
            for _ in 0..400 {
                now += rnd(60) * MS;
                let n = 1 + rnd(u64::from(burst)) as u32;
                if let Decision::Allowed { .. } = g.check(&mut tat, now, n) {
                    admitted.push((now, n));
                }
            }
            for (i, (start, _)) in admitted.iter().enumerate() {
                let mut cells = 0u64;
                for (at, n) in &admitted[i..] {
                    cells += u64::from(*n);
                    let span = at - start;
                    let bound = span / g.interval() + u64::from(burst);
                    assert!(
                        cells <= bound,
                        "rate {rate} burst {burst}: {cells} cells in {span} ns"
                    );
                }
            }
        }
    }
}
