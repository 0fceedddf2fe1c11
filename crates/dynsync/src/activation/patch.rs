//! From a profile to the update of its Dynamics contact: the mapped attributes, converted to their columns'
//! types, and one column per audience holding the configured value for the profile's status.
//!
//! A value Dynamics would refuse — of the wrong type, or a number outside its column's range — is left out of
//! the update and noted on the record's outcome: Dynamics refuses an update for one bad value, and the contact
//! would lose its audience statuses with it.

use super::profile::{CONTACT_NAMESPACE, MembershipStatus, Paths, Profile};
use super::{EmptyValues, FlowDefinition, StatusValues};
use crate::pipeline::Note;
use crate::target::CustomizationPrefix;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use dataverse::metadata::{ColumnType, NumberRange, TableDefinition};
use serde_json::{Map, Value as Json};
use std::collections::HashMap;
use std::fmt;
use uuid::Uuid;

/// The id of a Dynamics contact, as a profile's `contactId` identity names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContactId(pub Uuid);

impl std::str::FromStr for ContactId {
    type Err = uuid::Error;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(text.trim()).map(ContactId)
    }
}

impl fmt::Display for ContactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The columns to set on one contact.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactPatch {
    pub contact: ContactId,
    pub columns: Map<String, Json>,
}

impl ContactPatch {
    /// Folds a later update of the same contact into this one: the later value of each column wins.
    pub fn absorb(&mut self, later: ContactPatch) {
        debug_assert_eq!(self.contact, later.contact);
        self.columns.extend(later.columns);
    }
}

/// Why a profile is not written to Dynamics. Reported per identity, as the seed product's monitoring does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Exclusion {
    #[error("the profile has no contactId identity; add identityMap.contactId with the Dynamics contact's id")]
    NoContactId,
    #[error("the contactId '{0}' is not a GUID; a Dynamics contact id looks like 2b6c2f6e-5f0a-4c1e-9d3b-0a1b2c3d4e5f")]
    NotAGuid(String),
    #[error("the profile is in none of the flow's audiences")]
    NoMappedAudience,
}

impl Exclusion {
    /// A short stable code for grouping outcomes.
    pub fn code(&self) -> &'static str {
        match self {
            Exclusion::NoContactId => "no-contact-id",
            Exclusion::NotAGuid(_) => "contact-id-not-a-guid",
            Exclusion::NoMappedAudience => "no-mapped-audience",
        }
    }
}

/// A contact update, and what was left out of it and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Transformed {
    pub patch: ContactPatch,
    pub notes: Vec<Note>,
}

/// One mapped attribute, resolved against the contact table.
#[derive(Debug, Clone)]
struct Column {
    source: String,
    target: String,
    kind: ColumnType,
    /// The values a number column takes; `None` for a column that holds no number.
    range: Option<NumberRange>,
}

/// Why a profile's value is not written to its column.
#[derive(Debug, Clone, Copy, PartialEq)]
enum LeftOut {
    /// The value is not of the column's type: what the column takes.
    NotA(&'static str),
    /// The value is a number outside the column's range.
    OutOfRange(NumberRange),
}

/// A flow made ready to transform profiles: column names and types resolved once.
#[derive(Debug, Clone)]
pub struct Activation {
    /// What of a profile the flow reads.
    paths: Paths,
    audiences: Vec<(String, String)>,
    columns: Vec<Column>,
    status_values: StatusValues,
    empty_values: EmptyValues,
}

impl Activation {
    /// Resolves a flow's columns on the contact table. The flow was validated when it was saved; a column
    /// that has since disappeared is written anyway, and Dynamics' error names it.
    pub fn new(flow: &FlowDefinition, prefix: &CustomizationPrefix, contact: &TableDefinition) -> Activation {
        let audiences = flow.audiences.iter().map(|a| (a.id.clone(), prefix.column(&a.mapping_id))).collect();
        let columns: Vec<Column> = flow
            .mappings
            .iter()
            .filter(|m| !m.is_identity())
            .map(|m| {
                let kind =
                    contact.column(m.target.trim()).map_or(ColumnType::String { max_length: None }, |c| c.kind.clone());
                Column {
                    source: m.source.trim().to_string(),
                    target: m.target.trim().to_ascii_lowercase(),
                    range: NumberRange::default_for(&kind),
                    kind,
                }
            })
            .collect();
        let paths = Paths::new(columns.iter().map(|c| c.source.as_str()), flow.audiences.iter().map(|a| a.id.as_str()));
        Activation {
            paths,
            audiences,
            columns,
            status_values: flow.status_values.clone(),
            empty_values: flow.empty_values,
        }
    }

    /// What of a profile the flow reads: [`Profile::read`] builds only that.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// The number columns the flow writes, and their types: those whose own range is worth reading.
    pub fn number_columns(&self) -> impl Iterator<Item = (&str, &ColumnType)> {
        self.columns.iter().filter(|c| c.range.is_some()).map(|c| (c.target.as_str(), &c.kind))
    }

    /// Takes the columns' own ranges (by logical name) in place of their types' defaults: a maker narrows a
    /// whole number column to 0 to 1,000, and Dynamics refuses 5,000 in it.
    pub fn with_column_ranges(mut self, ranges: &HashMap<String, NumberRange>) -> Activation {
        for column in &mut self.columns {
            if let (Some(range), Some(own)) = (&mut column.range, ranges.get(&column.target)) {
                *range = *own;
            }
        }
        self
    }

    /// The contact update for a profile, or why there is none.
    pub fn transform(&self, profile: &Profile) -> Result<Transformed, Exclusion> {
        let id = profile.identity(CONTACT_NAMESPACE).ok_or(Exclusion::NoContactId)?;
        let contact = Uuid::parse_str(id.trim()).map(ContactId).map_err(|_| Exclusion::NotAGuid(id.to_string()))?;
        let mut columns = Map::new();
        for (audience, status) in profile.memberships() {
            if let Some((_, column)) = self.audiences.iter().find(|(a, _)| a == audience) {
                columns.insert(column.clone(), Json::String(self.status_value(status).to_string()));
            }
        }
        if columns.is_empty() {
            return Err(Exclusion::NoMappedAudience);
        }
        let mut notes = Vec::new();
        for column in &self.columns {
            let value = profile.value(&column.source).filter(|v| !is_empty(v));
            match value {
                None => match self.empty_values {
                    EmptyValues::Clear => {
                        columns.insert(column.target.clone(), Json::Null);
                    }
                    EmptyValues::Skip if matches!(column.kind, ColumnType::DateTime { .. }) => notes.push(Note::new(
                        "empty-date",
                        format!("{} is empty: the date column {} was left as it is", column.source, column.target),
                    )),
                    EmptyValues::Skip => {}
                },
                Some(value) => match convert(value, &column.kind, column.range) {
                    Ok(converted) => {
                        columns.insert(column.target.clone(), converted);
                    }
                    Err(LeftOut::NotA(expected)) => notes.push(Note::new(
                        "wrong-type",
                        format!(
                            "{} is {value}, not {expected}: the column {} ({}) was left as it is",
                            column.source, column.target, column.kind
                        ),
                    )),
                    Err(LeftOut::OutOfRange(range)) => notes.push(Note::new(
                        "out-of-range",
                        format!(
                            "{} is {value}, outside the range of the column {} ({}: {range}): the column was left as \
                             it is; correct the value in the profile, or map {} to a column whose range holds it",
                            column.source, column.target, column.kind, column.source
                        ),
                    )),
                },
            }
        }
        Ok(Transformed { patch: ContactPatch { contact, columns }, notes })
    }

    fn status_value(&self, status: MembershipStatus) -> &str {
        match status {
            MembershipStatus::Realized => &self.status_values.realized,
            MembershipStatus::Existing => &self.status_values.existing,
            MembershipStatus::Exited => &self.status_values.exited,
        }
    }
}

fn is_empty(value: &Json) -> bool {
    match value {
        Json::Null => true,
        Json::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// A profile value as its column takes it, or why it is left out.
fn convert(value: &Json, kind: &ColumnType, range: Option<NumberRange>) -> Result<Json, LeftOut> {
    let text = value.as_str().map(str::trim);
    match kind {
        ColumnType::String { .. } | ColumnType::Memo { .. } => Ok(match value {
            Json::String(_) => value.clone(),
            other => Json::String(other.to_string()),
        }),
        ColumnType::Integer | ColumnType::BigInt | ColumnType::Picklist => {
            let range = range.or_else(|| NumberRange::default_for(kind)).expect("a whole number column has a range");
            let whole = match read_number(value, text) {
                Some(Reading::Whole(n)) => n,
                Some(Reading::Real(n)) if n.is_finite() && n.fract() == 0.0 => {
                    // -2^63 is the least whole f64 an i64 holds, and 2^63 the least one it does not.
                    const BEYOND: f64 = 9_223_372_036_854_775_808.0;
                    if !(-BEYOND..BEYOND).contains(&n) {
                        return Err(LeftOut::OutOfRange(range));
                    }
                    n as i64
                }
                _ => return Err(LeftOut::NotA("a whole number")),
            };
            if !range.holds_whole(whole) {
                return Err(LeftOut::OutOfRange(range));
            }
            Ok(Json::from(whole))
        }
        ColumnType::Decimal | ColumnType::Double | ColumnType::Money => {
            let range = range.or_else(|| NumberRange::default_for(kind)).expect("a number column has a range");
            let number = match read_number(value, text) {
                Some(Reading::Whole(n)) => n as f64,
                Some(Reading::Real(n)) if n.is_finite() => n,
                _ => return Err(LeftOut::NotA("a finite number")),
            };
            if !range.holds_real(number) {
                return Err(LeftOut::OutOfRange(range));
            }
            serde_json::Number::from_f64(number).map(Json::Number).ok_or(LeftOut::NotA("a finite number"))
        }
        ColumnType::Boolean => value
            .as_bool()
            .or_else(|| text.and_then(|t| t.to_ascii_lowercase().parse().ok()))
            .map(Json::Bool)
            .ok_or(LeftOut::NotA("true or false")),
        ColumnType::DateTime { date_only: true } => {
            let date = text.and_then(|t| NaiveDate::parse_from_str(t.get(..10).unwrap_or(t), "%Y-%m-%d").ok());
            date.map(|d| Json::String(d.format("%Y-%m-%d").to_string())).ok_or(LeftOut::NotA("a date (YYYY-MM-DD)"))
        }
        ColumnType::DateTime { date_only: false } => {
            let instant = text.and_then(|t| {
                DateTime::parse_from_rfc3339(t).map(|d| d.to_utc()).ok().or_else(|| {
                    NaiveDate::parse_from_str(t, "%Y-%m-%d")
                        .ok()
                        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
                })
            });
            instant
                .map(|d: DateTime<Utc>| Json::String(d.to_rfc3339_opts(SecondsFormat::Secs, true)))
                .ok_or(LeftOut::NotA("a date and time (ISO 8601)"))
        }
        _ => Ok(value.clone()),
    }
}

/// A number as a profile gives it: a JSON number, or text that reads as one (`"42"`, `"3e9"`).
enum Reading {
    Whole(i64),
    /// Any other number, including one too large for an `i64` and, from text, `NaN` and infinities.
    Real(f64),
}

fn read_number(value: &Json, text: Option<&str>) -> Option<Reading> {
    if let Some(n) = value.as_i64() {
        return Some(Reading::Whole(n));
    }
    if let Some(n) = value.as_f64() {
        return Some(Reading::Real(n));
    }
    let text = text?;
    text.parse().map(Reading::Whole).ok().or_else(|| text.parse().ok().map(Reading::Real))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::{AttributeMapping, AudienceMapping};
    use serde_json::json;

    use crate::activation::test_column as column;

    fn activation(empty_values: EmptyValues) -> Activation {
        let contact = TableDefinition {
            logical_name: "contact".into(),
            entity_set_name: "contacts".into(),
            primary_id: "contactid".into(),
            primary_name: Some("fullname".into()),
            display_name: None,
            change_tracking: false,
            columns: vec![
                column("firstname", ColumnType::String { max_length: Some(50) }),
                column("birthdate", ColumnType::DateTime { date_only: true }),
                column("numberofchildren", ColumnType::Integer),
                column("donotemail", ColumnType::Boolean),
                column("lastonholdtime", ColumnType::DateTime { date_only: false }),
            ],
        };
        let mapping = |source: &str, target: &str| AttributeMapping {
            source: source.into(),
            target: target.into(),
            source_type: None,
        };
        let flow = FlowDefinition {
            name: "f".into(),
            description: String::new(),
            target_connection_ids: Vec::new(),
            audiences: vec![AudienceMapping { id: "gold".into(), name: None, mapping_id: "Gold".into() }],
            mappings: vec![
                mapping("contactId", "contactid"),
                mapping("person.name.firstName", "firstname"),
                mapping("person.birthDate", "birthdate"),
                mapping("person.children", "numberofchildren"),
                mapping("optOut", "donotemail"),
                mapping("lastSeen", "lastonholdtime"),
            ],
            status_values: StatusValues { realized: "in".into(), existing: "in".into(), exited: "out".into() },
            empty_values,
        };
        Activation::new(&flow, &"new".parse().unwrap(), &contact)
    }

    fn profile(entity: Json) -> Profile {
        Profile::from_message(entity).unwrap()
    }

    const ID: &str = "2b6c2f6e-5f0a-4c1e-9d3b-0a1b2c3d4e5f";

    #[test]
    fn attributes_take_their_columns_types_and_audiences_their_status_value() {
        let p = profile(json!({
            "identityMap": {"contactId": [{"id": ID}]},
            "person": {"name": {"firstName": "Ann"}, "birthDate": "1990-04-12T00:00:00Z", "children": "2"},
            "optOut": "TRUE",
            "lastSeen": "2026-11-20",
            "segmentMembership": {"ups": {"gold": {"status": "exited"}}}
        }));
        let t = activation(EmptyValues::Skip).transform(&p).unwrap();
        assert_eq!(t.patch.contact.to_string(), ID);
        assert_eq!(
            Json::Object(t.patch.columns),
            json!({
                "new_gold": "out", "firstname": "Ann", "birthdate": "1990-04-12", "numberofchildren": 2,
                "donotemail": true, "lastonholdtime": "2026-11-20T00:00:00Z"
            })
        );
        assert!(t.notes.is_empty(), "{:?}", t.notes);
    }

    #[test]
    fn empty_dates_are_left_out_and_noted_and_bad_values_named() {
        let p = profile(json!({
            "identityMap": {"contactId": [{"id": ID}]},
            "person": {"birthDate": "", "children": "many"},
            "segmentMembership": {"ups": {"gold": {"status": "realized"}}}
        }));
        let t = activation(EmptyValues::Skip).transform(&p).unwrap();
        assert_eq!(Json::Object(t.patch.columns), json!({"new_gold": "in"}));
        let has = |code: &str, text: &str| t.notes.iter().any(|n| n.code == code && n.message.contains(text));
        assert!(has("empty-date", "person.birthDate is empty"), "{:?}", t.notes);
        assert!(has("wrong-type", "\"many\", not a whole number"), "{:?}", t.notes);

        let cleared = activation(EmptyValues::Clear).transform(&p).unwrap();
        assert_eq!(cleared.patch.columns["birthdate"], Json::Null);
        assert_eq!(cleared.patch.columns["firstname"], Json::Null);
    }

    #[test]
    fn exclusions_say_why() {
        let a = activation(EmptyValues::Skip);
        let gold = json!({"ups": {"gold": {"status": "realized"}}});
        let no_id = profile(json!({"identityMap": {}, "segmentMembership": gold}));
        assert_eq!(a.transform(&no_id), Err(Exclusion::NoContactId));
        let bad_id = profile(json!({"identityMap": {"contactId": [{"id": "42"}]}, "segmentMembership": gold}));
        assert_eq!(a.transform(&bad_id), Err(Exclusion::NotAGuid("42".into())));
        let other = profile(json!({"identityMap": {"contactId": [{"id": ID}]},
            "segmentMembership": {"ups": {"silver": {"status": "realized"}}}}));
        assert_eq!(a.transform(&other), Err(Exclusion::NoMappedAudience));
    }

    #[test]
    fn later_updates_of_a_contact_win() {
        let mut first = ContactPatch { contact: ContactId(Uuid::nil()), columns: Map::new() };
        first.columns.insert("a".into(), json!(1));
        first.columns.insert("b".into(), json!(1));
        let mut later = ContactPatch { contact: ContactId(Uuid::nil()), columns: Map::new() };
        later.columns.insert("b".into(), json!(2));
        first.absorb(later);
        assert_eq!(Json::Object(first.columns), json!({"a": 1, "b": 2}));
    }

    /// A flow writing one number column of each type.
    fn numbers() -> Activation {
        let contact = TableDefinition {
            logical_name: "contact".into(),
            entity_set_name: "contacts".into(),
            primary_id: "contactid".into(),
            primary_name: Some("fullname".into()),
            display_name: None,
            change_tracking: false,
            columns: vec![
                column("numberofchildren", ColumnType::Integer),
                column("new_visits", ColumnType::BigInt),
                column("new_score", ColumnType::Decimal),
                column("new_ratio", ColumnType::Double),
                column("annualincome", ColumnType::Money),
            ],
        };
        let flow = FlowDefinition {
            name: "f".into(),
            description: String::new(),
            target_connection_ids: Vec::new(),
            audiences: vec![AudienceMapping { id: "gold".into(), name: None, mapping_id: "gold".into() }],
            mappings: [
                ("contactId", "contactid"),
                ("children", "numberofchildren"),
                ("visits", "new_visits"),
                ("score", "new_score"),
                ("ratio", "new_ratio"),
                ("income", "annualincome"),
            ]
            .iter()
            .map(|(s, t)| AttributeMapping { source: s.to_string(), target: t.to_string(), source_type: None })
            .collect(),
            status_values: StatusValues::default(),
            empty_values: EmptyValues::Skip,
        };
        Activation::new(&flow, &"new".parse().unwrap(), &contact)
    }

    /// The columns written for a profile of these values, and the notes.
    fn written(activation: &Activation, values: Json) -> (Json, Vec<String>) {
        let mut entity = json!({
            "identityMap": {"contactId": [{"id": ID}]},
            "segmentMembership": {"ups": {"gold": {"status": "realized"}}}
        });
        entity.as_object_mut().unwrap().extend(values.as_object().unwrap().clone());
        let t = activation.transform(&profile(entity)).unwrap();
        (Json::Object(t.patch.columns), t.notes.into_iter().map(|n| n.message).collect())
    }

    #[test]
    fn numbers_outside_their_columns_range_are_left_out_and_the_range_noted() {
        let (columns, notes) = written(
            &numbers(),
            json!({"children": 3e9, "visits": 1e20, "score": -1e12, "ratio": 1e11, "income": "1e15"}),
        );
        assert_eq!(columns, json!({"new_gold": "realized", "new_ratio": 1e11}), "{notes:?}");
        assert_eq!(
            notes,
            [
                "children is 3000000000.0, outside the range of the column numberofchildren (whole number: \
                 -2147483648 to 2147483647): the column was left as it is; correct the value in the profile, or \
                 map children to a column whose range holds it",
                "visits is 1e+20, outside the range of the column new_visits (big integer: -9223372036854775808 to \
                 9223372036854775807): the column was left as it is; correct the value in the profile, or map \
                 visits to a column whose range holds it",
                "score is -1000000000000.0, outside the range of the column new_score (decimal number: \
                 -100000000000 to 100000000000): the column was left as it is; correct the value in the profile, \
                 or map score to a column whose range holds it",
                "income is \"1e15\", outside the range of the column annualincome (currency: -922337203685477 to \
                 922337203685477): the column was left as it is; correct the value in the profile, or map income \
                 to a column whose range holds it",
            ]
        );
    }

    #[test]
    fn numbers_at_the_edges_of_their_range_are_written() {
        let (columns, notes) = written(
            &numbers(),
            json!({"children": i32::MAX, "visits": i64::MIN, "score": "-100000000000", "ratio": 0.5, "income": 922_337_203_685_477.0}),
        );
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(columns["numberofchildren"], json!(2_147_483_647));
        assert_eq!(columns["new_visits"], json!(i64::MIN));
        assert_eq!(columns["new_score"], json!(-100_000_000_000.0));
        assert_eq!(columns["annualincome"], json!(922_337_203_685_477.0));
        // Whole numbers written as decimals or as text are whole numbers still.
        let (columns, notes) = written(&numbers(), json!({"children": 42.0, "visits": "9e18"}));
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(columns["numberofchildren"], json!(42));
        assert_eq!(columns["new_visits"], json!(9_000_000_000_000_000_000_i64));
        let (_, notes) = written(&numbers(), json!({"children": -2_147_483_649_i64, "visits": 9.3e18}));
        assert_eq!(notes.len(), 2, "one past each edge: {notes:?}");
    }

    #[test]
    fn fractional_and_non_finite_values_are_left_out_as_not_whole_or_not_finite() {
        let (columns, notes) =
            written(&numbers(), json!({"children": 12.5, "visits": "NaN", "score": "inf", "ratio": "-Infinity"}));
        assert_eq!(columns, json!({"new_gold": "realized"}), "{notes:?}");
        assert!(notes[0].starts_with("children is 12.5, not a whole number: the column numberofchildren"), "{notes:?}");
        assert!(notes[1].starts_with("visits is \"NaN\", not a whole number"), "{notes:?}");
        assert!(notes[2].starts_with("score is \"inf\", not a finite number"), "{notes:?}");
        assert!(notes[3].starts_with("ratio is \"-Infinity\", not a finite number"), "{notes:?}");
    }

    #[test]
    fn a_columns_own_range_replaces_its_types_default() {
        let ranges = HashMap::from([
            ("numberofchildren".to_string(), NumberRange::Whole { min: 0, max: 1_000 }),
            ("new_score".to_string(), NumberRange::Real { min: 0.0, max: 5.0 }),
        ]);
        let activation = numbers().with_column_ranges(&ranges);
        let (columns, notes) = written(&activation, json!({"children": 5_000, "score": 4.5}));
        assert_eq!(columns, json!({"new_gold": "realized", "new_score": 4.5}));
        assert!(notes[0].contains("(whole number: 0 to 1000)"), "{notes:?}");
        let (columns, notes) = written(&activation, json!({"children": 1_000, "score": 5.5}));
        assert_eq!(columns, json!({"new_gold": "realized", "numberofchildren": 1_000}));
        assert!(notes[0].contains("(decimal number: 0 to 5)"), "{notes:?}");
        let written_types: Vec<&str> = activation.number_columns().map(|(name, _)| name).collect();
        assert_eq!(written_types, ["numberofchildren", "new_visits", "new_score", "new_ratio", "annualincome"]);
    }
}
