//! The pure core of Switchyard's engine: history, the registry of orchestrations, activities and
//! entities, the orchestration context, the replay executor, the entity batch executor and rewind
//! planning.
//!
//! It performs no I/O, reads no clock and spawns nothing: its only dependencies are serde and
//! `futures-util`'s combinators, which `cargo xtask test` checks (no tokio, no sqlx). That keeps
//! it deterministic, testable without a runtime, and usable from the wasm dashboard, which shares
//! its types (statuses, events) instead of spelling them again.

pub mod bulk;
pub mod context;
pub mod entity;
pub mod executor;
pub mod history;
pub mod lock;
pub mod millis;
pub mod registry;
pub mod resilience;
pub mod rewind;
