//! A lead intake's settings page, as Partner Center's lead settings go: who is told of each new lead, how long a
//! later step of the same person for the same offer updates the lead rather than making another, whether a lead is
//! matched to an account by its email's domain, the custom columns for what the lead table has no column for — and
//! **Validate**, which sends a test lead through and says how each step went. Saving checks the columns against the
//! lead table, as the API does, and shows every problem beside its field.

use super::session::Viewer;
use super::{Nav, page, problem_page};
use crate::access::Role;
use crate::api::leads::{CheckStatus, ValidateReport, replace_intake, validate_report};
use crate::api::{ApiError, AppState};
use crate::checks::Problem;
use crate::leads::intake::{IntakeDefinition, LeadIntake};
use askama::Template;
use axum::extract::{Path, Query, RawForm, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use std::collections::HashMap;
use std::sync::Arc;

/// A text field of the form: its name, label, value and problems.
pub struct TextField {
    pub name: &'static str,
    pub label: &'static str,
    pub value: String,
    pub problems: Vec<String>,
}

/// A step of Validate, as shown.
pub struct StepView {
    pub step: String,
    pub class: &'static str,
    pub status: &'static str,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "intake.html")]
struct IntakePage {
    nav: Option<Nav>,
    id: String,
    etag: String,
    intake_url: String,
    fields: Vec<TextField>,
    match_accounts: bool,
    /// Problems of no field.
    problems: Vec<String>,
    may_manage: bool,
    may_activate: bool,
    report: Option<(bool, Vec<StepView>)>,
    saved: bool,
}

async fn intake(state: &AppState, viewer: &Viewer, id: &str) -> Result<LeadIntake, ApiError> {
    super::flow_of(state, viewer, id, "lead intake").await
}

/// The form's fields, from a definition and the problems its save met.
fn fields(d: &IntakeDefinition, problems: &[Problem]) -> Vec<TextField> {
    let column = |c: &Option<String>| c.clone().unwrap_or_default();
    let c = &d.columns;
    let field = |name: &'static str, label: &'static str, value: String| TextField {
        name,
        label,
        value,
        problems: problems.iter().filter(|p| p.field == name).map(|p| p.message.clone()).collect(),
    };
    vec![
        field("name", "Name", d.name.clone()),
        field("notify", "Notify of each new lead (addresses separated by semicolons)", d.notify.clone()),
        field("dedupWindowDays", "Days a later step updates the lead", d.dedup_window_days.to_string()),
        field("columns.source", "Lead source column", column(&c.source)),
        field("columns.action", "Action code column", column(&c.action)),
        field("columns.publisher", "Publisher column", column(&c.publisher)),
        field("columns.offer", "Offer column", column(&c.offer)),
        field("columns.countryCode", "Country code column", column(&c.country_code)),
        field("columns.testFlag", "Test lead flag column (Yes/No)", column(&c.test_flag)),
    ]
}

fn intake_page(
    viewer: &Viewer,
    intake: &LeadIntake,
    shown: &IntakeDefinition,
    problems: Vec<Problem>,
    report: Option<ValidateReport>,
    saved: bool,
) -> Response {
    let known: Vec<&str> = fields(shown, &[]).iter().map(|f| f.name).collect();
    let general = problems.iter().filter(|p| !known.contains(&p.field.as_str())).map(|p| p.message.clone()).collect();
    let report = report.map(|r| {
        let steps = r
            .steps
            .into_iter()
            .map(|s| {
                let (class, status) = match s.status {
                    CheckStatus::Passed => ("ok", "passed"),
                    CheckStatus::Failed => ("bad", "failed"),
                    CheckStatus::Skipped => ("idle", "skipped"),
                };
                StepView { step: s.step, class, status, detail: s.detail }
            })
            .collect();
        (r.status == CheckStatus::Passed, steps)
    });
    let template = IntakePage {
        nav: Nav::new("flows", viewer),
        id: intake.id.to_string(),
        etag: intake.etag.0.clone(),
        intake_url: crate::api::leads::intake_path(intake.id),
        fields: fields(shown, &problems),
        match_accounts: shown.match_accounts_by_domain,
        problems: general,
        may_manage: viewer.may(Role::Manage),
        may_activate: viewer.may(Role::Activate),
        report,
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
    let saved = query.contains_key("saved");
    match intake(&state, &viewer, &id).await {
        Ok(intake) => intake_page(&viewer, &intake, &intake.definition, Vec::new(), None, saved),
        Err(e) => problem_page(&viewer, e),
    }
}

/// The definition the form describes, over the intake's own (the parts the form does not show stay).
fn posted(current: &IntakeDefinition, body: &[u8]) -> Result<IntakeDefinition, Problem> {
    let form: HashMap<String, String> =
        url::form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.trim().to_string())).collect();
    let get = |name: &str| form.get(name).cloned().unwrap_or_default();
    let column = |name: &str| Some(get(name)).filter(|v| !v.is_empty());
    let mut d = current.clone();
    d.name = get("name");
    d.notify = get("notify");
    d.match_accounts_by_domain = get("matchAccountsByDomain") == "on";
    d.dedup_window_days = get("dedupWindowDays").parse().map_err(|_| {
        Problem::new(
            "dedupWindowDays",
            format!("'{}' is not a number of days: give a whole number, 30 by default", get("dedupWindowDays")),
        )
    })?;
    d.columns.source = column("columns.source");
    d.columns.action = column("columns.action");
    d.columns.publisher = column("columns.publisher");
    d.columns.offer = column("columns.offer");
    d.columns.country_code = column("columns.countryCode");
    d.columns.test_flag = column("columns.testFlag");
    Ok(d)
}

pub async fn save(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Path(id): Path<String>,
    RawForm(body): RawForm,
) -> Response {
    let current = match intake(&state, &viewer, &id).await {
        Ok(intake) => intake,
        Err(e) => return problem_page(&viewer, e),
    };
    let read_etag = url::form_urlencoded::parse(&body).find(|(k, _)| k == "etag").map(|(_, v)| v.into_owned());
    let definition = match posted(&current.definition, &body) {
        Ok(d) => d,
        Err(problem) => return intake_page(&viewer, &current, &current.definition, vec![problem], None, false),
    };
    if read_etag.as_deref() != Some(current.etag.0.as_str()) {
        let stale = super::stale("intake");
        return intake_page(&viewer, &current, &definition, vec![stale], None, false);
    }
    match replace_intake(&state, &viewer.caller, current.clone(), definition.clone()).await {
        Ok(updated) => Redirect::to(&format!("/flows/{}/settings?saved", updated.id)).into_response(),
        Err(e) => intake_page(&viewer, &current, &definition, super::setup::problems_of(e), None, false),
    }
}

pub async fn validate(State(state): State<Arc<AppState>>, viewer: Viewer, Path(id): Path<String>) -> Response {
    let intake = match intake(&state, &viewer, &id).await {
        Ok(intake) => intake,
        Err(e) => return problem_page(&viewer, e),
    };
    if let Err(e) = viewer.caller.may(Role::Activate) {
        return problem_page(&viewer, e);
    }
    match validate_report(&state, &intake).await {
        Ok(report) => intake_page(&viewer, &intake, &intake.definition, Vec::new(), Some(report), false),
        Err(e) => problem_page(&viewer, e),
    }
}

/// Leads the leads page shows, newest first, and refused bodies.
pub const LEADS_SHOWN: usize = 50;
const REFUSED_SHOWN: i64 = 20;

/// A lead received, as the leads page shows it.
pub struct LeadView {
    pub received_at: String,
    pub name: String,
    pub email: String,
    pub company: String,
    pub offer: String,
    pub action: String,
    pub test: bool,
    /// Whether the intake has written it yet.
    pub handled: bool,
}

/// A body the intake refused, with why.
pub struct RefusedView {
    pub received_at: String,
    pub problems: String,
    pub body: String,
}

#[derive(Template)]
#[template(path = "leads.html")]
struct LeadsPage {
    nav: Option<Nav>,
    id: String,
    name: String,
    leads: Vec<LeadView>,
    refused: Vec<RefusedView>,
}

/// `GET /flows/{id}/leads`: the leads a lead intake received (as long as its log keeps them), newest first, each
/// with whether it is written yet, and the bodies it refused with why.
pub async fn leads(State(state): State<Arc<AppState>>, viewer: Viewer, Path(id): Path<String>) -> Response {
    let shown = async {
        let intake = intake(&state, &viewer, &id).await?;
        let handled_up_to: i64 = state.store.cursor(intake.id).await?.and_then(|c| c.parse().ok()).unwrap_or(0);
        let leads = state
            .store
            .log_newest(intake.id, LEADS_SHOWN)
            .await?
            .into_iter()
            .filter_map(|entry| {
                let posted: crate::leads::job::PostedLead = serde_json::from_str(&entry.body).ok()?;
                let lead = crate::leads::Lead::from_json(posted.lead.to_string().as_bytes()).ok()?;
                let name = [lead.first_name(), lead.last_name()].into_iter().flatten().collect::<Vec<_>>().join(" ");
                Some(LeadView {
                    received_at: super::shown_time(posted.received_at),
                    name,
                    email: lead.email().map(ToString::to_string).unwrap_or_default(),
                    company: lead.company().unwrap_or_default().to_string(),
                    offer: lead.offer().unwrap_or_default(),
                    action: lead.action().map(ToString::to_string).unwrap_or_default(),
                    test: lead.is_test(),
                    handled: entry.seq <= handled_up_to,
                })
            })
            .collect();
        let refused = state
            .store
            .inlet_rejects(intake.id, REFUSED_SHOWN)
            .await?
            .into_iter()
            .map(|r| RefusedView {
                received_at: super::shown_time(r.received_at),
                problems: r.problems,
                body: crate::text::clip(&r.body, 2_000).into_owned(),
            })
            .collect();
        Ok::<_, ApiError>(LeadsPage {
            nav: Nav::new("flows", &viewer),
            id: intake.id.to_string(),
            name: intake.definition.name.clone(),
            leads,
            refused,
        })
    };
    match shown.await {
        Ok(template) => page(StatusCode::OK, &template),
        Err(e) => problem_page(&viewer, e),
    }
}
