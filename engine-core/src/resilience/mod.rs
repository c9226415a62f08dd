//! Resilience primitives, the pure part: state machines that take time as an input
//! (`shared/docs/resilience.md`). Time is nanoseconds on the caller's clock ([`Nanos`]); nothing
//! here reads a clock, sleeps or locks, so a decision costs a few arithmetic operations and a
//! test drives time by hand.
//!
//! - [`gcra`]: GCRA (governor, redis-cell): rate and burst, weighted all-or-nothing, retry-after.
//! - [`bucket`]: the leaky bucket in aiolimiter's mode, and its wait queue.
//! - [`breaker`]: the circuit breaker (resilience4j, with Polly's manual controls).
//! - [`bulkhead`]: the concurrency limit with a bounded FIFO intake and retry-after refusals.
//! - [`lease`]: leases with fencing tokens, and the resource-side fence.
//!
//! Not built yet (issue 13): shared limiters through the store, the runtime's registry of named
//! primitives and the activity options that use them, singletons, and the Resilience page.

pub mod breaker;
pub mod bucket;
pub mod bulkhead;
pub mod gcra;
pub mod lease;

/// Nanoseconds on the caller's clock.
pub type Nanos = u64;

/// A primitive that cannot be built as configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResilienceError {
    #[error("invalid configuration: {0}")]
    Config(String),
}
