//! `flows/{id}/alerts` and `flows/{id}/alerts/history`: a flow's alert rules, read and replaced, and what they
//! opened and resolved. The JSON is [`crate::alerts::wire`]'s.
//!
//! A PUT is checked whole before anything is kept, and every problem is answered at once, each naming its field
//! (`rules[1].channels.webhookUrl`) and what to give instead: webhooks over https, or http to a host the operator
//! allows; no user name or password in a URL (the rules are shown to anyone who reads the flow); a signing secret
//! of at least 16 characters; email addresses of the shape a mail server takes; thresholds that can be passed.
//! The signing secret is sealed with the store's key and never answered.

use super::ingestion::MIN_SIGNING_SECRET;
use super::{ApiError, ApiResult, AppState, Caller, parse_body};
use crate::access::Role;
use crate::alerts::{AlertEvent, AlertKind, AlertNotice, ChannelKind, DeliveryState, DeliveryView};
use crate::alerts::{AlertHistory, AlertRule, AlertSettings, AlertSettingsView, Condition};
use crate::hosts::AllowedHosts;
use crate::ids::FlowId;
use crate::secrets::Secret;
use crate::store::{ALERT_EVENTS_KEPT, AlertEventRecord, FlowRecord};
use crate::text::clip;
use axum::Json as AxumJson;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::json;
use std::sync::Arc;

/// The most rules a flow has.
pub const MAX_RULES: usize = 20;
/// The most email addresses a rule sends to.
pub const MAX_EMAILS: usize = 20;
/// The longest webhook URL.
pub const MAX_URL_CHARS: usize = 2_000;
/// The longest lag threshold: a week.
pub const MAX_LAG_SECONDS: u64 = 7 * 24 * 3_600;

async fn find_flow(state: &AppState, caller: &Caller, id: &str) -> ApiResult<FlowRecord> {
    let parsed: FlowId = id.parse().map_err(|_| ApiError::not_found("flow", id, &caller.sandbox))?;
    let found = state.store.flow(&caller.sandbox, parsed).await?;
    found.ok_or_else(|| ApiError::not_found("flow", id, &caller.sandbox))
}

/// The flow's rules as answered.
pub async fn view(state: &AppState, flow: FlowId) -> ApiResult<AlertSettingsView> {
    let Some(stored) = state.store.alert_rules(flow).await? else {
        return Ok(AlertSettingsView { flow_id: flow, rules: Vec::new(), has_signing_secret: false, updated_at: None });
    };
    let rules: Vec<AlertRule> = serde_json::from_str(&stored.rules).map_err(|e| {
        ApiError::from(crate::store::StoreError::Corrupt { what: "alert rules", detail: format!("{flow}: {e}") })
    })?;
    Ok(AlertSettingsView {
        flow_id: flow,
        rules,
        has_signing_secret: stored.has_signing_secret,
        updated_at: Some(stored.updated_at),
    })
}

/// `GET /flows/{id}/alerts`: the flow's rules and channels; the signing secret only as `hasSigningSecret`.
pub async fn get(State(state): State<Arc<AppState>>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let flow = find_flow(&state, &caller, &id).await?;
    Ok(AxumJson(view(&state, flow.id).await?).into_response())
}

/// `PUT /flows/{id}/alerts`: replaces the flow's rules. An alert open under a rule kept as it was stays open; one
/// under a rule removed or changed is forgotten.
pub async fn put(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let flow = find_flow(&state, &caller, &id).await?;
    let settings: AlertSettings = parse_body(&body)?;
    Ok(AxumJson(replace(&state, &caller, flow.id, &settings).await?).into_response())
}

/// Replaces a flow's rules, checked: every problem at once, each with its field, in the error's detail and its
/// report (`{"problems": [...]}`).
pub async fn replace(
    state: &AppState,
    caller: &Caller,
    flow: FlowId,
    settings: &AlertSettings,
) -> ApiResult<AlertSettingsView> {
    caller.may(Role::Manage)?;
    let kept_secret = state.store.alert_rules(flow).await?.is_some_and(|r| r.has_signing_secret);
    let rules = checked(settings, &state.hosts, kept_secret).map_err(|problems| {
        ApiError::bad_request(format!("the alerts cannot be kept: {}", problems.join("; ")))
            .with_report(json!({"problems": problems}))
    })?;
    let ids: Vec<String> = rules.iter().filter_map(|r| r.id.clone()).collect();
    let secret = settings.signing_secret.as_ref().map(|s| Secret::new(s.0.trim()));
    let document = serde_json::to_string(&rules).expect("rules serialize");
    state.store.put_alert_rules(flow, &caller.sandbox, &document, secret.as_ref(), &ids).await?;
    view(state, flow).await
}

/// `GET /flows/{id}/alerts/history`: what the flow's alerts opened and resolved, newest first, with each
/// channel's delivery.
pub async fn history(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let flow = find_flow(&state, &caller, &id).await?;
    let events = state.store.alert_history(flow.id, ALERT_EVENTS_KEPT).await?;
    let items = events.into_iter().map(event_view).collect::<ApiResult<Vec<_>>>()?;
    Ok(AxumJson(AlertHistory { items }).into_response())
}

pub fn event_view(record: AlertEventRecord) -> ApiResult<AlertEvent> {
    let notice: AlertNotice = serde_json::from_str(&record.notice).map_err(|e| {
        ApiError::from(crate::store::StoreError::Corrupt { what: "alert event", detail: format!("{}: {e}", record.id) })
    })?;
    let give_up_before = Utc::now() - crate::alerts::deliver::GIVE_UP_AFTER;
    let deliveries = record
        .deliveries
        .into_iter()
        .map(|d| DeliveryView {
            channel: if d.channel == ChannelKind::Email.as_str() { ChannelKind::Email } else { ChannelKind::Webhook },
            to: d.target,
            state: match (d.sent_at, d.attempts) {
                (Some(_), _) => DeliveryState::Sent,
                (None, _) if d.created_at < give_up_before => DeliveryState::GaveUp,
                (None, 0) => DeliveryState::Pending,
                (None, _) => DeliveryState::Retrying,
            },
            attempts: d.attempts,
            sent_at: d.sent_at,
            error: Some(d.last_error).filter(|e| !e.is_empty()),
        })
        .collect();
    Ok(AlertEvent { notice, deliveries })
}

/// The rules as kept: each with its id and its defaults filled in, its addresses trimmed; or every problem, each
/// naming its field and what to give. `kept_secret`: whether the flow already has a signing secret.
pub fn checked(
    settings: &AlertSettings,
    hosts: &AllowedHosts,
    kept_secret: bool,
) -> Result<Vec<AlertRule>, Vec<String>> {
    let mut problems = Vec::new();
    if settings.rules.len() > MAX_RULES {
        problems.push(format!(
            "rules has {} rules: a flow has at most {MAX_RULES}; send several channels to one rule instead",
            settings.rules.len()
        ));
    }
    let mut kept: Vec<AlertRule> = Vec::new();
    for (i, rule) in settings.rules.iter().enumerate() {
        let at = format!("rules[{i}]");
        check_thresholds(&at, rule, &mut problems);
        let channels = check_channels(&at, rule, hosts, &mut problems);
        let minimum_records = match rule.kind {
            AlertKind::FailureRate | AlertKind::ExclusionRate => {
                Some(rule.minimum_records.unwrap_or(crate::alerts::DEFAULT_MINIMUM_RECORDS))
            }
            _ => rule.minimum_records,
        };
        let mut rule = AlertRule { id: None, minimum_records, channels, ..rule.clone() };
        if let Some(condition) = Condition::of(&rule) {
            let id = condition.id();
            if let Some(first) = kept.iter().position(|r| r.id.as_deref() == Some(id.as_str())) {
                problems.push(format!(
                    "{at} is the same rule as rules[{first}] ({id}): give each rule once, with all its channels"
                ));
            }
            rule.id = Some(id);
        }
        kept.push(rule);
    }
    let webhooks = kept.iter().any(|r| r.channels.webhook_url.is_some());
    match settings.signing_secret.as_ref().map(|s| s.0.trim()) {
        Some(secret) if secret.chars().count() < MIN_SIGNING_SECRET => problems.push(format!(
            "signingSecret is {} characters: give at least {MIN_SIGNING_SECRET}, so that signatures cannot be forged by \
             guessing it",
            secret.chars().count()
        )),
        Some(_) => {}
        None if webhooks && !kept_secret => problems.push(format!(
            "signingSecret is missing: a rule has a webhookUrl, and its POSTs are signed with this secret (at least \
             {MIN_SIGNING_SECRET} characters), which the receiver checks the Dynsync-Signature header with"
        )),
        None => {}
    }
    if problems.is_empty() { Ok(kept) } else { Err(problems) }
}

fn check_thresholds(at: &str, rule: &AlertRule, problems: &mut Vec<String>) {
    let kind = rule.kind;
    let not_for =
        |field: &str, instead: &str| format!("{at}.{field} is not a setting of a {kind} rule: leave it out{instead}");
    let rate = matches!(kind, AlertKind::FailureRate | AlertKind::ExclusionRate);
    if rate {
        match rule.threshold_percent {
            None => problems.push(format!(
                "{at}.thresholdPercent is missing: a {kind} rule opens an alert when the share of the current hour's \
                 records over it; give a percent over 0 and at most 100 (for example 5)"
            )),
            Some(p) if !(p > 0.0 && p <= 100.0) => problems
                .push(format!("{at}.thresholdPercent is {p}: give a percent over 0 and at most 100 (for example 5)")),
            Some(_) => {}
        }
        if rule.minimum_records == Some(0) {
            problems.push(format!(
                "{at}.minimumRecords is 0: give the records an hour must have received before its rate counts, at \
                 least 1 (20 when left out)"
            ));
        }
    } else {
        if rule.threshold_percent.is_some() {
            problems.push(not_for("thresholdPercent", ", or use kind failureRate or exclusionRate"));
        }
        if rule.minimum_records.is_some() {
            problems.push(not_for("minimumRecords", ", or use kind failureRate or exclusionRate"));
        }
    }
    if kind == AlertKind::Lag {
        match rule.threshold_seconds {
            None => problems.push(format!(
                "{at}.thresholdSeconds is missing: a lag rule opens an alert when the flow is more than this many \
                 seconds behind; give one from 1 to {MAX_LAG_SECONDS} (for example 600)"
            )),
            Some(s) if s == 0 || s > MAX_LAG_SECONDS => problems.push(format!(
                "{at}.thresholdSeconds is {s}: give seconds from 1 to {MAX_LAG_SECONDS} (a week), for example 600"
            )),
            Some(_) => {}
        }
    } else if rule.threshold_seconds.is_some() {
        problems.push(not_for("thresholdSeconds", ", or use kind lag"));
    }
}

/// The rule's channels as kept (addresses trimmed, repeats dropped); every problem is added to `problems`.
fn check_channels(
    at: &str,
    rule: &AlertRule,
    hosts: &AllowedHosts,
    problems: &mut Vec<String>,
) -> crate::alerts::AlertChannels {
    let channels = &rule.channels;
    let url = channels.webhook_url.as_deref().map(str::trim).filter(|u| !u.is_empty());
    if url.is_none() && channels.emails.is_empty() {
        problems.push(format!(
            "{at}.channels is empty: give a webhookUrl, emails, or both, for the alert to reach someone"
        ));
    }
    if let Some(url) = url {
        let field = format!("{at}.channels.webhookUrl");
        let shown = clip(url, 100);
        match url::Url::parse(url) {
            _ if url.chars().count() > MAX_URL_CHARS => {
                problems.push(format!("{field} is over {MAX_URL_CHARS} characters: give the receiver's address"))
            }
            Err(e) => {
                problems.push(format!("{field} ({shown}) is not a URL ({e}): give the receiver's address, https://…"))
            }
            Ok(parsed) if !parsed.username().is_empty() || parsed.password().is_some() => problems.push(format!(
                "{field} holds a user name or password: the rules are shown to anyone who reads the flow; the \
                 receiver checks the Dynsync-Signature header instead"
            )),
            Ok(parsed) if parsed.host_str().is_none_or(str::is_empty) => problems
                .push(format!("{field} ({shown}) names no host: give the receiver's address, https://host/path")),
            Ok(parsed) if parsed.scheme() == "https" => {}
            Ok(parsed) if parsed.scheme() == "http" && hosts.lists(&parsed) => {}
            Ok(parsed) if parsed.scheme() == "http" => problems.push(format!(
                "{field} ({shown}) is not https: alerts go to a webhook over https, or over http to a host the \
                 operator allows (allowed_hosts in the config file or DYNSYNC_ALLOWED_HOSTS)"
            )),
            Ok(parsed) => problems.push(format!(
                "{field} ({shown}) is a {} URL: a webhook is called over https, give https://…",
                parsed.scheme()
            )),
        }
    }
    if channels.emails.len() > MAX_EMAILS {
        problems.push(format!(
            "{at}.channels.emails has {} addresses: give at most {MAX_EMAILS} (a mailing list's address counts as one)",
            channels.emails.len()
        ));
    }
    let mut emails: Vec<String> = Vec::new();
    for (j, email) in channels.emails.iter().enumerate() {
        match crate::email::check_address(email) {
            Ok(address) if !emails.iter().any(|e| e.eq_ignore_ascii_case(address)) => emails.push(address.to_string()),
            Ok(_) => {}
            Err(why) => problems.push(format!(
                "{at}.channels.emails[{j}] ('{}') is not an email address: {why}; give one as ops@example.com",
                clip(email, 100)
            )),
        }
    }
    crate::alerts::AlertChannels { webhook_url: url.map(str::to_string), emails }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::{AlertChannels, SigningSecret};

    fn rule(kind: AlertKind) -> AlertRule {
        AlertRule {
            id: None,
            kind,
            threshold_percent: None,
            minimum_records: None,
            threshold_seconds: None,
            channels: AlertChannels { webhook_url: None, emails: vec!["ops@example.com".into()] },
        }
    }

    fn settings(rules: Vec<AlertRule>, secret: Option<&str>) -> AlertSettings {
        AlertSettings { rules, signing_secret: secret.map(|s| SigningSecret(s.into())) }
    }

    fn hosts() -> AllowedHosts {
        "127.0.0.1".parse().unwrap()
    }

    #[test]
    fn good_rules_are_kept_with_their_ids_and_defaults() {
        let rate = AlertRule { threshold_percent: Some(5.0), ..rule(AlertKind::FailureRate) };
        let lag = AlertRule {
            threshold_seconds: Some(600),
            channels: AlertChannels {
                webhook_url: Some(" https://hooks.example.com/alerts ".into()),
                emails: vec![" Ops@example.com".into(), "ops@example.com".into()],
            },
            ..rule(AlertKind::Lag)
        };
        let local = AlertRule {
            channels: AlertChannels { webhook_url: Some("http://127.0.0.1:9000/hook".into()), emails: vec![] },
            ..rule(AlertKind::Failure)
        };
        let kept = checked(&settings(vec![rate, lag, local], Some("0123456789abcdef")), &hosts(), false).unwrap();
        assert_eq!(kept[0].id.as_deref(), Some("failureRate:5:20"));
        assert_eq!(kept[0].minimum_records, Some(20));
        assert_eq!(kept[1].id.as_deref(), Some("lag:600"));
        assert_eq!(kept[1].channels.webhook_url.as_deref(), Some("https://hooks.example.com/alerts"));
        assert_eq!(kept[1].channels.emails, ["Ops@example.com"], "trimmed, a repeat dropped");
        assert_eq!(kept[2].id.as_deref(), Some("failure"));
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_field() {
        let bad = vec![
            AlertRule {
                channels: AlertChannels {
                    webhook_url: Some("http://hooks.example.com/alerts".into()),
                    emails: vec!["ops@example.com".into(), "not an address".into()],
                },
                ..rule(AlertKind::Failure)
            },
            AlertRule { threshold_percent: Some(0.0), ..rule(AlertKind::FailureRate) },
            AlertRule { threshold_percent: Some(120.0), minimum_records: Some(0), ..rule(AlertKind::ExclusionRate) },
            AlertRule { threshold_seconds: None, threshold_percent: Some(3.0), ..rule(AlertKind::Lag) },
            AlertRule {
                channels: AlertChannels {
                    webhook_url: Some("https://user:pw@hooks.example.com/".into()),
                    emails: vec![],
                },
                ..rule(AlertKind::Failure)
            },
            AlertRule { channels: AlertChannels::default(), ..rule(AlertKind::Failure) },
        ];
        let problems = checked(&settings(bad, Some("short")), &hosts(), false).unwrap_err();
        let expected = [
            "rules[0].channels.webhookUrl (http://hooks.example.com/alerts) is not https",
            "rules[0].channels.emails[1] ('not an address') is not an email address",
            "rules[1].thresholdPercent is 0: give a percent over 0 and at most 100",
            "rules[2].thresholdPercent is 120",
            "rules[2].minimumRecords is 0",
            "rules[3].thresholdSeconds is missing",
            "rules[3].thresholdPercent is not a setting of a lag rule",
            "rules[4].channels.webhookUrl holds a user name or password",
            "rules[4] is the same rule as rules[0] (failure)",
            "rules[5].channels is empty",
            "signingSecret is 5 characters: give at least 16",
        ];
        for part in expected {
            assert!(problems.iter().any(|p| p.starts_with(part)), "no {part:?} in {problems:#?}");
        }
        assert_eq!(problems.len(), expected.len() + 1, "rules[5] is also the failure rule again: {problems:#?}");
    }

    #[test]
    fn a_webhook_needs_a_signing_secret_unless_one_is_kept() {
        let hook = AlertRule {
            channels: AlertChannels { webhook_url: Some("https://hooks.example.com/a".into()), emails: vec![] },
            ..rule(AlertKind::Failure)
        };
        let problems = checked(&settings(vec![hook.clone()], None), &hosts(), false).unwrap_err();
        assert!(problems[0].starts_with("signingSecret is missing"), "{problems:?}");
        assert!(checked(&settings(vec![hook], None), &hosts(), true).is_ok(), "the kept one stays");
        assert!(checked(&settings(vec![rule(AlertKind::Failure)], None), &hosts(), false).is_ok(), "email only");
    }

    #[test]
    fn the_signing_secret_never_shows_in_debug_output() {
        let given = settings(vec![], Some("a-very-secret-signing-key"));
        assert!(!format!("{given:?}").contains("a-very-secret"));
    }
}
