//! The emulator's FetchXML (`?fetchXml=`) and SQL (`?sql=`) queries: read, bound to the account and contact
//! tables and evaluated on a row. Any input is either refused with a 400 that says why, or bound into filters
//! that evaluate; nothing panics, overflows the stack or takes time out of proportion to its size.
#![no_main]

use dataverse_emulator::odata::fetchxml;
use dataverse_emulator::odata::filter::Predicate;
use dataverse_emulator::odata::query::QueryOptions;
use dataverse_emulator::odata::sql;
use dataverse_emulator::schema::{Table, builtin_tables};
use dataverse_emulator::value::{Row, Value};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static TABLES: LazyLock<Vec<Table>> = LazyLock::new(|| {
    builtin_tables().into_iter().filter(|t| t.logical_name == "account" || t.logical_name == "contact").collect()
});

fn refused(e: &dataverse_emulator::error::ApiError) {
    assert_eq!(e.status, 400, "{e:?}");
    assert!(!e.message.is_empty());
}

fn evaluated(predicate: &Predicate) {
    let row = Row::from([
        ("name".into(), Value::Text("Contoso".into())),
        ("lastname".into(), Value::Text("Lee".into())),
        ("numberofemployees".into(), Value::Int(10)),
    ]);
    let _ = predicate.matches(&row);
}

fuzz_target!(init: dynsync_fuzz::report_stack_overflows(), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match fetchxml::parse(text) {
        Err(e) => refused(&e),
        Ok(fetch) => {
            for table in TABLES.iter() {
                let filters = std::iter::once(&fetch.filter).chain(fetch.links.iter().map(|l| &l.filter));
                for filter in filters {
                    match fetchxml::bind_filter(filter.as_ref(), table) {
                        Err(e) => refused(&e),
                        Ok(Some(predicate)) => evaluated(&predicate),
                        Ok(None) => {}
                    }
                }
            }
        }
    }
    for table in TABLES.iter() {
        let mut options = QueryOptions::default();
        match sql::apply(text, table, &mut options) {
            Err(e) => refused(&e),
            Ok(()) => {
                if let Some(filter) = &options.filter {
                    match Predicate::bind(filter, table) {
                        Err(e) => refused(&e),
                        Ok(predicate) => evaluated(&predicate),
                    }
                }
            }
        }
    }
});
