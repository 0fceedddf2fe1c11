//! Checking a flow against the contact table when it is saved: every target column and every audience column must
//! exist, be writable, and be of a type that holds what is mapped. A problem names the field, the flow's entry it
//! comes from, and the closest columns that do exist.
//!
//! A flow's size is capped, and checked before anything else: a definition of tens of thousands of entries is
//! refused with one problem, before any work per entry.

use super::{FlowDefinition, XdmType, xdm};
pub use crate::checks::{Problem, ValidationReport};
use crate::target::CustomizationPrefix;
use dataverse::{ColumnDefinition, ColumnType, TableDefinition};
use std::collections::HashMap;

/// The most attribute mappings a flow takes. Each mapping writes its own contact column, and contact has a few
/// hundred (about 250 in a new environment, a few hundred more with the columns its solutions and makers add):
/// 500 is room for every column of a customized contact, while a definition of thousands is a mistake or an
/// attack, whose checking (a closest-column search per missing column) would only cost time.
pub const MAX_MAPPINGS: usize = 500;

/// The most audiences a flow activates. Each audience's status takes its own contact column, created for it
/// (seed 002's prerequisite), so the same few hundred columns bound them; more audiences belong in more flows.
pub const MAX_AUDIENCES: usize = 500;

/// The longest source path, target column, audience id or mapping ID a flow takes, in characters. XDM paths
/// and audience ids are tens of characters (an audience id is a GUID), column names a few dozen.
pub const MAX_NAME_LENGTH: usize = 1_000;

/// Checks the parts of a flow that need no metadata: its size, the identity mapping, duplicates, status values.
/// A flow over [`MAX_MAPPINGS`] or [`MAX_AUDIENCES`] gets only that problem, found before any other check.
pub fn check_shape(flow: &FlowDefinition) -> Vec<Problem> {
    let oversized = oversized(flow);
    if !oversized.is_empty() {
        return oversized;
    }
    let mut problems = Vec::new();
    let mut problem = |field: String, message: String| problems.push(Problem { field, message, closest: Vec::new() });
    if flow.name.trim().is_empty() {
        problem("name".into(), "give the flow a name".into());
    }
    if flow.target_connection_ids.len() != 1 {
        problem(
            "targetConnectionIds".into(),
            format!(
                "an activation flow writes to exactly one target connection; this one names {}",
                flow.target_connection_ids.len()
            ),
        );
    }
    let identities: Vec<usize> =
        flow.mappings.iter().enumerate().filter(|(_, m)| m.is_identity()).map(|(i, _)| i).collect();
    match identities.as_slice() {
        [] => problem(
            "mappings".into(),
            "the identity mapping contactId → contactid is missing: add {\"source\": \"contactId\", \"target\": \"contactid\"}; \
             Dynamics contacts are updated by their id"
                .into(),
        ),
        [i] if !flow.mappings[*i].target.trim().eq_ignore_ascii_case("contactid") => problem(
            format!("mappings[{i}].target"),
            format!("the identity contactId must map to contactid, not to {}", flow.mappings[*i].target),
        ),
        [_] => {}
        [_, more @ ..] => problem(format!("mappings[{}]", more[0]), "map the identity contactId only once".into()),
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, m) in flow.mappings.iter().enumerate() {
        let mut overlong = false;
        for (key, what, text) in [("source", "source XDM path", &m.source), ("target", "target column", &m.target)] {
            if too_long(text) {
                problem(format!("mappings[{i}].{key}"), overlong_name(what, text));
                overlong = true;
            }
        }
        if overlong {
            continue;
        }
        if m.source.trim().is_empty() {
            problem(format!("mappings[{i}].source"), "the source XDM path is empty".into());
        }
        let target = m.target.trim().to_ascii_lowercase();
        if let Some(first) = seen.insert(target.clone(), i) {
            problem(
                format!("mappings[{i}].target"),
                format!("column {target} is already the target of mappings[{first}]; a column takes one source"),
            );
        }
    }
    let mut audiences: HashMap<&str, usize> = HashMap::new();
    for (i, a) in flow.audiences.iter().enumerate() {
        let mut overlong = false;
        for (key, what, text) in [("id", "audience id", &a.id), ("mappingId", "mapping ID", &a.mapping_id)] {
            if too_long(text) {
                problem(format!("audiences[{i}].{key}"), overlong_name(what, text));
                overlong = true;
            }
        }
        if overlong {
            continue;
        }
        if a.id.trim().is_empty() {
            problem(format!("audiences[{i}].id"), "the audience id is empty".into());
        }
        if a.mapping_id.trim().is_empty() {
            problem(
                format!("audiences[{i}].mappingId"),
                format!("{} has no mapping ID: give the name of the contact column that holds its status", a.label()),
            );
        }
        if let Some(first) = audiences.insert(a.id.trim(), i) {
            problem(
                format!("audiences[{i}].id"),
                format!("audience {} is already activated by audiences[{first}]", a.id),
            );
        }
    }
    let values = &flow.status_values;
    if [&values.realized, &values.existing, &values.exited].iter().any(|v| v.trim().is_empty()) {
        problem(
            "statusValues".into(),
            "a status value is empty: give the text to write for realized, existing and exited".into(),
        );
    }
    problems
}

/// The problems of a flow over the caps on its size: one per list that is too long.
fn oversized(flow: &FlowDefinition) -> Vec<Problem> {
    let mut problems = Vec::new();
    if flow.mappings.len() > MAX_MAPPINGS {
        problems.push(Problem::new(
            "mappings",
            format!(
                "the flow has {} mappings; a flow takes at most {MAX_MAPPINGS}, one per contact column it writes: \
                 remove the mappings of columns it need not write, or split them between flows",
                flow.mappings.len()
            ),
        ));
    }
    if flow.audiences.len() > MAX_AUDIENCES {
        problems.push(Problem::new(
            "audiences",
            format!(
                "the flow has {} audiences; a flow activates at most {MAX_AUDIENCES}, each in its own contact \
                 column: split the audiences between flows",
                flow.audiences.len()
            ),
        ));
    }
    problems
}

/// Whether a name is over [`MAX_NAME_LENGTH`] characters (counted only when its bytes might be).
fn too_long(text: &str) -> bool {
    text.len() > MAX_NAME_LENGTH && text.chars().count() > MAX_NAME_LENGTH
}

/// What is wrong with an overlong name, quoting only its beginning.
fn overlong_name(what: &str, text: &str) -> String {
    let beginning: String = text.chars().take(40).collect();
    format!(
        "the {what} is {} characters long, and a flow's names are at most {MAX_NAME_LENGTH}: check the value \
         given (it begins '{beginning}…')",
        text.chars().count()
    )
}

/// Checks a flow against the contact table, with audience columns named with the target's customization prefix.
pub fn validate(
    flow: &FlowDefinition,
    prefix: &CustomizationPrefix,
    contact: &TableDefinition,
) -> Result<(), ValidationReport> {
    let mut problems = check_shape(flow);
    let report = |problems: Vec<Problem>| ValidationReport { flow: flow.name.clone(), table: "contact", problems };
    if !oversized(flow).is_empty() {
        return Err(report(problems));
    }
    for (i, m) in flow.mappings.iter().enumerate() {
        let field = format!("mappings[{i}].target");
        let target = m.target.trim().to_ascii_lowercase();
        // The identity is checked by its shape, and an overlong name reported there already.
        if m.is_identity() || too_long(&m.source) || too_long(&m.target) {
            continue;
        }
        let Some(column) = contact.column(&target) else {
            problems.push(missing(field, &target, &format!("mapped from {}", m.source), contact, None));
            continue;
        };
        let source_type = m.source_type.or_else(|| xdm::known_type(&m.source)).unwrap_or(XdmType::String);
        if let Some(message) = unwritable(column) {
            problems.push(Problem { field, message, closest: Vec::new() });
        } else if let Err(message) = holds(column, source_type) {
            problems.push(Problem {
                field,
                message: format!(
                    "column {} is {} and cannot hold {} ({}): {message}",
                    column.logical_name, column.kind, m.source, source_type
                ),
                closest: Vec::new(),
            });
        }
    }
    let mut audience_columns: HashMap<String, usize> = HashMap::new();
    for (i, a) in flow.audiences.iter().enumerate() {
        if a.mapping_id.trim().is_empty() || too_long(&a.mapping_id) || too_long(&a.id) {
            continue;
        }
        let field = format!("audiences[{i}].mappingId");
        let name = a.column(prefix);
        if let Some(first) = audience_columns.insert(name.clone(), i) {
            problems.push(Problem {
                field,
                message: format!(
                    "column {name} already holds the status of audiences[{first}]; give each audience its own column"
                ),
                closest: Vec::new(),
            });
            continue;
        }
        if flow.mappings.iter().any(|m| m.target.trim().eq_ignore_ascii_case(&name)) {
            problems.push(Problem {
                field,
                message: format!(
                    "column {name} is also the target of an attribute mapping; give the audience its own column"
                ),
                closest: Vec::new(),
            });
            continue;
        }
        let Some(column) = contact.column(&name) else {
            let context = format!(
                "{}'s status column: mapping ID {} with the customization prefix {prefix}",
                a.label(),
                a.mapping_id.trim()
            );
            problems.push(missing(field, &name, &context, contact, Some(prefix)));
            continue;
        };
        let longest = flow.status_values.longest();
        let fits = match column.kind {
            ColumnType::String { max_length } | ColumnType::Memo { max_length } => {
                max_length.is_none_or(|n| n as usize >= longest)
            }
            _ => false,
        };
        if let Some(message) = unwritable(column) {
            problems.push(Problem { field, message, closest: Vec::new() });
        } else if !column.kind.is_text() {
            problems.push(Problem {
                field,
                message: format!(
                    "column {name} is {} but holds {}'s status, which is text: create it as a single line of text \
                     (seed 002's prerequisite) or map the audience to a text column",
                    column.kind,
                    a.label()
                ),
                closest: Vec::new(),
            });
        } else if !fits {
            problems.push(Problem {
                field,
                message: format!(
                    "column {name} is {}, too short for the status value of {longest} characters: lengthen the column or shorten statusValues",
                    column.kind
                ),
                closest: Vec::new(),
            });
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(report(problems)) }
}

/// Why a column cannot be written from a profile, if it cannot.
fn unwritable(column: &ColumnDefinition) -> Option<String> {
    if !column.valid_for_update {
        return Some(format!(
            "column {} is read-only in Dynamics (set by Dynamics itself): map to another column",
            column.logical_name
        ));
    }
    match column.kind {
        ColumnType::Lookup | ColumnType::Customer | ColumnType::Owner => Some(format!(
            "column {} is a {}, which points at another row; dynsync writes values, not references: map to a value column",
            column.logical_name, column.kind
        )),
        ColumnType::State | ColumnType::Status | ColumnType::Uniqueidentifier | ColumnType::Other(_) => Some(format!(
            "column {} is a {} column, which a profile attribute cannot set: map to another column",
            column.logical_name, column.kind
        )),
        _ => None,
    }
}

/// Whether a column of this type holds a source of that type, and if not, what to do.
fn holds(column: &ColumnDefinition, source: XdmType) -> Result<(), String> {
    use XdmType as X;
    let ok = match (&column.kind, source) {
        (kind, _) if kind.is_text() => true,
        (ColumnType::Integer | ColumnType::BigInt, X::Integer) => true,
        (ColumnType::Decimal | ColumnType::Double | ColumnType::Money, X::Integer | X::Number) => true,
        (ColumnType::Boolean, X::Boolean) => true,
        (ColumnType::DateTime { .. }, X::Date | X::DateTime) => true,
        (ColumnType::Picklist, X::Integer) => true,
        (ColumnType::MultiSelectPicklist, X::String) => true,
        _ => false,
    };
    if ok {
        return Ok(());
    }
    Err(match &column.kind {
        ColumnType::Picklist => {
            "a choice takes an option's number; map a whole-number field, or use a text column".into()
        }
        _ => "map a field of a matching type, or a text column".into(),
    })
}

fn missing(
    field: String,
    name: &str,
    context: &str,
    contact: &TableDefinition,
    prefix: Option<&CustomizationPrefix>,
) -> Problem {
    let mut message = format!("contact has no column {name} ({context})");
    // The same name under another publisher's prefix is the typical wrong-prefix case.
    if let Some(prefix) = prefix {
        let bare = name.strip_prefix(&format!("{prefix}_")).unwrap_or(name);
        if let Some(other) = contact
            .columns
            .iter()
            .find(|c| c.logical_name.split_once('_').is_some_and(|(p, rest)| rest == bare && p != prefix.as_str()))
        {
            let other_prefix = other.logical_name.split_once('_').map(|(p, _)| p).unwrap_or_default();
            message.push_str(&format!(
                ". Column {} exists: is the customization prefix of the target connection {other_prefix} rather than {prefix}?",
                other.logical_name
            ));
        }
    }
    Problem::missing_column(field, name, contact, message, "Create the column in Dynamics, or check the name")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::{AttributeMapping, AudienceMapping};

    use crate::activation::test_column as column;

    fn contact() -> TableDefinition {
        TableDefinition {
            logical_name: "contact".into(),
            entity_set_name: "contacts".into(),
            primary_id: "contactid".into(),
            primary_name: Some("fullname".into()),
            display_name: None,
            change_tracking: false,
            columns: vec![
                column("contactid", ColumnType::Uniqueidentifier),
                column("firstname", ColumnType::String { max_length: Some(50) }),
                column("lastname", ColumnType::String { max_length: Some(50) }),
                column("fullname", ColumnType::String { max_length: Some(160) }),
                column("emailaddress1", ColumnType::String { max_length: Some(100) }),
                column("birthdate", ColumnType::DateTime { date_only: true }),
                column("donotemail", ColumnType::Boolean),
                column("parentcustomerid", ColumnType::Customer),
                column("cr8a3_gold", ColumnType::String { max_length: Some(100) }),
                column("new_silver", ColumnType::String { max_length: Some(5) }),
                column("new_points", ColumnType::Integer),
            ],
        }
    }

    fn flow(audiences: &[(&str, &str)], mappings: &[(&str, &str)]) -> FlowDefinition {
        FlowDefinition {
            name: "Loyalty".into(),
            description: String::new(),
            target_connection_ids: vec![Default::default()],
            audiences: audiences
                .iter()
                .map(|(id, m)| AudienceMapping { id: id.to_string(), name: None, mapping_id: m.to_string() })
                .collect(),
            mappings: mappings
                .iter()
                .map(|(s, t)| AttributeMapping { source: s.to_string(), target: t.to_string(), source_type: None })
                .collect(),
            status_values: Default::default(),
            empty_values: Default::default(),
        }
    }

    fn problems(flow: &FlowDefinition, prefix: &str) -> Vec<Problem> {
        validate(flow, &prefix.parse().unwrap(), &contact()).err().map(|r| r.problems).unwrap_or_default()
    }

    #[test]
    fn a_valid_flow_passes() {
        let f = flow(
            &[("seg-1", "gold")],
            &[
                ("contactId", "contactid"),
                ("person.name.firstName", "FirstName"),
                ("personalEmail.address", "emailaddress1"),
            ],
        );
        assert_eq!(problems(&f, "cr8a3"), []);
    }

    #[test]
    fn the_identity_is_mandatory() {
        let p = problems(&flow(&[], &[("person.name.firstName", "firstname")]), "new");
        assert_eq!(p[0].field, "mappings");
        assert!(p[0].message.contains("contactId → contactid"), "{}", p[0].message);
        let p = problems(&flow(&[], &[("identityMap.contactId", "emailaddress1")]), "new");
        assert_eq!(p[0].field, "mappings[0].target");
    }

    #[test]
    fn a_missing_column_names_the_closest_ones() {
        let p = problems(&flow(&[], &[("contactId", "contactid"), ("person.name.firstName", "firstnme")]), "new");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].field, "mappings[1].target");
        assert_eq!(p[0].closest.first().map(String::as_str), Some("firstname"));
        assert!(p[0].message.starts_with("contact has no column firstnme"), "{}", p[0].message);
    }

    #[test]
    fn a_wrong_prefix_says_which_prefix_the_column_has() {
        let p = problems(&flow(&[("seg-1", "gold")], &[("contactId", "contactid")]), "new");
        assert_eq!(p[0].field, "audiences[0].mappingId");
        assert!(p[0].message.contains("contact has no column new_gold"), "{}", p[0].message);
        assert!(p[0].message.contains("cr8a3 rather than new"), "{}", p[0].message);
        assert_eq!(p[0].closest.first().map(String::as_str), Some("cr8a3_gold"));
    }

    #[test]
    fn types_must_hold_what_is_mapped() {
        let p = problems(
            &flow(
                &[("seg-2", "silver"), ("seg-3", "points")],
                &[
                    ("contactId", "contactid"),
                    ("person.name.firstName", "birthdate"),
                    ("person.birthDate", "donotemail"),
                    ("person.name.lastName", "fullname"),
                    ("person.name.middleName", "parentcustomerid"),
                ],
            ),
            "new",
        );
        let fields: Vec<&str> = p.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "mappings[1].target",
                "mappings[2].target",
                "mappings[3].target",
                "mappings[4].target",
                "audiences[0].mappingId",
                "audiences[1].mappingId"
            ]
        );
        assert!(
            p[0].message.contains("birthdate is date only and cannot hold person.name.firstName (text)"),
            "{}",
            p[0].message
        );
        assert!(p[2].message.contains("read-only"));
        assert!(p[4].message.contains("too short"), "{}", p[4].message);
        assert!(p[5].message.contains("is whole number but holds"), "{}", p[5].message);
    }

    /// A contact the size of a customized one: its standard columns and a few hundred more.
    fn large_contact() -> TableDefinition {
        let mut table = contact();
        for part in ["address1", "address2", "address3"] {
            let fields = "line1 line2 line3 city stateorprovince postalcode country county telephone1 telephone2 fax \
                          latitude longitude name composite addresstypecode shippingmethodcode upszone utcoffset \
                          postofficebox primarycontactname freighttermscode addressid";
            for field in fields.split_whitespace() {
                table.columns.push(column(&format!("{part}_{field}"), ColumnType::String { max_length: Some(100) }));
            }
        }
        for i in 0..230 {
            table
                .columns
                .push(column(&format!("new_customerattribute{i}"), ColumnType::String { max_length: Some(100) }));
        }
        table
    }

    /// A flow of `mappings` mappings (the identity, then missing columns) and `audiences` audiences whose columns
    /// are missing.
    fn sized_flow(mappings: usize, audiences: usize) -> FlowDefinition {
        let mut f = flow(&[], &[("contactId", "contactid")]);
        f.mappings.extend((1..mappings).map(|i| AttributeMapping {
            source: format!("loyalty.field{i}"),
            target: format!("new_loyaltyattribute{i}"),
            source_type: None,
        }));
        f.audiences = (0..audiences)
            .map(|i| AudienceMapping { id: format!("seg-{i}"), name: None, mapping_id: format!("segmentstatus{i}") })
            .collect();
        f
    }

    #[test]
    fn a_flow_over_the_caps_gets_one_problem_per_cap_and_no_other() {
        let f = sized_flow(MAX_MAPPINGS + 1, 0);
        let p = problems(&f, "new");
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].field, "mappings");
        assert!(p[0].message.contains(&format!("has {} mappings", MAX_MAPPINGS + 1)), "{}", p[0].message);
        assert!(p[0].message.contains(&format!("at most {MAX_MAPPINGS}")), "{}", p[0].message);
        assert_eq!(check_shape(&f), p);

        let p = problems(&sized_flow(45_000, MAX_AUDIENCES + 1), "new");
        let fields: Vec<&str> = p.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["mappings", "audiences"]);
        assert!(p[1].message.contains(&format!("at most {MAX_AUDIENCES}")), "{}", p[1].message);
    }

    #[test]
    fn a_flow_at_the_caps_with_every_column_missing_is_checked_in_full() {
        let f = sized_flow(MAX_MAPPINGS, MAX_AUDIENCES);
        let p = validate(&f, &"new".parse().unwrap(), &large_contact()).unwrap_err().problems;
        assert_eq!(p.len(), MAX_MAPPINGS - 1 + MAX_AUDIENCES, "every column but the identity's is missing");
        assert!(p.iter().all(|p| p.message.starts_with("contact has no column")), "{p:?}");
        assert_eq!(p[0].field, "mappings[1].target");
        assert_eq!(p[MAX_MAPPINGS - 1].field, "audiences[0].mappingId");
    }

    #[test]
    fn overlong_names_are_refused_without_a_search_for_their_closest_columns() {
        let long = "x".repeat(10_000);
        let mut f = flow(&[("seg-1", "gold")], &[("contactId", "contactid"), ("person.name.firstName", &long)]);
        f.audiences.push(AudienceMapping { id: long.clone(), name: None, mapping_id: "silver".into() });
        let p = problems(&f, "cr8a3");
        let fields: Vec<&str> = p.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["mappings[1].target", "audiences[1].id"], "{p:?}");
        assert!(
            p[0].message.starts_with(&format!(
                "the target column is 10000 characters long, and a flow's names are at most {MAX_NAME_LENGTH}"
            )),
            "{}",
            p[0].message
        );
        assert!(p[0].message.len() < 300, "the message quotes only the name's beginning: {}", p[0].message);
        assert!(p.iter().all(|p| p.closest.is_empty()));
    }
}
