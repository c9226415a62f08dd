//! Configuration, loaded once at start-up in layers and validated before anything else happens.
//!
//! Precedence, lowest first: built-in defaults, then an optional TOML file (`--config`), then
//! `SWITCHYARD_*` environment variables, then command-line flags. Clap reads the last two (an
//! environment variable fills a flag that was not given), the file fills what is still unset, and
//! [`Config::resolve`] applies defaults and checks every value, so a bad setting is reported as one
//! line naming the setting and what to change.
//!
//! This module reads files and the environment but opens no sockets and no database.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    str::FromStr,
};

use clap::{Parser, ValueEnum};
use engine::DatabaseUrl;
use engine::db::Durability;
use serde::Deserialize;

/// The server's command line. Every flag can also be set with the environment variable shown in
/// `--help`, or in the TOML file under the same name with `_` for `-`.
#[derive(Debug, Parser, Default)]
#[command(
    name = "switchyard",
    version,
    about = "Switchyard: durable orchestrations with an operations dashboard"
)]
pub struct Cli {
    /// TOML file with settings (same names as the flags, `-` written as `_`).
    #[arg(long, env = "SWITCHYARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:3000].
    #[arg(long, env = "SWITCHYARD_BIND", value_name = "ADDR")]
    pub bind: Option<SocketAddr>,
    /// Host names the server answers to, comma-separated; other `Host` values get 421
    /// [default: the bind address (and localhost on loopback) and the OIDC redirect URL's host].
    #[arg(long, env = "SWITCHYARD_ALLOWED_HOSTS", value_name = "NAMES")]
    pub allowed_hosts: Option<String>,
    /// Folder for the embedded database and other local state; created if absent [default: data].
    #[arg(long, env = "SWITCHYARD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// `sqlite://<file>` or `postgres://<user>@<host>/<db>` [default: sqlite://<data-dir>/switchyard.db].
    #[arg(long, env = "SWITCHYARD_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// SQLite durability: `full` survives power loss, `normal` only a process crash [default: full].
    #[arg(long, env = "SWITCHYARD_SQLITE_SYNC", value_name = "MODE")]
    pub sqlite_sync: Option<SqliteSync>,
    /// Folder with the built browser bundle (`pkg/`) and static files [default: target/site].
    #[arg(long, env = "SWITCHYARD_SITE_ROOT", value_name = "DIR")]
    pub site_root: Option<PathBuf>,
    /// Log filter in `tracing` env-filter syntax [default: info,sqlx=warn].
    #[arg(long, env = "SWITCHYARD_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// Log format [default: human].
    #[arg(long, env = "SWITCHYARD_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Load levelling: refuse starts (HTTP 429 with `Retry-After`) while this many instances
    /// are live (pending, running or suspended); 0 for no bound [default: 100000].
    #[arg(long, env = "SWITCHYARD_MAX_LIVE_INSTANCES", value_name = "N")]
    pub max_live_instances: Option<u64>,
    /// OpenID Connect issuer URL. Enables login; without it the server runs in local mode.
    #[arg(long, env = "SWITCHYARD_OIDC_ISSUER", value_name = "URL")]
    pub oidc_issuer: Option<String>,
    /// OIDC client id.
    #[arg(long, env = "SWITCHYARD_OIDC_CLIENT_ID", value_name = "ID")]
    pub oidc_client_id: Option<String>,
    /// OIDC client secret. Prefer the environment variable or the file: flags show in `ps`.
    #[arg(
        long,
        env = "SWITCHYARD_OIDC_CLIENT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub oidc_client_secret: Option<Secret>,
    /// Where the provider sends the browser back [default: http://<bind>/auth/callback].
    #[arg(long, env = "SWITCHYARD_OIDC_REDIRECT_URL", value_name = "URL")]
    pub oidc_redirect_url: Option<String>,
    /// Scopes to request, separated by spaces or commas [default: openid profile email].
    #[arg(long, env = "SWITCHYARD_OIDC_SCOPES", value_name = "SCOPES")]
    pub oidc_scopes: Option<String>,
    /// The claim whose values grant roles, a string or an array of strings [default: groups].
    #[arg(long, env = "SWITCHYARD_OIDC_ROLE_CLAIM", value_name = "CLAIM")]
    pub oidc_role_claim: Option<String>,
    /// Claim values that grant the admin role, comma-separated [default: switchyard-admin].
    #[arg(long, env = "SWITCHYARD_OIDC_ADMINS", value_name = "VALUES")]
    pub oidc_admins: Option<String>,
    /// Claim values that grant the operator role [default: switchyard-operator].
    #[arg(long, env = "SWITCHYARD_OIDC_OPERATORS", value_name = "VALUES")]
    pub oidc_operators: Option<String>,
    /// Claim values that grant the viewer role [default: switchyard-viewer].
    #[arg(long, env = "SWITCHYARD_OIDC_VIEWERS", value_name = "VALUES")]
    pub oidc_viewers: Option<String>,
}

/// A secret setting: never printed by `Debug` or in errors.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// SQLite's `synchronous` setting as offered on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    #[default]
    Full,
    Normal,
}

/// The optional TOML file: same settings as the command line. Unknown keys are errors, so a typo
/// does not silently fall back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    bind: Option<String>,
    allowed_hosts: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    sqlite_sync: Option<SqliteSync>,
    site_root: Option<PathBuf>,
    log: Option<String>,
    log_format: Option<LogFormat>,
    max_live_instances: Option<u64>,
    oidc_issuer: Option<String>,
    oidc_client_id: Option<String>,
    oidc_client_secret: Option<Secret>,
    oidc_redirect_url: Option<String>,
    oidc_scopes: Option<String>,
    oidc_role_claim: Option<String>,
    oidc_admins: Option<String>,
    oidc_operators: Option<String>,
    oidc_viewers: Option<String>,
}

/// How users sign in.
#[derive(Debug, Clone)]
pub enum AuthConfig {
    /// No login: loopback only, everyone is the local administrator.
    Local,
    Oidc(Box<OidcSettings>),
}

/// A validated OpenID Connect client configuration.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub redirect_url: openidconnect::RedirectUrl,
    pub scopes: Vec<String>,
    pub role_claim: String,
    pub roles: RoleMap,
}

/// Which claim values grant which role.
#[derive(Debug, Clone, Default)]
pub struct RoleMap {
    pub admins: Vec<String>,
    pub operators: Vec<String>,
    pub viewers: Vec<String>,
}

impl RoleMap {
    /// The highest role any of `values` grants.
    pub fn role_for(&self, values: &[String]) -> Option<app::session::Role> {
        use app::session::Role;
        let has = |list: &[String]| values.iter().any(|v| list.contains(v));
        if has(&self.admins) {
            Some(Role::Admin)
        } else if has(&self.operators) {
            Some(Role::Operator)
        } else if has(&self.viewers) {
            Some(Role::Viewer)
        } else {
            None
        }
    }
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    /// Explicit allowed host names; `None`: the defaults (see [`crate::hosts`]).
    pub allowed_hosts: Option<Vec<String>>,
    pub data_dir: PathBuf,
    pub database_url: DatabaseUrl,
    pub durability: Durability,
    pub site_root: PathBuf,
    pub log: String,
    pub log_format: LogFormat,
    pub auth: AuthConfig,
    /// The start intake's bound; `None`: unbounded.
    pub max_live_instances: Option<u64>,
}

/// A configuration problem. Each message is one line that says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML for Switchyard: {message}")]
    FileSyntax { path: PathBuf, message: String },
    /// The database URL is not usable. Only the driver-independent, password-redacted form of the
    /// URL appears in the message.
    #[error("invalid database-url: {0}")]
    DatabaseUrl(#[source] engine::DbError),
    #[error("invalid {setting} {value:?}: {reason}")]
    Invalid {
        setting: &'static str,
        value: String,
        reason: String,
    },
    #[error(
        "refusing to listen on {0}: without an OIDC login (local mode) anyone who can reach the \
         server is an administrator; bind a loopback address such as 127.0.0.1"
    )]
    NonLoopbackInLocalMode(SocketAddr),
    #[error(
        "data directory {path} is not usable: {reason}; choose a writable folder with --data-dir"
    )]
    DataDir { path: PathBuf, reason: String },
}

const DEFAULT_BIND: &str = "127.0.0.1:3000";
/// Live instances past which starts are refused: far above what a dashboard or a burst of
/// scripts needs, well below what fills a disk by accident.
const DEFAULT_MAX_LIVE_INSTANCES: u64 = 100_000;
const DEFAULT_LOG: &str = "info,sqlx=warn,tower_http=info";

impl Config {
    /// Combines the command line (with environment) and the optional file, applies defaults and
    /// validates. Creates the data directory if it is missing and checks that it is writable.
    pub fn resolve(cli: Cli) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let bind = match (cli.bind, file.bind.as_deref()) {
            (Some(addr), _) => addr,
            (None, Some(text)) => parse_setting("bind", text)?,
            (None, None) => DEFAULT_BIND.parse().expect("default address parses"),
        };
        let auth = oidc_settings(&cli_oidc(&cli, &file), bind)?;
        // Without a login, everyone who reaches the server is an administrator: local mode is
        // reachable from this machine only.
        if matches!(auth, AuthConfig::Local) && !bind.ip().is_loopback() {
            return Err(ConfigError::NonLoopbackInLocalMode(bind));
        }
        let data_dir = cli
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("data"));
        let database_url = match cli.database_url.or(file.database_url) {
            Some(text) => text
                .parse::<DatabaseUrl>()
                .map_err(ConfigError::DatabaseUrl)?,
            None => format!("sqlite://{}", data_dir.join("switchyard.db").display())
                .parse()
                .map_err(|e: engine::DbError| ConfigError::Invalid {
                    setting: "data-dir",
                    value: data_dir.display().to_string(),
                    reason: e.to_string(),
                })?,
        };
        let durability = match cli.sqlite_sync.or(file.sqlite_sync).unwrap_or_default() {
            SqliteSync::Full => Durability::Full,
            SqliteSync::Normal => Durability::Normal,
        };
        let log = cli
            .log
            .or(file.log)
            .unwrap_or_else(|| DEFAULT_LOG.to_owned());
        tracing_subscriber::EnvFilter::try_new(&log).map_err(|e| ConfigError::Invalid {
            setting: "log",
            value: log.clone(),
            reason: e.to_string(),
        })?;
        let allowed_hosts = cli
            .allowed_hosts
            .or(file.allowed_hosts)
            .map(|list| {
                let names: Vec<String> = list
                    .split(',')
                    .map(|n| n.trim().to_owned())
                    .filter(|n| !n.is_empty())
                    .collect();
                if names.is_empty() {
                    return Err(ConfigError::Invalid {
                        setting: "allowed-hosts",
                        value: list.clone(),
                        reason: "name at least one host".into(),
                    });
                }
                Ok(names)
            })
            .transpose()?;
        let config = Config {
            bind,
            allowed_hosts,
            data_dir,
            database_url,
            durability,
            site_root: cli
                .site_root
                .or(file.site_root)
                .unwrap_or_else(|| PathBuf::from("target/site")),
            log,
            log_format: cli.log_format.or(file.log_format).unwrap_or_default(),
            auth,
            max_live_instances: match cli
                .max_live_instances
                .or(file.max_live_instances)
                .unwrap_or(DEFAULT_MAX_LIVE_INSTANCES)
            {
                0 => None,
                n => Some(n),
            },
        };
        config.prepare_data_dir()?;
        Ok(config)
    }

    /// Creates the data directory (and the SQLite file's folder) and proves it is writable.
    fn prepare_data_dir(&self) -> Result<(), ConfigError> {
        let mut dirs = vec![self.data_dir.clone()];
        if let Some(parent) = self
            .database_url
            .sqlite_path()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .filter(|p| !p.as_os_str().is_empty())
        {
            dirs.push(parent);
        }
        for dir in dirs {
            let fail = |e: std::io::Error| ConfigError::DataDir {
                path: dir.clone(),
                reason: e.to_string(),
            };
            std::fs::create_dir_all(&dir).map_err(fail)?;
            let probe = dir.join(".switchyard-write-probe");
            std::fs::write(&probe, b"ok").map_err(fail)?;
            std::fs::remove_file(&probe).map_err(fail)?;
        }
        Ok(())
    }
}

/// The OIDC settings as given, flag/environment first, then file.
struct OidcInput {
    issuer: Option<String>,
    client_id: Option<String>,
    client_secret: Option<Secret>,
    redirect_url: Option<String>,
    scopes: Option<String>,
    role_claim: Option<String>,
    admins: Option<String>,
    operators: Option<String>,
    viewers: Option<String>,
}

fn cli_oidc(cli: &Cli, file: &FileConfig) -> OidcInput {
    let pick = |a: &Option<String>, b: &Option<String>| a.clone().or_else(|| b.clone());
    OidcInput {
        issuer: pick(&cli.oidc_issuer, &file.oidc_issuer),
        client_id: pick(&cli.oidc_client_id, &file.oidc_client_id),
        client_secret: cli
            .oidc_client_secret
            .clone()
            .or_else(|| file.oidc_client_secret.clone()),
        redirect_url: pick(&cli.oidc_redirect_url, &file.oidc_redirect_url),
        scopes: pick(&cli.oidc_scopes, &file.oidc_scopes),
        role_claim: pick(&cli.oidc_role_claim, &file.oidc_role_claim),
        admins: pick(&cli.oidc_admins, &file.oidc_admins),
        operators: pick(&cli.oidc_operators, &file.oidc_operators),
        viewers: pick(&cli.oidc_viewers, &file.oidc_viewers),
    }
}

/// Validates the OIDC settings: none at all is local mode; an issuer needs a client id.
fn oidc_settings(input: &OidcInput, bind: SocketAddr) -> Result<AuthConfig, ConfigError> {
    let Some(issuer) = input.issuer.clone().filter(|i| !i.trim().is_empty()) else {
        if input.client_id.is_some() || input.client_secret.is_some() {
            return Err(ConfigError::Invalid {
                setting: "oidc-issuer",
                value: String::new(),
                reason: "an OIDC client id or secret is set but no issuer; set --oidc-issuer"
                    .into(),
            });
        }
        return Ok(AuthConfig::Local);
    };
    openidconnect::IssuerUrl::new(issuer.clone()).map_err(|e| ConfigError::Invalid {
        setting: "oidc-issuer",
        value: issuer.clone(),
        reason: e.to_string(),
    })?;
    let client_id = input
        .client_id
        .clone()
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| ConfigError::Invalid {
            setting: "oidc-client-id",
            value: String::new(),
            reason: "required with --oidc-issuer".into(),
        })?;
    let redirect = input
        .redirect_url
        .clone()
        .unwrap_or_else(|| format!("http://{bind}/auth/callback"));
    let redirect_url =
        openidconnect::RedirectUrl::new(redirect.clone()).map_err(|e| ConfigError::Invalid {
            setting: "oidc-redirect-url",
            value: redirect.clone(),
            reason: e.to_string(),
        })?;
    if !matches!(redirect_url.url().scheme(), "http" | "https") {
        return Err(ConfigError::Invalid {
            setting: "oidc-redirect-url",
            value: redirect,
            reason: "must be an http or https URL".into(),
        });
    }
    let list = |value: &Option<String>, default: &str| -> Vec<String> {
        value
            .as_deref()
            .unwrap_or(default)
            .split([',', ' '])
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let scopes = list(&input.scopes, "openid profile email");
    let roles = RoleMap {
        admins: list(&input.admins, "switchyard-admin"),
        operators: list(&input.operators, "switchyard-operator"),
        viewers: list(&input.viewers, "switchyard-viewer"),
    };
    Ok(AuthConfig::Oidc(Box::new(OidcSettings {
        issuer,
        client_id,
        client_secret: input.client_secret.clone(),
        redirect_url,
        scopes,
        role_claim: input
            .role_claim
            .clone()
            .unwrap_or_else(|| "groups".to_owned()),
        roles,
    })))
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::FileSyntax {
        path: path.to_owned(),
        message: one_line(&e.to_string()),
    })
}

fn parse_setting<T>(setting: &'static str, text: &str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    text.parse().map_err(|e: T::Err| ConfigError::Invalid {
        setting,
        value: text.to_owned(),
        reason: one_line(&e.to_string()),
    })
}

/// Folds a multi-line message into one line, dropping the source excerpt TOML errors draw
/// (`1 | key = "value"` and the `^^^` marker under it).
fn one_line(text: &str) -> String {
    let is_excerpt = |l: &str| {
        let digits = l.trim_start_matches(|c: char| c.is_ascii_digit());
        (digits.len() < l.len() && digits.trim_start().starts_with('|'))
            || l.chars().all(|c| matches!(c, '|' | '^' | ' '))
    };
    text.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty() && !is_excerpt(l))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli_in(dir: &Path) -> Cli {
        Cli {
            data_dir: Some(dir.join("data")),
            ..Cli::default()
        }
    }

    #[test]
    fn defaults_point_sqlite_into_the_data_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let config = Config::resolve(cli_in(tmp.path())).unwrap();
        assert_eq!(config.bind.to_string(), DEFAULT_BIND);
        assert_eq!(
            config.database_url.sqlite_path().unwrap(),
            tmp.path().join("data/switchyard.db")
        );
        assert_eq!(config.durability, Durability::Full);
        assert!(tmp.path().join("data").is_dir(), "data dir is created");
    }

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("switchyard.toml");
        std::fs::write(
            &file,
            "bind = \"127.0.0.1:4000\"\nlog_format = \"json\"\nsqlite_sync = \"normal\"\n",
        )
        .unwrap();
        let mut cli = cli_in(tmp.path());
        cli.config = Some(file);
        cli.bind = Some("127.0.0.1:5000".parse().unwrap());
        let config = Config::resolve(cli).unwrap();
        assert_eq!(config.bind.port(), 5000, "flag beats file");
        assert_eq!(config.log_format, LogFormat::Json, "file beats default");
        assert_eq!(config.durability, Durability::Normal);
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("bad.toml");
        std::fs::write(&file, "bnid = \"127.0.0.1:1\"\n").unwrap();
        let mut cli = cli_in(tmp.path());
        cli.config = Some(file);
        let err = Config::resolve(cli).unwrap_err().to_string();
        assert!(err.contains("unknown field `bnid`"), "{err}");
        assert!(!err.contains("1 |"), "no source excerpt: {err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }

    #[test]
    fn malformed_database_url_names_the_setting() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cli = cli_in(tmp.path());
        cli.database_url = Some("mysql://localhost/x".into());
        let err = Config::resolve(cli).unwrap_err().to_string();
        assert!(err.starts_with("invalid database-url"), "{err}");
        assert!(err.contains("expected sqlite://"), "{err}");
    }

    #[test]
    fn a_bad_database_url_never_prints_its_password() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cli = cli_in(tmp.path());
        cli.database_url = Some("postgres://app:s3cret@db:notaport/x".into());
        let err = Config::resolve(cli).unwrap_err().to_string();
        assert!(err.starts_with("invalid database-url"), "{err}");
        assert!(err.contains("app:***@db"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn local_mode_refuses_non_loopback_addresses() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cli = cli_in(tmp.path());
        cli.bind = Some("0.0.0.0:3000".parse().unwrap());
        let err = Config::resolve(cli).unwrap_err().to_string();
        assert!(err.contains("refusing to listen on 0.0.0.0:3000"), "{err}");
        let mut cli = cli_in(tmp.path());
        cli.bind = Some("[::1]:3000".parse().unwrap());
        assert!(Config::resolve(cli).is_ok());
    }

    #[test]
    fn oidc_needs_a_client_id_allows_other_addresses_and_hides_the_secret() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cli = cli_in(tmp.path());
        cli.oidc_issuer = Some("http://127.0.0.1:9/".into());
        let err = Config::resolve(cli).unwrap_err().to_string();
        assert!(err.contains("oidc-client-id"), "{err}");

        let mut cli = cli_in(tmp.path());
        cli.bind = Some("0.0.0.0:3000".parse().unwrap());
        cli.oidc_issuer = Some("http://127.0.0.1:9/".into());
        cli.oidc_client_id = Some("switchyard".into());
        cli.oidc_client_secret = Some("hunter2".parse().unwrap());
        cli.oidc_admins = Some("ops-leads, sre".into());
        let config = Config::resolve(cli).unwrap();
        let AuthConfig::Oidc(oidc) = &config.auth else {
            panic!("expected OIDC");
        };
        assert_eq!(
            oidc.redirect_url.as_str(),
            "http://0.0.0.0:3000/auth/callback"
        );
        assert_eq!(oidc.roles.admins, vec!["ops-leads", "sre"]);
        assert_eq!(oidc.scopes, vec!["openid", "profile", "email"]);
        assert!(
            !format!("{config:?}").contains("hunter2"),
            "Debug hides the secret"
        );

        let mut cli = cli_in(tmp.path());
        cli.oidc_client_secret = Some("hunter2".parse().unwrap());
        let err = Config::resolve(cli).unwrap_err().to_string();
        assert!(
            err.contains("no issuer") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn the_highest_matching_role_wins() {
        use app::session::Role;
        let map = RoleMap {
            admins: vec!["a".into()],
            operators: vec!["o".into()],
            viewers: vec!["v".into()],
        };
        let values = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(map.role_for(&values(&["v", "o"])), Some(Role::Operator));
        assert_eq!(map.role_for(&values(&["a", "v"])), Some(Role::Admin));
        assert_eq!(map.role_for(&values(&["v"])), Some(Role::Viewer));
        assert_eq!(map.role_for(&values(&["x"])), None);
    }

    #[test]
    fn unusable_data_dir_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let blocker = tmp.path().join("a-file");
        std::fs::write(&blocker, b"x").unwrap();
        let cli = Cli {
            data_dir: Some(blocker.join("data")),
            ..Cli::default()
        };
        let err = Config::resolve(cli).unwrap_err().to_string();
        assert!(err.contains("--data-dir"), "{err}");
    }

    #[test]
    fn bad_log_filter_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cli = cli_in(tmp.path());
        cli.log = Some("info,[[[".into());
        let err = Config::resolve(cli).unwrap_err().to_string();
        assert!(err.starts_with("invalid log"), "{err}");
    }
}
