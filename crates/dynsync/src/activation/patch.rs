//! From a profile to the update of its Dynamics contact: the mapped attributes, converted to their columns'
//! types, and one column per audience holding the configured value for the profile's status.

use super::profile::{CONTACT_NAMESPACE, MembershipStatus, Profile};
use super::{EmptyValues, FlowDefinition, StatusValues};
use crate::target::CustomizationPrefix;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use dataverse::metadata::{ColumnType, TableDefinition};
use serde_json::{Map, Value as Json};
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
    pub notes: Vec<String>,
}

/// One mapped attribute, resolved against the contact table.
#[derive(Debug, Clone)]
struct Column {
    source: String,
    target: String,
    kind: ColumnType,
}

/// A flow made ready to transform profiles: column names and types resolved once.
#[derive(Debug, Clone)]
pub struct Activation {
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
        let columns = flow
            .mappings
            .iter()
            .filter(|m| !m.is_identity())
            .map(|m| Column {
                source: m.source.trim().to_string(),
                target: m.target.trim().to_ascii_lowercase(),
                kind: contact
                    .column(m.target.trim())
                    .map_or(ColumnType::String { max_length: None }, |c| c.kind.clone()),
            })
            .collect();
        Activation { audiences, columns, status_values: flow.status_values.clone(), empty_values: flow.empty_values }
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
                    EmptyValues::Skip if matches!(column.kind, ColumnType::DateTime { .. }) => notes.push(format!(
                        "{} is empty: the date column {} was left as it is",
                        column.source, column.target
                    )),
                    EmptyValues::Skip => {}
                },
                Some(value) => match convert(value, &column.kind) {
                    Ok(converted) => {
                        columns.insert(column.target.clone(), converted);
                    }
                    Err(expected) => notes.push(format!(
                        "{} is {value}, not {expected}: the column {} ({}) was left as it is",
                        column.source, column.target, column.kind
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

/// A profile value as its column takes it, or what the column expected.
fn convert(value: &Json, kind: &ColumnType) -> Result<Json, &'static str> {
    let text = value.as_str().map(str::trim);
    match kind {
        ColumnType::String { .. } | ColumnType::Memo { .. } => Ok(match value {
            Json::String(_) => value.clone(),
            other => Json::String(other.to_string()),
        }),
        ColumnType::Integer | ColumnType::BigInt | ColumnType::Picklist => value
            .as_i64()
            .or_else(|| value.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .or_else(|| text.and_then(|t| t.parse().ok()))
            .map(Json::from)
            .ok_or("a whole number"),
        ColumnType::Decimal | ColumnType::Double | ColumnType::Money => value
            .as_f64()
            .or_else(|| text.and_then(|t| t.parse().ok()))
            .and_then(serde_json::Number::from_f64)
            .map(Json::Number)
            .ok_or("a number"),
        ColumnType::Boolean => value
            .as_bool()
            .or_else(|| text.and_then(|t| t.to_ascii_lowercase().parse().ok()))
            .map(Json::Bool)
            .ok_or("true or false"),
        ColumnType::DateTime { date_only: true } => {
            let date = text.and_then(|t| NaiveDate::parse_from_str(t.get(..10).unwrap_or(t), "%Y-%m-%d").ok());
            date.map(|d| Json::String(d.format("%Y-%m-%d").to_string())).ok_or("a date (YYYY-MM-DD)")
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
                .ok_or("a date and time (ISO 8601)")
        }
        _ => Ok(value.clone()),
    }
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
        assert!(t.notes.iter().any(|n| n.contains("person.birthDate is empty")), "{:?}", t.notes);
        assert!(t.notes.iter().any(|n| n.contains("\"many\", not a whole number")), "{:?}", t.notes);

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
}
