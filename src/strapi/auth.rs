//! Credentials for Strapi's admin API and the session they open.
//!
//! Strapi 5 has two kinds of admin credentials. An admin user's email and password are exchanged
//! at `POST /admin/login` for a short-lived access token (a JWT, 30 minutes by default) plus a
//! refresh token in the `strapi_admin_refresh` cookie (signed, so its `.sig` companion comes
//! along); `POST /admin/access-token` trades that cookie for a new access token and a rotated
//! cookie. Admin API tokens (kind `admin`, created under Settings → Admin tokens) are sent as they
//! are and never expire unless Strapi was told so; content API tokens are not accepted by the
//! admin API at all.

use std::fmt;

use serde::Deserialize;

/// A password or token: its `Debug` never shows the value, so it cannot end up in a log line.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

// Tokens arrive in Strapi's JSON answers and go straight into a `Secret`.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

/// How the client authenticates to Strapi's admin API.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// An admin user; the client logs in, refreshes its session and logs in again when needed.
    Password {
        /// The admin's email.
        email: String,
        /// The admin's password.
        password: Secret,
    },
    /// An admin API token (Strapi's "Admin tokens", kind `admin`), sent as a bearer token.
    AdminToken(Secret),
}

impl Credentials {
    /// Email/password credentials.
    pub fn password(email: impl Into<String>, password: impl Into<Secret>) -> Self {
        Credentials::Password {
            email: email.into(),
            password: password.into(),
        }
    }

    /// Admin API token credentials.
    pub fn admin_token(token: impl Into<Secret>) -> Self {
        Credentials::AdminToken(token.into())
    }
}

/// Name of the cookie that carries Strapi's admin refresh token; Strapi signs it, and the
/// signature cookie's name extends this one (`strapi_admin_refresh.sig`).
const REFRESH_COOKIE: &str = "strapi_admin_refresh";

/// The `Cookie` header value that sends Strapi's refresh cookies back, from a response's
/// `Set-Cookie` headers. `None` when the response set none (or cleared them).
pub(super) fn refresh_cookie(headers: &reqwest::header::HeaderMap) -> Option<Secret> {
    let pairs: Vec<&str> = headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(|cookie| cookie.split(';').next())
        .map(str::trim)
        .filter(|pair| {
            pair.split_once('=')
                .is_some_and(|(name, value)| name.starts_with(REFRESH_COOKIE) && !value.is_empty())
        })
        .collect();
    (!pairs.is_empty()).then(|| Secret(pairs.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, SET_COOKIE};

    #[test]
    fn debug_never_shows_a_secret() {
        let credentials = Credentials::password("admin@example.com", "hunter2-Password");
        let shown = format!("{credentials:?}");
        assert!(shown.contains("admin@example.com"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!format!("{:?}", Credentials::admin_token("tok-123")).contains("tok-123"));
    }

    #[test]
    fn keeps_the_refresh_cookie_and_its_signature_only() {
        let mut headers = HeaderMap::new();
        for cookie in [
            "strapi_admin_refresh=abc.def; path=/admin; samesite=lax; httponly",
            "strapi_admin_refresh.sig=xyz; path=/admin; samesite=lax; httponly",
            "unrelated=1; path=/",
        ] {
            headers.append(SET_COOKIE, HeaderValue::from_static(cookie));
        }
        let cookie = refresh_cookie(&headers).unwrap();
        assert_eq!(
            cookie.expose(),
            "strapi_admin_refresh=abc.def; strapi_admin_refresh.sig=xyz"
        );
    }

    #[test]
    fn a_cleared_refresh_cookie_is_no_cookie() {
        let mut headers = HeaderMap::new();
        headers.append(
            SET_COOKIE,
            HeaderValue::from_static(
                "strapi_admin_refresh=; path=/admin; expires=Thu, 01 Jan 1970 00:00:00 GMT",
            ),
        );
        assert!(refresh_cookie(&headers).is_none());
    }
}
