//! Switchyard's durable orchestration engine.
//!
//! Layout by responsibility:
//! - the pure core lives in its own crate, `engine-core`, re-exported here ([`history`],
//!   [`registry`], [`context`], [`executor`], [`rewind`]): no I/O, no clock, no tokio;
//! - [`store`]: the storage contract, the backend-neutral commit rules ([`store::plan`]) and the
//!   SQLite store; [`db`] opens databases and runs the schema migrations;
//! - [`runtime`]: clock, writer, dispatcher, activity workers, health and crash journals;
//! - [`client`]: the management verbs over a running runtime.
//!
//! It has no web dependencies: the dashboard and HTTP API live in `app` and `server`.

// The attribute macros name the engine `::engine`, inside this crate too.
extern crate self as engine;

pub use engine_core::{
    context, entity, executor, history, lock, millis, registry, resilience, rewind,
};
pub use engine_macros::{activity, entity, orchestration};

pub mod client;
pub mod db;
pub mod runtime;
pub mod samples;
pub mod schema;
pub mod store;
pub mod system;

pub use client::{Client, ClientError, StartOptions};
pub use context::{
    Either, OrchestrationContext, RetryPolicy, select, try_when_all, when_all, when_any,
};
pub use db::{Database, DatabaseUrl, DbError};
pub use executor::{Action, Executor, TurnResult, execute_turn};
pub use history::{EventKind, Failure, HistoryEvent, Json, Message, RuntimeStatus};
pub use registry::{Activity, ActivityContext, ActivityOptions, Event, Orchestration, Registry};
pub use runtime::{
    Clock, Health, HistogramSnapshot, ManualClock, Runtime, RuntimeOptions, RuntimeStats,
    SystemClock, journal,
};
pub use store::sqlite::{self, SqliteStore};
