//! An async client for Strapi 5's admin REST API: session or admin-token authentication,
//! webhooks, the list of content types, and the content-manager calls an editor makes.
//!
//! Every call has a timeout, is retried with exponential backoff when Strapi cannot be reached or
//! answers 5xx (5xx and timeouts only for idempotent calls, so a slow `POST` never creates a
//! webhook twice), and renews an expired or revoked session once, transparently. Failures come
//! back as one [`StrapiError`] that names the call and tells apart unreachable, unauthorized,
//! forbidden, not found, rejected and unexpected answers. The module knows nothing of
//! Kubernetes: the controller maps a `StrapiInstance`'s auth to [`Credentials`].

mod auth;
mod cache;
mod content;
mod error;
mod webhooks;

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use rand::Rng;
use reqwest::{Method, StatusCode, Url, header::HeaderMap};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;
use tokio::sync::Mutex;

pub use auth::{Credentials, Secret};
pub use cache::ClientCache;
pub use content::{ContentType, ContentTypeKind, Document, Entry, Listed, VersionStatus};
pub use error::StrapiError;
pub use webhooks::{TriggerOutcome, Webhook, WebhookSpec};

/// Timeouts and retry policy of a [`StrapiClient`].
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Limit for one HTTP attempt, from connecting to the last body byte.
    pub timeout: Duration,
    /// Limit for establishing a connection.
    pub connect_timeout: Duration,
    /// Attempts after the first one, for connection errors (and 5xx and timeouts on idempotent calls).
    pub max_retries: u32,
    /// Pause before the first retry; it doubles on each further retry.
    pub initial_backoff: Duration,
    /// Upper bound of one pause.
    pub max_backoff: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            max_retries: 3,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
        }
    }
}

/// A client for one Strapi's admin API. Cheap to clone; clones share the session.
#[derive(Clone, Debug)]
pub struct StrapiClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    base: Url,
    credentials: Credentials,
    options: ClientOptions,
    // A tokio mutex held across the login call on purpose: concurrent calls that all hit an
    // expired token wait for one renewal instead of each logging in (Strapi rate-limits logins).
    session: Mutex<Session>,
    // Strapi keys sessions by device; a client of its own lets `logout` end only this session.
    device_id: String,
}

#[derive(Debug, Default)]
struct Session {
    access_token: Option<Secret>,
    refresh_cookie: Option<Secret>,
    // Bumped on every renewal, so a caller whose token failed can tell whether another caller
    // already renewed it.
    generation: u64,
    // Set by a 429 from `/admin/login`: every login attempt, even a refused one, counts against
    // Strapi's limit, so none is sent before this.
    logins_refused_until: Option<Instant>,
}

/// One admin API call: what it is called in errors, and how it is sent.
struct Call {
    step: &'static str,
    method: Method,
    segments: Vec<String>,
    query: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    cookie: Option<Secret>,
}

impl Call {
    fn new(step: &'static str, method: Method, segments: &[&str]) -> Self {
        Call {
            step,
            method,
            segments: segments.iter().map(|s| (*s).to_owned()).collect(),
            query: Vec::new(),
            body: None,
            cookie: None,
        }
    }

    fn query(mut self, name: &str, value: impl Into<String>) -> Self {
        self.query.push((name.to_owned(), value.into()));
        self
    }

    fn json(mut self, body: &(impl Serialize + ?Sized)) -> Self {
        // Bodies are this module's own structs with string keys, or JSON values, which always
        // serialise.
        self.body = Some(serde_json::to_vec(body).expect("request bodies serialise to JSON"));
        self
    }

    // Repeating these cannot change Strapi's state twice, so a timeout or 5xx may be retried.
    fn is_idempotent(&self) -> bool {
        matches!(self.method, Method::GET | Method::PUT | Method::DELETE)
    }
}

/// A response as read off the wire.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// Strapi's envelope around every admin API answer.
#[derive(Deserialize)]
struct Envelope<T> {
    data: T,
}

/// Strapi's error body: `{"data": null, "error": {"status", "name", "message", "details"}}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
    #[serde(default)]
    details: Value,
}

#[derive(Deserialize)]
struct TokenData {
    token: Secret,
}

impl StrapiClient {
    /// A client for the Strapi at `base_url` (e.g. `http://strapi.cms.svc:1337`) with default
    /// timeouts and retries. Nothing is sent until the first call.
    pub fn new(base_url: &str, credentials: Credentials) -> Result<Self, StrapiError> {
        Self::with_options(base_url, credentials, ClientOptions::default())
    }

    /// A client with explicit timeouts and retry policy.
    pub fn with_options(
        base_url: &str,
        credentials: Credentials,
        options: ClientOptions,
    ) -> Result<Self, StrapiError> {
        let base = parse_base_url(base_url)?;
        let http = crate::http::client_builder()
            .timeout(options.timeout)
            .connect_timeout(options.connect_timeout)
            .build()
            .map_err(StrapiError::ClientSetup)?;
        let device_id = uuid::Builder::from_random_bytes(rand::random())
            .into_uuid()
            .to_string();
        Ok(StrapiClient {
            inner: Arc::new(Inner {
                http,
                base,
                credentials,
                options,
                session: Mutex::default(),
                device_id,
            }),
        })
    }

    /// The base URL this client talks to.
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// Ends this client's admin session in Strapi (`POST /admin/logout`); the next call logs in
    /// again. With an admin API token there is no session and nothing is sent.
    pub async fn logout(&self) -> Result<(), StrapiError> {
        if matches!(self.inner.credentials, Credentials::AdminToken(_)) {
            return Ok(());
        }
        let call = Call::new("log out", Method::POST, &["admin", "logout"])
            .json(&serde_json::json!({ "deviceId": self.inner.device_id }));
        self.send_authenticated(&call).await?;
        *self.inner.session.lock().await = Session::default();
        Ok(())
    }

    /// Sends an authenticated call and decodes `data` from Strapi's envelope.
    async fn call<T: DeserializeOwned>(&self, call: Call) -> Result<T, StrapiError> {
        let answer = self.send_authenticated(&call).await?;
        serde_json::from_slice::<Envelope<T>>(&answer.body)
            .map(|envelope| envelope.data)
            .map_err(|source| StrapiError::Malformed {
                step: call.step,
                source,
            })
    }

    /// Sends an authenticated call and decodes the whole body: the content manager's lists and
    /// the i18n plugin answer without Strapi's `data` envelope.
    async fn call_unwrapped<T: DeserializeOwned>(&self, call: Call) -> Result<T, StrapiError> {
        let answer = self.send_authenticated(&call).await?;
        serde_json::from_slice::<T>(&answer.body).map_err(|source| StrapiError::Malformed {
            step: call.step,
            source,
        })
    }

    /// Sends an authenticated call; on 401 renews the session once and sends it again.
    async fn send_authenticated(&self, call: &Call) -> Result<Answer, StrapiError> {
        let (token, generation) = self.bearer().await?;
        let answer = self.send(call, Some(&token)).await?;
        if answer.status != StatusCode::UNAUTHORIZED {
            return check(call.step, answer);
        }
        if let Credentials::AdminToken(_) = self.inner.credentials {
            return Err(StrapiError::Unauthorized {
                step: call.step,
                message: format!(
                    "{} (an admin API token of kind admin is needed; content API tokens are not \
                     accepted by the admin API)",
                    error_message(&answer)
                ),
            });
        }
        tracing::debug!(
            step = call.step,
            "Strapi refused the access token; renewing the session"
        );
        self.renew(generation).await?;
        let (token, _) = self.bearer().await?;
        check(call.step, self.send(call, Some(&token)).await?)
    }

    /// The bearer token to send and the session generation it belongs to; logs in first when
    /// there is no session yet.
    async fn bearer(&self) -> Result<(Secret, u64), StrapiError> {
        let (email, password) = match &self.inner.credentials {
            Credentials::AdminToken(token) => return Ok((token.clone(), 0)),
            Credentials::Password { email, password } => (email, password),
        };
        let mut session = self.inner.session.lock().await;
        if session.access_token.is_none() {
            let (token, cookie) = self
                .login_within_limit(&mut session, email, password)
                .await?;
            session.access_token = Some(token);
            session.refresh_cookie = cookie;
            session.generation += 1;
        }
        let token = session
            .access_token
            .clone()
            .expect("a session was just opened");
        Ok((token, session.generation))
    }

    /// Replaces the session whose token failed: through the refresh cookie when Strapi still
    /// honours it, else by logging in again. Does nothing if another call already renewed it.
    async fn renew(&self, failed_generation: u64) -> Result<(), StrapiError> {
        let Credentials::Password { email, password } = &self.inner.credentials else {
            return Ok(());
        };
        let mut session = self.inner.session.lock().await;
        if session.generation != failed_generation {
            return Ok(());
        }
        let refreshed = match session.refresh_cookie.take() {
            Some(cookie) => match self.refresh(cookie.clone()).await {
                Ok(renewed) => Some(renewed),
                // The refresh token expired or its session was revoked: log in afresh.
                Err(StrapiError::Unauthorized { .. }) => None,
                Err(other) => {
                    // Strapi did not answer; the cookie may still be good for the next call.
                    session.refresh_cookie = Some(cookie);
                    return Err(other);
                }
            },
            None => None,
        };
        let (token, cookie) = match refreshed {
            Some(renewed) => renewed,
            None => {
                self.login_within_limit(&mut session, email, password)
                    .await?
            }
        };
        session.access_token = Some(token);
        session.refresh_cookie = cookie;
        session.generation += 1;
        Ok(())
    }

    /// [`Self::login`], unless Strapi refused a login recently and its limit is still in force:
    /// then the same `RateLimited` error, with the time left, without calling Strapi.
    async fn login_within_limit(
        &self,
        session: &mut Session,
        email: &str,
        password: &Secret,
    ) -> Result<(Secret, Option<Secret>), StrapiError> {
        let now = Instant::now();
        if let Some(until) = session.logins_refused_until.filter(|until| *until > now) {
            return Err(StrapiError::RateLimited {
                step: "log in",
                message: format!(
                    "account {email}: Strapi refused the last login with 429; not logging in \
                     again before its limit ends"
                ),
                retry_after: until - now,
            });
        }
        let result = self.login(email, password).await;
        session.logins_refused_until = match &result {
            Err(StrapiError::RateLimited { retry_after, .. }) => Some(now + *retry_after),
            _ => None,
        };
        result
    }

    /// `POST /admin/login`: an access token and the refresh cookie. Its failures are reported
    /// as the login's own (a rate-limited login is not a failed "list webhooks").
    async fn login(
        &self,
        email: &str,
        password: &Secret,
    ) -> Result<(Secret, Option<Secret>), StrapiError> {
        let step = "log in";
        let body = serde_json::json!({
            "email": email,
            "password": password.expose(),
            "deviceId": self.inner.device_id,
            // A "remember me" session refreshes for 14 days idle (30 at most) instead of 2 hours.
            "rememberMe": true,
        });
        let call = Call::new(step, Method::POST, &["admin", "login"]).json(&body);
        let answer = self.send(&call, None).await?;
        // Strapi answers a wrong email or password with 400 "Invalid credentials".
        if answer.status == StatusCode::BAD_REQUEST {
            return Err(StrapiError::Unauthorized {
                step,
                message: format!("account {email}: {}", error_message(&answer)),
            });
        }
        let answer = check(step, answer)?;
        let cookie = auth::refresh_cookie(&answer.headers);
        let data: Envelope<TokenData> = serde_json::from_slice(&answer.body)
            .map_err(|source| StrapiError::Malformed { step, source })?;
        tracing::debug!(email, "logged in to Strapi");
        Ok((data.data.token, cookie))
    }

    /// `POST /admin/access-token`: trades the refresh cookie for a new token and cookie.
    async fn refresh(&self, cookie: Secret) -> Result<(Secret, Option<Secret>), StrapiError> {
        let step = "refresh the session";
        let mut call = Call::new(step, Method::POST, &["admin", "access-token"]);
        call.cookie = Some(cookie);
        let answer = check(step, self.send(&call, None).await?)?;
        let cookie = auth::refresh_cookie(&answer.headers);
        let data: Envelope<TokenData> = serde_json::from_slice(&answer.body)
            .map_err(|source| StrapiError::Malformed { step, source })?;
        tracing::debug!("refreshed the Strapi session");
        Ok((data.data.token, cookie))
    }

    /// Sends one call, retrying transport failures (and, for idempotent calls, timeouts and 5xx)
    /// with exponential backoff and jitter.
    async fn send(&self, call: &Call, bearer: Option<&Secret>) -> Result<Answer, StrapiError> {
        let mut url = self.url(&call.segments);
        if !call.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&call.query);
        }
        let options = &self.inner.options;
        let mut attempt = 0;
        loop {
            let mut request = self.inner.http.request(call.method.clone(), url.clone());
            if let Some(token) = bearer {
                request = request.bearer_auth(token.expose());
            }
            if let Some(cookie) = &call.cookie {
                request = request.header(reqwest::header::COOKIE, cookie.expose());
            }
            if let Some(body) = &call.body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    response.bytes().await.map(|body| Answer {
                        status,
                        headers,
                        body: body.to_vec(),
                    })
                }
                Err(error) => Err(error),
            };
            let retryable = match &outcome {
                Ok(answer) => answer.status.is_server_error() && call.is_idempotent(),
                // A refused connection never reached Strapi, so any call may be sent again.
                Err(error) => error.is_connect() || call.is_idempotent(),
            };
            if !retryable || attempt >= options.max_retries {
                return outcome.map_err(|source| StrapiError::Unreachable {
                    step: call.step,
                    url: url.to_string(),
                    source,
                });
            }
            let pause = backoff(options, attempt);
            tracing::debug!(
                step = call.step,
                attempt,
                ?pause,
                "Strapi call failed; retrying"
            );
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }

    /// The URL of an admin API path: `segments` appended to the base URL's path, each one
    /// percent-encoded.
    fn url(&self, segments: &[String]) -> Url {
        let mut url = self.inner.base.clone();
        url.path_segments_mut()
            .expect("the base URL was checked to be http(s)")
            .pop_if_empty()
            .extend(segments);
        url
    }
}

fn parse_base_url(base_url: &str) -> Result<Url, StrapiError> {
    let invalid = |reason: &str| StrapiError::InvalidBaseUrl {
        url: base_url.to_owned(),
        reason: reason.to_owned(),
    };
    let url = Url::parse(base_url).map_err(|error| invalid(&error.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("the URL has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "credentials belong in the client's Credentials, not in the URL",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a base URL has no query or fragment"));
    }
    Ok(url)
}

/// Pause before retry number `attempt` (0-based): doubling from the initial backoff, capped, with
/// up to half of it taken off at random so many clients do not retry in lockstep.
fn backoff(options: &ClientOptions, attempt: u32) -> Duration {
    let doubled = options
        .initial_backoff
        .saturating_mul(2u32.saturating_pow(attempt));
    let capped = doubled.min(options.max_backoff);
    capped.mul_f64(rand::rng().random_range(0.5..=1.0))
}

/// Strapi's login window (`admin.rateLimit.interval`: 5 minutes), the wait when a 429 names none.
const LOGIN_WINDOW: Duration = Duration::from_secs(5 * 60);

/// How long to wait after a 429: `Retry-After` when sent (RFC 6585); else until
/// `X-RateLimit-Reset` (Unix seconds), which Strapi's admin rate limiter sends (its
/// koa2-ratelimit handler throws before it could set `Retry-After`); else Strapi's whole login
/// window. At least a second, so a reset already past does not make a busy loop.
fn rate_limit_wait(headers: &HeaderMap, now: SystemTime) -> Duration {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let reset = || {
        let at =
            UNIX_EPOCH + Duration::from_secs(header("x-ratelimit-reset")?.trim().parse().ok()?);
        Some(at.duration_since(now).unwrap_or_default())
    };
    header("retry-after")
        .and_then(crate::http::parse_retry_after)
        .or_else(reset)
        .unwrap_or(LOGIN_WINDOW)
        .max(Duration::from_secs(1))
}

/// Turns a non-success answer into the matching error.
fn check(step: &'static str, answer: Answer) -> Result<Answer, StrapiError> {
    let status = answer.status;
    if status.is_success() {
        return Ok(answer);
    }
    let message = error_message(&answer);
    Err(match status {
        StatusCode::UNAUTHORIZED => StrapiError::Unauthorized { step, message },
        StatusCode::FORBIDDEN => StrapiError::Forbidden { step, message },
        StatusCode::NOT_FOUND => StrapiError::NotFound { step, message },
        StatusCode::TOO_MANY_REQUESTS => StrapiError::RateLimited {
            step,
            message,
            retry_after: rate_limit_wait(&answer.headers, SystemTime::now()),
        },
        StatusCode::BAD_REQUEST | StatusCode::CONFLICT | StatusCode::UNPROCESSABLE_ENTITY => {
            let details = serde_json::from_slice::<ErrorBody>(&answer.body)
                .map(|body| body.error.details)
                .unwrap_or(Value::Null);
            StrapiError::Rejected {
                step,
                message,
                details,
            }
        }
        _ => StrapiError::Unexpected {
            step,
            status: status.as_u16(),
            body: short_body(&answer.body),
        },
    })
}

/// Strapi's `error.message`, or the start of the body when it is not Strapi's error shape.
fn error_message(answer: &Answer) -> String {
    match serde_json::from_slice::<ErrorBody>(&answer.body) {
        Ok(body) if !body.error.message.is_empty() => body.error.message,
        _ => short_body(&answer.body),
    }
}

fn short_body(body: &[u8]) -> String {
    const LIMIT: usize = 300;
    let text = String::from_utf8_lossy(body);
    match text.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_url_that_is_not_a_url_is_a_construction_error() {
        for (url, expected) in [
            ("strapi.example.com", "relative URL without a base"),
            ("ftp://strapi.example.com", "scheme must be http or https"),
            ("http://admin:pw@strapi.example.com", "credentials belong"),
            ("http://strapi.example.com/?x=1", "no query or fragment"),
        ] {
            let error = StrapiClient::new(url, Credentials::admin_token("t")).unwrap_err();
            assert_eq!(error.reason(), "InvalidBaseUrl");
            assert!(error.to_string().contains(expected), "{url}: {error}");
        }
    }

    #[test]
    fn paths_are_appended_to_the_base_path_and_encoded() {
        let client = StrapiClient::new(
            "https://cms.example.com/strapi/",
            Credentials::admin_token("t"),
        )
        .unwrap();
        let url = client.url(&["admin".into(), "webhooks".into(), "a/b c".into()]);
        assert_eq!(
            url.as_str(),
            "https://cms.example.com/strapi/admin/webhooks/a%2Fb%20c"
        );
        let bare =
            StrapiClient::new("http://127.0.0.1:1337", Credentials::admin_token("t")).unwrap();
        let url = bare.url(&[
            "content-manager".into(),
            "collection-types".into(),
            "api::article.article".into(),
        ]);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:1337/content-manager/collection-types/api::article.article"
        );
    }

    #[test]
    fn backoff_doubles_and_stays_under_the_cap() {
        let options = ClientOptions {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
            ..ClientOptions::default()
        };
        let bounds = [(50, 100), (100, 200), (150, 300), (150, 300)];
        for (attempt, (low, high)) in bounds.into_iter().enumerate() {
            let pause = backoff(&options, attempt as u32);
            assert!(
                (Duration::from_millis(low)..=Duration::from_millis(high)).contains(&pause),
                "attempt {attempt}: {pause:?}"
            );
        }
    }

    #[test]
    fn statuses_map_to_error_kinds_with_strapis_message() {
        let answer = |status: u16, body: &str| Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: body.as_bytes().to_vec(),
        };
        let strapi = |status: u16, message: &str| {
            format!(
                r#"{{"data":null,"error":{{"status":{status},"name":"X","message":"{message}","details":{{}}}}}}"#
            )
        };
        let cases = [
            (
                401,
                strapi(401, "Missing or invalid credentials"),
                "Unauthorized",
            ),
            (403, strapi(403, "Forbidden"), "Forbidden"),
            (404, strapi(404, "webhook.notFound"), "NotFound"),
            (400, strapi(400, "url must be a valid URL"), "Rejected"),
            (429, strapi(429, "Too many requests"), "RateLimited"),
            (502, "<html>Bad Gateway</html>".to_owned(), "Unexpected"),
        ];
        for (status, body, reason) in cases {
            let error = check("a call", answer(status, &body)).err().unwrap();
            assert_eq!(error.reason(), reason, "{status}");
            assert!(error.to_string().starts_with("a call: "), "{error}");
        }
        let error = check("a call", answer(404, &strapi(404, "webhook.notFound")))
            .err()
            .unwrap();
        assert!(error.to_string().ends_with("webhook.notFound"), "{error}");
    }

    #[test]
    fn long_bodies_are_cut_on_a_character_boundary() {
        let body = "é".repeat(400);
        let short = short_body(body.as_bytes());
        assert_eq!(short.chars().count(), 301);
        assert!(short.ends_with('…'));
    }
}
