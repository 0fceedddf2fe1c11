//! The `dataverse` client's reading of a `$batch` response: the first line is the response's Content-Type
//! (which names the boundary), the rest the body, read as the client reads it (lossy UTF-8). Every part's
//! answer is used as the client uses it, and lined up with a batch of the response's shape.
#![no_main]

use dataverse::batch::{ResponseItem, outcomes, parse_response};
use dataverse::{Batch, Operation, OperationOutcome, PartResponse};
use libfuzzer_sys::fuzz_target;
use serde_json::Value as Json;

fn use_part(part: &PartResponse) {
    let _ = (part.is_success(), part.header("odata-entityid"), part.header("location"), part.json::<Json>());
    let error = part.error();
    assert_eq!(error.status, part.status);
    if let Some(retry_after) = error.retry_after {
        let _ = format!("{retry_after:?}");
    }
}

fuzz_target!(init: dynsync_fuzz::report_stack_overflows(), |data: &[u8]| {
    let (content_type, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[data.len()..]),
    };
    let content_type = String::from_utf8_lossy(content_type);
    let body = String::from_utf8_lossy(body);
    let items = match parse_response(content_type.trim_end_matches('\r'), &body) {
        Ok(items) => items,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    for item in &items {
        match item {
            ResponseItem::Single(part) => use_part(part),
            ResponseItem::ChangeSet(parts) => parts.iter().for_each(use_part),
        }
    }

    // One outcome per operation sent, whatever the server answered: a batch shaped like the answer (with one
    // more operation, which was not run), and one shaped the other way round.
    for swap in [false, true] {
        let mut batch = Batch::new();
        for (index, item) in items.iter().enumerate() {
            let change_set = matches!(item, ResponseItem::ChangeSet(_)) != swap;
            let size = match item {
                ResponseItem::ChangeSet(parts) => parts.len().max(1),
                ResponseItem::Single(_) => 2,
            };
            if change_set {
                batch.change_set(
                    (0..size).map(|n| Operation::delete(format!("contacts({index})")).content_id(n.to_string())).collect(),
                );
            } else {
                batch.push(Operation::get(format!("contacts({index})")));
            }
        }
        batch.push(Operation::get("WhoAmI"));
        let outcomes = outcomes(&batch, items.clone());
        assert_eq!(outcomes.len(), batch.operations(), "one outcome per operation");
        assert_eq!(outcomes.last(), Some(&OperationOutcome::NotRun), "an operation without an answer did not run");
    }
});
