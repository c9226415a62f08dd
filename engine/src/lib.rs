//! Switchyard's durable orchestration engine.
//!
//! This crate will hold the replay core, the runtime (dispatchers, leases, timers) and the storage
//! backends. Today it owns the database connection and the schema migrations that every other
//! layer builds on ([`db`]). It has no web dependencies: the dashboard and HTTP API live in `app`
//! and `server`, which call into this crate.

pub mod db;

pub use db::{Database, DatabaseUrl, DbError};
