//! How a Dynamics table becomes a dataset: which columns a flow loads, what each is called and holds in the
//! dataset, and how a record read from the Web API becomes a [`DatasetRow`].
//!
//! Every Dataverse type has one dataset form, chosen so that nothing is lost and nothing needs Dynamics to be
//! read: a choice is its value beside a `<name>_label` column (the label Dynamics shows), a lookup is the id
//! beside a `<name>_table` column (the table it points into), `DateOnly` is a date, money and decimals are exact
//! decimals. A value that does not read as its column's type is left null and noted in the run, never dropped
//! silently and never failing its row.
//!
//! A choice's label is read from the column's options, as Dynamics lists them in its metadata, not from a
//! formatted value beside each record's value: asking for those formats every column of every record (a date, a
//! number, an amount), two-fifths of a page's bytes, for the few labels a flow keeps.

use crate::dataset::{ColumnKind, DatasetColumn, DatasetRow, DatasetSchema, Operation, Value};
use chrono::{DateTime, NaiveDate, Utc};
use dataverse::{ChoiceOption, ColumnDefinition, ColumnType, Record, TableDefinition};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use uuid::Uuid;

const LOOKUP_TABLE: &str = "@Microsoft.Dynamics.CRM.lookuplogicalname";

/// Scale of a money column: Dataverse keeps currency to four decimals.
const MONEY_SCALE: u8 = 4;
/// Scale of a decimal column whose precision is not known: the most Dataverse allows.
const DECIMAL_SCALE: u8 = 10;

/// A column the flow loads, renamed or not (`firstname` → `first_name`), with how a choice is written and
/// whether changes of it are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ColumnMapping {
    pub source: String,
    pub destination: String,
    #[serde(default)]
    pub choice: ChoiceAs,
    /// Off: the column is written when a record is first loaded, created or replayed, and an update leaves the
    /// destination's value alone (the marketing side owns it from then on). Only destinations kept current by
    /// upsert (a PostgreSQL table, a webhook) can keep a value.
    #[serde(default = "applies_updates")]
    pub apply_updates: bool,
}

fn applies_updates() -> bool {
    true
}

impl ColumnMapping {
    /// A column loaded under `destination`, a choice as value and label, updates applied.
    pub fn new(source: impl Into<String>, destination: impl Into<String>) -> ColumnMapping {
        ColumnMapping {
            source: source.into(),
            destination: destination.into(),
            choice: ChoiceAs::default(),
            apply_updates: true,
        }
    }
}

/// How a choice column (a picklist, a state, a status) is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ChoiceAs {
    /// Its value, beside a `<name>_label` column with the label Dynamics shows.
    #[default]
    Both,
    /// Its value alone (`2`).
    Value,
    /// Its label alone (`Female`), as text: what a marketing tool that does not know Dynamics' option values needs.
    Label,
}

/// How one Dataverse column is read into the dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reader {
    Text,
    Boolean,
    Integer,
    BigInt,
    Double,
    Decimal {
        scale: u8,
    },
    Timestamp,
    Date,
    Uuid,
    /// A choice (or state, status): the value, then its label.
    Choice,
    /// Several choices: the values as text (`1,3`), then their labels.
    Choices,
    /// A lookup: `_<name>_value`, then the table it points into.
    Lookup,
    /// A choice (or several) written as its label alone.
    Label,
}

impl Reader {
    /// How a column is read when the flow maps it as `choice` says.
    fn mapped(column: &ColumnDefinition, choice: ChoiceAs) -> Option<Reader> {
        match (Reader::of(column)?, choice) {
            (Reader::Choice | Reader::Choices, ChoiceAs::Label) => Some(Reader::Label),
            (reader, _) => Some(reader),
        }
    }

    fn of(column: &ColumnDefinition) -> Option<Reader> {
        Some(match &column.kind {
            ColumnType::String { .. } | ColumnType::Memo { .. } => Reader::Text,
            ColumnType::Integer => Reader::Integer,
            ColumnType::BigInt => Reader::BigInt,
            ColumnType::Double => Reader::Double,
            // A decimal column keeps its precision's digits; currency is stored to four, whatever it shows.
            ColumnType::Decimal => {
                Reader::Decimal { scale: column.precision.unwrap_or(DECIMAL_SCALE).min(DECIMAL_SCALE) }
            }
            ColumnType::Money => Reader::Decimal { scale: MONEY_SCALE.max(column.precision.unwrap_or(0)) },
            ColumnType::Boolean => Reader::Boolean,
            ColumnType::DateTime { date_only: true } => Reader::Date,
            ColumnType::DateTime { date_only: false } => Reader::Timestamp,
            ColumnType::Picklist | ColumnType::State | ColumnType::Status => Reader::Choice,
            ColumnType::MultiSelectPicklist => Reader::Choices,
            ColumnType::Lookup | ColumnType::Customer | ColumnType::Owner => Reader::Lookup,
            ColumnType::Uniqueidentifier => Reader::Uuid,
            ColumnType::Other(_) => return None,
        })
    }

    /// The kind of the column holding the value itself, the first of [`Reader::columns`].
    fn kind(&self) -> ColumnKind {
        match self {
            Reader::Text | Reader::Choices | Reader::Label => ColumnKind::Text,
            Reader::Boolean => ColumnKind::Boolean,
            Reader::Integer | Reader::Choice => ColumnKind::Integer,
            Reader::BigInt => ColumnKind::BigInt,
            Reader::Double => ColumnKind::Double,
            Reader::Decimal { scale } => ColumnKind::Decimal { scale: *scale },
            Reader::Timestamp => ColumnKind::Timestamp,
            Reader::Date => ColumnKind::Date,
            Reader::Uuid | Reader::Lookup => ColumnKind::Uuid,
        }
    }

    /// Whether it keeps a choice's label, as `choice` says.
    fn labelled(&self, choice: ChoiceAs) -> bool {
        match self {
            Reader::Label => true,
            Reader::Choice | Reader::Choices => choice != ChoiceAs::Value,
            _ => false,
        }
    }

    /// The dataset columns this reader fills, named after `name`: the value, then a choice's label or a lookup's
    /// table.
    fn columns(&self, name: &str, choice: ChoiceAs) -> Vec<DatasetColumn> {
        let value = DatasetColumn { name: name.into(), kind: self.kind() };
        let text = |suffix: &str| DatasetColumn { name: format!("{name}_{suffix}"), kind: ColumnKind::Text };
        match self {
            Reader::Choice | Reader::Choices if choice == ChoiceAs::Value => vec![value],
            Reader::Choice | Reader::Choices => vec![value, text("label")],
            Reader::Lookup => vec![value, text("table")],
            _ => vec![value],
        }
    }
}

/// A column the flow loads: where it is read from, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Loaded {
    /// The Web API's property (`firstname`, `_parentcustomerid_value` for a lookup).
    property: String,
    logical_name: String,
    reader: Reader,
    /// The dataset columns it fills, by name.
    names: Vec<String>,
    /// Where those are in the schema.
    positions: Vec<usize>,
    /// Where its value and table are among a record's [`Fields`].
    fields: LoadedFields,
    /// A choice's labels, when the flow keeps them.
    labels: Option<Arc<Labels>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct LoadedFields {
    value: usize,
    /// The table a lookup points into.
    lookup_table: Option<usize>,
    /// Whether this column is the last to read each of its places (value, table), and may take the text there
    /// rather than copy it: a property loaded twice (under two names) is copied for the first.
    last: [bool; 2],
}

/// The labels of a choice column's options, by value, as Dynamics listed them when they were last read. Shared by
/// every copy of a shape, so that options read again reach the pages already being read ahead.
#[derive(Debug, Default)]
struct Labels {
    known: RwLock<Known>,
    /// Whether a record held a value with no label here since it was last asked.
    missed: AtomicBool,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Known {
    by_value: HashMap<i32, String>,
    /// Values records hold that no option had when the labels were last read (an option taken away): not a
    /// reason to read them again.
    absent: HashSet<i32>,
}

impl Labels {
    /// The label of a choice (`2`: `Female`) or of several (`"1,3"`: `Red; Blue`, as Dynamics shows them); none
    /// when a value has no option here.
    fn find(&self, value: &Raw) -> Option<String> {
        let known = self.known.read().expect("labels lock");
        let of = |n: i64| i32::try_from(n).ok().and_then(|n| known.by_value.get(&n));
        match value {
            Raw::Number(n) => n.as_i64().and_then(of).cloned(),
            Raw::Text(several) => several
                .split(',')
                .map(|v| v.trim().parse().ok().and_then(of).map(String::as_str))
                .collect::<Option<Vec<&str>>>()
                .map(|labels| labels.join("; ")),
            _ => None,
        }
    }

    /// As [`Labels::find`], remembering a value without a label.
    fn label(&self, value: &Raw) -> Option<String> {
        let label = self.find(value);
        if label.is_none() {
            self.missed.store(true, Ordering::Relaxed);
        }
        label
    }

    /// Whether `value` holds an option value with no label here, not known to be absent.
    fn lacks(&self, value: &Raw) -> bool {
        let known = self.known.read().expect("labels lock");
        option_values(value).any(|v| !known.by_value.contains_key(&v) && !known.absent.contains(&v))
    }

    /// Remembers the values of `value` that have no label, the labels just read: absent from the options.
    fn confirm_absent(&self, value: &Raw) {
        let mut known = self.known.write().expect("labels lock");
        let absent: Vec<i32> = option_values(value).filter(|v| !known.by_value.contains_key(v)).collect();
        known.absent.extend(absent);
    }

    fn set(&self, options: &[ChoiceOption]) {
        let by_value = options.iter().map(|o| (o.value, o.label.clone())).collect();
        *self.known.write().expect("labels lock") = Known { by_value, absent: HashSet::new() };
    }
}

/// The option values a choice's value holds: one (`2`), or several (`"1,3"`).
fn option_values<'v>(value: &'v Raw) -> impl Iterator<Item = i32> + 'v {
    let (one, several) = match value {
        Raw::Number(n) => (n.as_i64().and_then(|n| i32::try_from(n).ok()), None),
        Raw::Text(text) => (None, Some(text.split(',').filter_map(|v| v.trim().parse().ok()))),
        _ => (None, None),
    };
    one.into_iter().chain(several.into_iter().flatten())
}

impl PartialEq for Labels {
    fn eq(&self, other: &Labels) -> bool {
        std::ptr::eq(self, other)
            || *self.known.read().expect("labels lock") == *other.known.read().expect("labels lock")
    }
}

impl Eq for Labels {}

/// The properties of a record a shape reads — each loaded column's value and annotations, the primary key, the
/// version — each at a place among a record's [`Fields`], by name for lookup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct FieldNames {
    sorted: Vec<(String, usize)>,
    id: usize,
    version: usize,
}

impl FieldNames {
    fn of(loaded: &mut [Loaded], primary_key: &str) -> FieldNames {
        let mut names: Vec<String> = Vec::new();
        let mut place = |name: String| match names.iter().position(|n| *n == name) {
            Some(at) => at,
            None => {
                names.push(name);
                names.len() - 1
            }
        };
        for l in loaded.iter_mut() {
            let lookup = l.reader == Reader::Lookup;
            l.fields = LoadedFields {
                value: place(l.property.clone()),
                lookup_table: lookup.then(|| place(format!("{}{LOOKUP_TABLE}", l.property))),
                last: [false; 2],
            };
        }
        let mut read_later = std::collections::HashSet::new();
        for l in loaded.iter_mut().rev() {
            let f = &mut l.fields;
            for (last, at) in f.last.iter_mut().zip([Some(f.value), f.lookup_table]) {
                *last = at.is_some_and(|at| read_later.insert(at));
            }
        }
        let (id, version) = (place(primary_key.to_string()), place("versionnumber".to_string()));
        let mut sorted: Vec<(String, usize)> = names.into_iter().enumerate().map(|(i, n)| (n, i)).collect();
        sorted.sort_unstable();
        FieldNames { sorted, id, version }
    }

    fn place(&self, name: &str) -> Option<usize> {
        self.sorted.binary_search_by(|(n, _)| n.as_str().cmp(name)).ok().map(|i| self.sorted[i].1)
    }
}

/// The properties of one record a [`TableShape`] reads, by their place ([`Raw::Null`] when absent): read from a
/// page's body by [`TableShape::page_fields`] without a map of every property, or taken from a [`Record`].
#[derive(Debug, Clone, PartialEq)]
pub struct Fields<'de>(Vec<Raw<'de>>);

impl<'de> Fields<'de> {
    fn at(&self, place: usize) -> &Raw<'de> {
        &self.0[place]
    }

    /// The property at `place`: taken when no column reads it after (`last`), copied otherwise.
    fn take(&mut self, place: usize, last: bool) -> Raw<'de> {
        match last {
            true => std::mem::take(&mut self.0[place]),
            false => self.0[place].clone(),
        }
    }
}

/// One property of a record as the Web API wrote it, its text borrowed from the page's body where it has no
/// escapes: an id, a date or a number is read from the page without a copy, and text is copied once, into the
/// row. An object or an array (which no loaded column holds) is kept whole, to be named in the run's notes.
#[derive(Debug, Clone, PartialEq, Default)]
enum Raw<'de> {
    #[default]
    Null,
    Bool(bool),
    Number(serde_json::Number),
    Text(Cow<'de, str>),
    Other(Json),
}

impl<'de> Raw<'de> {
    /// A property of a record already read.
    fn of(value: &'de Json) -> Raw<'de> {
        match value {
            Json::Null => Raw::Null,
            Json::Bool(b) => Raw::Bool(*b),
            Json::Number(n) => Raw::Number(n.clone()),
            Json::String(s) => Raw::Text(Cow::Borrowed(s)),
            other => Raw::Other(other.clone()),
        }
    }

    fn is_null(&self) -> bool {
        matches!(self, Raw::Null)
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Raw::Text(s) => Some(s),
            _ => None,
        }
    }

    fn as_i64(&self) -> Option<i64> {
        match self {
            Raw::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Raw::Number(n) => n.as_f64(),
            _ => None,
        }
    }

    /// The text, taken.
    fn into_text(self) -> Option<String> {
        match self {
            Raw::Text(s) => Some(s.into_owned()),
            _ => None,
        }
    }

    /// The value as JSON text, as a note shows it (`"three"`).
    fn json(&self) -> String {
        let value = match self {
            Raw::Null => Json::Null,
            Raw::Bool(b) => Json::Bool(*b),
            Raw::Number(n) => Json::Number(n.clone()),
            Raw::Text(s) => Json::String(s.to_string()),
            Raw::Other(v) => v.clone(),
        };
        value.to_string()
    }
}

impl<'de> Deserialize<'de> for Raw<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Raw<'de>, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a property's value")
    }

    fn visit_unit<E>(self) -> Result<Raw<'de>, E> {
        Ok(Raw::Null)
    }

    fn visit_none<E>(self) -> Result<Raw<'de>, E> {
        Ok(Raw::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Raw<'de>, E> {
        Ok(Raw::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Raw<'de>, E> {
        Ok(Raw::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Raw<'de>, E> {
        Ok(Raw::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Raw<'de>, E> {
        Ok(serde_json::Number::from_f64(n).map_or(Raw::Null, Raw::Number))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Raw<'de>, E> {
        Ok(Raw::Text(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Raw<'de>, E> {
        Ok(Raw::Text(Cow::Owned(s.to_string())))
    }

    fn visit_string<E>(self, s: String) -> Result<Raw<'de>, E> {
        Ok(Raw::Text(Cow::Owned(s)))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Raw<'de>, A::Error> {
        Json::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(Raw::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Raw<'de>, A::Error> {
        Json::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Raw::Other)
    }
}

/// Reads the [`Fields`] of a page's records from its body: the properties the shape reads kept, the others
/// stepped over. The records of a page carry their properties in one order, so each name is checked against the
/// one at its position in the record before, and looked up only when it differs.
pub struct PageFields<'s> {
    names: &'s FieldNames,
    /// The names in the order the last record had them, with their places.
    order: RefCell<Vec<(Box<str>, Option<usize>)>>,
}

impl PageFields<'_> {
    fn place(&self, position: usize, name: &str) -> Option<usize> {
        let mut order = self.order.borrow_mut();
        match order.get(position) {
            Some((seen, place)) if **seen == *name => *place,
            _ => {
                let place = self.names.place(name);
                order.truncate(position);
                order.push((name.into(), place));
                place
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for &PageFields<'_> {
    type Value = Fields<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Fields<'de>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for &PageFields<'_> {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a record: an object of properties")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let mut values = vec![Raw::Null; self.names.sorted.len()];
        let mut position = 0;
        while let Some(place) = map.next_key_seed(PlaceOf { page: self, position })? {
            position += 1;
            match place {
                Some(place) => values[place] = map.next_value()?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Fields(values))
    }
}

/// The place of a record's property, read from its name without keeping it.
struct PlaceOf<'p, 's> {
    page: &'p PageFields<'s>,
    position: usize,
}

impl<'de> DeserializeSeed<'de> for PlaceOf<'_, '_> {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Option<usize>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for PlaceOf<'_, '_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a property name")
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Option<usize>, E> {
        Ok(self.page.place(self.position, name))
    }
}

/// A table as a flow loads it: the columns it reads, and the dataset columns they fill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableShape {
    pub table: String,
    pub primary_key: String,
    loaded: Vec<Loaded>,
    /// Whether the table has `createdon`.
    audited: bool,
    pub schema: DatasetSchema,
    fields: FieldNames,
}

/// Why a flow's columns do not fit its table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeProblem {
    /// Where, in the flow's definition (`transformations[1].params.mappings[2].sourceAttribute`).
    pub field: String,
    pub message: String,
}

/// Columns that are not data a dataset can hold (`Virtual`, `EntityName`, `PartyList`): the explore answer lists
/// them as not loadable.
pub fn loadable(column: &ColumnDefinition) -> bool {
    Reader::of(column).is_some()
}

/// The dataset type a column takes, as explore shows it (`integer`, `decimal`, `date`…); `None` when it is not
/// loadable.
pub fn dataset_type(column: &ColumnDefinition) -> Option<ColumnKind> {
    Reader::of(column).map(|r| r.kind())
}

impl TableShape {
    /// The shape of `table` for a flow loading `mappings` (every loadable column, under its own name, when
    /// empty). Every problem is reported at once. `field` names where the mappings are in the definition.
    pub fn new(
        table: &TableDefinition,
        primary_key: &str,
        mappings: &[ColumnMapping],
        field: &str,
    ) -> Result<TableShape, Vec<ShapeProblem>> {
        let mut problems = Vec::new();
        let chosen: Vec<(&ColumnDefinition, String, ChoiceAs)> = if mappings.is_empty() {
            table.columns.iter().filter(|c| loadable(c)).map(|c| (c, c.logical_name.clone(), ChoiceAs::Both)).collect()
        } else {
            let mut chosen = Vec::new();
            for (i, m) in mappings.iter().enumerate() {
                match table.column(&m.source) {
                    Some(c) if loadable(c) => chosen.push((c, m.destination.clone(), m.choice)),
                    Some(c) => problems.push(ShapeProblem {
                        field: format!("{field}[{i}].sourceAttribute"),
                        message: format!(
                            "column {} of {} is of type {}, which holds no data a dataset can keep; leave it out",
                            c.logical_name, table.logical_name, c.kind
                        ),
                    }),
                    None => problems.push(ShapeProblem {
                        field: format!("{field}[{i}].sourceAttribute"),
                        message: format!(
                            "the {} table has no column {}{}",
                            table.logical_name,
                            m.source,
                            closest(table, &m.source).map(|c| format!(" (did you mean {c}?)")).unwrap_or_default()
                        ),
                    }),
                }
            }
            chosen
        };
        if table.column(primary_key).is_none() {
            problems.push(ShapeProblem {
                field: "primaryKey".into(),
                message: format!(
                    "the {} table has no column {primary_key}; its primary key is {}",
                    table.logical_name, table.primary_id
                ),
            });
        }
        let mut loaded = Vec::new();
        let mut schema = DatasetSchema::default();
        for (column, name, choice) in chosen {
            let reader = Reader::mapped(column, choice).expect("only loadable columns are chosen");
            for c in reader.columns(&name, choice) {
                if schema.position(&c.name).is_some() {
                    problems.push(ShapeProblem {
                        field: field.to_string(),
                        message: format!("two columns would be called {} in the dataset: rename one of them", c.name),
                    });
                }
                schema.columns.push(c);
            }
            let property = match reader {
                Reader::Lookup => format!("_{}_value", column.logical_name),
                _ => column.logical_name.clone(),
            };
            let names = reader.columns(&name, choice).into_iter().map(|c| c.name).collect();
            loaded.push(Loaded {
                property,
                logical_name: column.logical_name.clone(),
                labels: reader.labelled(choice).then(Arc::default),
                reader,
                names,
                positions: vec![],
                fields: LoadedFields::default(),
            });
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let audited = table.column("createdon").is_some();
        let mut shape = TableShape {
            table: table.logical_name.clone(),
            primary_key: primary_key.to_string(),
            loaded,
            audited,
            schema,
            fields: FieldNames::default(),
        };
        shape.fields = FieldNames::of(&mut shape.loaded, primary_key);
        shape.place();
        Ok(shape)
    }

    /// Finds each loaded column's dataset columns in the schema.
    fn place(&mut self) {
        for loaded in &mut self.loaded {
            loaded.positions = loaded
                .names
                .iter()
                .map(|n| self.schema.position(n).expect("a loaded column is in the schema"))
                .collect();
        }
    }

    /// Whether a record was created at or after `since` (the start of the load before): a creation, not a change.
    /// Dynamics keeps times to the second, so a record created in the second the load before started and
    /// changed since reads as a creation.
    pub fn created_since(&self, record: &Record, since: Option<DateTime<Utc>>) -> bool {
        match (self.created_on(record), since) {
            (Some(created), Some(since)) => created >= since,
            _ => false,
        }
    }

    /// The record's version (`versionnumber`).
    pub fn version(&self, record: &Record) -> Option<i64> {
        record.get("versionnumber").map(Raw::of).as_ref().and_then(version_of)
    }

    /// When the record was created.
    pub fn created_on(&self, record: &Record) -> Option<DateTime<Utc>> {
        let text = record.get("createdon").and_then(Json::as_str)?;
        DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
    }

    /// The record's id, from its primary key column.
    pub fn id_of(&self, record: &Record) -> Option<Uuid> {
        record.get(&self.primary_key).and_then(Json::as_str).and_then(|s| Uuid::parse_str(s).ok())
    }

    /// The columns to read by logical name (as FetchXML names them): the loaded columns, the primary key, the
    /// version, and when the record was created.
    pub fn columns_read(&self) -> Vec<String> {
        let mut columns: Vec<String> = self.loaded.iter().map(|l| l.logical_name.clone()).collect();
        let audit: &[&str] = if self.audited { &["createdon"] } else { &[] };
        for always in [self.primary_key.as_str(), "versionnumber"].iter().chain(audit) {
            if !columns.iter().any(|s| s == always) {
                columns.push(always.to_string());
            }
        }
        columns
    }

    /// The properties to `$select`: the loaded columns, the primary key, the version, and when the record was
    /// created (to tell a creation from a change).
    pub fn select(&self) -> Vec<String> {
        let mut select: Vec<String> = self.loaded.iter().map(|l| l.property.clone()).collect();
        let audit: &[&str] = if self.audited { &["createdon"] } else { &[] };
        for always in [self.primary_key.as_str(), "versionnumber"].iter().chain(audit) {
            if !select.iter().any(|s| s == always) {
                select.push(always.to_string());
            }
        }
        select
    }

    /// The schema of a generation that went on from `older` with this shape's columns: `older`'s columns first, in
    /// their order, then those it lacked. `None` when a column changed type: a new generation must start.
    pub fn grown_from(&self, older: &DatasetSchema) -> Option<TableShape> {
        let mut columns = older.columns.clone();
        for c in &self.schema.columns {
            match older.columns.iter().find(|o| o.name == c.name) {
                Some(o) if o.kind != c.kind => return None,
                Some(_) => {}
                None => columns.push(c.clone()),
            }
        }
        // Columns the table no longer has stay in the schema and read as null.
        let mut shape = self.clone();
        shape.schema = DatasetSchema { columns };
        shape.place();
        Some(shape)
    }

    /// The logical names of the choice columns whose labels it keeps.
    pub fn labelled_columns(&self) -> Vec<&str> {
        self.loaded.iter().filter(|l| l.labels.is_some()).map(|l| l.logical_name.as_str()).collect()
    }

    /// Takes the labels of its choice columns from their options (`options`, by logical name): a column without
    /// options has no labels.
    pub fn set_labels(&self, options: &HashMap<String, Vec<ChoiceOption>>) {
        for l in &self.loaded {
            if let Some(labels) = &l.labels {
                labels.set(options.get(&l.logical_name).map_or(&[][..], Vec::as_slice));
            }
        }
    }

    /// Reads the labels of its choice columns from `table`'s options in Dynamics; nothing when it keeps none.
    pub async fn read_labels(
        &self,
        client: &dataverse::Client,
        table: &TableDefinition,
    ) -> Result<(), dataverse::Error> {
        let columns = self.labelled_columns();
        if !columns.is_empty() {
            self.set_labels(&client.choice_options_of(table, &columns).await?);
        }
        Ok(())
    }

    /// Whether a record read since it was last asked held a choice value without a label: an option added since
    /// the labels were read, or one taken away.
    pub fn missed_labels(&self) -> bool {
        // Every column's flag is taken, not only the first one set.
        let mut missed = false;
        for labels in self.loaded.iter().filter_map(|l| l.labels.as_ref()) {
            missed |= labels.missed.swap(false, Ordering::Relaxed);
        }
        missed
    }

    /// Whether one of `record`'s choice values has no label and is not known to be absent from the options: an
    /// option added since they were read. Not remembered as missed.
    pub fn lacks_labels(&self, record: &Record) -> bool {
        self.labelled_values(record).any(|(labels, value)| labels.lacks(&value))
    }

    /// Remembers the choice values of `record` that have no label, its labels just read: absent from the options
    /// (taken away), they are no reason to read them again until the next load.
    pub fn confirm_absent(&self, record: &Record) {
        self.labelled_values(record).for_each(|(labels, value)| labels.confirm_absent(&value));
    }

    fn labelled_values<'r>(&'r self, record: &'r Record) -> impl Iterator<Item = (&'r Labels, Raw<'r>)> {
        self.loaded.iter().filter_map(|l| Some((l.labels.as_deref()?, Raw::of(record.get(&l.property)?))))
    }

    /// Reads the [`Fields`] of each record of a page straight from its body.
    pub fn page_fields(&self) -> PageFields<'_> {
        PageFields { names: &self.fields, order: RefCell::new(Vec::new()) }
    }

    /// A record read from Dynamics as a dataset row, with what could not be read of it.
    pub fn row(
        &self,
        record: &Record,
        operation: Operation,
        synced_at: DateTime<Utc>,
    ) -> Result<(DatasetRow, Vec<String>), String> {
        let mut fields = vec![Raw::Null; self.fields.sorted.len()];
        for (name, place) in &self.fields.sorted {
            if let Some(value) = record.get(name) {
                fields[*place] = Raw::of(value);
            }
        }
        self.row_of(Fields(fields), operation, synced_at)
    }

    /// A record's [`Fields`] as a dataset row, with what could not be read of it. Its text moves into the row.
    pub fn row_of(
        &self,
        mut fields: Fields<'_>,
        operation: Operation,
        synced_at: DateTime<Utc>,
    ) -> Result<(DatasetRow, Vec<String>), String> {
        let id = fields.at(self.fields.id).as_str().and_then(|s| Uuid::parse_str(s).ok());
        let id = id.ok_or_else(|| format!("the record has no id in {}", self.primary_key))?;
        let version = version_of(fields.at(self.fields.version));
        let mut notes = Vec::new();
        let mut values = vec![Value::Null; self.schema.columns.len()];
        for loaded in &self.loaded {
            let places = loaded.fields;
            let lookup_table = places.lookup_table.and_then(|p| fields.take(p, places.last[1]).into_text());
            let mut value = fields.take(places.value, places.last[0]);
            let label = match (&loaded.labels, value.is_null()) {
                (Some(labels), false) => Some(labels.label(&value)),
                _ => None,
            };
            // Shown in a note only: the value's text is taken into the row.
            let unlabelled = matches!(label, Some(None)).then(|| value.json());
            let (main, extra) = read_value(&loaded.reader, &mut value, label.flatten(), lookup_table);
            if let Some(shown) = unlabelled.filter(|_| main != Value::Null || loaded.reader == Reader::Label) {
                notes.push(format!(
                    "column {} of record {id}: {shown} is not among the options Dynamics lists for the column; its \
                     label is left empty",
                    loaded.logical_name,
                ));
            } else if main == Value::Null && !value.is_null() {
                notes.push(format!(
                    "column {} of record {id}: {} is not a {} value; it is left null",
                    loaded.logical_name,
                    value.json(),
                    reader_name(&loaded.reader)
                ));
            }
            for (&position, v) in loaded.positions.iter().zip(std::iter::once(main).chain(extra)) {
                values[position] = v;
            }
        }
        Ok((DatasetRow { id, operation, version, values, synced_at }, notes))
    }

    /// A row saying a record was deleted.
    pub fn deleted(&self, id: Uuid, synced_at: DateTime<Utc>) -> DatasetRow {
        DatasetRow { id, operation: Operation::Delete, version: None, values: Vec::new(), synced_at }
    }
}

fn reader_name(reader: &Reader) -> &'static str {
    match reader {
        Reader::Text => "text",
        Reader::Boolean => "yes/no",
        Reader::Integer | Reader::Choice => "whole number",
        Reader::BigInt => "big integer",
        Reader::Double => "floating point",
        Reader::Decimal { .. } => "decimal",
        Reader::Timestamp => "date and time",
        Reader::Date => "date",
        Reader::Uuid | Reader::Lookup => "unique identifier",
        Reader::Choices => "choices",
        Reader::Label => "choice",
    }
}

fn version_of(value: &Raw) -> Option<i64> {
    value.as_i64().or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

/// Reads one value, and the values of the columns that come with it (its `label`, a lookup's table). Text is
/// taken from `value`; a value that does not read as `reader`'s type is left as it is.
fn read_value(
    reader: &Reader,
    value: &mut Raw,
    label: Option<String>,
    lookup_table: Option<String>,
) -> (Value, Vec<Value>) {
    let text = |t: Option<String>| t.map_or(Value::Null, Value::Text);
    match reader {
        Reader::Text => match value {
            Raw::Text(s) => (Value::Text(std::mem::take(s).into_owned()), vec![]),
            _ => (Value::Null, vec![]),
        },
        Reader::Boolean => (if let Raw::Bool(b) = value { Value::Boolean(*b) } else { Value::Null }, vec![]),
        Reader::Integer => (whole(value).map_or(Value::Null, Value::Integer), vec![]),
        Reader::BigInt => (value.as_i64().map_or(Value::Null, Value::BigInt), vec![]),
        Reader::Double => (value.as_f64().map_or(Value::Null, Value::Double), vec![]),
        Reader::Decimal { scale } => {
            (value.as_f64().and_then(|n| decimal(n, *scale)).map_or(Value::Null, Value::Decimal), vec![])
        }
        Reader::Timestamp => (
            value
                .as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map_or(Value::Null, |t| Value::Timestamp(t.with_timezone(&Utc))),
            vec![],
        ),
        Reader::Date => (value.as_str().and_then(date).map_or(Value::Null, Value::Date), vec![]),
        Reader::Uuid => (uuid(value), vec![]),
        Reader::Choice => {
            let v = whole(value).map_or(Value::Null, Value::Integer);
            let label = if v == Value::Null { Value::Null } else { text(label) };
            (v, vec![label])
        }
        Reader::Choices => {
            // The Web API gives several choices as "1,3", or as numbers.
            let v = match value {
                Raw::Text(s) => Value::Text(std::mem::take(s).into_owned()),
                Raw::Number(n) => Value::Text(n.to_string()),
                _ => Value::Null,
            };
            let label = if v == Value::Null { Value::Null } else { text(label) };
            (v, vec![label])
        }
        Reader::Label => (if value.is_null() { Value::Null } else { text(label) }, vec![]),
        Reader::Lookup => {
            let v = uuid(value);
            let table = if v == Value::Null { Value::Null } else { text(lookup_table) };
            (v, vec![table])
        }
    }
}

fn whole(value: &Raw) -> Option<i32> {
    value.as_i64().and_then(|n| i32::try_from(n).ok())
}

fn uuid(value: &Raw) -> Value {
    value.as_str().and_then(|s| Uuid::parse_str(s).ok()).map_or(Value::Null, Value::Uuid)
}

/// A number as an exact decimal of `scale` digits after the point: the shortest text that reads back as the
/// number (what Dynamics wrote), scaled. `None` when it has more digits than the scale or is out of range.
pub fn decimal(n: f64, scale: u8) -> Option<i128> {
    use std::io::Write;
    if !n.is_finite() {
        return None;
    }
    // 38 digits, a point and the scale's fit; a number whose text does not is out of range or too precise.
    let mut buffer = [0u8; 64];
    let mut unwritten = &mut buffer[..];
    write!(unwritten, "{}", n.abs()).ok()?;
    let written = 64 - unwritten.len();
    let text = &buffer[..written];
    let (whole, fraction) = match text.iter().position(|&b| b == b'.') {
        Some(point) => (&text[..point], &text[point + 1..]),
        None => (text, &[][..]),
    };
    let padding = usize::from(scale).checked_sub(fraction.len())?;
    let mut unscaled: i128 = 0;
    for digit in whole.iter().chain(fraction).chain(std::iter::repeat_n(&b'0', padding)) {
        unscaled = unscaled.checked_mul(10)?.checked_add(i128::from(digit - b'0'))?;
    }
    Some(if n.is_sign_negative() { -unscaled } else { unscaled })
}

/// A date as the Web API writes it, `2026-11-30` (or the date of a date and time): read by hand, as a page has
/// thousands; any other form goes through chrono.
fn date(text: &str) -> Option<NaiveDate> {
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = text.as_bytes().get(range)?;
        part.iter().try_fold(0u32, |n, &b| b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0')))
    };
    let dashes = text.as_bytes().get(4) == Some(&b'-') && text.as_bytes().get(7) == Some(&b'-');
    match (dashes, digits(0..4), digits(5..7), digits(8..10)) {
        (true, Some(year), Some(month), Some(day)) => NaiveDate::from_ymd_opt(year as i32, month, day),
        _ => NaiveDate::parse_from_str(text.get(..10).unwrap_or(text), "%Y-%m-%d").ok(),
    }
}

fn closest(table: &TableDefinition, name: &str) -> Option<String> {
    crate::checks::closest_columns(name, table).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeSeed;
    use serde_json::json;

    /// A contact table with a column of each kind, as `EntityDefinitions` answers it.
    fn contact() -> TableDefinition {
        let attribute =
            |name: &str, kind: &str| json!({"LogicalName": name, "SchemaName": name, "AttributeType": kind});
        let mut birthdate = attribute("birthdate", "DateTime");
        birthdate["Format"] = json!("DateOnly");
        let table = json!({
            "LogicalName": "contact", "EntitySetName": "contacts", "PrimaryIdAttribute": "contactid", "PrimaryNameAttribute": "fullname",
            "Attributes": [
                attribute("contactid", "Uniqueidentifier"), attribute("firstname", "String"), attribute("gendercode", "Picklist"),
                attribute("parentcustomerid", "Customer"), birthdate, attribute("createdon", "DateTime"),
                attribute("modifiedon", "DateTime"), attribute("annualincome", "Money"), attribute("numberofchildren", "Integer"),
                attribute("donotemail", "Boolean"), attribute("versionnumber", "BigInt"), attribute("fullname_yomi", "Virtual"),
                attribute("new_colors", "MultiSelectPicklist")
            ]
        });
        TableDefinition::from_json(&table, None).unwrap()
    }

    fn mapped(pairs: &[(&str, &str)]) -> Vec<ColumnMapping> {
        pairs.iter().map(|(s, d)| ColumnMapping::new(*s, *d)).collect()
    }

    /// The options of `contact()`'s choice columns, as Dynamics lists them.
    fn options() -> HashMap<String, Vec<ChoiceOption>> {
        let option = |value: i32, label: &str| ChoiceOption { value, label: label.into() };
        HashMap::from([
            ("gendercode".to_string(), vec![option(1, "Male"), option(2, "Female")]),
            ("new_colors".to_string(), vec![option(1, "Red"), option(2, "Green"), option(3, "Blue")]),
        ])
    }

    #[test]
    fn a_record_becomes_a_row_with_labels_lookup_tables_dates_and_exact_money() {
        let shape = TableShape::new(
            &contact(),
            "contactid",
            &mapped(&[
                ("firstname", "first_name"),
                ("gendercode", "gender"),
                ("parentcustomerid", "company"),
                ("birthdate", "born"),
                ("annualincome", "income"),
            ]),
            "mappings",
        )
        .unwrap();
        shape.set_labels(&options());
        let names: Vec<&str> = shape.schema.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["first_name", "gender", "gender_label", "company", "company_table", "born", "income"]);
        assert_eq!(
            shape.select(),
            [
                "firstname",
                "gendercode",
                "_parentcustomerid_value",
                "birthdate",
                "annualincome",
                "contactid",
                "versionnumber",
                "createdon"
            ]
        );
        let id = Uuid::new_v4();
        let account = Uuid::new_v4();
        let record = json!({
            "contactid": id.to_string(), "versionnumber": 4411, "firstname": "Ada",
            "gendercode": 2,
            "_parentcustomerid_value": account.to_string(), "_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname": "account",
            "birthdate": "1815-12-10", "annualincome": 1234567.8912
        });
        let (row, notes) = shape.row(record.as_object().unwrap(), Operation::Read, Utc::now()).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!((row.id, row.version), (id, Some(4411)));
        assert_eq!(
            row.values,
            vec![
                Value::Text("Ada".into()),
                Value::Integer(2),
                Value::Text("Female".into()),
                Value::Uuid(account),
                Value::Text("account".into()),
                Value::Date(NaiveDate::from_ymd_opt(1815, 12, 10).unwrap()),
                Value::Decimal(12_345_678_912),
            ]
        );
        // Read straight from a page's body, with properties it does not load and a name escaped: the same row.
        let mut body = record.as_object().unwrap().clone();
        body.insert("@odata.etag".into(), json!("W/\"4411\""));
        body.insert("lastname".into(), json!({"nested": [1, 2]}));
        let text = serde_json::to_string(&body).unwrap().replace("\"firstname\":", "\"first\\u006eame\":");
        assert!(text.contains("first\\u006eame"));
        let page = shape.page_fields();
        let fields = (&page).deserialize(&mut serde_json::Deserializer::from_str(&text)).unwrap();
        let (from_body, _) = shape.row_of(fields, Operation::Read, row.synced_at).unwrap();
        assert_eq!(from_body, row);
        // The next record of the page, its properties in another order and one missing: read as such.
        body.remove("gendercode");
        let mut reordered: Vec<(String, Json)> = body.into_iter().collect();
        reordered.reverse();
        let text = serde_json::to_string(&reordered.into_iter().collect::<serde_json::Map<_, _>>()).unwrap();
        let fields = (&page).deserialize(&mut serde_json::Deserializer::from_str(&text)).unwrap();
        let (next, _) = shape.row_of(fields, Operation::Read, row.synced_at).unwrap();
        assert_eq!((next.values[1].clone(), next.values[2].clone()), (Value::Null, Value::Null));
        assert_eq!(next.values[0], row.values[0]);
        assert_eq!(next.values[3..], row.values[3..]);
    }

    #[test]
    fn a_choice_is_labelled_from_its_options_and_a_value_without_one_is_noted_until_they_are_read_again() {
        let mut mappings = mapped(&[("gendercode", "gender"), ("new_colors", "colors"), ("gendercode", "sex")]);
        mappings[2].choice = ChoiceAs::Label;
        let shape = TableShape::new(&contact(), "contactid", &mappings, "m").unwrap();
        assert_eq!(shape.labelled_columns(), ["gendercode", "new_colors", "gendercode"]);
        shape.set_labels(&options());
        let id = Uuid::new_v4();
        let record = |gender: i64, colors: &str| {
            json!({"contactid": id.to_string(), "gendercode": gender, "new_colors": colors})
                .as_object()
                .unwrap()
                .clone()
        };
        let text = |t: &str| Value::Text(t.into());
        let (row, notes) = shape.row(&record(1, "3,1"), Operation::Read, Utc::now()).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(row.values, [Value::Integer(1), text("Male"), text("3,1"), text("Blue; Red"), text("Male")]);
        assert!(!shape.missed_labels());
        // An option added in Dynamics after the labels were read: the value is kept, its label left empty and
        // noted, and the shape tells it once.
        let added = record(3, "2");
        assert!(shape.lacks_labels(&added) && !shape.missed_labels(), "looking does not count as missing");
        let (row, notes) = shape.row(&added, Operation::Read, Utc::now()).unwrap();
        assert_eq!(row.values, [Value::Integer(3), Value::Null, text("2"), text("Green"), Value::Null]);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes.iter().all(|n| n.contains("column gendercode") && n.contains(": 3 is not among the options")));
        assert!(notes[0].contains(&id.to_string()) && notes[0].contains("label is left empty"), "{notes:?}");
        assert!(shape.missed_labels());
        assert!(!shape.missed_labels(), "told once");
        // Still without a label once the options are read again: absent (taken away), no reason to read them again.
        shape.confirm_absent(&added);
        assert!(!shape.lacks_labels(&added));
        assert!(shape.lacks_labels(&record(4, "1")), "another value is");
        // Read again, the options reach every copy of the shape (the pages read ahead hold copies).
        let copy = shape.clone();
        let mut more = options();
        more.get_mut("gendercode").unwrap().push(ChoiceOption { value: 3, label: "Non-binary".into() });
        shape.set_labels(&more);
        assert!(!copy.lacks_labels(&added));
        let (row, notes) = copy.row(&added, Operation::Read, Utc::now()).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!((&row.values[1], &row.values[4]), (&text("Non-binary"), &text("Non-binary")));
        // A choice kept as its value alone needs no labels.
        let mut value_only = mapped(&[("gendercode", "gender")]);
        value_only[0].choice = ChoiceAs::Value;
        let shape = TableShape::new(&contact(), "contactid", &value_only, "m").unwrap();
        assert!(shape.labelled_columns().is_empty());
        let (row, notes) = shape.row(&added, Operation::Read, Utc::now()).unwrap();
        assert_eq!((row.values, notes), (vec![Value::Integer(3)], vec![]));
    }

    #[test]
    fn a_column_loaded_under_two_names_fills_both() {
        let shape = TableShape::new(
            &contact(),
            "contactid",
            &mapped(&[
                ("firstname", "first_name"),
                ("gendercode", "gender"),
                ("firstname", "given_name"),
                ("gendercode", "sex"),
            ]),
            "mappings",
        )
        .unwrap();
        shape.set_labels(&options());
        let record = json!({
            "contactid": Uuid::new_v4().to_string(), "firstname": "Ada",
            "gendercode": 2,
        });
        let (row, _) = shape.row(record.as_object().unwrap(), Operation::Read, Utc::now()).unwrap();
        let ada = Value::Text("Ada".into());
        let (two, female) = (Value::Integer(2), Value::Text("Female".into()));
        assert_eq!(row.values, [ada.clone(), two.clone(), female.clone(), ada, two, female]);
    }

    #[test]
    fn a_value_of_the_wrong_type_is_left_null_and_noted_and_a_row_without_id_is_refused() {
        let shape =
            TableShape::new(&contact(), "contactid", &mapped(&[("numberofchildren", "children")]), "m").unwrap();
        let record = json!({"contactid": Uuid::new_v4().to_string(), "numberofchildren": "three"});
        let (row, notes) = shape.row(record.as_object().unwrap(), Operation::Read, Utc::now()).unwrap();
        assert_eq!(row.values, vec![Value::Null]);
        assert!(notes[0].contains("numberofchildren") && notes[0].contains("\"three\""), "{notes:?}");
        let error =
            shape.row(json!({"numberofchildren": 3}).as_object().unwrap(), Operation::Read, Utc::now()).unwrap_err();
        assert!(error.contains("contactid"), "{error}");
        // Read straight from a page: an object where a number belongs is noted whole; text with escapes, a
        // version written as text (as `IEEE754Compatible` asks) read as any other.
        let shape = TableShape::new(
            &contact(),
            "contactid",
            &mapped(&[("numberofchildren", "children"), ("firstname", "first_name")]),
            "m",
        )
        .unwrap();
        let id = Uuid::new_v4();
        let text = format!(
            r#"{{"contactid":"{id}","versionnumber":"77","numberofchildren":{{"n":[3]}},"firstname":"A\"da \u00e9"}}"#
        );
        let page = shape.page_fields();
        let fields = (&page).deserialize(&mut serde_json::Deserializer::from_str(&text)).unwrap();
        let (row, notes) = shape.row_of(fields, Operation::Read, Utc::now()).unwrap();
        assert_eq!((row.id, row.version), (id, Some(77)));
        assert_eq!(row.values, vec![Value::Null, Value::Text("A\"da é".into())]);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains(r#"{"n":[3]} is not a whole number value"#), "{notes:?}");
    }

    #[test]
    fn every_problem_of_a_mapping_is_reported_at_once_with_its_place() {
        let problems = TableShape::new(
            &contact(),
            "contactid",
            &mapped(&[("firstnme", "a"), ("fullname_yomi", "b"), ("firstname", "gender"), ("gendercode", "gender")]),
            "transformations[1].params.mappings",
        )
        .unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields[..2],
            [
                "transformations[1].params.mappings[0].sourceAttribute",
                "transformations[1].params.mappings[1].sourceAttribute"
            ]
        );
        assert!(problems[0].message.contains("did you mean firstname"), "{problems:?}");
        assert!(problems[2].message.contains("two columns would be called gender"), "{problems:?}");
    }

    #[test]
    fn a_schema_grows_by_new_columns_and_a_changed_type_needs_a_new_generation() {
        let all = TableShape::new(&contact(), "contactid", &mapped(&[("firstname", "first_name")]), "m").unwrap();
        let more = TableShape::new(
            &contact(),
            "contactid",
            &mapped(&[("donotemail", "no_email"), ("firstname", "first_name")]),
            "m",
        )
        .unwrap();
        let grown = more.grown_from(&all.schema).unwrap();
        let names: Vec<&str> = grown.schema.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["first_name", "no_email"], "older columns keep their place");
        let record = json!({"contactid": Uuid::new_v4().to_string(), "firstname": "Ada", "donotemail": true});
        let (row, _) = grown.row(record.as_object().unwrap(), Operation::Read, Utc::now()).unwrap();
        assert_eq!(row.values, vec![Value::Text("Ada".into()), Value::Boolean(true)]);
        let retyped =
            TableShape::new(&contact(), "contactid", &mapped(&[("numberofchildren", "first_name")]), "m").unwrap();
        assert!(retyped.grown_from(&all.schema).is_none());
    }

    #[test]
    fn dates_are_read_by_hand_as_chrono_reads_them() {
        let texts = ["2026-11-30", "2026-11-30T10:00:00Z", "0001-01-01", "2024-02-29", "2023-02-29", "2026-13-01"];
        for text in texts.into_iter().chain(["26-11-30", "2026-1-5", "", "2026-11-3x", "2026/11/30", "+2026-11-30"]) {
            let chrono = NaiveDate::parse_from_str(text.get(..10).unwrap_or(text), "%Y-%m-%d").ok();
            assert_eq!(date(text), chrono, "{text}");
        }
        assert_eq!(date("2026-11-30"), NaiveDate::from_ymd_opt(2026, 11, 30));
    }

    #[test]
    fn decimals_are_read_exactly_at_their_scale() {
        assert_eq!(decimal(1234567.8912, 4), Some(12_345_678_912));
        assert_eq!(decimal(-0.5, 4), Some(-5_000));
        assert_eq!(decimal(0.1, 10), Some(1_000_000_000));
        assert_eq!(decimal(0.12345, 4), None, "more digits than the column keeps");
        assert_eq!(decimal(-0.0, 2), Some(0));
        assert_eq!(decimal(1e37, 1), Some(10i128.pow(38)));
        assert_eq!(decimal(1e38, 1), None, "beyond an i128's range at the scale");
        assert_eq!(decimal(f64::MIN_POSITIVE, 10), None);
        assert_eq!(decimal(f64::NAN, 2), None);
    }
}
