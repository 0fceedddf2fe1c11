//! What the `dataverse` client reads from a server besides `$batch`: error answers (status, `REQ_ID`,
//! `Retry-After`, `x-ms-dop-hint`, the `{"error": …}` body), and pages of records and of changes. The first two
//! bytes are the status, then header lines up to a blank line, then the body.
#![no_main]

use dataverse::error::{ApiError, ErrorKind, ThrottleLimit};
use dataverse::executor::{Executor, ExecutorOptions};
use dataverse::{Change, Page};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;
use std::time::Duration;

static EXECUTOR: LazyLock<Executor> = LazyLock::new(|| Executor::new(ExecutorOptions::default()));

fuzz_target!(init: dynsync_fuzz::report_stack_overflows(), |data: &[u8]| {
    let Some((status, rest)) = data.split_first_chunk::<2>() else { return };
    let status = 100 + u16::from_be_bytes(*status) % 500;
    let (head, body) = match rest.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&rest[..i], &rest[i + 2..]),
        None => (rest, &rest[rest.len()..]),
    };
    let mut headers = HeaderMap::new();
    for line in head.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(line[colon + 1..].trim_ascii()))
        {
            headers.append(name, value);
        }
    }

    // An error answer, acted on as the client acts on it.
    let error = ApiError::from_parts(status, &headers, body);
    assert_eq!(error.status, status);
    assert_eq!(error.kind, ApiError::classify(status, &error.code, &error.message));
    if let ErrorKind::UnknownProperty(property) = &error.kind {
        assert!(error.message.contains(property.as_str()));
    }
    if let ErrorKind::Throttled(limit) = error.kind {
        let retry_after = error.retry_after.unwrap_or(Duration::from_secs(1));
        match limit {
            ThrottleLimit::Concurrency => EXECUTOR.back_off(),
            ThrottleLimit::Requests | ThrottleLimit::ExecutionTime => EXECUTOR.pause_for(retry_after),
        }
    }
    if let Some(hint) = headers
        .get("x-ms-dop-hint")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        EXECUTOR.observe_dop_hint(hint);
    }
    let _ = dataverse::Error::Api(error).to_string();

    // A page of records, and a page of changes.
    if let Ok(page) = serde_json::from_slice::<Page>(body) {
        let _ = (page.value.len(), page.next_link);
    }
    if let Ok((changes, _next)) = dataverse::fuzzing::delta_page(body) {
        for change in &changes {
            if let Change::Token(token) = change {
                let _ = format!("{token:?}");
            }
        }
        let tokens = changes.iter().filter(|c| matches!(c, Change::Token(_))).count();
        assert!(tokens <= 1 && (tokens == 0 || matches!(changes.last(), Some(Change::Token(_)))));
    }
});
