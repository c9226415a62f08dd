//! Who is asking, and what they may do.
//!
//! Roles are ordered: a viewer reads; an operator also starts, terminates, raises events,
//! approves, suspends and resumes; an admin also purges, rewinds, restarts and runs bulk actions.
//! Every mutating server function calls [`ssr::require`] first. Until OIDC login exists the
//! server runs only in local mode (loopback, see `server::config`), where the user is by
//! definition the local administrator; the login flow will provide the role from the session.

use serde::{Deserialize, Serialize};

/// A user's role, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

#[cfg(feature = "ssr")]
pub mod ssr {
    //! Server-side authorisation checks.

    use super::Role;
    use crate::error::AppError;

    /// The current user's role. Local mode: the local administrator.
    pub fn current_role() -> Role {
        Role::Admin
    }

    /// Refuses with 403 unless the current user has at least `needed`.
    pub fn require(needed: Role) -> Result<(), AppError> {
        let role = current_role();
        if role >= needed {
            Ok(())
        } else {
            Err(AppError::Forbidden(format!(
                "this action needs the {needed:?} role; you are {role:?}"
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
