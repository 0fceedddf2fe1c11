//! `$batch`: `multipart/mixed` requests of up to 1,000 operations, change sets that commit or roll back as
//! one, `Content-ID` references, and `Prefer: odata.continue-on-error` — answered in the multipart shape
//! Dataverse answers with.

use super::records::RecordWrite;
use super::{Request, route};
use crate::error::{ApiError, ApiResult, code};
use crate::limits::Work;
use crate::odata::path::parse_path;
use crate::odata::query::Prefer;
use crate::records::WriteOutcome;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::Value as Json;
use std::fmt::Write as _;
use uuid::Uuid;

/// The most operations one batch may hold, change set operations included.
pub const MAX_OPERATIONS: usize = 1000;

/// One operation of a batch, as its `application/http` part carries it.
#[derive(Debug)]
pub struct Operation {
    pub content_id: Option<String>,
    pub method: Method,
    /// The URL as written: relative to the host, to the service root, or absolute.
    pub url: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Debug)]
pub enum Item {
    Single(Operation),
    ChangeSet(Vec<Operation>),
}

/// An operation's answer, ready to be written as a part of the response.
struct Answer {
    content_id: Option<String>,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn failed(&self) -> bool {
        self.status.is_client_error() || self.status.is_server_error()
    }

    fn from_error(content_id: Option<String>, error: &ApiError) -> Answer {
        let mut headers = HeaderMap::new();
        headers.insert("req_id", HeaderValue::from_str(&Uuid::new_v4().to_string()).expect("a GUID is a header"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(super::ODATA_JSON));
        Answer {
            content_id,
            status: error.status,
            headers,
            body: Bytes::from(serde_json::to_vec(&error.body()).expect("JSON serializes")),
        }
    }

    async fn from_response(content_id: Option<String>, response: Response) -> (Answer, Work) {
        let (parts, body) = response.into_parts();
        let work = parts.extensions.get::<Work>().copied().unwrap_or_default();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
        let mut headers = parts.headers;
        if let Some(location) = headers.get("odata-entityid").cloned() {
            headers.insert(header::LOCATION, location);
        }
        if parts.status.is_client_error() || parts.status.is_server_error() {
            headers.insert("req_id", HeaderValue::from_str(&Uuid::new_v4().to_string()).expect("a GUID"));
        }
        (Answer { content_id, status: parts.status, headers, body }, work)
    }

    fn write(&self, out: &mut String, is_query: bool) {
        out.push_str("Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n");
        if let Some(id) = &self.content_id {
            let _ = write!(out, "Content-ID: {id}\r\n");
        }
        let reason = self.status.canonical_reason().unwrap_or("");
        let _ = write!(out, "\r\nHTTP/1.1 {} {reason}\r\n", self.status.as_u16());
        for name in
            ["req_id", "content-type", "odata-version", "location", "odata-entityid", "etag", "preference-applied"]
        {
            let Some(value) = self.headers.get(name).and_then(|v| v.to_str().ok()) else {
                if name == "odata-version" {
                    out.push_str("OData-Version: 4.0\r\n");
                }
                continue;
            };
            let shown = match name {
                "req_id" => "REQ_ID",
                "content-type" => "Content-Type",
                "odata-version" => "OData-Version",
                "location" => "Location",
                "odata-entityid" => "OData-EntityId",
                "etag" => "ETag",
                _ => "Preference-Applied",
            };
            if name == "content-type" && is_query && !self.failed() {
                let _ = write!(out, "{shown}: {value}; odata.streaming=true\r\n");
            } else {
                let _ = write!(out, "{shown}: {value}\r\n");
            }
        }
        out.push_str("\r\n");
        out.push_str(&String::from_utf8_lossy(&self.body));
        out.push_str("\r\n");
    }
}

/// `POST $batch`.
pub async fn execute(request: &Request) -> ApiResult<Response> {
    if request.method != Method::POST {
        return Err(ApiError::method_not_allowed("$batch takes POST with a multipart/mixed body."));
    }
    let content_type = request.header("content-type").unwrap_or_default();
    let boundary = boundary_of(content_type).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            code::PAYLOAD_ERROR,
            format!(
                "The batch request must have Content-Type: multipart/mixed; boundary=batch_<id> (got '{content_type}')."
            ),
        )
    })?;
    let items = parse_batch(&request.body, &boundary)?;
    let operations: usize = items.iter().map(|i| if let Item::ChangeSet(ops) = i { ops.len() } else { 1 }).sum();
    if let Some(Item::ChangeSet(ops)) =
        items.iter().find(|i| matches!(i, Item::ChangeSet(ops) if ops.len() > MAX_OPERATIONS))
    {
        return Err(malformed(format!(
            "The current change set contains too many operations ({}). A maximum number of '{MAX_OPERATIONS}' operations are allowed in a change set.",
            ops.len()
        )));
    }
    if operations > MAX_OPERATIONS {
        return Err(malformed(format!(
            "The current batch message contains too many parts ({operations}). Only batch messages with a maximum number of '{MAX_OPERATIONS}' query operations, including changeset operations, are allowed."
        )));
    }

    let response_boundary = format!("batchresponse_{}", Uuid::new_v4());
    let mut out = String::new();
    let mut work = Work::default();
    let mut failed = false;
    for item in &items {
        let _ = write!(out, "--{response_boundary}\r\n");
        match item {
            Item::Single(operation) => {
                let (answer, done) = run_single(request, operation).await;
                work = work + done;
                answer.write(&mut out, operation.method == Method::GET);
                failed = answer.failed();
            }
            Item::ChangeSet(operations) => match run_change_set(request, operations).await {
                Ok(answers) => {
                    work = work + Work::written(answers.len());
                    let changeset_boundary = format!("changesetresponse_{}", Uuid::new_v4());
                    let _ = write!(out, "Content-Type: multipart/mixed; boundary={changeset_boundary}\r\n\r\n");
                    for answer in &answers {
                        let _ = write!(out, "--{changeset_boundary}\r\n");
                        answer.write(&mut out, false);
                    }
                    let _ = write!(out, "--{changeset_boundary}--\r\n");
                }
                // A failed change set answers with the one failure: everything else in it was rolled back.
                Err(answer) => {
                    answer.write(&mut out, false);
                    failed = true;
                }
            },
        }
        if failed && !request.prefer.continue_on_error {
            break;
        }
    }
    let _ = write!(out, "--{response_boundary}--\r\n");

    let status = if failed && !request.prefer.continue_on_error { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    let mut response = Response::new(Body::from(out));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&format!("multipart/mixed; boundary={response_boundary}")).expect("a boundary is ASCII"),
    );
    if request.prefer.continue_on_error {
        super::set_header(&mut response, "preference-applied", "odata.continue-on-error");
    }
    Ok(super::with_work(response, work))
}

fn malformed(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code::PAYLOAD_ERROR, message)
}

/// The request a batch operation makes, as if it had come alone.
fn operation_request(batch: &Request, operation: &Operation, url: &str, body: Bytes) -> ApiResult<(Request, Uri)> {
    let path_and_query = local_path(batch, url)?;
    let uri: Uri = path_and_query
        .parse()
        .map_err(|_| malformed(format!("'{url}' in the batch is not a URL of this environment's Web API.")))?;
    let request = Request {
        env: batch.env.clone(),
        caller: batch.caller,
        base: batch.base.clone(),
        method: operation.method.clone(),
        prefer: Prefer::from_headers(&operation.headers),
        headers: operation.headers.clone(),
        raw_query: uri.query().map(str::to_string),
        body,
    };
    Ok((request, uri))
}

/// `/api/data/v9.2/contacts?…` from an absolute URL, a host-relative one, or one relative to the service root.
fn local_path(batch: &Request, url: &str) -> ApiResult<String> {
    let without_host = match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => url,
    };
    if without_host.starts_with("/api/data/") {
        return Ok(without_host.to_string());
    }
    let version = batch.base.rsplit('/').next().unwrap_or("v9.2");
    Ok(format!("/api/data/{version}/{}", without_host.trim_start_matches('/')))
}

async fn run_single(batch: &Request, operation: &Operation) -> (Answer, Work) {
    let content_id = operation.content_id.clone();
    let (request, uri) = match operation_request(batch, operation, &operation.url, operation.body.clone()) {
        Ok(r) => r,
        Err(e) => return (Answer::from_error(content_id, &e), Work::default()),
    };
    if uri.path().trim_end_matches('/').ends_with("/$batch") {
        return (Answer::from_error(content_id, &malformed("Batches cannot be nested.")), Work::default());
    }
    let origin = batch.base.split("/api/data/").next().unwrap_or_default().to_string();
    let routed = Box::pin(route(
        request.env.clone(),
        request.caller,
        origin,
        request.method.clone(),
        uri,
        request.headers.clone(),
        request.body.clone(),
    ))
    .await;
    match routed {
        Ok(response) => Answer::from_response(content_id, response).await,
        Err(error) => (Answer::from_error(content_id, &error), Work::default()),
    }
}

/// Why a change set failed: the operation at fault (none when the state file could not be written).
struct ChangeSetFailure {
    index: Option<usize>,
    error: ApiError,
}

impl From<crate::store::JournalError> for ChangeSetFailure {
    fn from(e: crate::store::JournalError) -> Self {
        ChangeSetFailure { index: None, error: ApiError::from(e) }
    }
}

/// Runs a change set as one unit under the store's lock: every write, or none.
async fn run_change_set(batch: &Request, operations: &[Operation]) -> Result<Vec<Answer>, Answer> {
    let caller = batch.caller;
    let applied = batch
        .env
        .store
        .write(|data, journal| {
            data.atomically(journal, |data, journal| {
                let mut applied: Vec<(Request, RecordWrite, WriteOutcome)> = Vec::new();
                for (index, operation) in operations.iter().enumerate() {
                    let fail = |error: ApiError| ChangeSetFailure { index: Some(index), error };
                    if operation.method == Method::GET {
                        return Err(fail(malformed(
                            "A change set holds only writes (POST, PATCH, PUT, DELETE); send the GET outside it.",
                        )));
                    }
                    let resolve = |reference: &str| {
                        let wanted = reference.strip_prefix('$')?;
                        operations[..applied.len()]
                            .iter()
                            .zip(&applied)
                            .find(|(op, _)| op.content_id.as_deref() == Some(wanted))
                            .map(|(_, (request, write, outcome))| write.entity_url(request, outcome))
                    };
                    let url = resolve_url(&operation.url, &resolve).map_err(fail)?;
                    let body = resolve_body(&operation.body, &resolve).map_err(fail)?;
                    let (request, uri) = operation_request(batch, operation, &url, body).map_err(fail)?;
                    let rest = uri.path().split_once("/api/data/").map_or("", |(_, r)| r);
                    let path = rest.split_once('/').map_or("", |(_, p)| p);
                    let segments = parse_path(path).map_err(fail)?;
                    let write = RecordWrite::plan(&request, data, &segments).map_err(fail)?.ok_or_else(|| {
                        fail(malformed(format!(
                            "{} {url} cannot be part of a change set: a change set holds creates, updates, upserts and deletes of single records.",
                            operation.method
                        )))
                    })?;
                    let outcome = write.apply(data, journal, caller).map_err(fail)?;
                    applied.push((request, write, outcome));
                }
                Ok::<_, ChangeSetFailure>(applied)
            })
        })
        .await;
    let applied = applied.map_err(|failure| {
        let content_id = failure.index.and_then(|i| operations[i].content_id.clone());
        Answer::from_error(content_id, &failure.error)
    })?;
    let mut answers = Vec::with_capacity(applied.len());
    for (operation, (request, write, outcome)) in operations.iter().zip(applied) {
        let content_id = operation.content_id.clone();
        answers.push(match write.respond(&request, &outcome) {
            Ok(response) => Answer::from_response(content_id, response).await.0,
            Err(e) => Answer::from_error(content_id, &e),
        });
    }
    Ok(answers)
}

/// Replaces a leading `$<Content-ID>` in a URL with the URL of the record that operation wrote.
fn resolve_url(url: &str, resolve: &impl Fn(&str) -> Option<String>) -> ApiResult<String> {
    let Some(rest) = url.strip_prefix('$') else { return Ok(url.to_string()) };
    let end = rest.find(|c: char| !c.is_ascii_alphanumeric() && c != '_' && c != '-').unwrap_or(rest.len());
    let reference = &url[..end + 1];
    let target = resolve(reference).ok_or_else(|| undeclared(reference))?;
    Ok(format!("{target}{}", &rest[end..]))
}

/// Replaces `"$<Content-ID>"` in `@odata.bind` and `@odata.id` values with the record that operation wrote.
fn resolve_body(body: &Bytes, resolve: &impl Fn(&str) -> Option<String>) -> ApiResult<Bytes> {
    if !body.contains(&b'$') {
        return Ok(body.clone());
    }
    let Ok(Json::Object(mut object)) = serde_json::from_slice::<Json>(body) else { return Ok(body.clone()) };
    for (name, value) in object.iter_mut() {
        if !(name.ends_with("@odata.bind") || name == "@odata.id") {
            continue;
        }
        if let Json::String(text) = value
            && text.starts_with('$')
        {
            let url = resolve(text).ok_or_else(|| undeclared(text))?;
            // Bind to the record by its path from the service root, as clients write it.
            *text = url
                .rsplit_once("/api/data/")
                .and_then(|(_, r)| r.split_once('/'))
                .map_or(url.clone(), |(_, p)| p.to_string());
        }
    }
    Ok(Bytes::from(serde_json::to_vec(&object).expect("JSON serializes")))
}

fn undeclared(reference: &str) -> ApiError {
    malformed(format!("Content-ID Reference: '{reference}' does not exist in the batch context."))
}

// --------------------------------------------------------------------------------------------- parsing

/// The boundary of a `multipart/mixed` content type; quotes optional.
pub fn boundary_of(content_type: &str) -> Option<String> {
    let mut items = content_type.split(';').map(str::trim);
    if !items.next()?.eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    items
        .find_map(|item| {
            let (name, value) = item.split_once('=')?;
            name.trim().eq_ignore_ascii_case("boundary").then(|| value.trim().trim_matches('"').to_string())
        })
        .filter(|b| !b.is_empty())
}

fn not_readable(detail: &str) -> ApiError {
    malformed(format!(
        "Error processing batch request: {detail} InnerException : System.ArgumentException: Stream was not readable."
    ))
}

/// The parts between `--boundary` delimiters. The outermost body must end with the close delimiter and a
/// CRLF, and every line of the framing must end with CRLF, as Dataverse requires.
fn split_parts<'b>(body: &'b [u8], boundary: &str, outermost: bool) -> ApiResult<Vec<&'b [u8]>> {
    let open = format!("--{boundary}");
    let start = find(body, open.as_bytes()).ok_or_else(|| not_readable(&format!("no '{open}' delimiter found.")))?;
    let delimiter = format!("\r\n--{boundary}");
    let mut parts = Vec::new();
    let mut cursor = start + open.len();
    loop {
        let after = &body[cursor..];
        if after.starts_with(b"--") {
            if outermost && !after[2..].starts_with(b"\r\n") {
                return Err(not_readable("the batch must end with a CRLF after its close delimiter."));
            }
            return Ok(parts);
        }
        if !after.starts_with(b"\r\n") {
            return Err(not_readable(&format!("the line '{open}' must end with CRLF.")));
        }
        let content_start = cursor + 2;
        let next = find(&body[content_start..], delimiter.as_bytes())
            .ok_or_else(|| not_readable(&format!("the close delimiter '{open}--' is missing.")))?;
        parts.push(&body[content_start..content_start + next]);
        cursor = content_start + next + delimiter.len();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A head of CRLF lines, a blank line, and a body: a MIME part, or the HTTP message inside one.
struct Section<'p> {
    headers: HeaderMap,
    /// Head lines that are not headers: an HTTP request line.
    other_lines: Vec<&'p [u8]>,
    body: &'p [u8],
}

/// Splits `headers CRLF CRLF body`; the headers must be CRLF lines.
fn headers_and_body(part: &[u8]) -> ApiResult<Section<'_>> {
    let (head, body) = match find(part, b"\r\n\r\n") {
        Some(i) => (&part[..i], &part[i + 4..]),
        None if part.ends_with(b"\r\n") => (&part[..part.len() - 2], &part[part.len()..]),
        None => (part, &part[part.len()..]),
    };
    let lines: Vec<&[u8]> = if head.is_empty() { Vec::new() } else { head.split(|b| *b == b'\n').collect() };
    if lines.len() > 1 && lines[..lines.len() - 1].iter().any(|l| !l.ends_with(b"\r")) {
        return Err(not_readable("every line of a part's headers must end with CRLF, not LF alone."));
    }
    let mut headers = HeaderMap::new();
    let mut other = Vec::new();
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = std::str::from_utf8(line).map_err(|_| not_readable("a part's headers are not UTF-8."))?;
        match text.split_once(':') {
            Some((name, value)) if !name.contains(' ') => {
                let name = HeaderName::from_bytes(name.trim().as_bytes())
                    .map_err(|_| not_readable(&format!("'{name}' is not a header name.")))?;
                let value = HeaderValue::from_str(value.trim())
                    .map_err(|_| not_readable(&format!("the value of '{name}' is not a header value.")))?;
                headers.append(name, value);
            }
            _ => other.push(line),
        }
    }
    Ok(Section { headers, other_lines: other, body })
}

pub fn parse_batch(body: &[u8], boundary: &str) -> ApiResult<Vec<Item>> {
    split_parts(body, boundary, true)?
        .into_iter()
        .map(|part| {
            let Section { headers, body: content, .. } = headers_and_body(part)?;
            let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
            if let Some(changeset) = boundary_of(content_type) {
                let operations = split_parts(content, &changeset, false)?
                    .into_iter()
                    .map(parse_operation)
                    .collect::<ApiResult<Vec<_>>>()?;
                return Ok(Item::ChangeSet(operations));
            }
            parse_operation(part).map(Item::Single)
        })
        .collect()
}

/// An `application/http` part: its MIME headers, then the request line, its headers and its body.
fn parse_operation(part: &[u8]) -> ApiResult<Operation> {
    let Section { headers: mime, body: http, .. } = headers_and_body(part)?;
    let content_type = mime.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !content_type.to_ascii_lowercase().starts_with("application/http") {
        return Err(not_readable(&format!(
            "each part must have Content-Type: application/http (or be a change set), not '{content_type}'."
        )));
    }
    let content_id = mime.get("content-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let Section { headers, other_lines: request_line, body } = headers_and_body(http)?;
    let line = request_line
        .first()
        .and_then(|l| std::str::from_utf8(l).ok())
        .ok_or_else(|| not_readable("a part has no request line (METHOD URL HTTP/1.1)."))?;
    let mut words = line.split_whitespace();
    let (Some(method), Some(url)) = (words.next(), words.next()) else {
        return Err(not_readable(&format!("'{line}' is not a request line (METHOD URL HTTP/1.1).")));
    };
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| not_readable(&format!("'{method}' is not an HTTP method.")))?;
    Ok(Operation { content_id, method, url: url.to_string(), headers, body: Bytes::copy_from_slice(body) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_with_and_without_quotes() {
        assert_eq!(boundary_of("multipart/mixed; boundary=\"batch_1\"").as_deref(), Some("batch_1"));
        assert_eq!(boundary_of("multipart/mixed;boundary=batch_AAA123").as_deref(), Some("batch_AAA123"));
        assert_eq!(boundary_of("application/json"), None);
    }

    #[test]
    fn the_documented_request_parses() {
        let body = "--batch_1\r\nContent-Type: multipart/mixed; boundary=\"changeset_2\"\r\n\r\n\
            --changeset_2\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: 1\r\n\r\n\
            POST /api/data/v9.2/tasks HTTP/1.1\r\nContent-Type: application/json; type=entry\r\n\r\n{\"subject\":\"x\"}\r\n\
            --changeset_2--\r\n\r\n\
            --batch_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
            GET /api/data/v9.2/accounts?$select=name HTTP/1.1\r\n\r\n\r\n\
            --batch_1--\r\n";
        let items = parse_batch(body.as_bytes(), "batch_1").unwrap();
        let [Item::ChangeSet(set), Item::Single(get)] = items.as_slice() else { panic!("{items:?}") };
        assert_eq!(set[0].content_id.as_deref(), Some("1"));
        assert_eq!(set[0].method, Method::POST);
        assert_eq!(&set[0].body[..], b"{\"subject\":\"x\"}");
        assert_eq!(get.url, "/api/data/v9.2/accounts?$select=name");
        assert!(get.body.is_empty());
    }

    #[test]
    fn bare_line_feeds_and_a_missing_final_crlf_are_refused() {
        let lf = "--b\nContent-Type: application/http\n\nGET /api/data/v9.2/contacts HTTP/1.1\n\n--b--\n";
        assert_eq!(parse_batch(lf.as_bytes(), "b").unwrap_err().code, code::PAYLOAD_ERROR);
        let no_crlf =
            "--b\r\nContent-Type: application/http\r\n\r\nGET /api/data/v9.2/contacts HTTP/1.1\r\n\r\n\r\n--b--";
        let error = parse_batch(no_crlf.as_bytes(), "b").unwrap_err();
        assert!(error.message.contains("Stream was not readable"), "{}", error.message);
    }
}
