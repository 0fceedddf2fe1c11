//! The emulator's `$batch` request: `multipart/mixed` with change sets. The first line is the request's
//! Content-Type (which names the boundary), the rest is the body.
#![no_main]

use dataverse_emulator::fuzzing::{BatchItem, BatchOperation, boundary_of, parse_batch};
use dataverse_emulator::odata::path::parse_path;
use dataverse_emulator::odata::query::Prefer;
use libfuzzer_sys::fuzz_target;

fn check(operation: &BatchOperation, body_len: usize) {
    assert!(!operation.url.is_empty() && !operation.url.contains(char::is_whitespace), "{operation:?}");
    assert!(operation.body.len() <= body_len);
    let _ = Prefer::from_headers(&operation.headers);
    // As a change set resolves its operation: the path under the service root.
    let url = operation.url.as_str();
    let rest = url.split_once("/api/data/").map_or(url, |(_, r)| r);
    let path = rest.split_once('/').map_or("", |(_, p)| p);
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let _ = parse_path(path);
}

fuzz_target!(init: dynsync_fuzz::report_stack_overflows(), |data: &[u8]| {
    let (content_type, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[data.len()..]),
    };
    let Ok(content_type) = std::str::from_utf8(content_type) else { return };
    let Some(boundary) = boundary_of(content_type.trim_end_matches('\r')) else { return };
    assert!(!boundary.is_empty());
    let items = match parse_batch(body, &boundary) {
        Ok(items) => items,
        Err(e) => {
            assert_eq!(e.status, 400, "{e:?}");
            assert!(!e.message.is_empty());
            return;
        }
    };
    // Every item is behind its own delimiter.
    let delimiter = format!("--{boundary}");
    let delimiters = body.windows(delimiter.len()).filter(|w| *w == delimiter.as_bytes()).count();
    assert!(items.len() < delimiters.max(1), "{} items, {delimiters} delimiters", items.len());
    for item in &items {
        match item {
            BatchItem::Single(operation) => check(operation, body.len()),
            BatchItem::ChangeSet(operations) => operations.iter().for_each(|o| check(o, body.len())),
        }
    }
});
