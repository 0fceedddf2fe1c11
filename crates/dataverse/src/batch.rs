//! `$batch`: many operations in one `multipart/mixed` request, change sets that commit or roll back as one,
//! `Content-ID` references (`$1`), and `Prefer: odata.continue-on-error` — with an outcome for every
//! operation sent.

use crate::client::{Client, Request};
use crate::error::{ApiError, Error};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::de::DeserializeOwned;
use serde_json::Value as Json;
use std::fmt::Write as _;
use uuid::Uuid;

/// The most operations one batch may hold, change set operations included.
pub const MAX_OPERATIONS: usize = 1000;

/// One operation in a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub method: Method,
    /// Relative to the Web API root (`contacts(…)`), an absolute URL, or a `$n` Content-ID reference.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Json>,
    pub content_id: Option<String>,
}

impl Operation {
    pub fn new(method: Method, target: impl Into<String>) -> Self {
        Operation { method, target: target.into(), headers: Vec::new(), body: None, content_id: None }
    }
    pub fn get(target: impl Into<String>) -> Self {
        Self::new(Method::GET, target)
    }
    pub fn post(target: impl Into<String>, body: Json) -> Self {
        Self::new(Method::POST, target).body(body)
    }
    pub fn patch(target: impl Into<String>, body: Json) -> Self {
        Self::new(Method::PATCH, target).body(body)
    }
    pub fn delete(target: impl Into<String>) -> Self {
        Self::new(Method::DELETE, target)
    }
    pub fn body(mut self, body: Json) -> Self {
        self.body = Some(body);
        self
    }
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    /// Names the operation, so later operations of its change set can refer to what it created as `$id`.
    pub fn content_id(mut self, id: impl Into<String>) -> Self {
        self.content_id = Some(id.into());
        self
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum BatchItem {
    Single(Operation),
    /// Writes that commit together or not at all.
    ChangeSet(Vec<Operation>),
}

/// A `$batch` request being built.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub items: Vec<BatchItem>,
    /// Run every operation even after one fails (else the batch stops at the first failure).
    pub continue_on_error: bool,
}

impl Batch {
    pub fn new() -> Self {
        Batch::default()
    }

    pub fn continue_on_error(mut self) -> Self {
        self.continue_on_error = true;
        self
    }

    pub fn push(&mut self, operation: Operation) -> &mut Self {
        self.items.push(BatchItem::Single(operation));
        self
    }

    pub fn change_set(&mut self, operations: Vec<Operation>) -> &mut Self {
        self.items.push(BatchItem::ChangeSet(operations));
        self
    }

    pub fn operations(&self) -> usize {
        self.items.iter().map(|i| if let BatchItem::ChangeSet(ops) = i { ops.len() } else { 1 }).sum()
    }

    /// The multipart body, every line ending in CRLF as Dataverse requires. `root` is the Web API root
    /// path (`/api/data/v9.2/`) that relative targets are written under.
    pub fn encode(&self, boundary: &str, change_set_boundary: impl Fn(usize) -> String, root: &str) -> String {
        let mut out = String::new();
        for (index, item) in self.items.iter().enumerate() {
            let _ = write!(out, "--{boundary}\r\n");
            match item {
                BatchItem::Single(operation) => write_operation(&mut out, operation, root),
                BatchItem::ChangeSet(operations) => {
                    let inner = change_set_boundary(index);
                    let _ = write!(out, "Content-Type: multipart/mixed; boundary=\"{inner}\"\r\n\r\n");
                    for operation in operations {
                        let _ = write!(out, "--{inner}\r\n");
                        write_operation(&mut out, operation, root);
                    }
                    let _ = write!(out, "--{inner}--\r\n\r\n");
                }
            }
        }
        let _ = write!(out, "--{boundary}--\r\n");
        out
    }
}

fn write_operation(out: &mut String, operation: &Operation, root: &str) {
    out.push_str("Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n");
    if let Some(id) = &operation.content_id {
        let _ = write!(out, "Content-ID: {id}\r\n");
    }
    let target = &operation.target;
    let url = if target.starts_with('$') || target.starts_with("http://") || target.starts_with("https://") {
        target.clone()
    } else {
        format!("{root}{target}")
    };
    let _ = write!(out, "\r\n{} {url} HTTP/1.1\r\n", operation.method);
    if operation.body.is_some() {
        out.push_str("Content-Type: application/json; type=entry\r\n");
    }
    for (name, value) in &operation.headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.push_str("\r\n");
    match &operation.body {
        Some(body) => {
            out.push_str(&body.to_string());
            out.push_str("\r\n");
        }
        None => out.push_str("\r\n"),
    }
}

/// One operation's answer inside a batch response.
#[derive(Debug, Clone, PartialEq)]
pub struct PartResponse {
    pub content_id: Option<String>,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl PartResponse {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_str(&self.body)
            .map_err(|e| Error::UnexpectedBody { url: "$batch".into(), detail: e.to_string() })
    }

    pub fn error(&self) -> ApiError {
        ApiError::from_parts(self.status, &self.headers, self.body.as_bytes())
    }
}

/// A response item: one answer, or a committed change set's answers.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseItem {
    Single(PartResponse),
    ChangeSet(Vec<PartResponse>),
}

/// A batch response that is not the multipart shape the Web API sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the $batch response is malformed: {0}")]
pub struct MalformedBatch(String);

fn boundary_of(content_type: &str) -> Option<String> {
    content_type.split(';').map(str::trim).find_map(|p| {
        let value = p.strip_prefix("boundary=")?;
        Some(value.trim_matches('"').to_string())
    })
}

/// The parts between `--boundary` delimiters, up to the closing `--boundary--`.
fn split_parts<'a>(body: &'a str, boundary: &str) -> Result<Vec<&'a str>, MalformedBatch> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut rest = match body.find(&delimiter) {
        Some(i) => &body[i + delimiter.len()..],
        None => return Err(MalformedBatch(format!("no part starts with {delimiter}"))),
    };
    loop {
        if rest.starts_with("--") {
            return Ok(parts);
        }
        let start = rest.find('\n').map(|i| i + 1).unwrap_or(rest.len());
        rest = &rest[start..];
        let next = format!("\n{delimiter}");
        let end = rest.find(&next).ok_or_else(|| MalformedBatch(format!("the part is not closed by {delimiter}")))?;
        let part = rest[..end].strip_suffix('\r').unwrap_or(&rest[..end]);
        parts.push(part);
        rest = &rest[end + next.len()..];
    }
}

/// Splits headers from what follows the first blank line.
fn split_headers(text: &str) -> (HeaderMap, &str) {
    let (head, rest) = match (text.find("\r\n\r\n"), text.find("\n\n")) {
        (Some(a), Some(b)) if b < a => (&text[..b], &text[b + 2..]),
        (Some(a), _) => (&text[..a], &text[a + 4..]),
        (None, Some(b)) => (&text[..b], &text[b + 2..]),
        (None, None) => (text, ""),
    };
    let mut headers = HeaderMap::new();
    for line in head.lines() {
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(name), Ok(value)) =
                (HeaderName::from_bytes(name.trim().as_bytes()), HeaderValue::from_str(value.trim()))
        {
            headers.append(name, value);
        }
    }
    (headers, rest)
}

fn parse_http_part(part: &str) -> Result<PartResponse, MalformedBatch> {
    let (part_headers, message) = split_headers(part);
    let content_id = part_headers.get("content-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let message = message.trim_start_matches(['\r', '\n']);
    let (status_line, rest) = message.split_once('\n').unwrap_or((message, ""));
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| MalformedBatch(format!("'{}' is not an HTTP status line", status_line.trim())))?;
    let (headers, body) = if rest.trim().is_empty() { (HeaderMap::new(), "") } else { split_headers(rest) };
    Ok(PartResponse { content_id, status, headers, body: body.trim_end_matches(['\r', '\n']).to_string() })
}

/// Reads a `$batch` response body, given its `Content-Type` (which names the boundary).
pub fn parse_response(content_type: &str, body: &str) -> Result<Vec<ResponseItem>, MalformedBatch> {
    let boundary = boundary_of(content_type)
        .ok_or_else(|| MalformedBatch(format!("the Content-Type '{content_type}' names no boundary")))?;
    let mut items = Vec::new();
    for part in split_parts(body, &boundary)? {
        let (headers, rest) = split_headers(part);
        let part_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
        if part_type.starts_with("multipart/mixed") {
            let inner = boundary_of(part_type).ok_or_else(|| {
                MalformedBatch(format!("the change set's Content-Type '{part_type}' names no boundary"))
            })?;
            let answers = split_parts(rest, &inner)?.into_iter().map(parse_http_part).collect::<Result<_, _>>()?;
            items.push(ResponseItem::ChangeSet(answers));
        } else {
            items.push(ResponseItem::Single(parse_http_part(part)?));
        }
    }
    Ok(items)
}

/// What became of one operation of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum OperationOutcome {
    Succeeded(PartResponse),
    Failed(ApiError),
    /// Its change set failed on another operation, so it was undone.
    RolledBack,
    /// The batch stopped at an earlier failure (no `continue_on_error`).
    NotRun,
}

impl OperationOutcome {
    pub fn succeeded(&self) -> Option<&PartResponse> {
        match self {
            OperationOutcome::Succeeded(part) => Some(part),
            _ => None,
        }
    }
}

/// Lines up the response items with the operations of the batch: one outcome per operation, in order.
pub fn outcomes(batch: &Batch, items: Vec<ResponseItem>) -> Vec<OperationOutcome> {
    let mut answers = items.into_iter();
    let mut out = Vec::with_capacity(batch.operations());
    for item in &batch.items {
        match (item, answers.next()) {
            (BatchItem::Single(_), None) => out.push(OperationOutcome::NotRun),
            (BatchItem::ChangeSet(ops), None) => out.extend(ops.iter().map(|_| OperationOutcome::NotRun)),
            (BatchItem::Single(_), Some(ResponseItem::Single(part))) => out.push(if part.is_success() {
                OperationOutcome::Succeeded(part)
            } else {
                OperationOutcome::Failed(part.error())
            }),
            (BatchItem::ChangeSet(ops), Some(ResponseItem::ChangeSet(parts))) => {
                let mut parts = parts.into_iter();
                out.extend(ops.iter().map(|_| match parts.next() {
                    Some(part) if part.is_success() => OperationOutcome::Succeeded(part),
                    Some(part) => OperationOutcome::Failed(part.error()),
                    None => OperationOutcome::NotRun,
                }));
            }
            (BatchItem::ChangeSet(ops), Some(ResponseItem::Single(failure))) => {
                // The change set failed as a whole; its answer names the guilty operation by Content-ID.
                let error = failure.error();
                let guilty = ops.iter().position(|op| op.content_id.is_some() && op.content_id == failure.content_id);
                out.extend(ops.iter().enumerate().map(|(i, _)| match guilty {
                    Some(g) if g != i => OperationOutcome::RolledBack,
                    _ => OperationOutcome::Failed(error.clone()),
                }));
            }
            (BatchItem::Single(_), Some(ResponseItem::ChangeSet(parts))) => {
                out.push(parts.into_iter().next().map_or(OperationOutcome::NotRun, OperationOutcome::Succeeded))
            }
        }
    }
    out
}

impl Client {
    /// Sends a batch and returns one outcome per operation, change set operations included, in order.
    pub async fn batch(&self, batch: &Batch) -> Result<Vec<OperationOutcome>, Error> {
        if batch.operations() > MAX_OPERATIONS {
            return Err(Error::InvalidRequest(format!(
                "a batch holds at most {MAX_OPERATIONS} operations and this one holds {}: split it",
                batch.operations()
            )));
        }
        let id = Uuid::new_v4();
        let boundary = format!("batch_{id}");
        let root = url::Url::parse(&self.environment().web_api())
            .map(|u| u.path().to_string())
            .unwrap_or_else(|_| "/api/data/v9.2/".into());
        let body = batch.encode(&boundary, |n| format!("changeset_{id}_{n}"), &root);
        let only_reads = batch.items.iter().all(|i| matches!(i, BatchItem::Single(op) if op.method == Method::GET));
        let content_type = format!("multipart/mixed; boundary=\"{boundary}\"");
        let mut request = Request::new(Method::POST, "$batch").body(content_type, body).idempotent(only_reads);
        request.multipart_answer = true;
        if batch.continue_on_error {
            request = request.header("Prefer", "odata.continue-on-error");
        }
        let reply = self.execute(&request).await?;
        let content_type = reply.header("content-type").unwrap_or_default().to_string();
        let text = String::from_utf8_lossy(&reply.body);
        let items = parse_response(&content_type, &text)
            .map_err(|e| Error::UnexpectedBody { url: reply.url.clone(), detail: e.to_string() })?;
        Ok(outcomes(batch, items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The request in Microsoft's `$batch` documentation, byte for byte.
    #[test]
    fn the_documented_request_is_written_exactly() {
        let mut batch = Batch::new().continue_on_error();
        batch.change_set(vec![
            Operation::post(
                "tasks",
                json!({"subject":"Task 1 in batch","regardingobjectid_account_task@odata.bind":"accounts(00000000-0000-0000-0000-000000000001)"}),
            )
            .content_id("1"),
        ]);
        batch.push(Operation::get("accounts(00000000-0000-0000-0000-000000000001)/Account_Tasks?$select=subject"));
        let body = batch.encode(
            "batch_22975cad-7f57-410d-be15-6363209367ea",
            |_| "changeset_246e6bfe-89a4-4c77-b293-7a433f082e8a".into(),
            "/api/data/v9.2/",
        );
        let documented = "--batch_22975cad-7f57-410d-be15-6363209367ea\n\
Content-Type: multipart/mixed; boundary=\"changeset_246e6bfe-89a4-4c77-b293-7a433f082e8a\"\n\
\n\
--changeset_246e6bfe-89a4-4c77-b293-7a433f082e8a\n\
Content-Type: application/http\n\
Content-Transfer-Encoding: binary\n\
Content-ID: 1\n\
\n\
POST /api/data/v9.2/tasks HTTP/1.1\n\
Content-Type: application/json; type=entry\n\
\n\
{\"subject\":\"Task 1 in batch\",\"regardingobjectid_account_task@odata.bind\":\"accounts(00000000-0000-0000-0000-000000000001)\"}\n\
--changeset_246e6bfe-89a4-4c77-b293-7a433f082e8a--\n\
\n\
--batch_22975cad-7f57-410d-be15-6363209367ea\n\
Content-Type: application/http\n\
Content-Transfer-Encoding: binary\n\
\n\
GET /api/data/v9.2/accounts(00000000-0000-0000-0000-000000000001)/Account_Tasks?$select=subject HTTP/1.1\n\
\n\
\n\
--batch_22975cad-7f57-410d-be15-6363209367ea--\n"
            .replace('\n', "\r\n");
        assert_eq!(body, documented);
        assert!(!body.replace("\r\n", "").contains('\n'), "every line ends in CRLF");
    }

    const DOCUMENTED_RESPONSE: &str = "--batchresponse_f27ef42d-51b0-4685-bac9-f468f844de2f
Content-Type: multipart/mixed; boundary=changesetresponse_64cc3fff-023a-45b0-b29d-df21583ffa15

--changesetresponse_64cc3fff-023a-45b0-b29d-df21583ffa15
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 1

HTTP/1.1 204 No Content
OData-Version: 4.0
Location: [Organization Uri]/api/data/v9.2/tasks(e73ffc82-e292-ed11-aad1-000d3a9933c9)
OData-EntityId: [Organization Uri]/api/data/v9.2/tasks(e73ffc82-e292-ed11-aad1-000d3a9933c9)


--changesetresponse_64cc3fff-023a-45b0-b29d-df21583ffa15--
--batchresponse_f27ef42d-51b0-4685-bac9-f468f844de2f
Content-Type: application/http
Content-Transfer-Encoding: binary

HTTP/1.1 200 OK
Content-Type: application/json; odata.metadata=minimal; odata.streaming=true
OData-Version: 4.0

{\"@odata.context\":\"[Organization Uri]/api/data/v9.2/$metadata#tasks(subject)\",\"value\":[]}
--batchresponse_f27ef42d-51b0-4685-bac9-f468f844de2f--
";

    #[test]
    fn the_documented_response_is_read() {
        let body = DOCUMENTED_RESPONSE.replace('\n', "\r\n");
        let items =
            parse_response("multipart/mixed; boundary=batchresponse_f27ef42d-51b0-4685-bac9-f468f844de2f", &body)
                .unwrap();
        assert_eq!(items.len(), 2);
        let ResponseItem::ChangeSet(created) = &items[0] else { panic!("{items:?}") };
        assert_eq!(created.len(), 1);
        assert_eq!(created[0].status, 204);
        assert_eq!(created[0].content_id.as_deref(), Some("1"));
        assert!(created[0].header("odata-entityid").unwrap().ends_with("tasks(e73ffc82-e292-ed11-aad1-000d3a9933c9)"));
        let ResponseItem::Single(read) = &items[1] else { panic!("{items:?}") };
        assert_eq!(read.status, 200);
        assert_eq!(read.json::<Json>().unwrap()["value"], json!([]));
    }

    #[test]
    fn a_documented_failure_is_an_error_with_its_request_id() {
        let body = "--batchresponse_156da4b8-cd2c-4862-a911-4aaab97c001a
Content-Type: application/http
Content-Transfer-Encoding: binary

HTTP/1.1 400 Bad Request
REQ_ID: 5ecd1cb3-1730-4ffc-909c-d44c22270026
Content-Type: application/json; odata.metadata=minimal
OData-Version: 4.0

{\"error\":{\"code\":\"0x80044331\",\"message\":\"A validation error occurred.  The length of the 'subject' attribute of the 'task' entity exceeded the maximum allowed length of '200'.\"}}
--batchresponse_156da4b8-cd2c-4862-a911-4aaab97c001a--
"
        .replace('\n', "\r\n");
        let items =
            parse_response("multipart/mixed; boundary=batchresponse_156da4b8-cd2c-4862-a911-4aaab97c001a", &body)
                .unwrap();
        let mut batch = Batch::new();
        batch.push(Operation::post("tasks", json!({"subject": "x"}))).push(Operation::get("WhoAmI"));
        let outcomes = outcomes(&batch, items);
        let OperationOutcome::Failed(error) = &outcomes[0] else { panic!("{outcomes:?}") };
        assert_eq!(error.code, "0x80044331");
        assert_eq!(error.kind, crate::ErrorKind::Validation);
        assert_eq!(error.request_id.as_deref(), Some("5ecd1cb3-1730-4ffc-909c-d44c22270026"));
        assert_eq!(outcomes[1], OperationOutcome::NotRun);
    }
}
