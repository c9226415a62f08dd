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
//! - [`config`]: a named limiter's configuration (algorithm, in-process or shared, longest wait).
//! - [`view`]: what a process publishes about its primitives, and the operator's breaker verbs.
//!
//! The runtime's live primitives, which activities use through their options, are in
//! `engine::runtime::resilience`.

pub mod breaker;
pub mod bucket;
pub mod bulkhead;
pub mod config;
pub mod gcra;
pub mod lease;
pub mod view;

/// Failure type of a call refused by an open circuit breaker (it never ran). It carries a
/// retry-after ([`Failure::retry_after_ms`](crate::history::Failure::retry_after_ms)): a
/// [`RetryPolicy`](crate::context::RetryPolicy) waits at least that long.
pub const CIRCUIT_OPEN: &str = "CircuitOpen";
/// Failure type of a call its limiter did not admit within the limiter's longest wait.
pub const RATE_LIMITED: &str = "RateLimited";

/// Nanoseconds on the caller's clock.
pub type Nanos = u64;

/// A primitive that cannot be built as configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResilienceError {
    #[error("invalid configuration: {0}")]
    Config(String),
}
