//! The error every server function returns.
//!
//! It is serialised to the browser as JSON, so a page can show the user a clear message and tell
//! a validation problem (fix your input) from an outage (try again). Database and engine details
//! are logged on the server and never sent to the browser.

use leptos::server_fn::{codec::JsonEncoding, error::FromServerFnError, error::ServerFnErrorErr};
use serde::{Deserialize, Serialize};

/// A server function's failure, as the browser sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AppError {
    /// The request was understood but its input is not acceptable.
    #[error("invalid input: {0}")]
    Validation(String),
    /// The thing asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The server could not do the work right now (database unreachable, shutting down).
    #[error("the server could not complete the request; try again")]
    Unavailable,
    /// The call did not reach the function or its answer could not be read.
    #[error("request failed: {0}")]
    Transport(String),
}

impl FromServerFnError for AppError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        AppError::Transport(value.to_string())
    }
}

#[cfg(feature = "ssr")]
impl From<engine::DbError> for AppError {
    fn from(err: engine::DbError) -> Self {
        // Logged once here with the detail; the browser only learns that it may retry.
        tracing::error!(error = %err, "database error in a server function");
        AppError::Unavailable
    }
}
