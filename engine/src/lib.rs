//! Switchyard's durable orchestration engine.
//!
//! Today it holds the pure replay core ([`history`], [`context`], [`replay`], [`registry`]) and the
//! database connection with the schema migrations every other layer builds on ([`db`]). The
//! runtime (dispatchers, leases, timers) and the storage traits are being built on top. It has no web dependencies: the dashboard and HTTP API live in `app`
//! and `server`, which call into this crate.

pub mod client;
pub mod context;
pub mod db;
pub mod history;
pub mod journal;
pub mod registry;
pub mod replay;
pub mod runtime;
pub mod samples;
pub mod sqlite;
pub mod store;

pub use client::{Client, ClientError, StartOptions};
pub use context::{Either, OrchestrationContext, RetryPolicy, select, when_all, when_any};
pub use db::{Database, DatabaseUrl, DbError};
pub use history::{EventKind, Failure, HistoryEvent, Json, Message, RuntimeStatus};
pub use registry::{Activity, ActivityContext, Orchestration, Registry};
pub use replay::{Action, Executor, TurnResult, execute_turn};
pub use runtime::{Health, Runtime, RuntimeOptions, RuntimeStats};
pub use sqlite::SqliteStore;
