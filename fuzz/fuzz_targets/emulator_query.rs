//! The emulator's query options: the query string (`$select`, `$filter`, `$orderby`, `$top`, `$count`,
//! `$skiptoken`, aliases), the paging cookie in `$skiptoken`, and `Prefer` headers. The first line is the query
//! string, the second a `$skiptoken` value, every later line a `Prefer` header.
#![no_main]

use dataverse_emulator::odata::query::{Cursor, Prefer, QueryOptions};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

const SORTS: [&[&str]; 3] = [&[], &["lastname"], &["lastname", "firstname"]];

fn cookie_round_trips(token: &str) {
    for sort in SORTS {
        let columns: Vec<String> = sort.iter().map(|c| c.to_string()).collect();
        let Ok(cursor) = Cursor::from_skiptoken(token, "contactid", &columns) else { continue };
        assert_eq!(cursor.sort_values.len(), columns.len());
        // The next page's cookie reads back as the cursor it was written from.
        let written = cursor.to_skiptoken("contactid");
        let back = Cursor::from_skiptoken(&written, "contactid", &columns)
            .unwrap_or_else(|e| panic!("the emulator's own cookie {written:?} is refused: {}", e.message));
        assert_eq!(back, cursor, "{written:?}");
    }
}

fuzz_target!(init: dynsync_fuzz::report_stack_overflows(), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.split('\n');
    let query = lines.next().unwrap_or_default();
    let skiptoken = lines.next().unwrap_or_default();

    match QueryOptions::parse(Some(query)) {
        Err(e) => {
            assert_eq!(e.status, 400, "{e:?}");
            assert!(!e.message.is_empty());
        }
        Ok(options) => {
            if let Some(token) = &options.skiptoken {
                cookie_round_trips(token);
            }
            // `@odata.nextLink`'s query string reads back as the same options with the new cookie.
            let next = options.next_query("<cookie pagenumber=\"2\" />");
            let again = QueryOptions::parse(Some(&next))
                .unwrap_or_else(|e| panic!("the emulator's own next link {next:?} is refused: {}", e.message));
            assert_eq!(again.without_skiptoken, options.without_skiptoken, "{query:?} → {next:?}");
            assert_eq!(again.skiptoken.as_deref(), Some("<cookie pagenumber=\"2\" />"));
            assert_eq!(again.select, options.select);
            assert_eq!(again.orderby, options.orderby);
            assert_eq!((again.top, again.count), (options.top, options.count));
            assert_eq!(again.filter, options.filter);
        }
    }
    cookie_round_trips(skiptoken);

    let mut headers = HeaderMap::new();
    for line in lines {
        if let Ok(value) = HeaderValue::from_str(line) {
            headers.append("prefer", value);
        }
    }
    let prefer = Prefer::from_headers(&headers);
    for term in ["OData.Community.Display.V1.FormattedValue", "Microsoft.Dynamics.CRM.lookuplogicalname", "", "*"] {
        let _ = prefer.includes(term);
    }
});
