//! The database handle shared by the engine and the dashboard: connection, migrations, readiness.
//!
//! Switchyard runs on embedded SQLite by default and on PostgreSQL for scale-out. [`Database`] is a
//! cheap-to-clone handle over one connection pool of either kind. It parses and validates the URL
//! ([`DatabaseUrl`], which never prints a password), applies the embedded migrations from the
//! repository's `migrations/<backend>/` folders, and answers the readiness probe.
//!
//! SQLite is opened in WAL mode with `synchronous=FULL` unless the caller asks for `NORMAL`
//! ([`Durability`]): a committed write survives power loss by default.
//!
//! This module does not know about HTTP, sessions or any particular table's meaning; callers run
//! their own queries through [`Database::sqlite`]/[`Database::postgres`] or the backend match.

use std::{fmt, str::FromStr, time::Duration};

use sqlx::{
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    },
};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

/// Errors from opening, migrating or probing the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL is not one Switchyard can use; the message says what would be accepted.
    #[error("invalid database URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The database could not be reached or opened.
    #[error("cannot open database {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    /// Applying the embedded migrations failed.
    #[error("cannot apply database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
}

impl DbError {
    /// Whether retrying the same operation later may succeed (the database was unreachable or
    /// busy), as opposed to a permanent problem such as a bad URL.
    pub fn is_retryable(&self) -> bool {
        match self {
            DbError::InvalidUrl { .. } | DbError::Migrate(_) => false,
            DbError::Connect { source, .. } | DbError::Query(source) => matches!(
                source,
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
            ),
        }
    }
}

/// Which database server a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A validated database URL. `Display` and `Debug` hide any password it carries, so it can be
/// logged and put into error messages.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    raw: String,
    backend: Backend,
}

impl DatabaseUrl {
    /// The backend this URL selects.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL as given, password included. Only for handing to the driver.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// For a SQLite URL, the file it names (`None` for in-memory databases and PostgreSQL).
    pub fn sqlite_path(&self) -> Option<std::path::PathBuf> {
        if self.backend != Backend::Sqlite {
            return None;
        }
        let options = SqliteConnectOptions::from_str(&self.raw).ok()?;
        let path = options.get_filename();
        let text = path.to_string_lossy();
        (!text.is_empty() && text != ":memory:").then(|| path.to_path_buf())
    }

    fn redacted(&self) -> String {
        // `scheme://user:password@host/...`: replace the password, keep the rest for diagnosis.
        let Some((scheme, rest)) = self.raw.split_once("://") else {
            return self.raw.clone();
        };
        let (authority, tail) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        match authority.rsplit_once('@') {
            Some((userinfo, host)) if userinfo.contains(':') => {
                let user = userinfo.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}:***@{host}{tail}")
            }
            _ => self.raw.clone(),
        }
    }
}

impl FromStr for DatabaseUrl {
    type Err = DbError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| DbError::InvalidUrl {
            url: DatabaseUrl {
                raw: raw.to_owned(),
                backend: Backend::Sqlite,
            }
            .redacted(),
            reason,
        };
        let backend = if raw.starts_with("sqlite:") {
            Backend::Sqlite
        } else if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(invalid(
                "expected sqlite://<path> or postgres://<user>@<host>/<database>".into(),
            ));
        };
        let checked = match backend {
            Backend::Sqlite => SqliteConnectOptions::from_str(raw).map(|_| ()),
            Backend::Postgres => PgConnectOptions::from_str(raw).map(|_| ()),
        };
        checked.map_err(|e| invalid(e.to_string()))?;
        Ok(DatabaseUrl {
            raw: raw.to_owned(),
            backend,
        })
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

/// How hard SQLite works to make a commit durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: a committed transaction survives power loss. The default.
    #[default]
    Full,
    /// `synchronous=NORMAL`: survives a process crash; the last commits may be lost on power loss.
    Normal,
}

/// Options for [`Database::connect`], with documented defaults.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// SQLite durability; ignored for PostgreSQL. Default: [`Durability::Full`].
    pub durability: Durability,
    /// Largest number of pooled connections. Default: 8.
    pub max_connections: u32,
    /// How long to wait for a connection before failing. Default: 5 s.
    pub acquire_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            durability: Durability::Full,
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Evaluates `$body` with `$pool` bound to whichever pool `$db` holds. sqlx queries are generic
/// over the backend, so one query written once serves both:
/// `engine::with_pool!(db, pool => sqlx::query(SQL).execute(pool).await)`.
#[macro_export]
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::Database::Sqlite($pool) => $body,
            $crate::Database::Postgres($pool) => $body,
        }
    };
}

/// A pool over SQLite or PostgreSQL. Cloning is cheap and shares the pool.
#[derive(Clone, Debug)]
pub enum Database {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Database {
    /// Opens (creating a SQLite file if needed) the database at `url`. Does not migrate.
    pub async fn connect(url: &DatabaseUrl, options: &ConnectOptions) -> Result<Self, DbError> {
        let connect_err = |source| DbError::Connect {
            url: url.to_string(),
            source,
        };
        match url.backend {
            Backend::Sqlite => {
                let synchronous = match options.durability {
                    Durability::Full => SqliteSynchronous::Full,
                    Durability::Normal => SqliteSynchronous::Normal,
                };
                let connect = SqliteConnectOptions::from_str(url.expose())
                    .map_err(connect_err)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(synchronous)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(5));
                let pool = SqlitePoolOptions::new()
                    .max_connections(options.max_connections)
                    .acquire_timeout(options.acquire_timeout)
                    .connect_with(connect)
                    .await
                    .map_err(connect_err)?;
                Ok(Database::Sqlite(pool))
            }
            Backend::Postgres => {
                let connect = PgConnectOptions::from_str(url.expose()).map_err(connect_err)?;
                let pool = PgPoolOptions::new()
                    .max_connections(options.max_connections)
                    .acquire_timeout(options.acquire_timeout)
                    .connect_with(connect)
                    .await
                    .map_err(connect_err)?;
                Ok(Database::Postgres(pool))
            }
        }
    }

    /// Applies every embedded migration that has not run yet. Safe to call from several
    /// processes at once: sqlx takes an advisory lock on PostgreSQL.
    pub async fn migrate(&self) -> Result<(), DbError> {
        match self {
            Database::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await?,
            Database::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    /// Readiness: the database answers and every embedded migration has been applied.
    pub async fn readiness(&self) -> Readiness {
        let latest = |m: &Migrator| m.iter().map(|m| m.version).max().unwrap_or(0);
        let applied: Result<Option<i64>, sqlx::Error> = match self {
            Database::Sqlite(pool) => {
                sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success = TRUE")
                    .fetch_one(pool)
                    .await
            }
            Database::Postgres(pool) => {
                sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success = TRUE")
                    .fetch_one(pool)
                    .await
            }
        };
        let expected = match self {
            Database::Sqlite(_) => latest(&SQLITE_MIGRATIONS),
            Database::Postgres(_) => latest(&POSTGRES_MIGRATIONS),
        };
        match applied {
            Err(e) => Readiness::Unreachable(e.to_string()),
            Ok(v) if v.unwrap_or(0) < expected => Readiness::MigrationsPending {
                applied: v.unwrap_or(0),
                expected,
            },
            Ok(_) => Readiness::Ready,
        }
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        match self {
            Database::Sqlite(pool) => pool.close().await,
            Database::Postgres(pool) => pool.close().await,
        }
    }

    /// Which backend this handle talks to.
    pub fn backend(&self) -> Backend {
        match self {
            Database::Sqlite(_) => Backend::Sqlite,
            Database::Postgres(_) => Backend::Postgres,
        }
    }
}

/// The answer of [`Database::readiness`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// The database could not be queried; the message is the driver's.
    Unreachable(String),
    /// The schema is older than this binary expects.
    MigrationsPending {
        applied: i64,
        expected: i64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_sqlite_and_postgres_urls() {
        let sqlite: DatabaseUrl = "sqlite://data/switchyard.db".parse().unwrap();
        assert_eq!(sqlite.backend(), Backend::Sqlite);
        assert_eq!(
            sqlite.sqlite_path().unwrap(),
            std::path::PathBuf::from("data/switchyard.db")
        );
        let pg: DatabaseUrl = "postgresql://app:s3cret@db.local:5432/switchyard"
            .parse()
            .unwrap();
        assert_eq!(pg.backend(), Backend::Postgres);
        assert_eq!(pg.sqlite_path(), None);
    }

    #[test]
    fn rejects_other_schemes_with_a_hint() {
        let err = "mysql://localhost/db".parse::<DatabaseUrl>().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("expected sqlite://"), "{text}");
    }

    #[test]
    fn rejects_malformed_postgres_url() {
        let err = "postgres://user@host:notaport/db"
            .parse::<DatabaseUrl>()
            .unwrap_err();
        assert!(matches!(err, DbError::InvalidUrl { .. }), "{err}");
    }

    #[test]
    fn never_prints_the_password() {
        let url: DatabaseUrl = "postgres://app:s3cret@localhost/switchyard"
            .parse()
            .unwrap();
        assert_eq!(url.to_string(), "postgres://app:***@localhost/switchyard");
        assert!(!format!("{url:?}").contains("s3cret"));
        let err = "postgres://app:s3cret@localhost:xx/db"
            .parse::<DatabaseUrl>()
            .unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[tokio::test]
    async fn sqlite_connects_migrates_and_is_ready() {
        let dir = tempfile::tempdir().unwrap();
        let url: DatabaseUrl = format!("sqlite://{}/t.db", dir.path().display())
            .parse()
            .unwrap();
        let db = Database::connect(&url, &ConnectOptions::default())
            .await
            .unwrap();
        assert!(matches!(
            db.readiness().await,
            Readiness::Unreachable(_) // no migrations table yet
        ));
        db.migrate().await.unwrap();
        assert_eq!(db.readiness().await, Readiness::Ready);
        // Migrating twice is a no-op.
        db.migrate().await.unwrap();
        let Database::Sqlite(pool) = &db else {
            panic!("expected sqlite")
        };
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL by default");
    }
}
