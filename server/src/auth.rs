//! Who is signed in: OpenID Connect login, sessions, and the user each request runs as.
//!
//! With an issuer configured the server is a confidential OIDC client (authorization-code flow
//! with PKCE, `state` and `nonce`). Login state and the signed-in user live in a `tower-sessions`
//! session stored in the database (`migrations/`), behind an HttpOnly, SameSite=Lax cookie that
//! is also Secure when the redirect URL is https. The session id is rotated at login; logout
//! deletes the session and, when the provider has an end-session endpoint, ends the provider's
//! session too.
//!
//! The role comes from a claim (`groups` by default) of the verified ID token, or of the
//! userinfo response when the ID token does not carry it; configured claim values map to
//! viewer, operator and admin, and the highest match wins. A user with no matching value is
//! refused at login. The role is fixed for the session: a change at the provider applies at the
//! next login.
//!
//! [`authenticate`] runs on every request and attaches an [`app::session::CurrentUser`]
//! (the local administrator in local mode). Requests without one may only reach the login
//! routes, the health probes and static files: pages redirect to the login, server functions
//! and API routes get 401.

use std::{collections::HashMap, str::FromStr, sync::Arc};

use app::session::{CurrentUser, Role};
use axum::{
    Router,
    extract::{Query, Request, State},
    http::{Method, StatusCode, header},
    middleware::Next,
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IdToken, IssuerUrl, LogoutRequest, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, PostLogoutRedirectUrl, ProviderMetadataWithLogout, Scope, TokenResponse,
    core::{
        CoreAuthenticationFlow, CoreClient, CoreGenderClaim, CoreIdToken,
        CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    },
    reqwest,
};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use tower_sessions::Session;

use crate::config::OidcSettings;

/// Session key of a login in progress.
const PENDING: &str = "switchyard.login";
/// Session key of the signed-in user.
pub const USER: &str = "switchyard.user";
/// The session cookie's name.
pub const COOKIE: &str = "switchyard.sid";
/// Session key of the last time a signed-in request refreshed the session's expiry (Unix s).
const SEEN: &str = "switchyard.seen";
/// How long a session lasts without a request.
pub const SESSION_IDLE: time::Duration = time::Duration::hours(8);
/// How long a login may take between the redirect to the provider and the callback: the
/// pending login's session lives this long, not a signed-in session's 8 hours.
const PENDING_IDLE: time::Duration = time::Duration::minutes(10);
/// A signed-in session's expiry is pushed forward at most this often (one write a minute, not
/// one per request).
const REFRESH_EVERY_S: i64 = 60;

/// How the server authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    /// No login: loopback only, everyone is the local administrator.
    Local,
    /// OpenID Connect login.
    Oidc(Arc<Oidc>),
}

impl Auth {
    /// The OIDC redirect URL's host, which browsers use to reach this server.
    pub fn redirect_host(&self) -> Option<String> {
        match self {
            Auth::Local => None,
            Auth::Oidc(oidc) => oidc
                .settings
                .redirect_url
                .url()
                .host_str()
                .map(str::to_owned),
        }
    }

    /// Extra `form-action` sources for pages: the provider's origin, where logout continues.
    pub fn form_targets(&self) -> String {
        match self {
            Auth::Local => String::new(),
            Auth::Oidc(oidc) => url_origin(&oidc.settings.issuer)
                .map(|origin| format!(" {origin}"))
                .unwrap_or_default(),
        }
    }

    /// Whether session cookies must be marked Secure (the site is served over https).
    pub fn secure_cookies(&self) -> bool {
        match self {
            Auth::Local => false,
            Auth::Oidc(oidc) => oidc.settings.redirect_url.url().scheme() == "https",
        }
    }
}

/// `scheme://host[:port]` of a URL, or `None` if it does not parse.
fn url_origin(url: &str) -> Option<String> {
    let url = openidconnect::url::Url::parse(url).ok()?;
    let origin = url.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

/// Login failures, each shown to the user as a short page and logged.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot reach the identity provider at {issuer}: {reason}")]
    Discovery { issuer: String, reason: String },
    /// The provider answered, but not with usable metadata (an issuer mismatch, say): retrying
    /// will not help.
    #[error(
        "the identity provider at {issuer} answered, but its configuration is not usable: {reason}"
    )]
    ProviderMetadata { issuer: String, reason: String },
    #[error("this login has expired or was started in another browser; sign in again")]
    NoPendingLogin,
    #[error("the login response does not belong to this login (state mismatch); sign in again")]
    StateMismatch,
    #[error("the identity provider refused the login: {0}")]
    Provider(String),
    #[error("the identity provider's answer could not be verified: {0}")]
    Verification(String),
    #[error(
        "you are signed in at the identity provider as {user}, but none of your \"{claim}\" values \
         grants a Switchyard role; ask an administrator to add you"
    )]
    NoRole { user: String, claim: String },
    #[error("the session store failed: {0}")]
    Session(String),
}

impl AuthError {
    fn status(&self) -> StatusCode {
        match self {
            AuthError::Discovery { .. } | AuthError::ProviderMetadata { .. } => {
                StatusCode::BAD_GATEWAY
            }
            AuthError::NoPendingLogin | AuthError::StateMismatch => StatusCode::BAD_REQUEST,
            AuthError::Provider(_) | AuthError::Verification(_) => StatusCode::UNAUTHORIZED,
            AuthError::NoRole { .. } => StatusCode::FORBIDDEN,
            AuthError::Session(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        tracing::warn!(error = %self, "login failed");
        let body = page(
            "Sign-in failed",
            &format!(
                "<p role=\"alert\" data-testid=\"auth-error\">{}</p><p><a href=\"/auth/login\">Sign in again</a></p>",
                escape(&sentence(&self.to_string()))
            ),
        );
        (self.status(), body).into_response()
    }
}

impl From<tower_sessions::session::Error> for AuthError {
    fn from(e: tower_sessions::session::Error) -> Self {
        AuthError::Session(e.to_string())
    }
}

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The provider as discovered: client and optional end-session endpoint.
#[derive(Debug)]
struct Provider {
    client: Client,
    end_session: Option<openidconnect::EndSessionUrl>,
}

/// The OIDC client: settings, HTTP client and the provider's metadata, discovered once.
#[derive(Debug)]
pub struct Oidc {
    settings: OidcSettings,
    http: reqwest::Client,
    provider: OnceCell<Provider>,
}

impl Oidc {
    /// A client for `settings`; nothing is fetched until [`Oidc::discover`] or the first login.
    pub fn new(settings: OidcSettings) -> Result<Oidc, AuthError> {
        let http = reqwest::Client::builder()
            // The token endpoint must not redirect the code elsewhere (SSRF defence).
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| AuthError::Discovery {
                issuer: settings.issuer.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Oidc {
            settings,
            http,
            provider: OnceCell::new(),
        })
    }

    /// Fetches the provider's metadata and keys (once; later calls reuse them).
    pub async fn discover(&self) -> Result<(), AuthError> {
        self.provider().await.map(drop)
    }

    async fn provider(&self) -> Result<&Provider, AuthError> {
        self.provider
            .get_or_try_init(|| async {
                let issuer = IssuerUrl::new(self.settings.issuer.clone()).map_err(|e| {
                    AuthError::Discovery {
                        issuer: self.settings.issuer.clone(),
                        reason: e.to_string(),
                    }
                })?;
                let metadata = ProviderMetadataWithLogout::discover_async(issuer, &self.http)
                    .await
                    .map_err(|e| {
                        let issuer = self.settings.issuer.clone();
                        let reason = error_chain(&e);
                        match e {
                            // No answer (yet): worth retrying.
                            openidconnect::DiscoveryError::Request(_) => {
                                AuthError::Discovery { issuer, reason }
                            }
                            _ => AuthError::ProviderMetadata { issuer, reason },
                        }
                    })?;
                let end_session = metadata.additional_metadata().end_session_endpoint.clone();
                let client = CoreClient::from_provider_metadata(
                    metadata,
                    ClientId::new(self.settings.client_id.clone()),
                    self.settings
                        .client_secret
                        .as_ref()
                        .map(|s| ClientSecret::new(s.expose().to_owned())),
                )
                .set_redirect_uri(self.settings.redirect_url.clone());
                tracing::info!(issuer = %self.settings.issuer, "identity provider discovered");
                Ok(Provider {
                    client,
                    end_session,
                })
            })
            .await
    }

    /// The page the provider sends the browser back to after its logout.
    fn signed_out_url(&self) -> Option<PostLogoutRedirectUrl> {
        let mut url = self.settings.redirect_url.url().clone();
        url.set_path("/auth/signed-out");
        url.set_query(None);
        PostLogoutRedirectUrl::new(url.to_string()).ok()
    }
}

/// The error and its sources, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A login in progress, kept in the session between the redirect and the callback.
#[derive(Debug, Serialize, Deserialize)]
struct PendingLogin {
    state: String,
    nonce: String,
    verifier: String,
    next: String,
}

/// The signed-in user, as stored in the session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionUser {
    pub subject: String,
    pub name: String,
    pub role: Role,
    /// The raw ID token, sent back as `id_token_hint` at logout.
    pub id_token: String,
}

/// Claims beyond the standard ones, kept as JSON so the configured role claim can be read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ExtraClaims(HashMap<String, serde_json::Value>);

impl openidconnect::AdditionalClaims for ExtraClaims {}

type RoleIdToken = IdToken<
    ExtraClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

/// The claim values as strings: a string claim is one value, an array claim many.
fn claim_values(claims: &ExtraClaims, claim: &str) -> Option<Vec<String>> {
    match claims.0.get(claim)? {
        serde_json::Value::String(s) => Some(vec![s.clone()]),
        serde_json::Value::Array(items) => Some(
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        ),
        _ => None,
    }
}

/// The routes under `/auth`.
pub fn router() -> Router<crate::AppState> {
    Router::new()
        .route("/auth/login", get(login))
        .route("/auth/callback", get(callback))
        .route("/auth/logout", post(logout))
        .route("/auth/signed-out", get(signed_out))
}

#[derive(Debug, Deserialize)]
struct LoginParams {
    next: Option<String>,
}

/// Longest `next` kept, in bytes.
const MAX_NEXT: usize = 2_048;

/// `next` if it is a path on this site, else `/`. Browsers drop tabs and newlines from URLs and
/// read `\` as `/`, so `/\t/evil.example` would become `//evil.example`: any control character,
/// whitespace or backslash, or a second leading slash, sends the user to `/` instead. What is
/// kept is a valid `Location` header value.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && n.len() <= MAX_NEXT
                && n.chars().all(|c| c.is_ascii_graphic() && c != '\\') =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

async fn login(
    State(auth): State<Auth>,
    session: Session,
    Query(params): Query<LoginParams>,
) -> Result<Response, AuthError> {
    let Auth::Oidc(oidc) = auth else {
        return Ok(Redirect::to("/").into_response());
    };
    let provider = oidc.provider().await?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = provider.client.authorize_url(
        CoreAuthenticationFlow::AuthorizationCode,
        CsrfToken::new_random,
        Nonce::new_random,
    );
    for scope in &oidc.settings.scopes {
        if scope != "openid" {
            request = request.add_scope(Scope::new(scope.clone()));
        }
    }
    let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
    // A login in progress is kept only as long as a login takes.
    session.set_expiry(Some(tower_sessions::Expiry::OnInactivity(PENDING_IDLE)));
    session
        .insert(
            PENDING,
            PendingLogin {
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                verifier: verifier.secret().clone(),
                next: safe_next(params.next.as_deref()),
            },
        )
        .await?;
    Ok(Redirect::to(url.as_str()).into_response())
}

#[derive(Debug, Deserialize)]
struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn callback(
    State(auth): State<Auth>,
    session: Session,
    Query(params): Query<CallbackParams>,
) -> Result<Response, AuthError> {
    let Auth::Oidc(oidc) = auth else {
        return Ok(Redirect::to("/").into_response());
    };
    let pending: PendingLogin = session
        .remove(PENDING)
        .await?
        .ok_or(AuthError::NoPendingLogin)?;
    // Checked again: a pending login stored by an older version could hold anything.
    let next = safe_next(Some(&pending.next));
    if let Some(error) = params.error {
        let description = params.error_description.unwrap_or_default();
        return Err(AuthError::Provider(
            format!("{error} {description}").trim().to_owned(),
        ));
    }
    if params.state.as_deref() != Some(pending.state.as_str()) {
        return Err(AuthError::StateMismatch);
    }
    let code = params
        .code
        .ok_or_else(|| AuthError::Provider("the response carries no authorization code".into()))?;
    let provider = oidc.provider().await?;
    let token = provider
        .client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| AuthError::Verification(e.to_string()))?
        .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
        .request_async(&oidc.http)
        .await
        .map_err(|e| AuthError::Provider(error_chain(&e)))?;
    let raw = token
        .id_token()
        .ok_or_else(|| AuthError::Verification("the token response has no ID token".into()))?
        .to_string();
    let id_token =
        RoleIdToken::from_str(&raw).map_err(|e| AuthError::Verification(e.to_string()))?;
    let claims = id_token
        .claims(
            &provider.client.id_token_verifier(),
            &Nonce::new(pending.nonce),
        )
        .map_err(|e| AuthError::Verification(e.to_string()))?;
    let subject = claims.subject().to_string();
    let display_name = |username: Option<String>, email: Option<String>| username.or(email);
    let mut name = display_name(
        claims.preferred_username().map(|u| u.to_string()),
        claims.email().map(|e| e.to_string()),
    );
    let claim = &oidc.settings.role_claim;
    let values = match claim_values(claims.additional_claims(), claim) {
        Some(values) => values,
        // Conformant providers serve scope claims (such as groups) from userinfo.
        None => match provider
            .client
            .user_info(token.access_token().clone(), Some(claims.subject().clone()))
        {
            Ok(request) => {
                let info: openidconnect::UserInfoClaims<ExtraClaims, CoreGenderClaim> = request
                    .request_async(&oidc.http)
                    .await
                    .map_err(|e| AuthError::Provider(error_chain(&e)))?;
                name = name.or_else(|| {
                    display_name(
                        info.preferred_username().map(|u| u.to_string()),
                        info.email().map(|e| e.to_string()),
                    )
                });
                claim_values(info.additional_claims(), claim).unwrap_or_default()
            }
            Err(_) => Vec::new(),
        },
    };
    let name = name.unwrap_or_else(|| subject.clone());
    let role = oidc.settings.roles.role_for(&values).ok_or_else(|| {
        tracing::warn!(user = %name, claim = %claim, values = ?values, "login refused: no role");
        AuthError::NoRole {
            user: name.clone(),
            claim: claim.clone(),
        }
    })?;
    // A fresh id, so a session id planted before login is worthless after it.
    session.cycle_id().await?;
    session.set_expiry(Some(tower_sessions::Expiry::OnInactivity(SESSION_IDLE)));
    session.insert(SEEN, now_s()).await?;
    session
        .insert(
            USER,
            SessionUser {
                subject,
                name: name.clone(),
                role,
                id_token: raw,
            },
        )
        .await?;
    tracing::info!(user = %name, role = role.label(), "signed in");
    Ok(Redirect::to(&next).into_response())
}

async fn logout(State(auth): State<Auth>, session: Session) -> Result<Response, AuthError> {
    let user: Option<SessionUser> = session.get(USER).await?;
    session.flush().await?;
    let Auth::Oidc(oidc) = auth else {
        return Ok(Redirect::to("/").into_response());
    };
    if let Some(user) = &user {
        tracing::info!(user = %user.name, "signed out");
    }
    let end_session = match oidc.provider().await {
        Ok(provider) => provider.end_session.clone(),
        Err(e) => {
            tracing::warn!(error = %e, "signed out locally only");
            None
        }
    };
    let (Some(endpoint), Some(user)) = (end_session, user) else {
        return Ok(Redirect::to("/auth/signed-out").into_response());
    };
    let mut request =
        LogoutRequest::from(endpoint).set_client_id(ClientId::new(oidc.settings.client_id.clone()));
    if let Ok(token) = CoreIdToken::from_str(&user.id_token) {
        request = request.set_id_token_hint(&token);
    }
    if let Some(url) = oidc.signed_out_url() {
        request = request.set_post_logout_redirect_uri(url);
    }
    Ok(Redirect::to(request.http_get_url().as_str()).into_response())
}

async fn signed_out() -> Html<String> {
    page(
        "Signed out",
        "<p data-testid=\"signed-out\">You are signed out of Switchyard.</p><p><a href=\"/auth/login\">Sign in again</a></p>",
    )
}

/// A minimal page for the login flow's messages (outside the Leptos app, which needs a user).
fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width, initial-scale=1\"><meta name=\"color-scheme\" content=\"light dark\">\
         <title>{title} · Switchyard</title><link rel=\"icon\" href=\"/favicon.svg\" type=\"image/svg+xml\">\
         <link rel=\"stylesheet\" href=\"/pkg/app.css\"></head>\
         <body><header class=\"site-header\"><span class=\"brand\"><span class=\"brand-mark\" \
         aria-hidden=\"true\">⇄</span>Switchyard</span></header>\
         <main id=\"main\" class=\"auth-page\"><section class=\"card\"><h1>{title}</h1>{body}</section>\
         </main></body></html>"
    ))
}

/// An error message as a sentence for a page: capitalised, ending with a full stop (messages are
/// lowercase clauses so that they compose in logs and chains).
fn sentence(message: &str) -> String {
    let mut chars = message.chars();
    let mut text: String = chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default();
    if !text.is_empty() && !text.ends_with(['.', '!', '?']) {
        text.push('.');
    }
    text
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Paths anyone may reach: the login flow, health probes and static files.
fn is_public(path: &str) -> bool {
    path.starts_with("/auth/")
        || path == "/healthz"
        || path == "/readyz"
        || path.starts_with("/pkg/")
        || path == "/favicon.svg"
        || path == "/favicon.ico"
}

/// Seconds since the Unix epoch.
fn now_s() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Whether the browser is navigating to a page (so a login redirect makes sense), rather than
/// fetching a resource (an image, a script, a server function) or being a script.
fn is_navigation(headers: &axum::http::HeaderMap) -> bool {
    match headers.get("sec-fetch-mode") {
        Some(mode) => mode.as_bytes() == b"navigate",
        // Older browsers: a navigation asks for HTML.
        None => headers
            .get(header::ACCEPT)
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.contains("text/html")),
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive), or
/// an empty string for any other value.
fn bearer_token(value: &axum::http::HeaderValue) -> &str {
    value
        .to_str()
        .ok()
        .and_then(|h| h.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, token)| token.trim())
}

/// Middleware: attaches the current user to the request, or turns the request away.
///
/// An `/api/` request carrying `Authorization: Bearer …` is authenticated by that API token alone
/// (`app::tokens`): a token that is malformed, unknown, revoked or expired is a 401, whatever
/// the session says. Everything else is authenticated by the login session.
pub async fn authenticate(
    State(state): State<crate::AppState>,
    session: Session,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if let Some(header) = request.headers().get(header::AUTHORIZATION)
        && (path.starts_with("/api/") || path == "/metrics")
    {
        // Tokens are for scripts, on the JSON API and the metrics only: not for the dashboard's
        // server functions (a token must not manage tokens, or outlive its own revocation
        // through a child).
        if !(path.starts_with("/api/v1/") || path == "/metrics") {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "API tokens are accepted on /api/v1 and /metrics only; sign in to the dashboard for the rest",
            )
                .into_response();
        }
        let presented = bearer_token(header);
        return match app::tokens::ssr::verify(&state.db, presented).await {
            Ok(token) => {
                request.extensions_mut().insert(token.user());
                next.run(request).await
            }
            Err(app::tokens::ssr::TokenError::Database(e)) => {
                tracing::error!(error = %e, "cannot check an API token");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the token store failed; try again",
                )
                    .into_response()
            }
            Err(refusal) => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                refusal.to_string(),
            )
                .into_response(),
        };
    }
    let user = match &state.auth {
        Auth::Local => Some(CurrentUser {
            name: "local admin".to_owned(),
            role: Role::Admin,
            local: true,
        }),
        Auth::Oidc(_) if is_public(request.uri().path()) => None,
        Auth::Oidc(_) => match session.get::<SessionUser>(USER).await {
            Ok(Some(u)) => {
                // Sessions end after SESSION_IDLE without a request: push the expiry forward
                // (a session write) about once a minute while the user is active.
                let now = now_s();
                let seen = session.get::<i64>(SEEN).await.ok().flatten().unwrap_or(0);
                if now - seen >= REFRESH_EVERY_S
                    && let Err(e) = session.insert(SEEN, now).await
                {
                    tracing::warn!(error = %e, "cannot refresh the session's expiry");
                }
                Some(CurrentUser {
                    name: u.name,
                    role: u.role,
                    local: false,
                })
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the session");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the session store failed; try again",
                )
                    .into_response();
            }
        },
    };
    match user {
        Some(user) => {
            request.extensions_mut().insert(user);
            next.run(request).await
        }
        None if is_public(request.uri().path()) => next.run(request).await,
        None if request.method() == Method::GET
            && !request.uri().path().starts_with("/api/")
            && is_navigation(request.headers()) =>
        {
            let next_url = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            Redirect::to(&format!(
                "/auth/login?next={}",
                app::models::url_component(&next_url)
            ))
            .into_response()
        }
        None => (
            StatusCode::UNAUTHORIZED,
            "sign in first: this request has no valid session",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_pages_show_messages_as_sentences() {
        assert_eq!(
            super::sentence("this login has expired; sign in again"),
            "This login has expired; sign in again."
        );
        assert_eq!(
            super::sentence("already a sentence."),
            "Already a sentence."
        );
        assert_eq!(super::sentence(""), "");
    }

    use super::*;

    #[test]
    fn bearer_schemes_are_case_insensitive() {
        use axum::http::HeaderValue;
        for value in [
            "Bearer sy_x",
            "bearer sy_x",
            "BEARER  sy_x ",
            " Bearer sy_x",
        ] {
            assert_eq!(
                bearer_token(&HeaderValue::from_static(value)),
                "sy_x",
                "{value}"
            );
        }
        for value in ["Basic sy_x", "Bearersy_x", "sy_x"] {
            assert_eq!(
                bearer_token(&HeaderValue::from_static(value)),
                "",
                "{value}"
            );
        }
    }

    #[test]
    fn role_claims_may_be_a_string_or_an_array() {
        let claims: ExtraClaims = serde_json::from_value(serde_json::json!({
            "groups": ["a", "b", 3],
            "role": "admin",
            "nested": {"x": 1}
        }))
        .unwrap();
        assert_eq!(claim_values(&claims, "groups").unwrap(), vec!["a", "b"]);
        assert_eq!(claim_values(&claims, "role").unwrap(), vec!["admin"]);
        assert!(claim_values(&claims, "nested").is_none());
        assert!(claim_values(&claims, "missing").is_none());
    }

    #[test]
    fn next_only_points_into_this_site() {
        assert_eq!(
            safe_next(Some("/instances?status=Running")),
            "/instances?status=Running"
        );
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        for control in [
            "/\t/evil.example",
            "/\n/x",
            "/\r",
            "/\u{7f}",
            "/a b",
            "/\u{e9}",
        ] {
            assert_eq!(safe_next(Some(control)), "/", "{control:?}");
        }
        assert_eq!(safe_next(Some(&format!("/{}", "a".repeat(3000)))), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn public_paths_are_only_login_probes_and_static_files() {
        for path in [
            "/auth/login",
            "/healthz",
            "/readyz",
            "/pkg/app.wasm",
            "/favicon.svg",
            "/favicon.ico",
        ] {
            assert!(is_public(path), "{path}");
        }
        for path in ["/", "/instances", "/api/fn/instances/act", "/authx"] {
            assert!(!is_public(path), "{path}");
        }
    }
}
