//! What a flow that sends Dynamics records out to the marketing side does to each row between the change feed
//! and its destination (seed 001's mappings): *replacements* (a column's value swapped for another, a choice's
//! label following its value), a *filter* of conditions combined with And/Or (a record that no longer passes can
//! be deleted from the destination), and whether deletes in Dynamics are applied. Per-column "apply updates"
//! lives in the mapping ([`super::shape::ColumnMapping`]): the destination keeps what it was first given.
//!
//! Everything is checked when the flow is saved, against the table's columns and the dataset's kinds, so a row
//! never fails here: a row is kept (perhaps changed, perhaps turned into a delete) or left out with the reason
//! its run counts it under.

use crate::dataset::{ColumnKind, DatasetRow, DatasetSchema, Operation, Value};
use crate::ingestion::explore::value_json;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// The most conditions a filter holds, groups included: a filter is a rule a person writes, not a list of ids.
pub const MAX_CONDITIONS: usize = 100;
/// How deep groups nest.
pub const MAX_DEPTH: usize = 5;

/// A flow's outbound rules. The default changes nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outbound {
    #[serde(default)]
    pub replacements: Vec<Replacement>,
    #[serde(default)]
    pub filter: Option<Criterion>,
    /// A record changed so that it no longer passes the filter is deleted from the destination (otherwise the
    /// destination keeps what it had).
    #[serde(default)]
    pub delete_filtered_out: bool,
    /// Whether a record deleted in Dynamics is deleted from the destination.
    #[serde(default = "yes")]
    pub apply_deletes: bool,
}

fn yes() -> bool {
    true
}

impl Default for Outbound {
    fn default() -> Self {
        Outbound { replacements: Vec::new(), filter: None, delete_filtered_out: false, apply_deletes: true }
    }
}

/// A value of a dataset column swapped for another: (`gendercode`, `3`, `2`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Replacement {
    /// The dataset column (the mapping's destination).
    pub column: String,
    pub value: Json,
    pub new_value: Json,
    /// For a choice written with its label: the new value's label, found when the flow was saved.
    #[serde(default)]
    pub new_label: Option<String>,
}

/// A filter: conditions, or groups of them, all or any of which a record must pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Criterion {
    All { criteria: Vec<Criterion> },
    Any { criteria: Vec<Criterion> },
    Condition(Condition),
}

/// One condition on a dataset column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    pub column: String,
    pub operator: Comparison,
    #[serde(default)]
    pub value: Json,
}

/// How a condition compares. Text compares without regard to case, as Dataverse's filters do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Comparison {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Contains,
    BeginsWith,
    EndsWith,
    Null,
    NotNull,
    In,
}

const COMPARISONS: &str = "eq, ne, gt, ge, lt, le, contains, beginsWith, endsWith, null, notNull or in";

impl Comparison {
    fn parse(text: &str) -> Option<Comparison> {
        Some(match text {
            "eq" => Comparison::Eq,
            "ne" => Comparison::Ne,
            "gt" => Comparison::Gt,
            "ge" => Comparison::Ge,
            "lt" => Comparison::Lt,
            "le" => Comparison::Le,
            "contains" => Comparison::Contains,
            "beginsWith" => Comparison::BeginsWith,
            "endsWith" => Comparison::EndsWith,
            "null" => Comparison::Null,
            "notNull" => Comparison::NotNull,
            "in" => Comparison::In,
            _ => return None,
        })
    }
}

/// What the outbound rules make of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Send(DatasetRow),
    /// Left out: the code its run counts it under, and why.
    LeaveOut {
        code: &'static str,
        message: String,
    },
}

impl Outbound {
    /// Whether the rules change anything.
    pub fn is_none(&self) -> bool {
        *self == Outbound::default()
    }

    /// The row as the destination gets it.
    pub fn apply(&self, mut row: DatasetRow, schema: &DatasetSchema) -> Outcome {
        if row.operation == Operation::Delete {
            return match self.apply_deletes {
                true => Outcome::Send(row),
                false => Outcome::LeaveOut {
                    code: "delete-not-applied",
                    message: format!("record {} was deleted in Dynamics; the flow does not apply deletes", row.id),
                },
            };
        }
        // The filter reads the record as Dynamics has it; replacements come after.
        if let Some(filter) = &self.filter
            && !filter.passes(&row, schema)
        {
            match (self.delete_filtered_out, row.operation) {
                (true, Operation::Update) => row.operation = Operation::Delete,
                _ => {
                    return Outcome::LeaveOut {
                        code: "filtered-out",
                        message: format!("record {} does not pass the flow's filter", row.id),
                    };
                }
            }
        }
        for r in &self.replacements {
            let Some(at) = schema.position(&r.column) else { continue };
            let kind = schema.columns[at].kind;
            let current = row.values.get(at).unwrap_or(&Value::Null);
            if !same(&value_json(current, Some(kind)), &r.value) {
                continue;
            }
            // Checked when the flow was saved; a column whose type changed since (a new generation) is left as is.
            let Ok(new) = to_value(&r.new_value, kind) else { continue };
            if row.values.len() <= at {
                row.values.resize(schema.columns.len(), Value::Null);
            }
            row.values[at] = new;
            if let (Some(label), Some(label_at)) = (&r.new_label, schema.position(&format!("{}_label", r.column)))
                && row.values.len() > label_at
            {
                row.values[label_at] = Value::Text(label.clone());
            }
        }
        Outcome::Send(row)
    }

    /// The dataset columns the rules name, each with where it is named in the flow's body.
    pub fn columns(&self) -> Vec<(String, &str)> {
        let mut named: Vec<(String, &str)> = Vec::new();
        for (i, r) in self.replacements.iter().enumerate() {
            named.push((format!("replacements[{i}].column"), &r.column));
        }
        if let Some(filter) = &self.filter {
            filter.columns("filter", &mut named);
        }
        named
    }
}

impl Criterion {
    /// The filter as a flow's `Filter` params take it (what [`parse_filter`] reads).
    pub fn to_params(&self) -> Json {
        match self {
            Criterion::All { criteria } | Criterion::Any { criteria } => serde_json::json!({
                "operator": if matches!(self, Criterion::All { .. }) { "and" } else { "or" },
                "conditions": criteria.iter().map(Criterion::to_params).collect::<Vec<_>>(),
            }),
            Criterion::Condition(c) => serde_json::json!({
                "column": c.column,
                "operator": serde_json::to_value(c.operator).expect("a comparison serializes"),
                "value": c.value,
            }),
        }
    }

    fn passes(&self, row: &DatasetRow, schema: &DatasetSchema) -> bool {
        match self {
            Criterion::All { criteria } => criteria.iter().all(|c| c.passes(row, schema)),
            Criterion::Any { criteria } => criteria.iter().any(|c| c.passes(row, schema)),
            Criterion::Condition(c) => {
                let value = schema
                    .position(&c.column)
                    .map(|at| value_json(row.values.get(at).unwrap_or(&Value::Null), Some(schema.columns[at].kind)))
                    .unwrap_or(Json::Null);
                c.holds(&value)
            }
        }
    }

    fn columns<'a>(&'a self, at: &str, named: &mut Vec<(String, &'a str)>) {
        match self {
            Criterion::All { criteria } | Criterion::Any { criteria } => {
                for (i, c) in criteria.iter().enumerate() {
                    c.columns(&format!("{at}.conditions[{i}]"), named);
                }
            }
            Criterion::Condition(c) => named.push((format!("{at}.column"), &c.column)),
        }
    }
}

impl Condition {
    fn holds(&self, value: &Json) -> bool {
        let text = |v: &Json| v.as_str().map(str::to_lowercase);
        match self.operator {
            Comparison::Null => value.is_null(),
            Comparison::NotNull => !value.is_null(),
            _ if value.is_null() => self.operator == Comparison::Ne && !self.value.is_null(),
            Comparison::Eq => same(value, &self.value),
            Comparison::Ne => !same(value, &self.value),
            Comparison::In => self.value.as_array().is_some_and(|all| all.iter().any(|v| same(value, v))),
            Comparison::Gt => order(value, &self.value).is_some_and(|o| o.is_gt()),
            Comparison::Ge => order(value, &self.value).is_some_and(|o| o.is_ge()),
            Comparison::Lt => order(value, &self.value).is_some_and(|o| o.is_lt()),
            Comparison::Le => order(value, &self.value).is_some_and(|o| o.is_le()),
            Comparison::Contains | Comparison::BeginsWith | Comparison::EndsWith => {
                match (text(value), text(&self.value)) {
                    (Some(v), Some(part)) => match self.operator {
                        Comparison::Contains => v.contains(&part),
                        Comparison::BeginsWith => v.starts_with(&part),
                        _ => v.ends_with(&part),
                    },
                    _ => false,
                }
            }
        }
    }
}

/// A number, or a number written as text (decimals travel as text to stay exact).
fn number(v: &Json) -> Option<f64> {
    v.as_f64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// Whether a row's value equals a value of the flow's rules: numbers by value, text without regard to case.
fn same(value: &Json, given: &Json) -> bool {
    match (value, given) {
        (Json::String(a), Json::String(b)) => {
            a.eq_ignore_ascii_case(b) || (numeric(a) && number(value) == number(given))
        }
        (Json::Number(_), _) | (_, Json::Number(_)) => number(value).is_some() && number(value) == number(given),
        _ => value == given,
    }
}

fn numeric(text: &str) -> bool {
    text.trim().parse::<f64>().is_ok()
}

/// How a row's value orders against a given one: numbers by value, text (ISO dates and times among it) by its
/// characters.
fn order(value: &Json, given: &Json) -> Option<std::cmp::Ordering> {
    match (number(value), number(given)) {
        (Some(a), Some(b)) if value.is_number() || given.is_number() || numeric(value.as_str().unwrap_or("")) => {
            a.partial_cmp(&b)
        }
        _ => Some(value.as_str()?.to_lowercase().cmp(&given.as_str()?.to_lowercase())),
    }
}

/// A value of the flow's rules as a value of a dataset column of `kind`, or why it cannot be one.
pub fn to_value(given: &Json, kind: ColumnKind) -> Result<Value, String> {
    let wrong = |what: &str| Err(format!("{} is not {what}", crate::text::describe(given)));
    if given.is_null() {
        return Ok(Value::Null);
    }
    match kind {
        ColumnKind::Text => given.as_str().map(|s| Value::Text(s.to_string())).map_or_else(|| wrong("text"), Ok),
        ColumnKind::Boolean => given.as_bool().map(Value::Boolean).map_or_else(|| wrong("true or false"), Ok),
        ColumnKind::Integer => number(given)
            .filter(|n| n.fract() == 0.0 && *n >= f64::from(i32::MIN) && *n <= f64::from(i32::MAX))
            .map(|n| Value::Integer(n as i32))
            .map_or_else(|| wrong("a whole number"), Ok),
        ColumnKind::BigInt => match given {
            Json::Number(n) => n.as_i64().map(Value::BigInt).map_or_else(|| wrong("a whole number"), Ok),
            Json::String(s) => s.trim().parse().map(Value::BigInt).or_else(|_| wrong("a whole number")),
            _ => wrong("a whole number"),
        },
        ColumnKind::Double => number(given).map(Value::Double).map_or_else(|| wrong("a number"), Ok),
        ColumnKind::Decimal { scale } => number(given)
            .and_then(|n| super::shape::decimal(n, scale))
            .map(Value::Decimal)
            .map_or_else(|| wrong(&format!("a number of at most {scale} decimals")), Ok),
        ColumnKind::Timestamp => given
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| Value::Timestamp(t.with_timezone(&Utc)))
            .map_or_else(|| wrong("a date and time (2026-12-01T09:30:00Z)"), Ok),
        ColumnKind::Date => given
            .as_str()
            .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
            .map(Value::Date)
            .map_or_else(|| wrong("a date (2026-12-01)"), Ok),
        ColumnKind::Uuid => given
            .as_str()
            .and_then(|s| uuid::Uuid::parse_str(s).ok())
            .map(Value::Uuid)
            .map_or_else(|| wrong("a unique identifier"), Ok),
    }
}

/// Reads the filter of a flow's `Filter` transformation:
/// `{"operator": "and"|"or", "conditions": [{"column", "operator", "value"} | a group like this one]}`. Every
/// problem is added to `problems`, with the field it is in.
pub fn parse_filter(params: &Json, field: &str, problems: &mut Vec<(String, String)>) -> Option<Criterion> {
    let mut count = 0;
    let criterion = parse_group(params, field, 0, &mut count, problems);
    if count > MAX_CONDITIONS {
        problems.push((
            format!("{field}.conditions"),
            format!("the filter has {count} conditions; at most {MAX_CONDITIONS}: filter on a column that says it"),
        ));
    }
    criterion
}

fn parse_group(
    params: &Json,
    field: &str,
    depth: usize,
    count: &mut usize,
    problems: &mut Vec<(String, String)>,
) -> Option<Criterion> {
    if depth >= MAX_DEPTH {
        problems.push((field.to_string(), format!("groups nest at most {MAX_DEPTH} deep")));
        return None;
    }
    let all = match params.get("operator").and_then(Json::as_str).map(str::to_ascii_lowercase).as_deref() {
        Some("and") | None => true,
        Some("or") => false,
        Some(other) => {
            problems.push((format!("{field}.operator"), format!("'{other}' combines nothing: use and or or")));
            true
        }
    };
    let Some(conditions) = params.get("conditions").and_then(Json::as_array).filter(|c| !c.is_empty()) else {
        problems.push((
            format!("{field}.conditions"),
            "give the conditions: [{\"column\": \"statecode\", \"operator\": \"eq\", \"value\": 0}]".into(),
        ));
        return None;
    };
    let mut criteria = Vec::new();
    for (i, c) in conditions.iter().enumerate() {
        let at = format!("{field}.conditions[{i}]");
        *count += 1;
        if c.get("conditions").is_some() {
            criteria.extend(parse_group(c, &at, depth + 1, count, problems));
            continue;
        }
        let column = c.get("column").and_then(Json::as_str).map(str::trim).unwrap_or("");
        if column.is_empty() {
            problems.push((format!("{at}.column"), "name the dataset column the condition is on".into()));
        }
        let operator = c.get("operator").and_then(Json::as_str).unwrap_or("");
        let Some(operator) = Comparison::parse(operator) else {
            problems.push((format!("{at}.operator"), format!("'{operator}' is not a comparison: use {COMPARISONS}")));
            continue;
        };
        let value = c.get("value").cloned().unwrap_or(Json::Null);
        let fits = match operator {
            Comparison::Null | Comparison::NotNull => true,
            Comparison::In => value.as_array().is_some_and(|a| !a.is_empty()),
            Comparison::Contains | Comparison::BeginsWith | Comparison::EndsWith => value.is_string(),
            _ => !value.is_null() && !value.is_array() && !value.is_object(),
        };
        if !fits {
            problems.push((
                format!("{at}.value"),
                format!("{} does not go with {operator:?}: in takes a list, contains, beginsWith and endsWith take text, the others one value", crate::text::describe(&value)),
            ));
        }
        criteria.push(Criterion::Condition(Condition { column: column.to_string(), operator, value }));
    }
    Some(if all { Criterion::All { criteria } } else { Criterion::Any { criteria } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::DatasetColumn;
    use serde_json::json;
    use uuid::Uuid;

    fn schema() -> DatasetSchema {
        let column = |name: &str, kind| DatasetColumn { name: name.into(), kind };
        DatasetSchema {
            columns: vec![
                column("email", ColumnKind::Text),
                column("gendercode", ColumnKind::Integer),
                column("gendercode_label", ColumnKind::Text),
                column("statecode", ColumnKind::Integer),
                column("credit", ColumnKind::Decimal { scale: 4 }),
            ],
        }
    }

    fn row(operation: Operation, email: &str, gender: i32, state: i32) -> DatasetRow {
        DatasetRow {
            id: Uuid::from_u128(7),
            operation,
            version: Some(10),
            values: vec![
                Value::Text(email.into()),
                Value::Integer(gender),
                Value::Text(if gender == 1 { "Male" } else { "Female" }.into()),
                Value::Integer(state),
                Value::Decimal(1_500_000),
            ],
            synced_at: Utc::now(),
        }
    }

    fn filter(body: Json) -> Criterion {
        let mut problems = Vec::new();
        let filter = parse_filter(&body, "transformations[2].params", &mut problems);
        assert_eq!(problems, []);
        filter.unwrap()
    }

    #[test]
    fn a_replacement_swaps_a_choice_value_and_its_label() {
        let rules = Outbound {
            replacements: vec![Replacement {
                column: "gendercode".into(),
                value: json!(1),
                new_value: json!(2),
                new_label: Some("Female".into()),
            }],
            ..Outbound::default()
        };
        let Outcome::Send(sent) = rules.apply(row(Operation::Update, "a@example.com", 1, 0), &schema()) else {
            panic!("the row is sent")
        };
        assert_eq!(sent.values[1], Value::Integer(2));
        assert_eq!(sent.values[2], Value::Text("Female".into()));
        let Outcome::Send(untouched) = rules.apply(row(Operation::Update, "a@example.com", 2, 0), &schema()) else {
            panic!("the row is sent")
        };
        assert_eq!(untouched.values[1], Value::Integer(2));
    }

    #[test]
    fn and_or_filters_combine_as_written() {
        // Active, and either a company address or a credit of at least 100.
        let rules = Outbound {
            filter: Some(filter(json!({"operator": "and", "conditions": [
                {"column": "statecode", "operator": "eq", "value": 0},
                {"operator": "or", "conditions": [
                    {"column": "email", "operator": "endsWith", "value": "@CONTOSO.com"},
                    {"column": "credit", "operator": "ge", "value": 200}
                ]}
            ]}))),
            ..Outbound::default()
        };
        let sent = |r: DatasetRow| matches!(rules.apply(r, &schema()), Outcome::Send(_));
        assert!(sent(row(Operation::Create, "jo@contoso.com", 1, 0)));
        assert!(!sent(row(Operation::Create, "jo@fabrikam.com", 1, 0)), "credit 150 is under 200");
        assert!(!sent(row(Operation::Create, "jo@contoso.com", 1, 1)), "inactive");
    }

    #[test]
    fn a_record_that_stops_passing_is_deleted_only_when_the_flow_says_so() {
        let only_active = filter(json!({"conditions": [{"column": "statecode", "operator": "eq", "value": 0}]}));
        let mut rules = Outbound { filter: Some(only_active), ..Outbound::default() };
        let inactive = row(Operation::Update, "a@example.com", 1, 1);
        assert!(matches!(rules.apply(inactive.clone(), &schema()), Outcome::LeaveOut { code: "filtered-out", .. }));
        rules.delete_filtered_out = true;
        let Outcome::Send(sent) = rules.apply(inactive, &schema()) else { panic!("a delete is sent") };
        assert_eq!(sent.operation, Operation::Delete);
        // A record never sent is not deleted: a creation that does not pass is left out.
        let created = row(Operation::Create, "a@example.com", 1, 1);
        assert!(matches!(rules.apply(created, &schema()), Outcome::LeaveOut { .. }));
    }

    #[test]
    fn deletes_are_left_out_when_the_flow_does_not_apply_them() {
        let rules = Outbound { apply_deletes: false, ..Outbound::default() };
        let deleted = DatasetRow { operation: Operation::Delete, values: vec![], ..row(Operation::Update, "", 1, 0) };
        assert!(matches!(rules.apply(deleted, &schema()), Outcome::LeaveOut { code: "delete-not-applied", .. }));
    }

    #[test]
    fn every_problem_of_a_filter_is_reported_with_its_field() {
        let mut problems = Vec::new();
        parse_filter(
            &json!({"operator": "xor", "conditions": [
                {"operator": "like", "column": "email"},
                {"column": "", "operator": "in", "value": 3}
            ]}),
            "f",
            &mut problems,
        );
        let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            ["f.operator", "f.conditions[0].operator", "f.conditions[1].column", "f.conditions[1].value"]
        );
    }

    #[test]
    fn a_rule_value_is_read_as_its_columns_kind_or_refused_saying_why() {
        assert_eq!(to_value(&json!("2"), ColumnKind::Integer), Ok(Value::Integer(2)));
        assert_eq!(to_value(&json!(12.5), ColumnKind::Decimal { scale: 2 }), Ok(Value::Decimal(1250)));
        assert!(to_value(&json!("x"), ColumnKind::Integer).unwrap_err().contains("not a whole number"));
        assert!(to_value(&json!("2026-13-01"), ColumnKind::Date).is_err());
    }
}
