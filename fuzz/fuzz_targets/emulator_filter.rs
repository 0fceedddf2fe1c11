//! The emulator's `$filter`: parsed from the query string, bound to a table's columns and evaluated over rows, or
//! evaluated over metadata JSON. The first line is the filter; each later line `@name=value` is a parameter alias.
//! A filter the `dataverse` client can write must read back as itself.
#![no_main]

use chrono::{Datelike, Timelike};
use dataverse::query::{Comparison, Filter, Literal as ClientLiteral, StringFunction};
use dataverse_emulator::odata::filter::{self, CmpOp, Expr, Literal, Operand, Predicate, TextFn};
use dataverse_emulator::schema::builtin_tables;
use dataverse_emulator::value::{Row, Value};
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use std::collections::HashMap;
use std::sync::LazyLock;

static CONTACT: LazyLock<dataverse_emulator::schema::Table> =
    LazyLock::new(|| builtin_tables().into_iter().find(|t| t.logical_name == "contact").expect("contact"));

static ROWS: LazyLock<Vec<Row>> = LazyLock::new(|| {
    let text = |s: &str| Value::Text(s.to_string());
    let long: String = "ab".repeat(500);
    vec![
        Row::new(),
        Row::from([
            ("firstname".into(), text("Ann")),
            ("lastname".into(), text("O'Neil")),
            ("fullname".into(), text("Ann O'Neil")),
            ("emailaddress1".into(), text("ann@example.com")),
            ("statecode".into(), Value::Int(0)),
            ("numberofchildren".into(), Value::Int(2)),
            ("annualincome".into(), Value::Number(12345.5)),
            ("donotemail".into(), Value::Bool(false)),
            ("contactid".into(), Value::Guid("49b0be2e-d01c-ed11-b83e-000d3a572421".parse().unwrap())),
            ("birthdate".into(), Value::Date("1990-05-17".parse().unwrap())),
            ("createdon".into(), Value::DateTime("2024-01-02T03:04:05Z".parse().unwrap())),
        ]),
        Row::from([
            ("firstname".into(), text(&"a".repeat(160))),
            ("lastname".into(), text(&"%_[]^-".repeat(8))),
            ("description".into(), text(&long)),
            ("jobtitle".into(), text(&"a".repeat(100))),
        ]),
    ]
});

fuzz_target!(init: dynsync_fuzz::report_stack_overflows(), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.split('\n');
    let filter_text = lines.next().unwrap_or_default();
    let aliases: HashMap<String, String> = lines
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with('@'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();

    let expr = match filter::parse(filter_text, &aliases) {
        Ok(expr) => expr,
        Err(e) => {
            assert_eq!(e.status, 400, "a bad filter is the client's fault: {e:?}");
            assert!(!e.message.is_empty());
            return;
        }
    };
    assert_eq!(filter::parse(filter_text, &aliases).as_ref(), Ok(&expr), "parsing is deterministic");
    let mut members = Vec::new();
    expr.members(&mut members);
    assert!(members.iter().all(|m| !m.is_empty()));

    // Bound to contact's columns and evaluated over rows, as `contacts?$filter=…` runs it.
    if let Ok(predicate) = Predicate::bind(&expr, &CONTACT) {
        for row in ROWS.iter() {
            let _ = predicate.matches(row);
        }
    }
    // Over metadata JSON, as `EntityDefinitions?$filter=…` evaluates it.
    let metadata = json!({
        "LogicalName": "firstname", "AttributeType": "String", "IsCustomAttribute": false, "MaxLength": 50,
        "MetadataId": "49b0be2e-d01c-ed11-b83e-000d3a572421", "RequiredLevel": {"Value": "None"},
        "Description": "ab".repeat(300), "DisplayName": null,
    });
    let _ = filter::matches_json(&expr, &metadata, "Microsoft.Dynamics.CRM.AttributeMetadata");

    // `contains`/`startswith`/`endswith` are T-SQL LIKE patterns: the same answers as trying every split.
    check_like(&expr);

    // What the client would write for this filter reads back as the same filter.
    if let Some(client) = to_client(&expr) {
        let written = client.to_string();
        let back = filter::parse(&written, &HashMap::new())
            .unwrap_or_else(|e| panic!("the client wrote {written:?}, which the emulator refuses: {}", e.message));
        assert_eq!(to_client(&back).as_ref(), Some(&client), "the client wrote {written:?}");
    }
});

fn check_like(expr: &Expr) {
    match expr {
        Expr::And(a, b) | Expr::Or(a, b) => {
            check_like(a);
            check_like(b);
        }
        Expr::Not(a) => check_like(a),
        // `$filter` never reads into a raw LIKE pattern; FetchXML and SQL do (fuzzed by emulator_fetch).
        Expr::Compare(..) | Expr::Like(..) => {}
        Expr::Text(_, _, pattern) => {
            let pattern = format!("%{pattern}");
            if pattern.chars().count() > 64 {
                return;
            }
            for text in ["", "Ann O'Neil", "%_[]^-%_[]^-", &"a".repeat(40), &"ab".repeat(20)] {
                let expected = like_by_every_split(text, &pattern);
                assert_eq!(filter::like(text, &pattern), expected, "{text:?} LIKE {pattern:?}");
            }
        }
    }
}

/// T-SQL LIKE as the emulator first wrote it (every split at every `%`), remembering what it has tried.
fn like_by_every_split(text: &str, pattern: &str) -> bool {
    let text: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
    let pattern: Vec<char> = pattern.chars().flat_map(char::to_lowercase).collect();
    let mut tried = vec![None; (text.len() + 1) * (pattern.len() + 1)];
    like_at(&text, &pattern, 0, 0, &mut tried)
}

fn like_at(text: &[char], pattern: &[char], t: usize, p: usize, tried: &mut [Option<bool>]) -> bool {
    let slot = t * (pattern.len() + 1) + p;
    if let Some(known) = tried[slot] {
        return known;
    }
    let (rest, pat) = (&text[t..], &pattern[p..]);
    let result = match pat.first() {
        None => rest.is_empty(),
        Some('%') => (t..=text.len()).any(|i| like_at(text, pattern, i, p + 1, tried)),
        Some('_') => !rest.is_empty() && like_at(text, pattern, t + 1, p + 1, tried),
        Some('[') => match pat.iter().position(|c| *c == ']') {
            None => rest.first() == Some(&'[') && like_at(text, pattern, t + 1, p + 1, tried),
            Some(end) => match rest.first() {
                None => false,
                Some(&c) => {
                    let (negate, set) = match pat.get(1) {
                        Some('^') => (true, &pat[2..end]),
                        _ => (false, &pat[1..end]),
                    };
                    let mut in_set = false;
                    let mut i = 0;
                    while i < set.len() {
                        if i + 2 < set.len() && set[i + 1] == '-' {
                            in_set |= set[i] <= c && c <= set[i + 2];
                            i += 3;
                        } else {
                            in_set |= set[i] == c;
                            i += 1;
                        }
                    }
                    in_set != negate && like_at(text, pattern, t + 1, p + end + 1, tried)
                }
            },
        },
        Some(&c) => rest.first() == Some(&c) && like_at(text, pattern, t + 1, p + 1, tried),
    };
    tried[slot] = Some(result);
    result
}

fn comparison(op: CmpOp) -> Comparison {
    match op {
        CmpOp::Eq => Comparison::Eq,
        CmpOp::Ne => Comparison::Ne,
        CmpOp::Gt => Comparison::Gt,
        CmpOp::Ge => Comparison::Ge,
        CmpOp::Lt => Comparison::Lt,
        CmpOp::Le => Comparison::Le,
    }
}

fn flipped(op: Comparison) -> Comparison {
    match op {
        Comparison::Gt => Comparison::Lt,
        Comparison::Ge => Comparison::Le,
        Comparison::Lt => Comparison::Gt,
        Comparison::Le => Comparison::Ge,
        other => other,
    }
}

/// The client's literal for an emulator literal, as the client writes it: whole decimals as integers, date/times
/// to the second. `None` for what the client cannot write (dates, enums, non-finite numbers, years past 9999).
fn client_literal(literal: &Literal) -> Option<ClientLiteral> {
    Some(match literal {
        Literal::String(s) => ClientLiteral::Text(s.clone()),
        Literal::Int(n) => ClientLiteral::Integer(*n),
        Literal::Number(f) if !f.is_finite() => return None,
        Literal::Number(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => ClientLiteral::Integer(*f as i64),
        Literal::Number(f) => ClientLiteral::Decimal(*f),
        Literal::Bool(b) => ClientLiteral::Bool(*b),
        Literal::Null => ClientLiteral::Null,
        Literal::Guid(g) => ClientLiteral::Guid(*g),
        Literal::DateTime(d) if (1..=9999).contains(&d.year()) => {
            ClientLiteral::DateTime(d.with_nanosecond(0).expect("a whole second exists"))
        }
        Literal::DateTime(_) | Literal::Date(_) | Literal::Enum(_) => return None,
    })
}

fn to_client(expr: &Expr) -> Option<Filter> {
    Some(match expr {
        Expr::And(a, b) => Filter::And(Box::new(to_client(a)?), Box::new(to_client(b)?)),
        Expr::Or(a, b) => Filter::Or(Box::new(to_client(a)?), Box::new(to_client(b)?)),
        Expr::Not(a) => Filter::Not(Box::new(to_client(a)?)),
        Expr::Compare(op, Operand::Member(path), Operand::Literal(l)) => {
            Filter::Compare { column: path.join("/"), op: comparison(*op), value: client_literal(l)? }
        }
        Expr::Compare(op, Operand::Literal(l), Operand::Member(path)) => {
            Filter::Compare { column: path.join("/"), op: flipped(comparison(*op)), value: client_literal(l)? }
        }
        Expr::Compare(..) | Expr::Like(..) => return None,
        Expr::Text(f, path, pattern) => Filter::Function {
            function: match f {
                TextFn::Contains => StringFunction::Contains,
                TextFn::StartsWith => StringFunction::StartsWith,
                TextFn::EndsWith => StringFunction::EndsWith,
            },
            column: path.join("/"),
            value: pattern.clone(),
        },
    })
}
