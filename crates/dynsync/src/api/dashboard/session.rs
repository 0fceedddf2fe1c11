//! Signing in to the dashboard: with an API token, kept in a cookie — sealed with the store's key (the browser
//! holds ciphertext, never the token), `HttpOnly` (no script reads it), `Secure` (sent over HTTPS and loopback
//! only), `SameSite=Strict` (no other site's page sends it) — for [`LIFETIME`]. Each page authenticates the token
//! again, so a revoked token signs its sessions out at once, and acts with the token's grant: a page offers only
//! what the token may do, and the API refuses the rest.
//!
//! A form that changes something is also refused when the browser says it comes from another origin (`Origin`,
//! `Sec-Fetch-Site`), whatever the cookie says.

use super::super::{ApiError, AppState, Caller, authenticate_token};
use crate::ids::Sandbox;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The session cookie's name.
pub const COOKIE: &str = "dynsync_session";

/// How long a sign-in lasts.
pub const LIFETIME: chrono::Duration = chrono::Duration::hours(12);

/// What the context of the sealed cookie is: a cookie cannot be opened as anything else's secret, nor theirs as it.
const SEALED_FOR: &str = "dashboard-session";

/// What the cookie holds, sealed.
#[derive(Serialize, Deserialize)]
struct SessionCookie {
    token: String,
    sandbox: Sandbox,
    /// Seconds since 1970.
    expires: i64,
}

/// The `Set-Cookie` of a sign-in.
pub fn signed_in(state: &AppState, token: &str, sandbox: &Sandbox) -> HeaderValue {
    let expires = (Utc::now() + LIFETIME).timestamp();
    let body = SessionCookie { token: token.to_string(), sandbox: sandbox.clone(), expires };
    let sealed =
        state.store.secret_key().seal(&serde_json::to_string(&body).expect("a session serialises"), SEALED_FOR);
    cookie(&sealed, LIFETIME.num_seconds())
}

/// The `Set-Cookie` of a sign-out: the cookie emptied and expired.
pub fn signed_out() -> HeaderValue {
    cookie("", 0)
}

fn cookie(value: &str, max_age: i64) -> HeaderValue {
    let text = format!("{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict");
    HeaderValue::from_str(&text).expect("a sealed cookie is base64")
}

/// Who looks at a page: a caller of the API, as the session's token and sandbox make it.
pub struct Viewer {
    pub caller: Caller,
}

impl Viewer {
    /// The name shown for whoever signed in.
    pub fn name(&self) -> String {
        match &self.caller.grant {
            crate::access::Grant::Operator => "operator".to_string(),
            crate::access::Grant::Token { name, .. } => name.clone(),
        }
    }

    /// Whether the token may act as `role` in the sandbox: what it may not do is not offered.
    pub fn may(&self, role: crate::access::Role) -> bool {
        self.caller.may(role).is_ok()
    }
}

/// Why a page cannot be shown to this browser.
pub enum NotSignedIn {
    /// No session, or one that expired or no longer opens: to the sign-in page, and back here after.
    SignIn { next: String },
    /// A form posted from another origin.
    CrossSite,
    /// The token was revoked, or lost the session's sandbox: said on the sign-in page.
    Refused(ApiError),
}

impl IntoResponse for NotSignedIn {
    fn into_response(self) -> Response {
        match self {
            NotSignedIn::SignIn { next } => {
                let to = format!("/sign-in?next={}", url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>());
                (StatusCode::SEE_OTHER, [(header::SET_COOKIE, signed_out())], Redirect::to(&to)).into_response()
            }
            NotSignedIn::CrossSite => (
                StatusCode::FORBIDDEN,
                "this form was sent from another site; dynsync takes forms from its own pages only: open the page in dynsync and send it again",
            )
                .into_response(),
            NotSignedIn::Refused(error) => {
                // The sign-in page says it in fixed words: a link cannot make it say anything else.
                tracing::info!(reason = %error.detail, "a dashboard session ended: its token no longer signs in");
                let to = "/sign-in?ended=refused";
                (StatusCode::SEE_OTHER, [(header::SET_COOKIE, signed_out())], Redirect::to(to)).into_response()
            }
        }
    }
}

/// Whether a request that changes something comes from this site's own pages.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if text(header::HeaderName::from_static("sec-fetch-site")).is_some_and(|s| s != "same-origin" && s != "none") {
        return false;
    }
    match (text(header::ORIGIN), text(header::HOST)) {
        (Some(origin), Some(host)) => {
            origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")).is_some_and(|o| o == host)
        }
        // Browsers send Origin with every form post; a client without one is not a browser on another site.
        (None, _) => true,
        (Some(_), None) => false,
    }
}

/// The session cookie's sealed value, if the request has one.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE && !value.is_empty())
        .map(|(_, value)| value)
}

impl FromRequestParts<Arc<AppState>> for Viewer {
    type Rejection = NotSignedIn;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        if parts.method != Method::GET && parts.method != Method::HEAD && !same_origin(&parts.headers) {
            return Err(NotSignedIn::CrossSite);
        }
        let next = match parts.method {
            Method::GET => parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
            _ => "/".to_string(),
        };
        let sign_in = || NotSignedIn::SignIn { next: next.clone() };
        let sealed = session_cookie(&parts.headers).ok_or_else(sign_in)?;
        let opened = state.store.secret_key().open(sealed, SEALED_FOR).map_err(|_| sign_in())?;
        let session: SessionCookie = serde_json::from_str(opened.expose()).map_err(|_| sign_in())?;
        if session.expires <= Utc::now().timestamp() {
            return Err(sign_in());
        }
        let grant = authenticate_token(&session.token, state).await.map_err(NotSignedIn::Refused)?;
        grant.enter(&session.sandbox).map_err(|denied| NotSignedIn::Refused(ApiError::from(denied)))?;
        Ok(Viewer { caller: Caller { sandbox: session.sandbox, grant } })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn a_form_from_another_site_is_told_apart_from_one_of_dynsync_s_own_pages() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")])));
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:8080"), ("origin", "http://evil.example")])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080.evil")])));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let map = headers(&[("cookie", "theme=dark; dynsync_session=v1:abc; other=1")]);
        assert_eq!(session_cookie(&map), Some("v1:abc"));
        assert_eq!(session_cookie(&headers(&[("cookie", "dynsync_session=")])), None);
        assert_eq!(session_cookie(&HeaderMap::new()), None);
    }
}
