//! `POST /BulkDelete`: deletes every record a set of queries finds, as a system job that runs after the
//! request has been answered — how Dataverse deletes many records, and what Microsoft's Python SDK sends for
//! a list delete.
//!
//! The request is checked whole before anything is kept: each `QueryExpression` must name a table, and its
//! criteria (`FilterExpression`: `And`/`Or` of conditions and nested filters) must bind to that table's
//! columns, so a mistake is a `400` naming it rather than a job that fails later. The answer is the job's id
//! (`BulkDeleteResponse.JobId`), the id of an `asyncoperation` row (operation type 13, Bulk Delete) that a
//! client polls: Waiting → In Progress → Completed with Succeeded or Failed, as Dataverse reports it. A
//! `bulkdeleteoperation` row, looked up by the job, counts the records deleted and those that could not be.
//!
//! The job deletes in slices, each under the store's write lock once, so that other requests are served
//! between slices, and what it deletes is journalled like any delete (change tracking sees each). It does
//! not count against the caller's service protection limits: Dataverse runs it in its asynchronous service.
//! Recurring jobs (`RecurrencePattern`) are refused by name: the emulator runs each job once.

use super::{Request, json_response};
use crate::environment::Environment;
use crate::error::{ApiError, ApiResult};
use crate::odata::filter::{self, CmpOp, Expr, Literal, Operand, Predicate, TextFn};
use crate::odata::path::Key;
use crate::records::{self, Preconditions, WriteKind, WriteRequest};
use crate::schema::{Table, activities};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Records deleted under one hold of the write lock.
const SLICE: usize = 500;

/// How far ahead a job may be scheduled; later ones are refused rather than kept waiting in memory.
const MAX_POSTPONE: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BulkDeleteRequest {
    job_name: Option<String>,
    #[serde(default)]
    query_set: Vec<QueryExpression>,
    start_date_time: Option<String>,
    #[serde(default)]
    recurrence_pattern: Option<String>,
    // SendEmailNotification, ToRecipients and CCRecipients are accepted and left unread: the emulator sends no mail.
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct QueryExpression {
    entity_name: Option<String>,
    criteria: Option<FilterExpression>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct FilterExpression {
    filter_operator: Option<String>,
    #[serde(default)]
    conditions: Vec<ConditionExpression>,
    #[serde(default)]
    filters: Vec<FilterExpression>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConditionExpression {
    attribute_name: String,
    operator: String,
    #[serde(default)]
    values: Vec<ConditionValue>,
}

#[derive(Debug, Deserialize)]
struct ConditionValue {
    #[serde(rename = "Value")]
    value: Json,
    #[serde(rename = "Type")]
    kind: Option<String>,
}

/// One query of the set, bound to its table.
struct Selection {
    table: String,
    predicate: Option<Predicate>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::invalid_argument(message)
}

fn literal(value: &ConditionValue) -> Literal {
    match (&value.value, value.kind.as_deref()) {
        (Json::String(text), Some("System.Guid")) => {
            text.trim_matches(['{', '}']).parse().map_or_else(|_| Literal::String(text.clone()), Literal::Guid)
        }
        (Json::String(text), _) => Literal::String(text.clone()),
        (Json::Bool(b), _) => Literal::Bool(*b),
        (Json::Number(n), _) => {
            n.as_i64().map_or_else(|| Literal::Number(n.as_f64().unwrap_or(f64::NAN)), Literal::Int)
        }
        _ => Literal::Null,
    }
}

fn compare(op: CmpOp, attribute: &str, value: Literal) -> Expr {
    Expr::Compare(op, Operand::Member(vec![attribute.to_string()]), Operand::Literal(value))
}

/// A condition as a `$filter` expression, for the operators a bulk deletion's query uses.
fn condition(c: &ConditionExpression, table: &Table) -> ApiResult<Expr> {
    // A QueryExpression names columns by logical name, lookups too; `$filter` names a lookup `_x_value`.
    let logical = c.attribute_name.to_ascii_lowercase();
    let attribute = table.attribute(&logical).map_or(logical, |a| a.property_name());
    let one = || match c.values.as_slice() {
        [value] => Ok(literal(value)),
        _ => Err(invalid(format!(
            "The condition on '{attribute}' with operator '{}' takes exactly one value; it has {}.",
            c.operator,
            c.values.len()
        ))),
    };
    let text = || match one()? {
        Literal::String(text) => Ok(text),
        _ => Err(invalid(format!("The condition on '{attribute}' with operator '{}' takes a text value.", c.operator))),
    };
    let cmp = |op| Ok(compare(op, &attribute, one()?));
    match c.operator.as_str() {
        "Equal" => cmp(CmpOp::Eq),
        "NotEqual" => cmp(CmpOp::Ne),
        "GreaterThan" => cmp(CmpOp::Gt),
        "GreaterEqual" => cmp(CmpOp::Ge),
        "LessThan" => cmp(CmpOp::Lt),
        "LessEqual" => cmp(CmpOp::Le),
        "Null" => Ok(compare(CmpOp::Eq, &attribute, Literal::Null)),
        "NotNull" => Ok(compare(CmpOp::Ne, &attribute, Literal::Null)),
        "BeginsWith" => Ok(Expr::Text(TextFn::StartsWith, vec![attribute.clone()], text()?)),
        "EndsWith" => Ok(Expr::Text(TextFn::EndsWith, vec![attribute.clone()], text()?)),
        "Like" => Ok(Expr::Like(vec![attribute.clone()], text()?)),
        "NotLike" => Ok(Expr::Not(Box::new(Expr::Like(vec![attribute.clone()], text()?)))),
        "In" | "NotIn" => {
            let (op, join): (CmpOp, Joiner) =
                if c.operator == "In" { (CmpOp::Eq, filter::any_of) } else { (CmpOp::Ne, filter::all_of) };
            let each = c.values.iter().map(|v| compare(op, &attribute, literal(v))).collect();
            join(each).ok_or_else(|| invalid(format!("The '{}' condition on '{attribute}' has no values.", c.operator)))
        }
        other => Err(invalid(format!(
            "The condition operator '{other}' (on '{attribute}') is not supported by the emulator's BulkDelete; use \
             Equal, NotEqual, GreaterThan, GreaterEqual, LessThan, LessEqual, Null, NotNull, In, NotIn, Like, NotLike, \
             BeginsWith or EndsWith."
        ))),
    }
}

/// How the comparisons of an `In` (any of them) or a `NotIn` (all of them) join.
type Joiner = fn(Vec<Expr>) -> Option<Expr>;

/// A filter as a `$filter` expression; `None` when it has no conditions (it matches every record). The body's
/// nesting is bounded by the JSON reader (128 levels, two a filter), well within what binding may recurse.
fn criteria(f: &FilterExpression, table: &Table) -> ApiResult<Option<Expr>> {
    let mut operands = f.conditions.iter().map(|c| condition(c, table)).collect::<ApiResult<Vec<_>>>()?;
    for nested in &f.filters {
        operands.extend(criteria(nested, table)?);
    }
    match f.filter_operator.as_deref().unwrap_or("And") {
        "And" => Ok(filter::all_of(operands)),
        "Or" => Ok(filter::any_of(operands)),
        other => Err(invalid(format!("FilterOperator is 'And' or 'Or', not '{other}'."))),
    }
}

/// Checks the request whole and binds each query to its table.
fn plan(request: &Request, body: &BulkDeleteRequest) -> ApiResult<(String, Vec<Selection>, Option<DateTime<Utc>>)> {
    let name = body
        .job_name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid("BulkDelete needs a JobName: the name the system job is listed under."))?;
    if body.recurrence_pattern.as_deref().is_some_and(|p| !p.trim().is_empty()) {
        return Err(invalid(
            "The emulator runs each BulkDelete job once: leave RecurrencePattern empty and submit the job again when needed.",
        ));
    }
    if body.query_set.is_empty() {
        return Err(invalid(
            "BulkDelete needs a QuerySet with at least one QueryExpression naming the records to delete.",
        ));
    }
    let start = match body.start_date_time.as_deref() {
        None | Some("") => None,
        Some(text) => Some(DateTime::parse_from_rfc3339(text).map(|t| t.to_utc()).map_err(|_| {
            invalid(format!("StartDateTime '{text}' is not a date and time such as 2026-11-30T10:00:00Z."))
        })?),
    };
    if start.is_some_and(|s| s - Utc::now() > chrono::Duration::from_std(MAX_POSTPONE).expect("fits")) {
        return Err(invalid(
            "The emulator schedules BulkDelete jobs at most a day ahead; choose an earlier StartDateTime.",
        ));
    }
    let data = request.env.store.read();
    let mut selections = Vec::new();
    for (i, query) in body.query_set.iter().enumerate() {
        let entity = query.entity_name.as_deref().unwrap_or_default().to_ascii_lowercase();
        let table = data.schema.table(&entity).ok_or_else(|| {
            invalid(format!("QuerySet[{i}] names the table '{entity}', which does not exist: EntityName takes a table's logical name, such as 'contact'."))
        })?;
        let expr = query.criteria.as_ref().map(|c| criteria(c, table)).transpose()?.flatten();
        let predicate = expr.as_ref().map(|e| Predicate::bind(e, table)).transpose()?;
        selections.push(Selection { table: table.logical_name.clone(), predicate });
    }
    Ok((name.to_string(), selections, start))
}

/// Creates or updates one row of a system table as the platform does, under the given id.
fn put(
    data: &mut crate::store::Data,
    journal: &mut Vec<crate::store::Change>,
    table: &str,
    id: Uuid,
    body: Json,
    caller: Uuid,
    kind: WriteKind,
) -> ApiResult<()> {
    let table = data.schema.table(table).cloned().expect("a built-in table");
    let Json::Object(body) = body else {
        return Err(ApiError::internal(format!("a {} row is written from a JSON object", table.logical_name)));
    };
    let key = Key::Id(id);
    let preconditions = Preconditions::default();
    records::write(
        data,
        journal,
        WriteRequest { table: &table, key: Some(&key), body: &body, kind, preconditions: &preconditions, caller },
    )?;
    Ok(())
}

pub async fn submit(request: &Request) -> ApiResult<Response> {
    let body: BulkDeleteRequest = serde_json::from_slice(&request.body)
        .map_err(|e| ApiError::payload("BulkDelete", format!("The body is not a BulkDelete request: {e}")))?;
    let (name, selections, start) = plan(request, &body)?;
    let (job, operation, caller) = (Uuid::new_v4(), Uuid::new_v4(), request.caller);
    request
        .env
        .store
        .write(|data, journal| {
            let mut job_row = json!({"name": name, "operationtype": 13, "statecode": 0, "statuscode": 0});
            if let Some(start) = start {
                job_row["postponeuntil"] = Json::String(start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            }
            put(data, journal, "asyncoperation", job, job_row, caller, WriteKind::Create)?;
            let operation_row = json!({
                "name": name,
                "AsyncOperationId@odata.bind": format!("/asyncoperations({job})"),
                "successcount": 0,
                "failurecount": 0,
                "statecode": 0,
                "statuscode": 0,
            });
            put(data, journal, "bulkdeleteoperation", operation, operation_row, caller, WriteKind::Create)
        })
        .await?;
    tokio::spawn(run(request.env.clone(), job, operation, caller, selections, start));
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "@odata.context": format!("{}/$metadata#Microsoft.Dynamics.CRM.BulkDeleteResponse", request.base),
            "JobId": job,
        }),
    ))
}

/// The job: waits for its start, deletes slice by slice, and records how it went.
async fn run(
    env: Arc<Environment>,
    job: Uuid,
    operation: Uuid,
    caller: Uuid,
    selections: Vec<Selection>,
    start: Option<DateTime<Utc>>,
) {
    if let Some(wait) = start.and_then(|s| (s - Utc::now()).to_std().ok()) {
        tokio::time::sleep(wait).await;
    }
    let stamp = || Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let started = json!({"statecode": 2, "statuscode": 20, "startedon": stamp()});
    if let Err(e) = set(&env, "asyncoperation", job, started, caller).await {
        tracing::warn!(%job, error = %e.message, "a bulk delete job could not start");
        return;
    }
    let (mut deleted, mut failed) = (0usize, 0usize);
    let mut problems = Vec::new();
    for Selection { table, predicate } in selections {
        // Found once, on a blocking thread: a large table read against a long `In` list is one scan, and the
        // async workers keep serving meanwhile.
        let reader = env.clone();
        let name = table.clone();
        let found = tokio::task::spawn_blocking(move || {
            let data = reader.store.read();
            let rows = data.tables.get(&name)?;
            Some(
                rows.iter()
                    .filter(|(_, row)| predicate.as_ref().is_none_or(|p| p.matches(row)))
                    .map(|(id, _)| *id)
                    .collect::<Vec<Uuid>>(),
            )
        })
        .await
        .ok()
        .flatten();
        let Some(ids) = found else {
            problems.push(format!("The table {table} no longer exists."));
            continue;
        };
        for (done, slice) in ids.chunks(SLICE).enumerate() {
            let removed = env
                .store
                .write(|data, journal| {
                    if data.schema.table(&table).is_none() {
                        return Ok::<_, crate::store::JournalError>(None);
                    }
                    let present: Vec<Uuid> = slice
                        .iter()
                        .copied()
                        .filter(|id| data.tables.get(&table).is_some_and(|rows| rows.get(id).is_some()))
                        .collect();
                    for id in &present {
                        if data.rows(&table).get(id).is_none() {
                            continue; // gone with a row deleted before it, through a cascade
                        }
                        // An activitypointer row is deleted as its activity: the activity's delete takes it along.
                        let activity = (table == activities::POINTER)
                            .then(|| data.rows(&table).get(id).and_then(activities::activity_of).map(str::to_string))
                            .flatten()
                            .filter(|activity| data.schema.table(activity).is_some());
                        data.remove_row(journal, activity.as_deref().unwrap_or(&table), *id);
                    }
                    Ok(Some(present.len()))
                })
                .await;
            match removed {
                Ok(Some(n)) => deleted += n,
                Ok(None) | Err(_) => {
                    let left = ids.len() - done * SLICE;
                    failed += left;
                    problems.push(match removed {
                        Err(e) => format!("{left} records of {table} could not be deleted: {e}."),
                        _ => format!("The table {table} was deleted while the job ran; {left} records were left."),
                    });
                    break;
                }
            }
            tokio::task::yield_now().await;
        }
    }
    let status = if problems.is_empty() { 30 } else { 31 };
    let message = (!problems.is_empty()).then(|| format!("{} {deleted} records were deleted.", problems.join(" ")));
    let finished = json!({"statecode": 3, "statuscode": status, "completedon": stamp(), "message": message});
    let counts = json!({"successcount": deleted, "failurecount": failed, "statecode": 3, "statuscode": status});
    for (table, id, body) in [("asyncoperation", job, finished), ("bulkdeleteoperation", operation, counts)] {
        if let Err(e) = set(&env, table, id, body, caller).await {
            tracing::warn!(%job, error = %e.message, "a bulk delete job could not record its outcome");
        }
    }
}

async fn set(env: &Environment, table: &str, id: Uuid, body: Json, caller: Uuid) -> ApiResult<()> {
    env.store.write(|data, journal| put(data, journal, table, id, body, caller, WriteKind::Upsert)).await
}

/// Jobs an emulator stopped in the middle of end as Failed when it starts again, since nothing runs them any
/// more: a client polling one sees it finish instead of waiting for ever.
pub(crate) fn fail_unfinished(
    data: &mut crate::store::Data,
    journal: &mut Vec<crate::store::Change>,
    caller: Uuid,
) -> ApiResult<()> {
    let completed = Some(&crate::value::Value::Int(3));
    for table in ["asyncoperation", "bulkdeleteoperation"] {
        let unfinished: Vec<Uuid> = data
            .tables
            .get(table)
            .map(|rows| rows.iter().filter(|(_, row)| row.get("statecode") != completed).map(|(id, _)| *id).collect())
            .unwrap_or_default();
        for id in unfinished {
            let mut body = json!({"statecode": 3, "statuscode": 31});
            if table == "asyncoperation" {
                body["message"] = json!("The emulator stopped before this job finished; submit it again.");
                body["completedon"] = json!(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            }
            put(data, journal, table, id, body, caller, WriteKind::Upsert)?;
        }
    }
    Ok(())
}
