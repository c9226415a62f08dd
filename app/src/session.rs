//! Who is asking, and what they may do.
//!
//! Roles are ordered: a viewer reads; an operator also starts, terminates, raises events,
//! approves, suspends and resumes; an admin also purges, rewinds, restarts and runs bulk actions.
//!
//! The server's authentication middleware (`server::auth`) puts a [`CurrentUser`] into every
//! authenticated request: from the login session with OIDC, or the local administrator in local
//! mode. Every mutating server function calls [`ssr::require`] first, so the server enforces
//! the role whatever the page showed; pages read [`whoami`] only to hide what the role cannot do.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// A user's role, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    /// The name shown to users and used in configuration.
    pub fn label(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// The role a [`label`](Role::label) names.
    pub fn from_label(label: &str) -> Option<Role> {
        [Role::Viewer, Role::Operator, Role::Admin]
            .into_iter()
            .find(|r| r.label() == label)
    }
}

/// The signed-in user, as the server established it for this request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentUser {
    /// What to call the user: name, e-mail or subject from the identity provider.
    pub name: String,
    pub role: Role,
    /// Local mode: no login, everyone on this machine is the administrator.
    pub local: bool,
}

/// The current user, or `None` when the request is not signed in.
#[server(prefix = "/api/fn", endpoint = "session/whoami")]
pub async fn whoami() -> Result<Option<CurrentUser>, AppError> {
    Ok(ssr::current_user())
}

/// The current user as a resource the layout loads once and provides to every page.
pub type UserResource = Resource<Result<Option<CurrentUser>, AppError>>;

/// Whether the current user has at least `needed`, for hiding controls. `false` until known.
pub fn can(needed: Role) -> bool {
    use_context::<UserResource>()
        .and_then(|user| user.get())
        .and_then(Result::ok)
        .flatten()
        .is_some_and(|u| u.role >= needed)
}

#[cfg(feature = "ssr")]
pub mod ssr {
    //! Server-side authorisation checks.

    use super::{CurrentUser, Role};
    use crate::error::AppError;

    /// The user the authentication middleware attached to this request, if any.
    pub fn current_user() -> Option<CurrentUser> {
        leptos::prelude::use_context::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<CurrentUser>().cloned())
    }

    /// The user, if they have at least `needed`; 403 otherwise (401 when not signed in).
    pub fn require(needed: Role) -> Result<CurrentUser, AppError> {
        let Some(user) = current_user() else {
            if let Some(response) = leptos::prelude::use_context::<leptos_axum::ResponseOptions>() {
                response.set_status(http::StatusCode::UNAUTHORIZED);
            }
            return Err(AppError::Forbidden("sign in first".into()));
        };
        if user.role >= needed {
            Ok(user)
        } else {
            Err(AppError::Forbidden(format!(
                "this action needs the {} role; you are {}",
                needed.label(),
                user.role.label()
            ))
            .with_status())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Role;

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
    }
}
