//! The bulkhead (concurrency limit) and the bounded intake of load levelling
//! (`shared/docs/resilience.md`, "Bulkhead" and "Load levelling"), as a state machine: at most
//! `max_concurrent` in flight, waiters FIFO up to `max_waiting`, each waiting at most `max_wait`.
//!
//! | state | on | result |
//! |---|---|---|
//! | fewer than M in flight, nobody waiting | `enter` | `Entered` (in flight + 1) |
//! | otherwise, `max_wait = 0` or `max_waiting` waiting | `enter` | `Full { retry_after }`: refused at once |
//! | otherwise | `enter` | `Queued(ticket)`, served in arrival order |
//! | any | `exit` (success, error, cancellation or panic alike) | in flight − 1; the oldest waiter enters |
//! | waiting past its deadline | `expire(now)` | dropped from the queue, refused |
//!
//! `Full`'s `retry_after` is what an HTTP intake answers as 429 `Retry-After` (whole seconds,
//! rounded up: [`retry_after_secs`]).

use std::collections::VecDeque;

use super::Nanos;

/// The limit's configuration and state.
#[derive(Debug, Clone)]
pub struct Bulkhead {
    max_concurrent: u32,
    max_waiting: usize,
    max_wait: Nanos,
    in_flight: u32,
    /// (ticket, deadline), oldest first.
    waiting: VecDeque<(u64, Nanos)>,
    next_ticket: u64,
    /// A typical call's duration, for the retry-after of a refusal.
    typical_call: Nanos,
}

/// What `enter` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Entered,
    /// Wait for [`Bulkhead::exit`] to admit this ticket (or [`Bulkhead::expire`] to refuse it).
    Queued(u64),
    Full {
        retry_after: Nanos,
    },
}

impl Bulkhead {
    /// At most `max_concurrent` in flight (at least 1), `max_waiting` queued for up to
    /// `max_wait` each; `typical_call` estimates when a refused caller may retry.
    pub fn new(
        max_concurrent: u32,
        max_waiting: usize,
        max_wait: Nanos,
        typical_call: Nanos,
    ) -> Bulkhead {
        Bulkhead {
            max_concurrent: max_concurrent.max(1),
            max_waiting,
            max_wait,
            in_flight: 0,
            waiting: VecDeque::new(),
            next_ticket: 0,
            typical_call: typical_call.max(1),
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Asks to start a call at `now`.
    pub fn enter(&mut self, now: Nanos) -> Entry {
        if self.in_flight < self.max_concurrent && self.waiting.is_empty() {
            self.in_flight += 1;
            return Entry::Entered;
        }
        if self.max_wait == 0 || self.waiting.len() >= self.max_waiting {
            // Everyone ahead must finish first: the queue plus one call, in rounds of M.
            let rounds = (self.waiting.len() as u64 / u64::from(self.max_concurrent)) + 1;
            return Entry::Full {
                retry_after: rounds * self.typical_call,
            };
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.waiting
            .push_back((ticket, now.saturating_add(self.max_wait)));
        Entry::Queued(ticket)
    }

    /// A call ended, however it ended; returns the waiter that enters in its place, if any.
    pub fn exit(&mut self, now: Nanos) -> Option<u64> {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.expire(now);
        let (ticket, _) = self.waiting.pop_front()?;
        self.in_flight += 1;
        Some(ticket)
    }

    /// Drops waiters whose deadline passed; returns their tickets (refused).
    pub fn expire(&mut self, now: Nanos) -> Vec<u64> {
        let mut gone = Vec::new();
        while let Some(&(ticket, deadline)) = self.waiting.front() {
            if deadline > now {
                break;
            }
            self.waiting.pop_front();
            gone.push(ticket);
        }
        gone
    }

    /// Withdraws a waiter that gave up.
    pub fn cancel(&mut self, ticket: u64) {
        self.waiting.retain(|(t, _)| *t != ticket);
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1 (RFC 9110).
pub fn retry_after_secs(retry_after: Nanos) -> u64 {
    retry_after.div_ceil(1_000_000_000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn at_most_m_in_flight_waiters_fifo_and_every_exit_admits_the_oldest() {
        let mut b = Bulkhead::new(2, 2, 10 * S, S);
        assert_eq!(b.enter(0), Entry::Entered);
        assert_eq!(b.enter(0), Entry::Entered);
        assert_eq!(b.enter(0), Entry::Queued(0));
        assert_eq!(b.enter(1), Entry::Queued(1));
        assert_eq!(
            b.enter(2),
            Entry::Full { retry_after: 2 * S },
            "the queue is full"
        );
        assert_eq!(b.exit(3), Some(0));
        assert_eq!(b.exit(3), Some(1));
        assert_eq!((b.in_flight(), b.waiting()), (2, 0));
        assert_eq!(b.exit(4), None);
        assert_eq!(b.in_flight(), 1);
    }

    #[test]
    fn without_a_wait_it_refuses_at_once_and_waiters_expire() {
        let mut b = Bulkhead::new(1, 10, 0, 2 * S);
        assert_eq!(b.enter(0), Entry::Entered);
        assert_eq!(b.enter(0), Entry::Full { retry_after: 2 * S });
        let mut b = Bulkhead::new(1, 10, 5 * S, S);
        assert_eq!(b.enter(0), Entry::Entered);
        assert_eq!(b.enter(0), Entry::Queued(0));
        assert_eq!(b.enter(4 * S), Entry::Queued(1));
        assert_eq!(b.expire(5 * S), [0]);
        assert_eq!(b.exit(6 * S), Some(1), "still within its wait");
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(1), 1);
        assert_eq!(retry_after_secs(S), 1);
        assert_eq!(retry_after_secs(S + 1), 2);
        assert_eq!(retry_after_secs(0), 1);
    }
}
