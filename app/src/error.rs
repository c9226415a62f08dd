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
    /// The request was understood but its input is not acceptable. The message says what is
    /// wrong (the engine's own already begin with "invalid …", so no prefix is added).
    #[error("{0}")]
    Validation(String),
    /// The thing asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The thing is in a state that does not allow the action (an entity that is locked, has
    /// messages queued, or is not locked); the message says what to do.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The user's role does not allow this action.
    #[error("not allowed: {0}")]
    Forbidden(String),
    /// Load levelling refused the work for now: retry after this many seconds (HTTP 429 with
    /// `Retry-After`).
    #[error("{message}")]
    Overloaded {
        message: String,
        retry_after_secs: u64,
    },
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
        // On the server, arguments that do not parse are the caller's mistake: 400, not 500.
        #[cfg(feature = "ssr")]
        if let ServerFnErrorErr::Args(_)
        | ServerFnErrorErr::MissingArg(_)
        | ServerFnErrorErr::Deserialization(_) = &value
        {
            return AppError::Validation(format!("the request's arguments are not valid: {value}"))
                .with_status();
        }
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

#[cfg(feature = "ssr")]
impl From<engine::ClientError> for AppError {
    fn from(err: engine::ClientError) -> Self {
        use engine::ClientError as E;
        match err {
            E::NotFound(id) => AppError::NotFound(format!("instance {id}")),
            E::EntityNotFound(id) => AppError::NotFound(format!("entity {id}")),
            e @ E::EntityConflict { .. } => AppError::Conflict(e.to_string()),
            e @ E::Overloaded {
                retry_after_secs, ..
            } => AppError::Overloaded {
                message: e.to_string(),
                retry_after_secs,
            },
            e @ E::UnknownPrimitive { .. } => AppError::NotFound(e.to_string()),
            // Refusals the user can act on: bad input, or an instance in the wrong state.
            e @ (E::Invalid { .. }
            | E::PayloadTooLarge { .. }
            | E::Conflict(_)
            | E::WrongState { .. }
            | E::Gone { .. }) => AppError::Validation(e.to_string()),
            other => {
                tracing::error!(error = %other, "engine error in a server function");
                AppError::Unavailable
            }
        }
    }
}

#[cfg(feature = "ssr")]
impl AppError {
    /// Sets the HTTP status of the current server-function response to match this error (400,
    /// 404 or 503), so scripts and logs see a 4xx for bad input rather than a 500, and returns
    /// the error.
    pub fn with_status(self) -> Self {
        if let Some(response) = leptos::prelude::use_context::<leptos_axum::ResponseOptions>() {
            response.set_status(self.status_code());
            if let Some(secs) = self.retry_after_secs() {
                response.insert_header(http::header::RETRY_AFTER, secs.into());
            }
        }
        self
    }

    /// For a 429: when to retry, in whole seconds.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            AppError::Overloaded {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// The HTTP status that fits this error: 400, 403, 404, 409, 429 or 503.
    pub fn status_code(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            AppError::Validation(_) => StatusCode::BAD_REQUEST,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::Unavailable | AppError::Transport(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}
