//! The dashboard: dynsync in the browser, served by `dynsync serve` itself at `/`. Pages are rendered on the
//! server from compile-time checked templates (`templates/`, askama) and work without JavaScript; the vendored,
//! pinned htmx only refreshes the live parts every two seconds. Its files are embedded in the binary
//! ([`assets`]): there is no Node.js step in dynsync's build.
//!
//! The pages act through the API's own functions, as the API's caller the session makes ([`session`]): what the
//! API refuses, a page refuses with the API's words, and what a token may not do, a page does not offer.

mod assets;
mod browse;
mod catalog;
mod chart;
mod events;
mod flows;
mod intake;
mod session;
mod setup;

use super::{ApiError, AppState};
use crate::ids::Sandbox;
use crate::store::{CHANGES_SHOWN, Change, ChangeAction, ResourceKind};
use askama::Template;
use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use session::Viewer;
use std::sync::Arc;

/// The dashboard's routes, beside the API's.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/flows") }))
        .route("/sign-in", get(sign_in_page).post(sign_in))
        .route("/sign-out", post(sign_out))
        .route("/catalog", get(catalog::catalog))
        .route("/connections", get(catalog::connections))
        .route("/connections/new", get(catalog::connect_page).post(catalog::connect))
        .route("/connections/{id}/tables", get(browse::tables))
        .route("/connections/{id}/tables/{table}", get(browse::table))
        .route("/connections/{id}/tables/{table}/load", post(browse::load))
        .route("/datasets/{id}", get(browse::dataset))
        .route("/targets/new", get(setup::target_page).post(setup::create_target_from))
        .route("/flows/new", get(setup::flow_page).post(setup::create_flow_from))
        .route("/flows", get(flows::list))
        .route("/flows/{id}", get(flows::page_of_flow))
        .route("/flows/{id}/edit", get(setup::edit_page).post(setup::save_edit))
        .route("/flows/{id}/contact", get(browse::contact))
        .route("/flows/{id}/settings", get(intake::settings).post(intake::save))
        .route("/flows/{id}/settings/validate", post(intake::validate))
        .route("/flows/{id}/leads", get(intake::leads))
        .route("/flows/{id}/events", get(events::settings).post(events::save))
        .route("/flows/{id}/{action}", post(flows::act))
        .route("/timeline", get(timeline))
        .route("/assets/{name}", get(assets::serve))
}

/// The navigation bar of a signed-in page.
pub struct Nav {
    /// Which entry is the current page.
    pub at: &'static str,
    pub who: String,
    pub sandbox: String,
}

impl Nav {
    fn new(at: &'static str, viewer: &Viewer) -> Option<Nav> {
        Some(Nav { at, who: viewer.name(), sandbox: viewer.caller.sandbox.to_string() })
    }
}

/// A page as the browser gets it: HTML that no other site may frame, whose scripts and styles come from dynsync
/// alone, and that no cache keeps (it shows what a token may see).
fn page(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => {
            let mut response = (status, Html(html)).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                     form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
                ),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "a dashboard page did not render");
            (StatusCode::INTERNAL_SERVER_ERROR, "this page could not be shown; dynsync's log says why").into_response()
        }
    }
}

/// A page that says what went wrong, in the API's words.
#[derive(Template)]
#[template(path = "problem.html")]
struct ProblemPage {
    nav: Option<Nav>,
    title: String,
    problem: String,
}

fn problem_page(viewer: &Viewer, error: ApiError) -> Response {
    let title = error.status.canonical_reason().unwrap_or("Error").to_string();
    page(error.status, &ProblemPage { nav: Nav::new("", viewer), title, problem: error.detail })
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    nav: Option<Nav>,
    problem: Option<String>,
    sandbox: String,
    next: String,
}

#[derive(Deserialize)]
struct SignInQuery {
    next: Option<String>,
    /// Why the last session ended: `refused` when its token was revoked or lost the sandbox.
    ended: Option<String>,
}

/// What the sign-in page says of a session that ended.
const SESSION_REFUSED: &str = "Your session ended: its token was revoked, or may no longer act in this sandbox. \
     Sign in with a token that may.";

/// Where to go after signing in: a path of this site, nothing else.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.starts_with("/\\") => n.to_string(),
        _ => "/flows".to_string(),
    }
}

async fn sign_in_page(Query(query): Query<SignInQuery>) -> Response {
    let next = local_path(query.next.as_deref());
    let problem = query.ended.filter(|e| e == "refused").map(|_| SESSION_REFUSED.to_string());
    page(StatusCode::OK, &SignInPage { nav: None, problem, sandbox: "prod".into(), next })
}

#[derive(Deserialize)]
struct SignInForm {
    token: String,
    sandbox: String,
    next: Option<String>,
}

async fn sign_in(State(state): State<Arc<AppState>>, headers: HeaderMap, Form(form): Form<SignInForm>) -> Response {
    // Another site signing this browser in to a session of its own choosing is refused as its other forms are.
    if !session::same_origin(&headers) {
        return session::NotSignedIn::CrossSite.into_response();
    }
    let next = local_path(form.next.as_deref());
    let refused = |problem: String, sandbox: String| {
        page(StatusCode::OK, &SignInPage { nav: None, problem: Some(problem), sandbox, next: next.clone() })
    };
    let sandbox: Sandbox = match form.sandbox.trim().parse() {
        Ok(s) => s,
        Err(e) => return refused(format!("{e}"), form.sandbox),
    };
    let token = form.token.trim();
    let grant = match super::authenticate_token(token, &state).await {
        Ok(grant) => grant,
        Err(e) => return refused(e.detail, sandbox.to_string()),
    };
    if let Err(denied) = grant.enter(&sandbox) {
        return refused(denied.to_string(), sandbox.to_string());
    }
    let cookie = session::signed_in(&state, token, &sandbox);
    (StatusCode::SEE_OTHER, [(header::SET_COOKIE, cookie)], Redirect::to(&next)).into_response()
}

async fn sign_out() -> Response {
    (StatusCode::SEE_OTHER, [(header::SET_COOKIE, session::signed_out())], Redirect::to("/sign-in")).into_response()
}

/// A change of the timeline, as the pages show it.
pub struct ChangeView {
    pub at: String,
    pub kind: &'static str,
    pub name: String,
    pub action: &'static str,
    pub actor: String,
}

impl From<&Change> for ChangeView {
    fn from(c: &Change) -> ChangeView {
        ChangeView {
            at: shown_time(c.at),
            kind: match c.kind {
                ResourceKind::Connection => "Connection",
                ResourceKind::TargetConnection => "Target",
                ResourceKind::SourceConnection => "Source",
                ResourceKind::Flow => "Flow",
            },
            name: c.name.clone(),
            action: match c.action {
                ChangeAction::Created => "created",
                ChangeAction::Changed => "changed",
                ChangeAction::Enabled => "enabled",
                ChangeAction::Disabled => "disabled",
                ChangeAction::Replayed => "replayed",
                ChangeAction::SecretRotated => "secret rotated",
                ChangeAction::Deleted => "deleted",
            },
            actor: c.actor.clone(),
        }
    }
}

#[derive(Template)]
#[template(path = "timeline.html")]
struct TimelinePage {
    nav: Option<Nav>,
    sandbox: String,
    changes: Vec<ChangeView>,
}

async fn timeline(State(state): State<Arc<AppState>>, viewer: Viewer) -> Response {
    match state.store.changes(&viewer.caller.sandbox, None, CHANGES_SHOWN).await {
        Ok(changes) => page(
            StatusCode::OK,
            &TimelinePage {
                nav: Nav::new("timeline", &viewer),
                sandbox: viewer.caller.sandbox.to_string(),
                changes: changes.iter().map(ChangeView::from).collect(),
            },
        ),
        Err(e) => problem_page(&viewer, e.into()),
    }
}

/// The flow `id` of the viewer's sandbox, as the job `D` reads it; not found when another job runs it.
async fn flow_of<D: crate::pipeline::JobDefinition>(
    state: &AppState,
    viewer: &Viewer,
    id: &str,
    what: &str,
) -> Result<crate::pipeline::Flow<D>, ApiError> {
    let not_found = || ApiError::not_found(what, id, &viewer.caller.sandbox);
    let flow_id: crate::ids::FlowId = id.parse().map_err(|_| not_found())?;
    let record = state.store.flow(&viewer.caller.sandbox, flow_id).await?.ok_or_else(not_found)?;
    if record.job != D::JOB {
        return Err(not_found());
    }
    Ok(crate::pipeline::Flow::<D>::try_from(&record)?)
}

/// Why a form read before someone else's save is not saved over it.
fn stale(what: &str) -> crate::checks::Problem {
    crate::checks::Problem::new(
        "",
        format!(
            "the {what} was changed since this page was read: open it again, and make your change over the other one"
        ),
    )
}

/// A time as the pages show it.
fn shown_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_signing_in_the_browser_goes_only_to_a_page_of_this_site() {
        assert_eq!(local_path(Some("/flows/42")), "/flows/42");
        assert_eq!(local_path(Some("//evil.example/")), "/flows");
        assert_eq!(local_path(Some("/\\evil.example")), "/flows");
        assert_eq!(local_path(Some("https://evil.example/")), "/flows");
        assert_eq!(local_path(None), "/flows");
    }
}
