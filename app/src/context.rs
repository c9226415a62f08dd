//! What the server provides to every server function: the database, the engine's client, and
//! the clock used for audit entries. Server builds only.

use engine::Database;
use leptos::prelude::use_context;

use crate::{EngineClient, error::AppError};

/// The database handle the server provides to every request's context.
pub fn database() -> Result<Database, AppError> {
    use_context::<Database>().ok_or_else(|| {
        tracing::error!("no Database in the server function context");
        AppError::Unavailable
    })
}

/// The engine's management client; absent when the engine does not run on this backend.
pub fn engine() -> Result<EngineClient, AppError> {
    use_context::<EngineClient>().ok_or(AppError::Unavailable)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
