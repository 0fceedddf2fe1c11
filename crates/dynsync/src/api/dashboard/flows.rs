//! The flows and their runs: every flow of the sandbox at a glance (what it does, whether it keeps its schedule's
//! promise, its last day's counts), and a flow's page — its status and lag, a chart of its runs, each run's counts
//! with its outcomes grouped by code with samples, its failed records with Dataverse's code and message and what
//! was sent, and the actions the token may take: enable, disable, replay, delete (confirmed: it loses data).
//!
//! The page reads the newest [`RUNS_SHOWN`] runs and [`FAILED_SHOWN`] failed records, with a constant number of
//! queries, however many a flow has kept.

use super::chart;
use super::session::Viewer;
use super::{ChangeView, Nav, page, problem_page, shown_time};
use crate::access::Role;
use crate::alerts::{
    AlertChannels, AlertEvent, AlertKind, AlertRule, AlertSettings, AlertStatus, DeliveryState, SigningSecret,
};
use crate::api::{ApiError, AppState};
use crate::health::{Activity, Lag, Took};
use crate::ids::FlowId;
use crate::ingestion::IngestionFlow;
use crate::store::{FlowRecord, FlowState, Outcome, RunRecord};
use askama::Template;
use axum::extract::{Path, Query, RawForm, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{Duration, Utc};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;

/// Runs a flow's page shows: four days of hours.
pub const RUNS_SHOWN: i64 = 96;

/// Failed records a flow's page shows, newest first.
pub const FAILED_SHOWN: i64 = 50;

/// Changes a flow's page lists, newest first.
const CHANGES_ON_A_FLOW: i64 = 20;

/// The runs the flows' list adds up: the last day's.
const DAY: i64 = 24;

/// What a job is called on the pages.
fn job_label(job: &str) -> &'static str {
    match job {
        crate::ingestion::JOB => "Table ingestion",
        crate::leads::intake::JOB => "Marketplace leads",
        crate::engagement::definition::JOB => "Email engagement",
        _ => "Audience activation",
    }
}

/// Counts of runs added up.
#[derive(Default)]
pub struct Totals {
    pub received: u64,
    pub written: u64,
    pub excluded: u64,
    pub failed: u64,
}

/// A flow's status as the pages show it.
pub struct FlowStatus {
    pub id: FlowId,
    pub name: String,
    pub job: &'static str,
    pub enabled: bool,
    pub activity: &'static str,
    pub activity_class: &'static str,
    /// Why the flow waits, when it does.
    pub why: String,
    pub timeliness: &'static str,
    pub timeliness_class: &'static str,
    pub lag: String,
    pub backlog: u64,
    pub totals: Totals,
}

/// Reads what a flow's status needs: who runs it, and how far behind it is.
async fn status(state: &AppState, flow: &FlowRecord, runs: &[RunRecord]) -> Result<FlowStatus, ApiError> {
    let lease = state.store.lease_of(flow.id).await?;
    let activity = Activity::of(flow.state, lease.as_ref());
    let enabled = flow.state == FlowState::Enabled;
    let now = Utc::now();
    let (lag, backlog) = if flow.job == crate::ingestion::JOB {
        let ingestion = IngestionFlow::try_from(flow)?;
        let last = state.store.loads(flow.id).await?.into_iter().next().map(|l| (l.started_at, l.finished_at));
        (Lag::scheduled(enabled, &ingestion.definition.schedule, last, now), 0)
    } else {
        let backlog = crate::health::backlog_of(&state.store, &state.supervisor, flow).await?;
        (Lag::streaming(enabled, backlog.oldest, now), backlog.records)
    };
    let since = now - Duration::hours(DAY);
    let mut totals = Totals::default();
    for run in runs.iter().filter(|r| r.hour >= since) {
        totals.received += run.tally.received;
        totals.written += run.tally.written;
        totals.excluded += run.tally.excluded;
        totals.failed += run.tally.failed;
    }
    Ok(FlowStatus {
        id: flow.id,
        name: flow.name.clone(),
        job: job_label(&flow.job),
        enabled,
        activity: activity.label(),
        activity_class: match activity {
            Activity::Running => "ok",
            Activity::Paused { .. } => "bad",
            Activity::Starting | Activity::Disabled => "idle",
        },
        why: match activity {
            Activity::Paused { why } => why,
            _ => String::new(),
        },
        timeliness: lag.timeliness.label(),
        timeliness_class: lag.timeliness.class(),
        lag: Took(lag.lag).to_string(),
        backlog,
        totals,
    })
}

#[derive(Template)]
#[template(path = "flows.html")]
struct FlowsPage {
    nav: Option<Nav>,
    sandbox: String,
    flows: Vec<FlowStatus>,
    may_manage: bool,
}

pub async fn list(State(state): State<Arc<AppState>>, viewer: Viewer) -> Response {
    let listed = async {
        let mut flows = Vec::new();
        for flow in state.store.flows(&viewer.caller.sandbox).await? {
            let runs = state.store.newest_runs(flow.id, DAY).await?;
            flows.push(status(&state, &flow, &runs).await?);
        }
        Ok::<_, ApiError>(flows)
    };
    match listed.await {
        Ok(flows) => page(
            StatusCode::OK,
            &FlowsPage {
                nav: Nav::new("flows", &viewer),
                sandbox: viewer.caller.sandbox.to_string(),
                flows,
                may_manage: viewer.may(Role::Manage),
            },
        ),
        Err(e) => problem_page(&viewer, e),
    }
}

/// An outcome group of a run, as shown.
pub struct GroupView {
    pub outcome: &'static str,
    pub class: &'static str,
    pub code: String,
    pub message: String,
    pub count: u64,
    pub samples: Vec<String>,
}

/// A run, as shown.
pub struct RunView {
    pub hour: String,
    pub received: u64,
    pub written: u64,
    pub excluded: u64,
    pub failed: u64,
    pub groups: Vec<GroupView>,
}

impl From<&RunRecord> for RunView {
    fn from(run: &RunRecord) -> RunView {
        let t = &run.tally;
        RunView {
            hour: run.hour.format("%Y-%m-%d %H:00").to_string(),
            received: t.received,
            written: t.written,
            excluded: t.excluded,
            failed: t.failed,
            groups: t
                .groups
                .iter()
                .map(|g| GroupView {
                    outcome: g.outcome.as_str(),
                    class: match g.outcome {
                        Outcome::Written => "ok",
                        Outcome::Failed => "bad",
                        Outcome::Excluded | Outcome::Noted => "warn",
                    },
                    code: g.code.clone(),
                    message: g.message.clone(),
                    count: g.count,
                    samples: g.samples.clone(),
                })
                .collect(),
        }
    }
}

/// An alert rule, as the flow's page lists it.
pub struct RuleView {
    /// What it watches, in words.
    pub watches: String,
    /// Where it sends.
    pub channels: String,
}

impl From<&AlertRule> for RuleView {
    fn from(rule: &AlertRule) -> RuleView {
        let watches = match rule.kind {
            AlertKind::Failure => "a record fails".to_string(),
            AlertKind::FailureRate => {
                format!("over {}% of the hour's records fail", rule.threshold_percent.unwrap_or_default())
            }
            AlertKind::ExclusionRate => {
                format!("over {}% of the hour's records are excluded", rule.threshold_percent.unwrap_or_default())
            }
            AlertKind::Lag => format!(
                "the flow is over {} behind",
                Took(Duration::seconds(rule.threshold_seconds.unwrap_or_default() as i64))
            ),
        };
        let mut channels: Vec<String> = rule.channels.webhook_url.iter().map(|u| format!("webhook {u}")).collect();
        channels.extend(rule.channels.emails.iter().cloned());
        RuleView { watches, channels: channels.join(", ") }
    }
}

/// An opening or resolution of an alert, as the flow's page lists it.
pub struct AlertEventView {
    pub at: String,
    pub opened: bool,
    pub summary: String,
    /// Each channel's delivery: where, and how it stands.
    pub deliveries: Vec<(String, &'static str)>,
}

impl From<&AlertEvent> for AlertEventView {
    fn from(event: &AlertEvent) -> AlertEventView {
        AlertEventView {
            at: shown_time(event.notice.at),
            opened: event.notice.status == AlertStatus::Opened,
            summary: event.notice.summary.clone(),
            deliveries: event
                .deliveries
                .iter()
                .map(|d| {
                    let state = match d.state {
                        DeliveryState::Pending => "pending",
                        DeliveryState::Sent => "sent",
                        DeliveryState::Retrying => "retrying",
                        DeliveryState::GaveUp => "gave up",
                    };
                    (d.to.clone(), state)
                })
                .collect(),
        }
    }
}

/// The alert rules' form, as the flow's rules fill it: one rule of each kind at most, all sending to the same
/// channels.
#[derive(Default)]
pub struct AlertForm {
    pub failure: bool,
    pub failure_rate: String,
    pub exclusion_rate: String,
    pub lag_minutes: String,
    pub webhook_url: String,
    pub emails: String,
}

impl AlertForm {
    fn of(rules: &[AlertRule]) -> AlertForm {
        let mut form = AlertForm::default();
        let mut emails: Vec<String> = Vec::new();
        for rule in rules {
            let percent = || rule.threshold_percent.map(|p| p.to_string()).unwrap_or_default();
            match rule.kind {
                AlertKind::Failure => form.failure = true,
                AlertKind::FailureRate => form.failure_rate = percent(),
                AlertKind::ExclusionRate => form.exclusion_rate = percent(),
                AlertKind::Lag => {
                    form.lag_minutes = rule.threshold_seconds.map(|s| (s.div_ceil(60)).to_string()).unwrap_or_default()
                }
            }
            if let Some(url) = &rule.channels.webhook_url {
                form.webhook_url = url.clone();
            }
            emails.extend(rule.channels.emails.iter().filter(|e| !emails.contains(e)).cloned().collect::<Vec<_>>());
        }
        form.emails = emails.join(", ");
        form
    }

    /// The settings the posted form asks for: a rule for each kind filled in, each to the form's channels. A
    /// figure that is not a number is left for the API's check to name.
    fn settings(body: &[u8]) -> AlertSettings {
        let form: HashMap<String, String> =
            url::form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.trim().to_string())).collect();
        let get = |name: &str| form.get(name).cloned().unwrap_or_default();
        let channels = AlertChannels {
            webhook_url: Some(get("webhookUrl")).filter(|u| !u.is_empty()),
            emails: get("emails")
                .split([',', ';'])
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_string)
                .collect(),
        };
        let rule = |kind| AlertRule {
            id: None,
            kind,
            threshold_percent: None,
            minimum_records: None,
            threshold_seconds: None,
            channels: channels.clone(),
        };
        // A figure that does not read is sent as 0, which the check refuses by the field's name.
        let number = |name: &str| get(name).replace(',', ".").parse::<f64>().unwrap_or(0.0);
        let mut rules = Vec::new();
        if get("failure") == "on" {
            rules.push(rule(AlertKind::Failure));
        }
        for (name, kind) in [("failureRate", AlertKind::FailureRate), ("exclusionRate", AlertKind::ExclusionRate)] {
            if !get(name).is_empty() {
                rules.push(AlertRule { threshold_percent: Some(number(name)), ..rule(kind) });
            }
        }
        if !get("lagMinutes").is_empty() {
            let seconds = (number("lagMinutes") * 60.0).round().max(0.0) as u64;
            rules.push(AlertRule { threshold_seconds: Some(seconds), ..rule(AlertKind::Lag) });
        }
        let secret = get("signingSecret");
        AlertSettings { rules, signing_secret: Some(SigningSecret(secret)).filter(|s| !s.0.is_empty()) }
    }
}

/// Alert events a flow's page lists, newest first.
const ALERT_EVENTS_SHOWN: i64 = 10;

/// A failed record, as the drill-down shows it.
pub struct FailedView {
    pub key: String,
    pub code: String,
    pub message: String,
    /// What was sent, laid out to read.
    pub payload: String,
    pub failed_at: String,
}

#[derive(Template)]
#[template(path = "flow.html")]
struct FlowPage {
    nav: Option<Nav>,
    flow: FlowStatus,
    chart: String,
    lag_chart: String,
    runs: Vec<RunView>,
    failed: Vec<FailedView>,
    failed_total: u64,
    /// The replay the flow offers, by its button's words.
    replay: Option<&'static str>,
    may_activate: bool,
    may_manage: bool,
    done: Option<String>,
    problem: Option<String>,
    changes: Vec<ChangeView>,
    rules: Vec<RuleView>,
    /// An ingestion's schedule: its frequency and interval, for the form that changes them.
    schedule: Option<(String, String)>,
    frequencies: &'static [(&'static str, &'static str)],
    /// The flow as `GET /flows/{id}` answers it, laid out to read.
    definition: String,
    alert_form: AlertForm,
    alerts: Vec<AlertEventView>,
}

#[derive(Deserialize)]
pub struct FlowQuery {
    done: Option<String>,
}

/// The flow as the API answers `GET /flows/{id}` — every job's definition, its secrets left out as the API leaves
/// them out — laid out to read.
async fn definition_shown(state: &Arc<AppState>, viewer: &Viewer, flow: &FlowRecord) -> Result<String, ApiError> {
    let caller = crate::api::Caller { sandbox: viewer.caller.sandbox.clone(), grant: viewer.caller.grant.clone() };
    let answer = crate::api::flows::get(State(state.clone()), caller, Path(flow.id.to_string())).await?;
    let body = axum::body::to_bytes(answer.into_body(), crate::api::MAX_BODY_BYTES).await.unwrap_or_default();
    Ok(match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(json) => serde_json::to_string_pretty(&json).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(&body).into_owned(),
    })
}

/// What an action that went through says on the page it comes back to.
fn done_message(done: &str) -> Option<&'static str> {
    Some(match done {
        "enabled" => "Enabled: the flow runs.",
        "disabled" => "Disabled: the flow stops, and what it accepted waits for it.",
        "replayed" => "Replayed: the failed records were sent again; those that failed again are listed below.",
        "replay-requested" => "Replay requested: the next load reads the whole table and sends every row again.",
        "created" => "Created and enabled: the flow runs, and takes profiles at its inlet.",
        "loading" => "Created: its first load starts now, and its runs show here as it goes.",
        "rescheduled" => "Schedule changed: the next load comes by it.",
        "changed" => "Saved: the flow runs with its new definition from its next batch.",
        "alerts-saved" => "Alert rules saved: they are checked every few seconds from now on.",
        _ => return None,
    })
}

async fn flow_page(
    state: &Arc<AppState>,
    viewer: &Viewer,
    id: &str,
    done: Option<String>,
    problem: Option<ApiError>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found("flow", id, &viewer.caller.sandbox);
    let flow_id: FlowId = id.parse().map_err(|_| not_found())?;
    let flow = state.store.flow(&viewer.caller.sandbox, flow_id).await?.ok_or_else(not_found)?;
    let runs = state.store.newest_runs(flow.id, RUNS_SHOWN).await?;
    let (failed, failed_total) = state.store.newest_failed_records(flow.id, FAILED_SHOWN).await?;
    let replay = match flow.job.as_str() {
        crate::ingestion::JOB => Some("Replay the table: send every row again"),
        _ if failed_total > 0 => Some("Replay the failed records"),
        _ => None,
    };
    let alert_rules = crate::api::alerts::view(state, flow.id).await?.rules;
    let definition = definition_shown(state, viewer, &flow).await?;
    let template = FlowPage {
        nav: Nav::new("flows", viewer),
        flow: status(state, &flow, &runs).await?,
        chart: chart::throughput(&runs),
        lag_chart: chart::lag(
            &state.store.lag_by_hour(flow.id, Utc::now() - Duration::hours(chart::HOURS_SHOWN)).await?,
            Utc::now(),
        ),
        runs: runs.iter().map(RunView::from).collect(),
        failed: failed
            .into_iter()
            .map(|r| FailedView {
                payload: serde_json::from_str::<serde_json::Value>(&r.payload)
                    .ok()
                    .and_then(|v| serde_json::to_string_pretty(&v).ok())
                    .unwrap_or(r.payload),
                key: r.key,
                code: r.code,
                message: r.message,
                failed_at: shown_time(r.failed_at),
            })
            .collect(),
        failed_total,
        replay,
        may_activate: viewer.may(Role::Activate),
        may_manage: viewer.may(Role::Manage),
        done,
        problem: problem.map(|p| p.detail),
        rules: alert_rules.iter().map(RuleView::from).collect(),
        schedule: match flow.job.as_str() {
            crate::ingestion::JOB => {
                let params = IngestionFlow::try_from(&flow)?.definition.schedule.params();
                let text = |v: Option<serde_json::Value>| match v {
                    Some(serde_json::Value::String(s)) => s,
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                Some((params.frequency.unwrap_or_default(), text(params.interval)))
            }
            _ => None,
        },
        frequencies: &super::browse::FREQUENCIES,
        definition,
        alert_form: AlertForm::of(&alert_rules),
        alerts: state
            .store
            .alert_history(flow.id, ALERT_EVENTS_SHOWN)
            .await?
            .into_iter()
            .map(|record| crate::api::alerts::event_view(record).map(|e| AlertEventView::from(&e)))
            .collect::<Result<_, _>>()?,
        changes: state
            .store
            .changes(&viewer.caller.sandbox, Some(flow.id.0), CHANGES_ON_A_FLOW)
            .await?
            .iter()
            .map(ChangeView::from)
            .collect(),
    };
    // The page is what was asked for, with why the action was not done: a browser shows it as any page.
    Ok(page(StatusCode::OK, &template))
}

pub async fn page_of_flow(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(query): Query<FlowQuery>,
) -> Response {
    let done = query.done.as_deref().and_then(done_message).map(str::to_string);
    match flow_page(&state, &viewer, &id, done, None).await {
        Ok(response) => response,
        Err(e) => problem_page(&viewer, e),
    }
}

/// `POST /flows/{id}/{enable|disable|replay|delete}`: the API's action on the flow, then back to its page saying
/// what was done — or the page again, saying why not.
pub async fn act(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Path((id, action)): Path<(String, String)>,
    RawForm(form): RawForm,
) -> Response {
    let flow = match id.parse::<FlowId>() {
        Ok(flow_id) => state.store.flow(&viewer.caller.sandbox, flow_id).await,
        Err(_) => Ok(None),
    };
    let flow = match flow {
        Ok(Some(flow)) => flow,
        Ok(None) => return problem_page(&viewer, ApiError::not_found("flow", &id, &viewer.caller.sandbox)),
        Err(e) => return problem_page(&viewer, e.into()),
    };
    let caller = || crate::api::Caller { sandbox: viewer.caller.sandbox.clone(), grant: viewer.caller.grant.clone() };
    let op = |op: &str| Query(HashMap::from([("op".to_string(), op.to_string())]));
    let (result, done) = match action.as_str() {
        "enable" => {
            (crate::api::flows::action(State(state.clone()), caller(), Path(id.clone()), op("enable")).await, "enabled")
        }
        "disable" => (
            crate::api::flows::action(State(state.clone()), caller(), Path(id.clone()), op("disable")).await,
            "disabled",
        ),
        "replay" if flow.job == crate::ingestion::JOB => (
            crate::api::flows::action(State(state.clone()), caller(), Path(id.clone()), op("replay")).await,
            "replay-requested",
        ),
        "replay" => (
            crate::api::flows::action(State(state.clone()), caller(), Path(id.clone()), op("retry-failed")).await,
            "replayed",
        ),
        "schedule" => {
            let current = match IngestionFlow::try_from(&flow) {
                Ok(current) => current,
                Err(e) => return problem_page(&viewer, e.into()),
            };
            let form: HashMap<String, String> =
                url::form_urlencoded::parse(&form).map(|(k, v)| (k.into_owned(), v.trim().to_string())).collect();
            let mut params = current.definition.schedule.params();
            params.frequency = form.get("frequency").cloned();
            params.interval = match params.frequency.as_deref() {
                Some("once") => None,
                _ => form.get("interval").cloned().map(serde_json::Value::String),
            };
            return match crate::api::ingestion::reschedule(&state, &viewer.caller, current, &params).await {
                Ok(_) => Redirect::to(&format!("/flows/{id}?done=rescheduled")).into_response(),
                Err(e) => {
                    flow_page(&state, &viewer, &id, None, Some(e)).await.unwrap_or_else(|e| problem_page(&viewer, e))
                }
            };
        }
        "alerts" => {
            let settings = AlertForm::settings(&form);
            return match crate::api::alerts::replace(&state, &viewer.caller, flow.id, &settings).await {
                Ok(_) => Redirect::to(&format!("/flows/{id}?done=alerts-saved#alerts")).into_response(),
                Err(e) => {
                    flow_page(&state, &viewer, &id, None, Some(e)).await.unwrap_or_else(|e| problem_page(&viewer, e))
                }
            };
        }
        "delete" => {
            let confirmed = url::form_urlencoded::parse(&form).any(|(k, v)| k == "confirm" && v == "yes");
            if !confirmed {
                let problem = ApiError::bad_request(
                    "the flow was not deleted: tick the box that says you understand what deleting it loses, then delete it",
                );
                return flow_page(&state, &viewer, &id, None, Some(problem))
                    .await
                    .unwrap_or_else(|e| problem_page(&viewer, e));
            }
            return match crate::api::flows::delete(State(state.clone()), caller(), Path(id.clone())).await {
                Ok(_) => Redirect::to("/flows").into_response(),
                Err(e) => {
                    flow_page(&state, &viewer, &id, None, Some(e)).await.unwrap_or_else(|e| problem_page(&viewer, e))
                }
            };
        }
        other => {
            let problem = ApiError::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!(
                    "'{other}' is not an action on a flow: the flow's page offers enable, disable, replay, alerts and delete"
                ),
            );
            return problem_page(&viewer, problem);
        }
    };
    match result {
        Ok(_) => Redirect::to(&format!("/flows/{id}?done={done}")).into_response(),
        Err(e) => flow_page(&state, &viewer, &id, None, Some(e)).await.unwrap_or_else(|e| problem_page(&viewer, e)),
    }
}
