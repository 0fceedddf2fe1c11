//! An email events flow's settings page: which of the contact's Yes/No columns an unsubscribe, a spam complaint or a
//! hard bounce sets (and a resubscribe clears), which events also make a follow-up task, and how the sender's posts
//! are verified — SendGrid's public verification key, Mailgun's signing key, which is kept encrypted and never
//! shown again (left empty, the one kept stays), or, for Amazon SES, the Amazon SNS certificates pinned instead of
//! fetched (public, shown; several pasted one after another). Saving checks the columns against the contact table
//! and the keys and certificates as the API does, every problem shown.

use super::session::Viewer;
use super::{Nav, page, problem_page};
use crate::access::Role;
use crate::api::AppState;
use crate::checks::Problem;
use crate::engagement::definition::{EventsDefinition, EventsFlow};
use crate::engagement::formats::Provider;
use crate::secrets::Secret;
use askama::Template;
use axum::extract::{Path, Query, RawForm, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Template)]
#[template(path = "events.html")]
struct EventsPage {
    nav: Option<Nav>,
    id: String,
    etag: String,
    name: String,
    provider: String,
    opt_out_columns: String,
    on_click: bool,
    on_hard_bounce: bool,
    verification_key: String,
    /// Only Amazon SES flows are signed by Amazon SNS.
    is_ses: bool,
    sns_certificates: String,
    problems: Vec<String>,
    may_manage: bool,
    saved: bool,
}

async fn events_flow(state: &AppState, viewer: &Viewer, id: &str) -> Result<EventsFlow, crate::api::ApiError> {
    super::flow_of(state, viewer, id, "email events flow").await
}

fn events_page(
    viewer: &Viewer,
    flow: &EventsFlow,
    shown: &EventsDefinition,
    problems: Vec<Problem>,
    saved: bool,
) -> Response {
    let template = EventsPage {
        nav: Nav::new("flows", viewer),
        id: flow.id.to_string(),
        etag: flow.etag.0.clone(),
        name: shown.name.clone(),
        provider: shown.provider.name().to_string(),
        opt_out_columns: shown.opt_out_columns.join(", "),
        on_click: shown.follow_up.on_click,
        on_hard_bounce: shown.follow_up.on_hard_bounce,
        verification_key: shown.verification_key.clone().unwrap_or_default(),
        is_ses: shown.provider == Provider::Ses,
        sns_certificates: shown.sns_certificates.join("\n"),
        problems: problems
            .into_iter()
            .map(|p| if p.field.is_empty() { p.message } else { format!("{}: {}", p.field, p.message) })
            .collect(),
        may_manage: viewer.may(Role::Manage),
        saved,
    };
    page(StatusCode::OK, &template)
}

pub async fn settings(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match events_flow(&state, &viewer, &id).await {
        Ok(flow) => events_page(&viewer, &flow, &flow.definition, Vec::new(), query.contains_key("saved")),
        Err(e) => problem_page(&viewer, e),
    }
}

pub async fn save(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Path(id): Path<String>,
    RawForm(body): RawForm,
) -> Response {
    let current = match events_flow(&state, &viewer, &id).await {
        Ok(flow) => flow,
        Err(e) => return problem_page(&viewer, e),
    };
    let form: HashMap<String, String> =
        url::form_urlencoded::parse(&body).map(|(k, v)| (k.into_owned(), v.trim().to_string())).collect();
    let get = |name: &str| form.get(name).cloned().unwrap_or_default();
    let mut definition = current.definition.clone();
    definition.name = get("name");
    definition.opt_out_columns =
        get("optOutColumns").split(',').map(str::trim).filter(|c| !c.is_empty()).map(str::to_string).collect();
    definition.follow_up.on_click = get("onClick") == "on";
    definition.follow_up.on_hard_bounce = get("onHardBounce") == "on";
    definition.verification_key = Some(get("verificationKey")).filter(|k| !k.is_empty());
    // The key kept is never shown, so an empty field keeps it.
    definition.signing_key = Some(get("signingKey")).filter(|k| !k.is_empty()).map(Secret::new);
    if definition.provider == Provider::Ses
        && let Some(text) = form.get("snsCertificates")
    {
        definition.sns_certificates = certificate_entries(text);
    }
    if get("etag") != current.etag.0 {
        let stale = super::stale("flow");
        return events_page(&viewer, &current, &definition, vec![stale], false);
    }
    match crate::api::engagement::replace_events(&state, &viewer.caller, current.clone(), definition.clone()).await {
        Ok(updated) => Redirect::to(&format!("/flows/{}/events?saved", updated.id)).into_response(),
        Err(e) => events_page(&viewer, &current, &definition, super::setup::problems_of(e), false),
    }
}

/// The certificates of the page's text box, each from its `-----BEGIN` line, so that several can be pasted one after
/// another; text before the first is an entry of its own, refused with its place when the flow is saved.
fn certificate_entries(text: &str) -> Vec<String> {
    let mut entries = Vec::new();
    let mut rest = text.trim();
    while let Some(first) = rest.chars().next() {
        let skip = first.len_utf8();
        let end = rest[skip..].find("-----BEGIN").map_or(rest.len(), |at| at + skip);
        entries.push(rest[..end].trim().to_string());
        rest = rest[end..].trim_start();
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::certificate_entries;

    #[test]
    fn certificates_pasted_one_after_another_are_told_apart_and_stray_text_is_an_entry() {
        let one = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
        let two = "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----";
        assert_eq!(certificate_entries(&format!("\n{one}\n\n{two}\n")), [one, two]);
        assert_eq!(certificate_entries(&format!("é stray {one}")), ["é stray".to_string(), one.to_string()]);
        assert_eq!(certificate_entries("  \n "), Vec::<String>::new());
    }
}
