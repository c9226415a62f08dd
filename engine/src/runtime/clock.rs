//! Time as an input: the runtime reads the current time, and waits for timers, through a
//! [`Clock`]. [`SystemClock`] is the wall clock; [`ManualClock`] stands still until a test moves
//! it, so timer, retry, timeout and scheduled-start tests advance time instead of sleeping.

use std::{future::Future, pin::Pin, time::Duration};

use tokio::sync::watch;

use crate::history::TimestampMs;

/// A future the clock resolves when a time has come.
pub type Wake = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A source of the current time. The runtime stamps turns with it and waits on it for due
/// timers; the replay core never reads it.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> TimestampMs;
    /// Nanoseconds since the Unix epoch, for the resilience primitives' decisions. By default
    /// [`now_ms`](Clock::now_ms) in nanoseconds; the system clock gives its full resolution.
    fn now_nanos(&self) -> u64 {
        u64::try_from(self.now_ms())
            .unwrap_or(0)
            .saturating_mul(1_000_000)
    }
    /// Resolves once [`now_ms`](Clock::now_ms) has reached `at_ms`. Callers read the time
    /// again after it resolves.
    fn sleep_until(&self, at_ms: TimestampMs) -> Wake;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> TimestampMs {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as TimestampMs)
            .unwrap_or(0)
    }

    fn now_nanos(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    fn sleep_until(&self, at_ms: TimestampMs) -> Wake {
        // One millisecond more, so a wake-up in the timer's own millisecond does not find it not
        // yet due.
        let wait = (at_ms - self.now_ms()).max(0) as u64 + 1;
        Box::pin(tokio::time::sleep(Duration::from_millis(wait)))
    }
}

/// A clock that moves only when told to. Share it (`Arc<ManualClock>`) between the runtime and
/// the test that drives it.
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<TimestampMs>,
}

impl ManualClock {
    /// A clock standing at `now_ms`.
    pub fn new(now_ms: TimestampMs) -> ManualClock {
        ManualClock {
            now: watch::Sender::new(now_ms),
        }
    }

    /// Moves the clock forward by `by` and wakes whoever waits for a time now reached.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.now.send_modify(|now| *now = now.saturating_add(by));
    }

    /// Moves the clock to `at_ms` if that is later than now (a clock never goes back).
    pub fn advance_to(&self, at_ms: TimestampMs) {
        self.now.send_if_modified(|now| {
            let later = at_ms > *now;
            if later {
                *now = at_ms;
            }
            later
        });
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> TimestampMs {
        *self.now.borrow()
    }

    fn sleep_until(&self, at_ms: TimestampMs) -> Wake {
        let mut now = self.now.subscribe();
        Box::pin(async move {
            // An error means the clock is gone, and with it every reason to wait.
            let _ = now.wait_for(|now| *now >= at_ms).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[test]
    fn a_manual_clock_wakes_sleepers_when_moved_past_their_time() {
        let clock = ManualClock::new(1_000);
        let mut early = clock.sleep_until(1_500);
        let mut late = clock.sleep_until(3_000);
        assert!((&mut early).now_or_never().is_none());
        clock.advance(Duration::from_millis(499));
        assert!((&mut early).now_or_never().is_none(), "not yet");
        clock.advance_to(1_500);
        assert!((&mut early).now_or_never().is_some());
        assert!((&mut late).now_or_never().is_none());
        clock.advance_to(1_000);
        assert_eq!(clock.now_ms(), 1_500, "never back");
        clock.advance(Duration::from_secs(2));
        assert!(late.now_or_never().is_some());
        assert!(
            clock.sleep_until(0).now_or_never().is_some(),
            "past times are due"
        );
    }
}
