//! Change tracking: `Prefer: odata.track-changes` reads a table whole and ends with an `@odata.deltaLink`;
//! following it returns the rows created or changed since, then the rows deleted since, and a new link.
//!
//! A delta token is `<version>!<MM/dd/yyyy HH:mm:ss>` as Dataverse writes it: every row write and every
//! delete takes the next version, so "changed since" is a range of versions. Tokens older than the
//! environment's retention are refused, and the client must read the table whole again.

use super::records::page_size;
use super::{Request, WriteJson, collection_response, set_header, with_work};
use crate::error::{ApiError, ApiResult, code};
use crate::limits::Work;
use crate::odata::paging::MAX_PAGE;
use crate::odata::query::{QueryOptions, encode_query_option};
use crate::records::{ProjectedRow, Projection, Selection};
use crate::schema::Table;
use crate::store::Data;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value as Json, json};
use std::ops::Bound;
use uuid::Uuid;

const TOKEN_TIME: &str = "%m/%d/%Y %H:%M:%S";

/// A delta token: the version a client has seen everything up to, and when it was issued.
#[derive(Debug, Clone, Copy, PartialEq)]
struct DeltaToken {
    version: i64,
    issued: DateTime<Utc>,
}

impl DeltaToken {
    fn now(version: i64) -> Self {
        DeltaToken { version, issued: Utc::now() }
    }

    fn to_text(self) -> String {
        format!("{}!{}", self.version, self.issued.format(TOKEN_TIME))
    }

    fn parse(text: &str) -> ApiResult<Self> {
        let invalid = || {
            ApiError::bad_query(format!(
                "'{text}' is not a delta token this environment issued; follow @odata.deltaLink as it was returned."
            ))
        };
        let (version, issued) = text.split_once('!').ok_or_else(invalid)?;
        let version = version.parse().map_err(|_| invalid())?;
        let issued = NaiveDateTime::parse_from_str(issued, TOKEN_TIME).map_err(|_| invalid())?.and_utc();
        Ok(DeltaToken { version, issued })
    }
}

/// Where the next page of a tracked read starts, carried in `$skiptoken`.
enum Resume {
    /// The initial read: rows after this id, and the version the whole read stands for.
    Initial { after: Uuid, version: i64 },
    /// A delta read: changes after this version.
    Delta { after: i64 },
}

impl Resume {
    fn to_skiptoken(&self, page: u32) -> String {
        match self {
            Resume::Initial { after, version } => {
                format!("<cookie pagenumber=\"{page}\" istracking=\"True\" last=\"{after}\" version=\"{version}\" />")
            }
            Resume::Delta { after } => {
                format!("<cookie pagenumber=\"{page}\" istracking=\"True\" lastversion=\"{after}\" />")
            }
        }
    }

    fn parse(token: &str) -> ApiResult<(Resume, u32)> {
        let invalid = || {
            ApiError::bad_query(
                "The $skiptoken is not a paging cookie this service issued; follow @odata.nextLink as it was returned.",
            )
        };
        let attribute = |name: &str| {
            let needle = format!(" {name}=\"");
            let start = token.find(&needle)? + needle.len();
            Some(&token[start..start + token[start..].find('"')?])
        };
        let page = attribute("pagenumber").and_then(|p| p.parse().ok()).ok_or_else(invalid)?;
        if let Some(after) = attribute("lastversion") {
            return Ok((Resume::Delta { after: after.parse().map_err(|_| invalid())? }, page));
        }
        let after = attribute("last").and_then(|l| l.parse().ok()).ok_or_else(invalid)?;
        let version = attribute("version").and_then(|v| v.parse().ok()).ok_or_else(invalid)?;
        Ok((Resume::Initial { after, version }, page))
    }
}

/// The options Dataverse refuses on a tracked read, checked in its order.
fn refuse_unsupported(options: &QueryOptions) -> ApiResult<()> {
    let used = [
        ("filter", options.filter.is_some()),
        ("orderby", !options.orderby.is_empty()),
        ("expand", options.expand.is_some()),
        ("top", options.top.is_some()),
    ];
    match used.iter().find(|(_, on)| *on) {
        Some((name, _)) => Err(ApiError::bad_query(format!(
            "The \"${name}\" query parameter isn't supported when Change Tracking is enabled."
        ))),
        None => Ok(()),
    }
}

/// `GET /<set>` with `Prefer: odata.track-changes`, or with a `$deltatoken`.
pub fn query(request: &Request, table: &Table, options: &QueryOptions) -> ApiResult<Response> {
    if !table.change_tracking_enabled {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            code::CHANGE_TRACKING_NOT_ENABLED,
            format!(
                "Entity {} isn't enabled for change tracking. Enable it with PUT EntityDefinitions(LogicalName='{}') and \"ChangeTrackingEnabled\": true.",
                table.logical_name, table.logical_name
            ),
        ));
    }
    refuse_unsupported(options)?;
    let selection = Selection::parse(table, options.select.as_ref())?;
    let limit = page_size(request)?.unwrap_or(MAX_PAGE);
    let resume = options.skiptoken.as_deref().map(Resume::parse).transpose()?;
    let token = options.deltatoken.as_deref().map(DeltaToken::parse).transpose()?;
    if let Some(token) = token
        && Utc::now().signed_duration_since(token.issued).to_std().unwrap_or_default() > request.env.change_retention
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            code::EXPIRED_VERSION_STAMP,
            "Version stamp associated with the client has expired. Please perform a full sync.",
        ));
    }

    let data = request.env.store.read();
    let projection = Projection::new(&data, table, &selection, &request.prefer);
    let (values, next) = match (token, resume) {
        (None, None) => initial_page(&data, table, &projection, None, data.version, limit),
        (None, Some((Resume::Initial { after, version }, page))) => {
            let (values, next) = initial_page(&data, table, &projection, Some(after), version, limit);
            (values, next.map(|(resume, _)| (resume, page)))
        }
        (None, Some((Resume::Delta { .. }, _))) => {
            return Err(ApiError::bad_query("This $skiptoken belongs to a delta read: keep its $deltatoken."));
        }
        (Some(token), resume) => {
            let after = match resume {
                Some((Resume::Delta { after }, _)) => after,
                Some(_) => return Err(ApiError::bad_query("The $skiptoken does not belong to this delta read.")),
                None => token.version,
            };
            let page = resume.map_or(1, |(_, p)| p);
            let (values, next) = delta_page(&data, request, table, &projection, after, limit);
            (values, next.map(|after| (Resume::Delta { after }, page)))
        }
    };
    let context = format!("{}/$metadata#{}{}", request.base, table.entity_set_name, selection.context_suffix(table));
    let context = if token.is_some() { format!("{context}/$delta") } else { context };
    let head = Map::from_iter([("@odata.context".to_string(), Json::String(context))]);
    let returned = values.len();
    let mut tail = Map::new();
    let mut query: Vec<(String, String)> =
        options.without_skiptoken.iter().filter(|(k, _)| k != "$deltatoken").cloned().collect();
    match next {
        Some((resume, page)) => {
            if let Some(token) = &options.deltatoken {
                query.push(("$deltatoken".into(), token.clone()));
            }
            query.push(("$skiptoken".into(), resume.to_skiptoken(page + 1)));
            tail.insert("@odata.nextLink".into(), Json::String(link(request, table, &query)));
        }
        None => {
            query.push(("$deltatoken".into(), DeltaToken::now(data.version).to_text()));
            tail.insert("@odata.deltaLink".into(), Json::String(link(request, table, &query)));
        }
    }
    let response = collection_response(&head, &values, &tail);
    drop(data);
    let mut response = with_work(response, Work::read(returned));
    let mut applied = vec!["odata.track-changes".to_string()];
    if let Some(n) = page_size(request)? {
        applied.push(format!("odata.maxpagesize={n}"));
    }
    // Annotations apply to tracked reads as to any query: formatted values, lookup tables, on every page.
    if let Some(a) = &request.prefer.annotations {
        applied.push(format!("odata.include-annotations=\"{a}\""));
    }
    set_header(&mut response, "preference-applied", &applied.join(","));
    Ok(response)
}

fn link(request: &Request, table: &Table, query: &[(String, String)]) -> String {
    let query: Vec<String> = query.iter().map(|(k, v)| encode_query_option(k, v)).collect();
    format!("{}/{}?{}", request.base, table.entity_set_name, query.join("&"))
}

/// An entry of a tracked read's page: a row created or changed, or a row deleted (`$deletedEntity`).
enum Entry<'a> {
    Row(ProjectedRow<'a>),
    Deleted(Json),
}

impl WriteJson for Entry<'_> {
    fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Entry::Row(row) => row.write_json(out),
            Entry::Deleted(json) => serde_json::to_writer(out, json).expect("writing to memory does not fail"),
        }
    }
}

type Page<'a> = (Vec<Entry<'a>>, Option<(Resume, u32)>);

/// A page of the initial read: every row, by id; the last page's link carries `version`.
fn initial_page<'a>(
    data: &'a Data,
    table: &Table,
    projection: &'a Projection<'a>,
    after: Option<Uuid>,
    version: i64,
    limit: usize,
) -> Page<'a> {
    let start = after.map_or(Bound::Unbounded, Bound::Excluded);
    let mut rows: Vec<(&Uuid, _)> =
        data.rows(&table.logical_name).range((start, Bound::Unbounded)).take(limit + 1).collect();
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = more.then(|| (Resume::Initial { after: *rows.last().expect("a full page").0, version }, 1));
    let values = rows.into_iter().map(|(_, row)| Entry::Row(projection.row(row))).collect();
    (values, next)
}

/// A page of a delta read: rows written after `after` by version, then rows deleted after it. Returns the
/// version to resume after when more follow.
fn delta_page<'a>(
    data: &'a Data,
    request: &Request,
    table: &Table,
    projection: &'a Projection<'a>,
    after: i64,
    limit: usize,
) -> (Vec<Entry<'a>>, Option<i64>) {
    let rows = data.rows(&table.logical_name);
    let range = (Bound::Excluded(after), Bound::Unbounded);
    let mut changed = rows.versions(range).peekable();
    let mut deleted = rows.deleted.range(range).peekable();
    let (mut upserts, mut deletes, mut last) = (Vec::new(), Vec::new(), after);
    while upserts.len() + deletes.len() < limit {
        let take_changed = match (changed.peek(), deleted.peek()) {
            (Some((v, ..)), Some((w, _))) => v < w,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        if take_changed {
            let (version, _, row) = changed.next().expect("peeked");
            last = *version;
            upserts.push(Entry::Row(projection.row(row)));
        } else {
            let (version, tombstone) = deleted.next().expect("peeked");
            last = *version;
            // A row deleted and then written again under the same id is not gone.
            if rows.get(&tombstone.id).is_none() {
                deletes.push(Entry::Deleted(json!({
                    "@odata.context": format!("{}/$metadata#{}/$deletedEntity", request.base, table.entity_set_name),
                    "id": tombstone.id,
                    "reason": "deleted",
                })));
            }
        }
    }
    let more = changed.peek().is_some() || deleted.peek().is_some();
    upserts.extend(deletes);
    (upserts, more.then_some(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_read_back() {
        let token = DeltaToken::now(919042);
        let text = token.to_text();
        assert!(text.starts_with("919042!"), "{text}");
        let parsed = DeltaToken::parse(&text).unwrap();
        assert_eq!(parsed.version, 919042);
        assert_eq!(parsed.issued.timestamp(), token.issued.timestamp());
        assert!(DeltaToken::parse("919042!08/22/2017 08:10:44").is_ok());
        assert!(DeltaToken::parse("nonsense").is_err());
    }
}
