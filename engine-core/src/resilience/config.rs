//! How a named limiter is configured: which algorithm, where its budget lives, how long a caller
//! may wait. The runtime builds its live limiters from these (registered with
//! [`Registry::limiter`](crate::registry::Registry::limiter)); an activity names one in its
//! [`ActivityOptions`](crate::registry::ActivityOptions).

use std::time::Duration;

use super::{ResilienceError, bucket::LeakyBucket, gcra::Gcra};

/// The algorithm and its figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LimiterKind {
    /// governor's GCRA: `rate` per `period`, bursts of up to `burst`.
    Gcra {
        rate: u32,
        period: Duration,
        burst: u32,
    },
    /// aiolimiter's leaky bucket: `max_rate` per `period`, draining continuously.
    LeakyBucket { max_rate: f64, period: Duration },
}

/// Where a limiter's budget lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimiterScope {
    /// In this process: each process has its own budget.
    Process,
    /// In the store, shared by every process on it (GCRA only). A process leases `chunk`
    /// cells at a time (one store write per chunk) and admits from them locally; cells not
    /// used within the time they stand for are dropped, so a process never holds budget long.
    Shared { chunk: u32 },
}

/// A limiter's whole configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimiterConfig {
    pub kind: LimiterKind,
    pub scope: LimiterScope,
    /// Longest a call waits for admission before it fails with `RateLimited` (and a
    /// retry-after). Default 10 s.
    pub max_wait: Duration,
}

impl LimiterConfig {
    /// GCRA in this process.
    pub fn gcra(rate: u32, period: Duration, burst: u32) -> LimiterConfig {
        LimiterConfig {
            kind: LimiterKind::Gcra {
                rate,
                period,
                burst,
            },
            scope: LimiterScope::Process,
            max_wait: Duration::from_secs(10),
        }
    }

    /// aiolimiter's leaky bucket in this process.
    pub fn leaky_bucket(max_rate: f64, period: Duration) -> LimiterConfig {
        LimiterConfig {
            kind: LimiterKind::LeakyBucket { max_rate, period },
            scope: LimiterScope::Process,
            max_wait: Duration::from_secs(10),
        }
    }

    /// The budget in the store, leased `chunk` cells at a time.
    pub fn shared(mut self, chunk: u32) -> LimiterConfig {
        self.scope = LimiterScope::Shared { chunk };
        self
    }

    pub fn max_wait(mut self, max_wait: Duration) -> LimiterConfig {
        self.max_wait = max_wait;
        self
    }

    /// Admissions per second when saturated.
    pub fn rate_per_sec(&self) -> f64 {
        match self.kind {
            LimiterKind::Gcra { rate, period, .. } => f64::from(rate) / period.as_secs_f64(),
            LimiterKind::LeakyBucket { max_rate, period } => max_rate / period.as_secs_f64(),
        }
    }

    /// Most admitted at once from rest.
    pub fn burst(&self) -> f64 {
        match self.kind {
            LimiterKind::Gcra { burst, .. } => f64::from(burst),
            LimiterKind::LeakyBucket { max_rate, .. } => max_rate,
        }
    }

    /// Checks the figures: the algorithm accepts them, and a shared limiter is GCRA with a
    /// chunk of at least 1 and at most the burst (a chunk is one all-or-nothing request).
    pub fn validate(&self) -> Result<(), ResilienceError> {
        match self.kind {
            LimiterKind::Gcra {
                rate,
                period,
                burst,
            } => {
                Gcra::new(rate, period, burst)?;
                if let LimiterScope::Shared { chunk } = self.scope
                    && (chunk == 0 || chunk > burst)
                {
                    return Err(ResilienceError::Config(format!(
                        "a shared limiter's chunk must be between 1 and its burst ({burst}), not {chunk}"
                    )));
                }
            }
            LimiterKind::LeakyBucket { max_rate, period } => {
                LeakyBucket::new(max_rate, period)?;
                if let LimiterScope::Shared { .. } = self.scope {
                    return Err(ResilienceError::Config(
                        "only a GCRA limiter can be shared through the store (its state is one TAT)"
                            .into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_limiter_is_gcra_with_a_chunk_within_its_burst() {
        let second = Duration::from_secs(1);
        assert!(
            LimiterConfig::gcra(100, second, 50)
                .shared(50)
                .validate()
                .is_ok()
        );
        assert!(
            LimiterConfig::gcra(100, second, 50)
                .shared(51)
                .validate()
                .is_err()
        );
        assert!(
            LimiterConfig::gcra(100, second, 50)
                .shared(0)
                .validate()
                .is_err()
        );
        assert!(
            LimiterConfig::leaky_bucket(4.0, second)
                .shared(1)
                .validate()
                .is_err()
        );
        assert!(LimiterConfig::gcra(0, second, 1).validate().is_err());
        let c = LimiterConfig::gcra(100, Duration::from_secs(2), 10);
        assert_eq!((c.rate_per_sec(), c.burst()), (50.0, 10.0));
    }
}
