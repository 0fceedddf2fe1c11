//! §5 `$batch`: the multipart shape both ways, atomic change sets, `Content-ID` references, stopping at the
//! first failure or going on with `Prefer: odata.continue-on-error`, the 1,000-operation limit, and
//! malformed bodies refused with Dataverse's error.

use crate::{Env, Reply, config};
use dataverse_emulator::{EmulatorConfig, Limits};
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};
use std::time::Duration;

/// One operation of a batch request.
struct Op {
    method: &'static str,
    url: String,
    body: Option<Json>,
    content_id: Option<u32>,
}

fn op(method: &'static str, url: &str, body: Option<Json>) -> Op {
    Op { method, url: url.to_string(), body, content_id: None }
}

fn with_id(mut op: Op, id: u32) -> Op {
    op.content_id = Some(id);
    op
}

enum Item {
    Single(Op),
    ChangeSet(Vec<Op>),
}

fn write_op(out: &mut String, op: &Op) {
    out.push_str("Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n");
    if let Some(id) = op.content_id {
        out.push_str(&format!("Content-ID: {id}\r\n"));
    }
    out.push_str(&format!("\r\n{} {} HTTP/1.1\r\n", op.method, op.url));
    match &op.body {
        Some(body) => out.push_str(&format!("Content-Type: application/json; type=entry\r\n\r\n{body}\r\n")),
        None => out.push_str("\r\n\r\n"),
    }
}

/// A batch body as the documentation writes one.
fn batch_body(items: &[Item]) -> String {
    let mut out = String::new();
    for item in items {
        out.push_str("--batch_AAA\r\n");
        match item {
            Item::Single(op) => write_op(&mut out, op),
            Item::ChangeSet(ops) => {
                out.push_str("Content-Type: multipart/mixed; boundary=\"changeset_BBB\"\r\n\r\n");
                for op in ops {
                    out.push_str("--changeset_BBB\r\n");
                    write_op(&mut out, op);
                }
                out.push_str("--changeset_BBB--\r\n\r\n");
            }
        }
    }
    out.push_str("--batch_AAA--\r\n");
    out
}

async fn send_batch(env: &Env, body: String, continue_on_error: bool) -> Reply {
    let mut request = env
        .request(Method::POST, "$batch")
        .header("Content-Type", "multipart/mixed; boundary=\"batch_AAA\"")
        .body(body);
    if continue_on_error {
        request = request.header("Prefer", "odata.continue-on-error");
    }
    env.send(request).await
}

/// One answered operation: its status line's code, its headers (lower-cased names) and body.
#[derive(Debug)]
struct Part {
    status: u16,
    content_id: Option<String>,
    headers: Vec<(String, String)>,
    body: String,
}

impl Part {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Json {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Reads a batch response the way a strict client does: CRLF lines, boundaries from the content types.
fn parts(reply: &Reply) -> Vec<Part> {
    let content_type = reply.header("content-type").expect("a content type");
    let boundary = content_type.split("boundary=").nth(1).expect("a boundary").trim_matches('"').to_string();
    assert!(boundary.starts_with("batchresponse_"), "{content_type}");
    assert!(reply.text.ends_with(&format!("--{boundary}--\r\n")), "{:?}", reply.text);
    split(&reply.text, &boundary)
}

fn split(text: &str, boundary: &str) -> Vec<Part> {
    let delimiter = format!("--{boundary}");
    let mut out = Vec::new();
    for chunk in text.split(&delimiter).skip(1) {
        if chunk.starts_with("--") {
            break;
        }
        let chunk = chunk.strip_prefix("\r\n").expect("CRLF after a delimiter");
        let chunk = chunk.strip_suffix("\r\n").unwrap_or(chunk);
        let (mime, http) = chunk.split_once("\r\n\r\n").expect("MIME headers end with a blank line");
        if let Some(inner) = mime.strip_prefix("Content-Type: multipart/mixed; boundary=") {
            out.extend(split(http, inner.trim()));
            continue;
        }
        assert!(mime.contains("Content-Type: application/http"), "{mime}");
        let content_id = mime.lines().find_map(|l| l.strip_prefix("Content-ID: ")).map(str::to_string);
        let (head, body) = http.split_once("\r\n\r\n").expect("HTTP headers end with a blank line");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        let status = status_line[9..12].parse().unwrap();
        let headers = lines
            .map(|l| l.split_once(": ").map(|(n, v)| (n.to_ascii_lowercase(), v.to_string())).expect("a header"))
            .collect();
        out.push(Part { status, content_id, headers, body: body.to_string() });
    }
    out
}

fn id_of(url: &str) -> String {
    url.rsplit_once('(').unwrap().1.trim_end_matches(')').to_string()
}

#[tokio::test]
async fn s5_change_set_and_query_answer_in_the_documented_shape() {
    let env = Env::start().await;
    let body = batch_body(&[
        Item::ChangeSet(vec![with_id(op("POST", "/api/data/v9.2/contacts", Some(json!({"lastname": "Batch"}))), 1)]),
        Item::Single(op("GET", "/api/data/v9.2/contacts?$select=lastname", None)),
    ]);
    let reply = send_batch(&env, body, false).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(reply.text.contains("Content-Type: multipart/mixed; boundary=changesetresponse_"), "{}", reply.text);
    let parts = parts(&reply);
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].status, 204);
    assert_eq!(parts[0].content_id.as_deref(), Some("1"));
    let entity = parts[0].header("odata-entityid").expect("OData-EntityId");
    assert_eq!(parts[0].header("location"), Some(entity));
    assert!(entity.starts_with(&env.emulator.web_api), "{entity}");
    assert_eq!(parts[0].header("odata-version"), Some("4.0"));
    assert!(reply.text.contains("HTTP/1.1 204 No Content\r\n"));
    assert_eq!(parts[1].status, 200);
    assert_eq!(parts[1].header("content-type"), Some("application/json; odata.metadata=minimal; odata.streaming=true"));
    let rows = parts[1].json();
    assert_eq!(rows["value"][0]["lastname"], "Batch");
    assert_eq!(rows["value"][0]["contactid"], id_of(entity));
}

#[tokio::test]
async fn s5_content_id_references_in_urls_and_binds() {
    let env = Env::start().await;
    let body = batch_body(&[Item::ChangeSet(vec![
        with_id(op("POST", "/api/data/v9.2/accounts", Some(json!({"name": "Fabrikam"}))), 1),
        with_id(
            op("POST", "contacts", Some(json!({"lastname": "Ref", "parentcustomerid_account@odata.bind": "$1"}))),
            2,
        ),
        op("PATCH", "$1", Some(json!({"name": "Fabrikam Inc."}))),
        op("PATCH", "$2", Some(json!({"firstname": "Ann"}))),
    ])]);
    let reply = send_batch(&env, body, false).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let answered = parts(&reply);
    assert_eq!(answered.iter().map(|p| p.status).collect::<Vec<_>>(), [204, 204, 204, 204]);
    let account = id_of(answered[0].header("odata-entityid").unwrap());
    let contact = id_of(answered[1].header("odata-entityid").unwrap());
    let row = env.get(&format!("contacts({contact})?$select=firstname,lastname,_parentcustomerid_value")).await.json();
    assert_eq!(row["firstname"], "Ann");
    assert_eq!(row["_parentcustomerid_value"], account);
    assert_eq!(env.get(&format!("accounts({account})?$select=name")).await.json()["name"], "Fabrikam Inc.");

    let body = batch_body(&[Item::ChangeSet(vec![op("PATCH", "$7", Some(json!({"name": "x"})))])]);
    let reply = send_batch(&env, body, false).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let failure = &parts(&reply)[0];
    assert!(failure.json()["error"]["message"].as_str().unwrap().contains("Content-ID Reference: '$7' does not exist"));
}

#[tokio::test]
async fn s5_a_change_set_is_all_or_nothing() {
    let env = Env::start().await;
    let body = batch_body(&[Item::ChangeSet(vec![
        with_id(op("POST", "contacts", Some(json!({"lastname": "One"}))), 1),
        with_id(op("POST", "contacts", Some(json!({"lastname": "Two"}))), 2),
        with_id(op("POST", "contacts", Some(json!({"lastname": "Three", "new_nosuchcolumn": 1}))), 3),
    ])]);
    let reply = send_batch(&env, body, true).await;
    let answered = parts(&reply);
    assert_eq!(answered.len(), 1, "a failed change set answers with its one failure");
    assert_eq!(answered[0].status, 400);
    assert_eq!(answered[0].content_id.as_deref(), Some("3"));
    assert!(answered[0].header("req_id").is_some());
    let error = answered[0].json();
    assert_eq!(error["error"]["code"], "0x80048d19");
    assert!(error["error"]["message"].as_str().unwrap().contains("new_nosuchcolumn"), "{error}");
    assert_eq!(env.get("contacts/$count").await.text, "0", "the first two creates were rolled back");
}

#[tokio::test]
async fn s5_the_batch_stops_at_the_first_failure_unless_told_to_go_on() {
    let env = Env::start().await;
    let missing = "contacts(00000000-0000-0000-0000-000000000002)";
    let body = || {
        batch_body(&[
            Item::Single(op("POST", "contacts", Some(json!({"lastname": "Before"})))),
            Item::Single(op("DELETE", missing, None)),
            Item::Single(op("POST", "contacts", Some(json!({"lastname": "After"})))),
        ])
    };
    let reply = send_batch(&env, body(), false).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    let stopped = parts(&reply);
    assert_eq!(stopped.iter().map(|p| p.status).collect::<Vec<_>>(), [204, 404]);
    assert_eq!(stopped[1].json()["error"]["code"], "0x80040217");
    assert_eq!(env.get("contacts/$count").await.text, "1", "nothing after the failure ran");

    let reply = send_batch(&env, body(), true).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("preference-applied"), Some("odata.continue-on-error"));
    assert_eq!(parts(&reply).iter().map(|p| p.status).collect::<Vec<_>>(), [204, 404, 204]);
    assert_eq!(env.get("contacts/$count").await.text, "3");
}

#[tokio::test]
async fn s5_at_most_a_thousand_operations() {
    let env = Env::start().await;
    let many = |n| batch_body(&(0..n).map(|_| Item::Single(op("GET", "WhoAmI", None))).collect::<Vec<_>>());
    let reply = send_batch(&env, many(1000), false).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(parts(&reply).len(), 1000);
    send_batch(&env, many(1001), false).await.assert_error(
        400,
        "0x80048d19",
        "Only batch messages with a maximum number of '1000' query operations, including changeset operations, are allowed.",
    );
}

#[tokio::test]
async fn s5_malformed_batches_get_the_real_error() {
    let env = Env::start().await;
    let good = batch_body(&[Item::Single(op("GET", "WhoAmI", None))]);
    let raw = |content_type: &'static str, body: String| {
        env.send(env.request(Method::POST, "$batch").header("Content-Type", content_type).body(body))
    };
    let multipart = "multipart/mixed; boundary=batch_AAA";
    raw(multipart, good.replace("\r\n", "\n")).await.assert_error(400, "0x80048d19", "Stream was not readable");
    raw(multipart, good.trim_end().to_string()).await.assert_error(400, "0x80048d19", "Stream was not readable");
    raw(multipart, "not a batch".into()).await.assert_error(400, "0x80048d19", "Stream was not readable");
    raw(multipart, good.replace("--batch_AAA--\r\n", "")).await.assert_error(400, "0x80048d19", "close delimiter");
    raw("application/json", good.clone()).await.assert_error(400, "0x80048d19", "multipart/mixed; boundary=");
    raw(multipart, good.replace("GET WhoAmI HTTP/1.1", "")).await.assert_error(400, "0x80048d19", "request line");
    assert_eq!(raw(multipart, good).await.status, StatusCode::OK, "the same batch, well formed, is answered");
}

#[tokio::test]
async fn s5_change_sets_hold_writes_and_batches_do_not_nest() {
    let env = Env::start().await;
    let body = batch_body(&[Item::ChangeSet(vec![op("GET", "contacts", None)])]);
    let part = &parts(&send_batch(&env, body, true).await)[0];
    assert_eq!(part.status, 400);
    assert!(part.body.contains("send the GET outside it"), "{}", part.body);

    let body = batch_body(&[Item::Single(op("POST", "$batch", None))]);
    let part = &parts(&send_batch(&env, body, true).await)[0];
    assert!(part.body.contains("Batches cannot be nested"), "{}", part.body);
}

#[tokio::test]
async fn s9_a_batch_is_one_request_against_the_limits() {
    let limits = Limits { requests: 3, window: Duration::from_secs(60), ..Limits::default() };
    let env = Env::with(EmulatorConfig { limits, ..config() }).await;
    let body = batch_body(&(0..50).map(|_| Item::Single(op("GET", "WhoAmI", None))).collect::<Vec<_>>());
    for _ in 0..3 {
        let reply = send_batch(&env, body.clone(), false).await;
        assert_eq!(reply.status, StatusCode::OK, "150 operations in 3 batches fit a limit of 3 requests");
    }
    assert_eq!(send_batch(&env, body, false).await.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn s5_fetchxml_sql_and_unknown_options_in_a_batch_are_answered_as_alone() {
    let env = Env::start().await;
    env.create("contacts", json!({"firstname": "Ann", "lastname": "Lee"})).await;
    env.create("contacts", json!({"firstname": "Bob", "lastname": "Ray"})).await;
    let encode = |t: &str| percent_encoding::utf8_percent_encode(t, percent_encoding::NON_ALPHANUMERIC).to_string();
    let fetch = "<fetch><entity name='contact'><attribute name='firstname'/><filter>\
                 <condition attribute='lastname' operator='eq' value='Ray'/></filter></entity></fetch>";
    let body = batch_body(&[
        Item::Single(op("GET", &format!("/api/data/v9.2/contacts?fetchXml={}", encode(fetch)), None)),
        Item::Single(op(
            "GET",
            &format!("/api/data/v9.2/contacts?sql={}", encode("SELECT firstname FROM contact WHERE lastname = 'Lee'")),
            None,
        )),
        Item::Single(op("GET", "/api/data/v9.2/contacts?foo=1", None)),
    ]);
    let reply = send_batch(&env, body, true).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let parts = parts(&reply);
    assert_eq!(parts[0].json()["value"][0]["firstname"], "Bob", "{}", parts[0].body);
    assert_eq!(parts[1].json()["value"][0]["firstname"], "Ann", "{}", parts[1].body);
    assert_eq!(parts[2].status, 400);
    assert_eq!(parts[2].json()["error"]["code"], "0x80060888");
}
