//! Column values: read from request bodies with Dataverse's validation, written back in the Web API's JSON
//! form, compared as SQL Server compares them (strings case-insensitively), and formatted for
//! `OData.Community.Display.V1.FormattedValue`.

use crate::error::{ApiError, ApiResult};
use crate::schema::{Attribute, AttributeKind, DateFormat};
use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, Timelike, Utc};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value as Json;
use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashSet;
use std::sync::{Arc, LazyLock, RwLock};
use uuid::Uuid;

/// The one-letter tags keep the state file small: it holds every version of every row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    #[serde(rename = "s")]
    Text(String),
    /// Whole numbers, big integers, and option values of choice, state and status columns.
    #[serde(rename = "i")]
    Int(i64),
    /// Decimal, floating point and currency columns.
    #[serde(rename = "n")]
    Number(f64),
    #[serde(rename = "b")]
    Bool(bool),
    #[serde(rename = "g")]
    Guid(Uuid),
    #[serde(rename = "t")]
    DateTime(DateTime<Utc>),
    #[serde(rename = "d")]
    Date(NaiveDate),
    #[serde(rename = "l")]
    Lookup { id: Uuid, table: String },
}

pub use crate::row::Row;

/// A column's logical name as a row holds it. Names are interned: every row of every table holds the same copy of
/// a name, so that writing a page of rows finds each row's columns by comparing pointers to text already in the
/// cache rather than text of its own scattered through memory. Ordered, compared and hashed as its text.
///
/// Only names of columns are interned (a row holds nothing else), so the set stays as small as the schema.
#[derive(Clone)]
pub struct Name(Arc<str>);

impl Name {
    pub fn new(text: &str) -> Name {
        static NAMES: LazyLock<RwLock<HashSet<Arc<str>>>> = LazyLock::new(Default::default);
        if let Some(name) = NAMES.read().expect("names lock").get(text) {
            return Name(name.clone());
        }
        let mut names = NAMES.write().expect("names lock");
        if let Some(name) = names.get(text) {
            return Name(name.clone());
        }
        let name: Arc<str> = Arc::from(text);
        names.insert(name.clone());
        Name(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Name {
    fn from(text: &str) -> Name {
        Name::new(text)
    }
}

impl From<String> for Name {
    fn from(text: String) -> Name {
        Name::new(&text)
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Two names are the same text exactly when they are the same interned copy.
impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Name {}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> Ordering {
        if Arc::ptr_eq(&self.0, &other.0) { Ordering::Equal } else { self.0.cmp(&other.0) }
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Name, D::Error> {
        let text = <Cow<'de, str>>::deserialize(deserializer)?;
        Ok(Name::new(&text))
    }
}

/// The name of a table and its entity set, for error messages.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub table: &'a str,
    pub entity_set: &'a str,
}

fn json_literal(json: &Json) -> String {
    match json {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn parse_date_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|d| d.with_timezone(&Utc))
}

pub fn parse_date(text: &str) -> Option<NaiveDate> {
    if text.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()
}

/// A GUID as Dataverse takes it: hyphenated, no braces, any case.
pub fn parse_guid(text: &str) -> Option<Uuid> {
    if text.len() != 36 {
        return None;
    }
    Uuid::parse_str(text).ok()
}

/// The most options a choices (multi-select) column holds at once.
pub const MAX_CHOICES: usize = 150;

impl Value {
    /// Reads a body value for `attribute`, with the errors Dataverse gives for each kind of bad value.
    /// `Ok(None)` is an explicit null.
    pub fn from_json(attribute: &Attribute, json: &Json, target: Target<'_>) -> ApiResult<Option<Value>> {
        if json.is_null() {
            return Ok(None);
        }
        let name = attribute.logical_name.as_str();
        let cannot_convert =
            || ApiError::cannot_convert(target.entity_set, &json_literal(json), attribute.kind.edm_type());
        let value = match &attribute.kind {
            AttributeKind::String { max_length, .. } | AttributeKind::Memo { max_length } => {
                let text = json.as_str().ok_or_else(cannot_convert)?;
                if text.chars().count() > *max_length as usize {
                    return Err(ApiError::string_too_long(name, target.table, *max_length));
                }
                Value::Text(text.to_string())
            }
            AttributeKind::Integer { min, max } => {
                let n = json.as_i64().ok_or_else(cannot_convert)?;
                if n < *min || n > *max {
                    return Err(ApiError::out_of_range(n, name, target.table, &format!("{min} to {max}")));
                }
                Value::Int(n)
            }
            AttributeKind::BigInt => Value::Int(json.as_i64().ok_or_else(cannot_convert)?),
            AttributeKind::Decimal { min, max, .. }
            | AttributeKind::Double { min, max, .. }
            | AttributeKind::Money { min, max, .. } => {
                let n = json.as_f64().ok_or_else(cannot_convert)?;
                if n < *min || n > *max {
                    return Err(ApiError::out_of_range(n, name, target.table, &format!("{min} to {max}")));
                }
                Value::Number(n)
            }
            AttributeKind::Boolean { .. } => Value::Bool(json.as_bool().ok_or_else(cannot_convert)?),
            AttributeKind::DateTime { format: DateFormat::DateOnly, .. } => {
                let text = json.as_str().ok_or_else(cannot_convert)?;
                let date = parse_date(text).ok_or_else(|| {
                    ApiError::payload(
                        target.entity_set,
                        format!(
                            "Cannot convert the literal '{text}' to the expected type 'Edm.Date'. ---> System.FormatException: \
                             String '{text}' was not recognized as a valid Edm.Date."
                        ),
                    )
                })?;
                Value::Date(date)
            }
            AttributeKind::DateTime { .. } => {
                let text = json.as_str().ok_or_else(cannot_convert)?;
                let moment = parse_date_time(text).ok_or_else(cannot_convert)?;
                // Dataverse keeps date/time values to the second.
                Value::DateTime(moment.with_timezone(&Utc).trunc_subsecs())
            }
            AttributeKind::Picklist { options, .. }
            | AttributeKind::State { options }
            | AttributeKind::Status { options } => {
                let n = json.as_i64().ok_or_else(cannot_convert)?;
                if !options.iter().any(|o| o.value as i64 == n) {
                    let accepted: Vec<String> = options.iter().map(|o| o.value.to_string()).collect();
                    return Err(ApiError::out_of_range(n, name, target.table, &accepted.join(",")));
                }
                Value::Int(n)
            }
            AttributeKind::MultiSelectPicklist { options } => {
                let text = json.as_str().ok_or_else(cannot_convert)?;
                let mut chosen = Vec::new();
                for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let n: i64 = part.parse().map_err(|_| cannot_convert())?;
                    if !options.iter().any(|o| o.value as i64 == n) {
                        let accepted: Vec<String> = options.iter().map(|o| o.value.to_string()).collect();
                        return Err(ApiError::out_of_range(n, name, target.table, &accepted.join(",")));
                    }
                    if !chosen.contains(&n) {
                        chosen.push(n);
                    }
                }
                if chosen.len() > MAX_CHOICES {
                    return Err(ApiError::invalid_argument(format!(
                        "The column '{name}' of {} holds at most {MAX_CHOICES} choices; {} were given.",
                        target.table,
                        chosen.len()
                    )));
                }
                if chosen.is_empty() {
                    return Ok(None);
                }
                Value::Text(chosen.iter().map(i64::to_string).collect::<Vec<_>>().join(","))
            }
            AttributeKind::Uniqueidentifier => {
                let text = json.as_str().ok_or_else(cannot_convert)?;
                Value::Guid(parse_guid(text).ok_or_else(cannot_convert)?)
            }
            AttributeKind::EntityName { .. } => Value::Text(json.as_str().ok_or_else(cannot_convert)?.to_string()),
            AttributeKind::Lookup { .. } => {
                return Err(ApiError::invalid_argument(format!(
                    "The lookup '{name}' is set through its navigation property with @odata.bind."
                )));
            }
        };
        Ok(Some(value))
    }

    /// The value in the Web API's JSON form.
    pub fn to_json(&self) -> Json {
        serde_json::to_value(self.json_form()).expect("a value converts to JSON")
    }

    /// The value in the Web API's JSON form, serialized straight into a response: text as is, numbers as
    /// numbers (non-finite ones as null), GUIDs and lookups as their id, dates and times in ISO 8601.
    pub fn json_form(&self) -> JsonForm<'_> {
        JsonForm(self)
    }

    /// The value in the plain text form used by paging cookies and key indexes.
    pub fn to_text(&self) -> String {
        match self.to_json() {
            Json::String(s) => s,
            other => other.to_string(),
        }
    }

    /// Orders two values of the same column. Text compares case-insensitively, as SQL Server's default
    /// collation does.
    pub fn compare(&self, other: &Value) -> Option<Ordering> {
        use Value::*;
        match (self, other) {
            (Text(a), Text(b)) => Some(compare_text(a, b)),
            (Int(a), Int(b)) => Some(a.cmp(b)),
            (Number(a), Number(b)) => a.partial_cmp(b),
            (Int(a), Number(b)) => (*a as f64).partial_cmp(b),
            (Number(a), Int(b)) => a.partial_cmp(&(*b as f64)),
            (Bool(a), Bool(b)) => Some(a.cmp(b)),
            (Guid(a), Guid(b)) | (Lookup { id: a, .. }, Lookup { id: b, .. }) | (Lookup { id: a, .. }, Guid(b)) => {
                Some(a.cmp(b))
            }
            (Guid(a), Lookup { id: b, .. }) => Some(a.cmp(b)),
            (DateTime(a), DateTime(b)) => Some(a.cmp(b)),
            (Date(a), Date(b)) => Some(a.cmp(b)),
            (DateTime(a), Date(b)) => Some(a.date_naive().cmp(b)),
            (Date(a), DateTime(b)) => Some(a.cmp(&b.date_naive())),
            _ => None,
        }
    }

    /// The value a key index holds: text folded to lower case, so keys are unique case-insensitively.
    pub fn key_text(&self) -> String {
        match self {
            Value::Text(s) => s.to_lowercase(),
            other => other.to_text(),
        }
    }

    /// `OData.Community.Display.V1.FormattedValue` for the value, as an en-US user in UTC sees it.
    /// Lookups are formatted by the caller, who can read the target row's name.
    /// Labels are borrowed from the column's definition.
    pub fn formatted<'k>(&self, kind: &'k AttributeKind) -> Option<Cow<'k, str>> {
        let text = match (kind, self) {
            (
                AttributeKind::Picklist { options, .. }
                | AttributeKind::State { options }
                | AttributeKind::Status { options },
                Value::Int(n),
            ) => return options.iter().find(|o| o.value as i64 == *n).map(|o| Cow::Borrowed(o.label.as_str())),
            (AttributeKind::Boolean { true_label, false_label, .. }, Value::Bool(b)) => {
                return Some(Cow::Borrowed(if *b { true_label } else { false_label }));
            }
            (AttributeKind::MultiSelectPicklist { options }, Value::Text(values)) => Some(
                values
                    .split(',')
                    .filter_map(|v| v.trim().parse::<i64>().ok())
                    .filter_map(|n| options.iter().find(|o| o.value as i64 == n).map(|o| o.label.as_str()))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            (AttributeKind::Integer { .. } | AttributeKind::BigInt, Value::Int(n)) => {
                Some(group_thousands(&n.to_string()))
            }
            (AttributeKind::Money { precision, .. }, Value::Number(n)) => {
                let text = format_number(*n, *precision);
                Some(if let Some(abs) = text.strip_prefix('-') { format!("-${abs}") } else { format!("${text}") })
            }
            (AttributeKind::Decimal { precision, .. } | AttributeKind::Double { precision, .. }, Value::Number(n)) => {
                Some(format_number(*n, *precision))
            }
            (AttributeKind::DateTime { .. }, Value::DateTime(d)) => Some(formatted_date_time(d)),
            (AttributeKind::DateTime { .. }, Value::Date(d)) => Some(formatted_date(*d)),
            _ => None,
        };
        text.map(Cow::Owned)
    }
}

// Dates and times are written by hand: chrono's formatter interprets its format for each value, and a page
// writes thousands. A year outside 0–9999 (which Dataverse does not hold) goes through chrono.

fn in_four_digits(date: NaiveDate) -> bool {
    (0..=9999).contains(&date.year())
}

/// `n` in decimal, padded with zeros to `width` digits.
fn push_number(text: &mut String, mut n: u32, width: usize) {
    let mut digits = [0u8; 10];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    text.extend(std::iter::repeat_n('0', width.saturating_sub(digits.len() - start)));
    text.push_str(std::str::from_utf8(&digits[start..]).expect("ASCII digits"));
}

/// `2026-11-30`.
fn push_iso_date(text: &mut String, date: NaiveDate) {
    push_number(text, date.year() as u32, 4);
    text.push('-');
    push_number(text, date.month(), 2);
    text.push('-');
    push_number(text, date.day(), 2);
}

/// A date and time in the Web API's JSON form, `2026-11-30T10:00:00Z`.
pub fn format_date_time(d: &DateTime<Utc>) -> String {
    if !in_four_digits(d.date_naive()) || d.nanosecond() >= 1_000_000_000 {
        return d.to_rfc3339_opts(SecondsFormat::Secs, true);
    }
    let mut text = String::with_capacity(20);
    push_iso_date(&mut text, d.date_naive());
    text.push('T');
    push_number(&mut text, d.hour(), 2);
    text.push(':');
    push_number(&mut text, d.minute(), 2);
    text.push(':');
    push_number(&mut text, d.second(), 2);
    text.push('Z');
    text
}

/// A date-only value in the Web API's JSON form, `2026-11-30`.
fn json_date(d: NaiveDate) -> String {
    if !in_four_digits(d) {
        return d.format("%Y-%m-%d").to_string();
    }
    let mut text = String::with_capacity(10);
    push_iso_date(&mut text, d);
    text
}

/// A date as an en-US user sees it, `11/30/2026`.
fn formatted_date(d: NaiveDate) -> String {
    if !in_four_digits(d) {
        return d.format("%-m/%-d/%Y").to_string();
    }
    let mut text = String::with_capacity(10);
    push_number(&mut text, d.month(), 1);
    text.push('/');
    push_number(&mut text, d.day(), 1);
    text.push('/');
    push_number(&mut text, d.year() as u32, 4);
    text
}

/// A date and time as an en-US user in UTC sees it, `11/30/2026 10:00 PM`.
fn formatted_date_time(d: &DateTime<Utc>) -> String {
    if !in_four_digits(d.date_naive()) {
        return d.format("%-m/%-d/%Y %-I:%M %p").to_string();
    }
    let mut text = formatted_date(d.date_naive());
    let (pm, hour) = d.hour12();
    text.push(' ');
    push_number(&mut text, hour, 1);
    text.push(':');
    push_number(&mut text, d.minute(), 2);
    text.push_str(if pm { " PM" } else { " AM" });
    text
}

/// A [`Value`] in the Web API's JSON form; see [`Value::json_form`].
pub struct JsonForm<'a>(&'a Value);

impl Serialize for JsonForm<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Text(s) => serializer.serialize_str(s),
            Value::Int(n) => serializer.serialize_i64(*n),
            Value::Number(n) if n.is_finite() => serializer.serialize_f64(*n),
            Value::Number(_) => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Guid(id) | Value::Lookup { id, .. } => {
                serializer.serialize_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()))
            }
            Value::DateTime(d) => serializer.serialize_str(&format_date_time(d)),
            Value::Date(d) => serializer.serialize_str(&json_date(*d)),
        }
    }
}

pub fn compare_text(a: &str, b: &str) -> Ordering {
    let mut left = a.chars().flat_map(char::to_lowercase);
    let mut right = b.chars().flat_map(char::to_lowercase);
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x != y => return x.cmp(&y),
            _ => {}
        }
    }
}

pub fn group_thousands(digits: &str) -> String {
    let (sign, digits) = match digits.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", digits),
    };
    let mut out = String::with_capacity(sign.len() + digits.len() + digits.len() / 3);
    out.push_str(sign);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn format_number(n: f64, precision: u8) -> String {
    let text = format!("{:.*}", precision as usize, n);
    let (int, fraction) = text.split_once('.').map_or((text.as_str(), None), |(int, fraction)| (int, Some(fraction)));
    let mut out = group_thousands(int);
    if let Some(fraction) = fraction {
        out.push('.');
        out.push_str(fraction);
    }
    out
}

trait TruncSubsecs {
    fn trunc_subsecs(self) -> Self;
}

impl TruncSubsecs for DateTime<Utc> {
    fn trunc_subsecs(self) -> Self {
        self.with_nanosecond(0).unwrap_or(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_one_shared_copy_ordered_and_looked_up_as_its_text() {
        let (made, owned) = (Name::new("firstname"), Name::from("firstname".to_string()));
        assert!(Arc::ptr_eq(&made.0, &owned.0), "one copy of a name");
        assert_eq!(made, owned);
        assert_ne!(made, Name::new("lastname"));
        assert!(Name::new("emailaddress1") < made && made < Name::new("lastname"), "ordered as text");
        let read: Name = serde_json::from_str(r#""firstname""#).unwrap();
        assert!(Arc::ptr_eq(&made.0, &read.0), "a name read from a state file is the same copy");
        let row: Row = serde_json::from_str(r#"{"lastname": {"s": "Smith"}, "firstname": {"i": 1}}"#).unwrap();
        assert_eq!(row.get("firstname"), Some(&Value::Int(1)));
        assert_eq!(row.keys().map(Name::as_str).collect::<Vec<_>>(), ["firstname", "lastname"]);
    }

    #[test]
    fn dates_written_by_hand_read_as_chrono_writes_them() {
        use chrono::TimeZone;
        let mut seconds: i64 = -62_135_596_800; // 0001-01-01
        while seconds < 253_402_300_799 {
            let d = Utc.timestamp_opt(seconds, 0).unwrap();
            assert_eq!(format_date_time(&d), d.to_rfc3339_opts(SecondsFormat::Secs, true));
            assert_eq!(json_date(d.date_naive()), d.format("%Y-%m-%d").to_string());
            assert_eq!(formatted_date(d.date_naive()), d.format("%-m/%-d/%Y").to_string());
            assert_eq!(formatted_date_time(&d), d.format("%-m/%-d/%Y %-I:%M %p").to_string());
            seconds += 7_919_311; // about three months, at every hour and minute in turn
        }
        let d = Utc.with_ymd_and_hms(2026, 11, 30, 0, 5, 9).unwrap();
        assert_eq!(
            (format_date_time(&d).as_str(), formatted_date_time(&d).as_str()),
            ("2026-11-30T00:05:09Z", "11/30/2026 12:05 AM")
        );
    }

    #[test]
    fn numbers_are_formatted_for_en_us() {
        assert_eq!(group_thousands("9500"), "9,500");
        assert_eq!(group_thousands("-1234567"), "-1,234,567");
        assert_eq!(group_thousands("12"), "12");
        assert_eq!(Value::Number(100000.0).formatted(&AttributeKind::money()).unwrap(), "$100,000.00");
    }

    #[test]
    fn text_compares_case_insensitively() {
        assert_eq!(compare_text("Smith", "smith"), Ordering::Equal);
        assert_eq!(compare_text("adams", "Baker"), Ordering::Less);
    }

    #[test]
    fn dates_are_strict() {
        assert!(parse_date("2021-03-15").is_some());
        assert!(parse_date("2021-03-15T00:00:00Z").is_none());
        assert!(parse_date_time("2023-01-01T10:00:00+02:00").is_some());
        assert!(parse_date_time("2023-01-01").is_none());
        assert!(parse_guid("{49b0be2e-d01c-ed11-b83e-000d3a572421}").is_none());
        assert!(parse_guid("49B0BE2E-D01C-ED11-B83E-000D3A572421").is_some());
    }
}
