//! API tokens: how scripts call the JSON API when people sign in to the dashboard with OIDC.
//!
//! An administrator creates a token on the API tokens page with a name, a role and a lifetime.
//! The token (`sy_<id>_<secret>`) is shown once; the database keeps only the SHA-256 of it, so a
//! leaked database or backup does not leak usable tokens. A script sends it as
//! `Authorization: Bearer sy_…` to any `/api/` route; the server's authentication middleware
//! turns it into a [`CurrentUser`] with the token's role, so every role check and audit record
//! applies to scripts exactly as to people. Tokens expire, and an administrator can revoke one at
//! any time (creation and revocation are audited). Tokens carry no session and are not accepted
//! for pages, so a token cannot be used to browse the dashboard.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{
    error::AppError,
    session::{CurrentUser, Role},
};

/// Prefix of every token, so secret scanners and people recognise one.
pub const PREFIX: &str = "sy_";
/// Longest token name, in characters.
pub const MAX_NAME: usize = 64;
/// Longest lifetime, in days.
pub const MAX_DAYS: u32 = 365;

/// A token as the tokens page lists it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_by: String,
    /// Milliseconds since the Unix epoch, as are the other times.
    pub created_at: i64,
    pub expires_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// As of when the server read it.
    pub state: TokenState,
}

/// Whether a token is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenState {
    Active,
    Expired,
    Revoked,
}

impl TokenState {
    /// At `now` (ms), for a token expiring at `expires_at` and revoked at `revoked_at`.
    pub fn at(now: i64, expires_at: i64, revoked_at: Option<i64>) -> TokenState {
        if revoked_at.is_some() {
            TokenState::Revoked
        } else if expires_at <= now {
            TokenState::Expired
        } else {
            TokenState::Active
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            TokenState::Active => "active",
            TokenState::Expired => "expired",
            TokenState::Revoked => "revoked",
        }
    }
}

impl ApiToken {
    /// The user a request carrying this token acts as.
    pub fn user(&self) -> CurrentUser {
        CurrentUser {
            name: format!("{} (API token {})", self.name, self.id),
            role: self.role,
            local: false,
        }
    }
}

/// A token just created: the only time its secret is available.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewToken {
    pub token: ApiToken,
    /// The complete bearer token, `sy_<id>_<secret>`.
    pub secret: String,
}

/// The name trimmed, or why it is not acceptable.
pub fn valid_name(name: &str) -> Result<&str, AppError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(AppError::Validation("a token needs a name".into()));
    }
    if name.chars().count() > MAX_NAME {
        return Err(AppError::Validation(format!(
            "the name is longer than {MAX_NAME} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(AppError::Validation(
            "the name may not contain control characters".into(),
        ));
    }
    Ok(name)
}

/// Every token, newest first. Administrators only.
#[server(prefix = "/api/fn", endpoint = "tokens/list")]
pub async fn list_tokens() -> Result<Vec<ApiToken>, AppError> {
    crate::session::ssr::require(Role::Admin).map_err(AppError::with_status)?;
    let db = crate::context::database()?;
    Ok(ssr::list(&db).await?)
}

/// Creates a token with `role` that expires after `days`. Administrators only; audited.
#[server(prefix = "/api/fn", endpoint = "tokens/create")]
pub async fn create_token(name: String, role: Role, days: u32) -> Result<NewToken, AppError> {
    use crate::audit::ssr::{Action, guarded};
    let reason = format!("{} role, {days} days", role.label());
    let target = name.trim().to_owned();
    let audit = Action {
        name: "create token",
        target: &target,
        reason: &reason,
    };
    guarded(Role::Admin, audit, async {
        let name = valid_name(&name)?;
        if !(1..=MAX_DAYS).contains(&days) {
            return Err(AppError::Validation(format!(
                "the lifetime must be 1 to {MAX_DAYS} days, not {days}"
            )));
        }
        let db = crate::context::database()?;
        let creator = crate::session::ssr::current_user().ok_or(AppError::Unavailable)?;
        Ok(ssr::create(&db, name, role, days, &creator.name).await?)
    })
    .await
}

/// Revokes the token `id` at once. Administrators only; audited.
#[server(prefix = "/api/fn", endpoint = "tokens/revoke")]
pub async fn revoke_token(id: String) -> Result<(), AppError> {
    use crate::audit::ssr::{Action, guarded};
    let audit = Action {
        name: "revoke token",
        target: &id,
        reason: "",
    };
    guarded(Role::Admin, audit, async {
        let db = crate::context::database()?;
        if ssr::revoke(&db, &id).await? {
            Ok(())
        } else {
            Err(AppError::NotFound(format!("active API token {id}")))
        }
    })
    .await
}

#[cfg(feature = "ssr")]
pub mod ssr {
    //! Storing, checking and revoking tokens.

    use engine::{Database, DbError};
    use sha2::{Digest, Sha256};

    use super::{ApiToken, NewToken, PREFIX, TokenState};
    use crate::{context::now_ms, error::AppError, session::Role};

    /// Why a bearer token was not accepted; each is a 401 with this message.
    #[derive(Debug, thiserror::Error)]
    pub enum TokenError {
        #[error("the Authorization header must be `Bearer sy_…` with a Switchyard API token")]
        Malformed,
        #[error("this API token is unknown or wrong")]
        Unknown,
        #[error("this API token was revoked")]
        Revoked,
        #[error("this API token has expired; ask an administrator for a new one")]
        Expired,
        #[error("the token store failed: {0}")]
        Database(#[from] DbError),
        #[error("the system has no randomness for a new token: {0}")]
        Randomness(String),
    }

    impl From<TokenError> for AppError {
        fn from(e: TokenError) -> Self {
            match e {
                TokenError::Database(e) => AppError::from(e),
                other => {
                    tracing::error!(error = %other, "API token operation failed");
                    AppError::Unavailable
                }
            }
        }
    }

    impl From<sqlx::Error> for TokenError {
        fn from(e: sqlx::Error) -> Self {
            TokenError::Database(DbError::from(e))
        }
    }

    /// Bytes of randomness in an id and in a secret.
    const ID_BYTES: usize = 8;
    const SECRET_BYTES: usize = 32;
    /// How stale `last_used` may get before a use writes it again.
    const LAST_USED_GRANULARITY_MS: i64 = 60_000;

    /// A stored token; the last column is the secret's SHA-256 (never leaves this module).
    const COLUMNS: &str = "id, name, role, created_by, created_ms, expires_ms, last_used_ms, \
                           revoked_ms, secret_sha256";
    type Row = (
        String,
        String,
        String,
        String,
        i64,
        i64,
        Option<i64>,
        Option<i64>,
        String,
    );

    fn from_row(
        (id, name, role, created_by, created_at, expires_at, last_used_at, revoked_at, _hash): Row,
        now: i64,
    ) -> Option<ApiToken> {
        Some(ApiToken {
            state: TokenState::at(now, expires_at, revoked_at),
            id,
            name,
            role: Role::from_label(&role)?,
            created_by,
            created_at,
            expires_at,
            last_used_at,
            revoked_at,
        })
    }

    fn hex(bytes: &[u8]) -> String {
        use std::fmt::Write;
        bytes.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    fn random_hex<const N: usize>() -> Result<String, TokenError> {
        let mut bytes = [0u8; N];
        getrandom::fill(&mut bytes).map_err(|e| TokenError::Randomness(e.to_string()))?;
        Ok(hex(&bytes))
    }

    fn digest(token: &str) -> String {
        hex(&Sha256::digest(token.as_bytes()))
    }

    /// Splits `sy_<id>_<secret>` into its id, if it has that shape.
    fn token_id(token: &str) -> Option<&str> {
        let rest = token.strip_prefix(PREFIX)?;
        let (id, secret) = rest.split_once('_')?;
        let hex_of =
            |s: &str, n: usize| s.len() == n * 2 && s.bytes().all(|b| b.is_ascii_hexdigit());
        (hex_of(id, ID_BYTES) && hex_of(secret, SECRET_BYTES)).then_some(id)
    }

    /// Equal without an early exit, so timing does not reveal how much of a digest matched.
    fn same(a: &str, b: &str) -> bool {
        a.len() == b.len()
            && a.bytes()
                .zip(b.bytes())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0
    }

    /// Stores a new token and returns it with its secret.
    pub async fn create(
        db: &Database,
        name: &str,
        role: Role,
        days: u32,
        created_by: &str,
    ) -> Result<NewToken, TokenError> {
        let id = random_hex::<ID_BYTES>()?;
        let secret = format!("{PREFIX}{id}_{}", random_hex::<SECRET_BYTES>()?);
        let now = now_ms();
        let token = ApiToken {
            id,
            name: name.to_owned(),
            role,
            created_by: created_by.to_owned(),
            created_at: now,
            expires_at: now + i64::from(days) * 86_400_000,
            last_used_at: None,
            revoked_at: None,
            state: TokenState::Active,
        };
        const SQL: &str = "INSERT INTO api_tokens (id, name, role, secret_sha256, created_by, created_ms, expires_ms) \
                           VALUES ($1, $2, $3, $4, $5, $6, $7)";
        let hash = digest(&secret);
        engine::with_pool!(db, pool => {
            sqlx::query(SQL)
                .bind(&token.id)
                .bind(&token.name)
                .bind(token.role.label())
                .bind(&hash)
                .bind(&token.created_by)
                .bind(token.created_at)
                .bind(token.expires_at)
                .execute(pool)
                .await
                .map_err(DbError::from)?;
        });
        Ok(NewToken { token, secret })
    }

    /// Every token, newest first.
    pub async fn list(db: &Database) -> Result<Vec<ApiToken>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM api_tokens ORDER BY created_ms DESC, id");
        let rows: Vec<Row> =
            engine::with_pool!(db, pool => sqlx::query_as(&sql).fetch_all(pool).await?);
        let now = now_ms();
        Ok(rows
            .into_iter()
            .filter_map(|row| from_row(row, now))
            .collect())
    }

    /// Revokes an active token; `false` when there is no such active token.
    pub async fn revoke(db: &Database, id: &str) -> Result<bool, DbError> {
        const SQL: &str =
            "UPDATE api_tokens SET revoked_ms = $1 WHERE id = $2 AND revoked_ms IS NULL";
        let done = engine::with_pool!(db, pool => {
            sqlx::query(SQL).bind(now_ms()).bind(id).execute(pool).await?.rows_affected()
        });
        Ok(done == 1)
    }

    /// The token a bearer credential names, if it is genuine, unrevoked and unexpired. Notes the
    /// use (at most once a minute per token).
    pub async fn verify(db: &Database, presented: &str) -> Result<ApiToken, TokenError> {
        let id = token_id(presented).ok_or(TokenError::Malformed)?;
        let sql = format!("SELECT {COLUMNS} FROM api_tokens WHERE id = $1");
        let row: Option<Row> = engine::with_pool!(db, pool => {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?
        });
        let row = row.ok_or(TokenError::Unknown)?;
        if !same(&row.8, &digest(presented)) {
            return Err(TokenError::Unknown);
        }
        let now = now_ms();
        let token = from_row(row, now).ok_or(TokenError::Unknown)?;
        match token.state {
            TokenState::Revoked => return Err(TokenError::Revoked),
            TokenState::Expired => return Err(TokenError::Expired),
            TokenState::Active => {}
        }
        if token
            .last_used_at
            .is_none_or(|t| now - t >= LAST_USED_GRANULARITY_MS)
        {
            const SQL: &str = "UPDATE api_tokens SET last_used_ms = $1 WHERE id = $2";
            let noted = engine::with_pool!(db, pool => {
                sqlx::query(SQL).bind(now).bind(id).execute(pool).await.map(drop)
            });
            if let Err(e) = noted {
                // The request is genuine; a missed "last used" is not worth refusing it.
                tracing::warn!(error = %e, token = id, "could not note the API token's use");
            }
        }
        Ok(token)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn only_the_full_shape_is_a_token() {
            let id = "0123456789abcdef";
            let secret = "a".repeat(64);
            assert_eq!(token_id(&format!("sy_{id}_{secret}")), Some(id));
            assert_eq!(token_id(&format!("xx_{id}_{secret}")), None);
            assert_eq!(token_id(&format!("sy_{id}_{}", "a".repeat(63))), None);
            assert_eq!(token_id(&format!("sy_{id}x_{secret}")), None);
            assert_eq!(token_id(&format!("sy_{id}_{}g", "a".repeat(63))), None);
            assert_eq!(token_id("sy_"), None);
        }

        #[test]
        fn digests_compare_only_when_equal() {
            assert!(same(&digest("x"), &digest("x")));
            assert!(!same(&digest("x"), &digest("y")));
            assert!(!same("ab", "abc"));
            assert_eq!(digest("abc").len(), 64);
        }
    }
}
