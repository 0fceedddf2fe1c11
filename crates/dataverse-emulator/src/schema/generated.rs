//! A generated catalog of custom tables, so that discovering an environment (listing its tables, reading their
//! columns and views, choosing what to load) meets the breadth of a real Dynamics 365 organization instead of the
//! handful of built-in tables.
//!
//! Contract: [`generated_tables`]`(n)` returns `n` tables, the same for the same `n`, and a larger catalog starts
//! with the tables of a smaller one (so a state file made with `n` grows when started with more). They are built
//! as an admin makes them: a publisher prefix (`cr8a3_`, `new_`, …),
//! logical, schema and display names, an entity set, a primary id and a primary name, the standard columns
//! (audit stamps, owner, `versionnumber`, state and status), and 6 to 11 columns of their own that, across
//! tables, cover every column type: text, multiple lines of text, whole number, big integer, decimal (with its
//! precision), float, currency, yes/no, date and time, date only, choice, choices, lookup (to contact, to account
//! or to an earlier generated table) and unique identifier. Four tables in five track changes; one in
//! twenty-five is private (`IsPrivate`). Each table holds [`ROWS_PER_TABLE`] rows whose ids and values derive
//! from the table and the row's position, so tests can know them in advance.
//!
//! The tables are written at start when missing ([`write_missing`]), with their standard views, as if an admin
//! had created them: with a state file they are kept, and a client may change or delete them like any custom
//! table.

use super::builtin::{TableBuilder, metadata_id};
use super::customize::plural;
use super::*;
use crate::store::{Change, Data};
use crate::value::{Row, Value};
use chrono::{NaiveDate, TimeZone, Utc};

/// The rows each generated table starts with.
pub const ROWS_PER_TABLE: usize = 3;

const PREFIXES: &[&str] = &["cr8a3", "new", "contoso", "fab", "adv"];

const QUALIFIERS: &[&str] = &[
    "", "Service", "Field", "Partner", "Regional", "Customer", "Project", "Vendor", "Product", "Campaign", "Store",
    "Fleet", "Member",
];

const NOUNS: &[&str] = &[
    "Agreement",
    "Asset",
    "Booking",
    "Certificate",
    "Claim",
    "Complaint",
    "Contract",
    "Delivery",
    "Deposit",
    "Device",
    "Enrollment",
    "Estimate",
    "Event",
    "Feedback",
    "Grant",
    "Incident",
    "Inspection",
    "Invoice",
    "License",
    "Loan",
    "Meeting",
    "Milestone",
    "Order",
    "Payment",
    "Permit",
    "Policy",
    "Property",
    "Quote",
    "Referral",
    "Registration",
    "Renewal",
    "Request",
    "Reservation",
    "Return",
    "Shipment",
    "Subscription",
    "Survey",
    "Ticket",
    "Visit",
    "Warranty",
];

/// A small deterministic generator (SplitMix64): the catalog must not depend on a random seed or a crate's
/// algorithm changing between versions.
struct Draw(u64);

impl Draw {
    fn new(seed: u64) -> Self {
        Draw(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The words a generated table is named with ("Service Inspection", "Ticket 2").
fn table_words(index: usize) -> Vec<String> {
    let combinations = QUALIFIERS.len() * NOUNS.len();
    let within = index % combinations;
    let mut words = Vec::new();
    let qualifier = QUALIFIERS[within / NOUNS.len()];
    if !qualifier.is_empty() {
        words.push(qualifier.to_string());
    }
    words.push(NOUNS[within % NOUNS.len()].to_string());
    if index >= combinations {
        words.push((index / combinations + 1).to_string());
    }
    words
}

/// The kinds of column a generated table draws its own columns from, in the order tables rotate through them.
#[derive(Clone, Copy)]
enum ColumnKind {
    Text,
    Memo,
    Whole,
    Big,
    Decimal,
    Float,
    Currency,
    YesNo,
    Moment,
    Date,
    Choice,
    Choices,
    Lookup,
    Identifier,
}

const KINDS: [ColumnKind; 14] = [
    ColumnKind::Text,
    ColumnKind::Memo,
    ColumnKind::Whole,
    ColumnKind::Big,
    ColumnKind::Decimal,
    ColumnKind::Float,
    ColumnKind::Currency,
    ColumnKind::YesNo,
    ColumnKind::Moment,
    ColumnKind::Date,
    ColumnKind::Choice,
    ColumnKind::Choices,
    ColumnKind::Lookup,
    ColumnKind::Identifier,
];

impl ColumnKind {
    /// Display names a column of this kind may have.
    fn names(self) -> &'static [&'static str] {
        match self {
            ColumnKind::Text => &["Reference Code", "External Code", "Region", "Contact Email", "Website"],
            ColumnKind::Memo => &["Notes", "Details", "Resolution"],
            ColumnKind::Whole => &["Quantity", "Priority Score", "Attempts"],
            ColumnKind::Big => &["Sequence Number", "External Number"],
            ColumnKind::Decimal => &["Rate", "Weight", "Discount Percent"],
            ColumnKind::Float => &["Latitude", "Score"],
            ColumnKind::Currency => &["Amount", "Budget", "Fee"],
            ColumnKind::YesNo => &["Is Approved", "Is Billable", "Needs Review"],
            ColumnKind::Moment => &["Scheduled On", "Completed On", "Last Contacted On"],
            ColumnKind::Date => &["Start Date", "Due Date", "Effective Date"],
            ColumnKind::Choice => &["Priority", "Channel", "Category"],
            ColumnKind::Choices => &["Regions Served", "Topics"],
            ColumnKind::Lookup => &["Customer", "Related Record"],
            ColumnKind::Identifier => &["Source Id"],
        }
    }
}

fn options(labels: &[&str], first: i32) -> Vec<OptionValue> {
    labels.iter().enumerate().map(|(i, label)| OptionValue::new(first + i as i32, label)).collect()
}

/// What a generated lookup points at: contact, account, or an earlier generated table (by index).
#[derive(Clone)]
enum Target {
    Contact,
    Account,
    Generated(usize),
}

/// The names of generated table `index`: (logical name, schema name, display name, plural display name).
fn names(index: usize) -> (String, String, String, String) {
    let prefix = PREFIXES[index % PREFIXES.len()];
    let words = table_words(index);
    let logical = format!("{prefix}_{}", words.concat().to_lowercase());
    let schema = format!("{prefix}_{}", words.concat());
    let display = words.join(" ");
    // The noun takes the plural: "Service Inspections", "Ticket 2" → "Tickets 2".
    let noun = words.iter().rposition(|w| w.parse::<u32>().is_err()).unwrap_or(0);
    let plural_display: Vec<String> = words
        .iter()
        .enumerate()
        .map(|(i, w)| if i == noun { capitalized(&plural(&w.to_lowercase())) } else { w.clone() })
        .collect();
    let plural_display = plural_display.join(" ");
    (logical, schema, display, plural_display)
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// One generated table's definition.
fn generated_table(index: usize) -> Table {
    let mut draw = Draw::new(index as u64);
    let (logical, schema, display, plural_display) = names(index);
    let prefix = PREFIXES[index % PREFIXES.len()];
    let primary_name = format!("{prefix}_name");
    let mut b = TableBuilder::new(
        &logical,
        &plural(&logical),
        (&display, &plural_display),
        &primary_name,
        20_000 + index as i32,
    )
    .description(&format!("{plural_display} kept by the {prefix} publisher's solution."))
    .attr(&primary_name, "Name", AttributeKind::string(100))
    .required(RequiredLevel::ApplicationRequired);
    let count = 6 + draw.below(6);
    let mut used: Vec<String> = vec![primary_name.clone()];
    for j in 0..count {
        let kind = KINDS[(index + j) % KINDS.len()];
        let choices = kind.names();
        let column_display = choices[draw.below(choices.len())];
        let mut column = format!("{prefix}_{}", column_display.replace(' ', "").to_lowercase());
        if used.contains(&column) {
            column = format!("{column}{}", j + 1);
        }
        used.push(column.clone());
        let attribute_kind = match kind {
            ColumnKind::Text => AttributeKind::string([100, 200, 250][draw.below(3)]),
            ColumnKind::Memo => AttributeKind::Memo { max_length: 4000 },
            ColumnKind::Whole => AttributeKind::Integer { min: 0, max: 1_000_000 },
            ColumnKind::Big => AttributeKind::BigInt,
            ColumnKind::Decimal => AttributeKind::Decimal {
                min: -100_000_000_000.0,
                max: 100_000_000_000.0,
                precision: 2 + draw.below(4) as u8,
            },
            ColumnKind::Float => AttributeKind::Double { min: -1_000_000_000.0, max: 1_000_000_000.0, precision: 5 },
            ColumnKind::Currency => AttributeKind::Money {
                min: -922_337_203_685_477.0,
                max: 922_337_203_685_477.0,
                precision: [2, 2, 4][draw.below(3)],
            },
            ColumnKind::YesNo => AttributeKind::yes_no("Yes", "No", false),
            ColumnKind::Moment => AttributeKind::date_time(),
            ColumnKind::Date => AttributeKind::date_only(),
            ColumnKind::Choice => AttributeKind::Picklist {
                options: options(&["Low", "Normal", "High", "Critical"], 100_000_000 + 10_000 * (index % 90) as i32),
                default: None,
            },
            ColumnKind::Choices => AttributeKind::MultiSelectPicklist {
                options: options(&["North", "South", "East", "West", "Online"], 100_000_000),
            },
            ColumnKind::Lookup => {
                let target = match draw.below(3) {
                    0 => Target::Contact,
                    1 => Target::Account,
                    _ if index > 0 => Target::Generated(index - 1 - draw.below(index.min(20))),
                    _ => Target::Account,
                };
                let table = match target {
                    Target::Contact => "contact".to_string(),
                    Target::Account => "account".to_string(),
                    Target::Generated(other) => names(other).0,
                };
                // A custom lookup's navigation property is its schema name, as Dataverse names it.
                let navigation = format!("{prefix}_{}", column_display.replace(' ', ""));
                let navigation =
                    if column.ends_with(char::is_numeric) { format!("{navigation}{}", j + 1) } else { navigation };
                AttributeKind::lookup(&table, &navigation)
            }
            ColumnKind::Identifier => AttributeKind::Uniqueidentifier,
        };
        b = b.attr(&column, column_display, attribute_kind);
    }
    let mut table =
        b.standard_columns(&[(0, "Active", 1), (1, "Inactive", 2)], &[(1, "Active", 0), (2, "Inactive", 1)]).build();
    table.schema_name = schema;
    table.is_custom = true;
    table.change_tracking_enabled = index % 5 != 3;
    table.is_private = index % 25 == 24;
    let primary_id = table.primary_id.clone();
    for attribute in &mut table.attributes {
        if attribute.logical_name == primary_id {
            attribute.schema_name = format!("{}Id", table.schema_name);
        } else if attribute.logical_name.starts_with(&format!("{prefix}_")) {
            attribute.is_custom = true;
            attribute.schema_name = custom_schema_name(prefix, &attribute.display_name, &attribute.logical_name);
        }
    }
    table
}

/// `cr8a3_DueDate` for the column `cr8a3_duedate` displayed "Due Date" (and `cr8a3_Name` for the primary name).
fn custom_schema_name(prefix: &str, display: &str, logical: &str) -> String {
    let pascal = display.replace(' ', "");
    let suffix = logical.trim_start_matches(&format!("{prefix}_{}", pascal.to_lowercase()));
    format!("{prefix}_{pascal}{suffix}")
}

/// `count` generated tables, the same for the same `count`.
pub fn generated_tables(count: usize) -> Vec<Table> {
    (0..count).map(generated_table).collect()
}

/// The id of row `position` of generated table `logical_name`.
pub fn row_id(logical_name: &str, position: usize) -> Uuid {
    metadata_id(&format!("generated-row/{logical_name}/{position}"))
}

/// The value of one column in row `position`, derived from the column and the position; `None` leaves it empty.
fn value(attribute: &Attribute, position: usize, seed: u64) -> Option<Value> {
    let n = position as i64 + 1;
    let mut draw = Draw::new(seed);
    Some(match &attribute.kind {
        AttributeKind::String { max_length, .. } => {
            let text = format!("{} {n}", attribute.display_name);
            Value::Text(text.chars().take(*max_length as usize).collect())
        }
        AttributeKind::Memo { .. } => Value::Text(format!("{} of row {n}.\nSecond line.", attribute.display_name)),
        AttributeKind::Integer { max, .. } => Value::Int((draw.below(1000) as i64 * n).min(*max)),
        AttributeKind::BigInt => Value::Int(9_000_000_000 + draw.below(1_000_000) as i64 * n),
        AttributeKind::Decimal { precision, .. } | AttributeKind::Money { precision, .. } => {
            let scale = 10f64.powi(*precision as i32);
            Value::Number(((draw.below(10_000_000) as f64 / 100.0 * n as f64) * scale).round() / scale)
        }
        AttributeKind::Double { .. } => Value::Number(draw.below(180_000) as f64 / 1000.0 - 90.0),
        AttributeKind::Boolean { .. } => Value::Bool(position.is_multiple_of(2)),
        AttributeKind::DateTime { format: DateFormat::DateOnly, .. } => {
            Value::Date(NaiveDate::from_ymd_opt(2024, 1 + (position % 12) as u32, 1 + draw.below(28) as u32)?)
        }
        AttributeKind::DateTime { .. } => Value::DateTime(
            Utc.with_ymd_and_hms(2024, 1 + (position % 12) as u32, 1 + draw.below(28) as u32, 9, 30, 0).single()?,
        ),
        AttributeKind::Picklist { options, .. } => Value::Int(options[position % options.len()].value as i64),
        AttributeKind::MultiSelectPicklist { options } => {
            let first = options[position % options.len()].value;
            let second = options[(position + 2) % options.len()].value;
            Value::Text(format!("{},{}", first.min(second), first.max(second)))
        }
        AttributeKind::Uniqueidentifier => Value::Guid(Uuid::new_v5(&attribute.metadata_id, &n.to_le_bytes())),
        _ => return None,
    })
}

/// The row at `position` of a generated table: its own columns, active, owned by `owner`, created in 2024.
fn generated_row(table: &Table, position: usize, owner: Uuid, version: i64) -> Row {
    let mut row = Row::new();
    let id = row_id(&table.logical_name, position);
    row.insert(table.primary_id.as_str().into(), Value::Guid(id));
    for (column, attribute) in table.attributes.iter().enumerate().filter(|(_, a)| a.is_custom) {
        let seed = ((position as u64) << 32) | column as u64;
        if let Some(target) = attribute.lookup_targets().first() {
            // Lookups to contact and account stay empty: those tables start without rows.
            if target.table != "contact" && target.table != "account" {
                row.insert(
                    attribute.logical_name.as_str().into(),
                    Value::Lookup { id: row_id(&target.table, position), table: target.table.clone() },
                );
            }
        } else if let Some(v) = value(attribute, position, seed) {
            row.insert(attribute.logical_name.as_str().into(), v);
        }
    }
    let created = Utc.with_ymd_and_hms(2024, 1, 1 + position as u32 % 28, 8, 0, 0).single().unwrap_or_default();
    for stamp in ["createdon", "modifiedon"] {
        row.insert(stamp.into(), Value::DateTime(created));
    }
    for user in ["createdby", "modifiedby", "ownerid"] {
        row.insert(user.into(), Value::Lookup { id: owner, table: "systemuser".into() });
    }
    row.insert("statecode".into(), Value::Int(0));
    row.insert("statuscode".into(), Value::Int(1));
    row.insert("versionnumber".into(), Value::Int(version));
    row
}

/// Writes the generated tables the schema lacks, each with its views and rows owned by `owner`. Tables already
/// there (kept in the state file, perhaps changed by a client) are left as they are.
pub fn write_missing(data: &mut Data, changes: &mut Vec<Change>, count: usize, owner: Uuid) {
    for index in 0..count {
        let (logical, ..) = names(index);
        if data.schema.table(&logical).is_some() {
            continue;
        }
        let table = generated_table(index);
        data.put_table(changes, table.clone());
        for position in 0..ROWS_PER_TABLE {
            let version = data.next_version();
            let row = generated_row(&table, position, owner, version);
            data.put_row(changes, &table.logical_name, row_id(&table.logical_name, position), row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_same_count_gives_the_same_catalog_and_a_longer_one_extends_it() {
        let five_hundred = generated_tables(500);
        assert_eq!(five_hundred, generated_tables(500));
        assert_eq!(generated_tables(20), five_hundred[..20]);
    }

    #[test]
    fn names_are_unique_prefixed_and_do_not_clash_with_built_in_tables() {
        let tables = generated_tables(1200);
        let mut logical = HashSet::new();
        let mut sets = HashSet::new();
        for builtin in crate::schema::builtin_tables() {
            logical.insert(builtin.logical_name.clone());
            sets.insert(builtin.entity_set_name.clone());
        }
        for table in &tables {
            assert!(logical.insert(table.logical_name.clone()), "{} twice", table.logical_name);
            assert!(sets.insert(table.entity_set_name.clone()), "{} twice", table.entity_set_name);
            let (prefix, rest) = table.logical_name.split_once('_').unwrap();
            assert!(PREFIXES.contains(&prefix) && !rest.is_empty());
            assert_eq!(table.schema_name.to_lowercase(), table.logical_name);
            assert_eq!(table.primary_id, format!("{}id", table.logical_name));
            assert!(table.attribute(&table.primary_name).is_some());
            let mut columns = HashSet::new();
            assert!(table.attributes.iter().all(|a| columns.insert(a.logical_name.clone())), "{}", table.logical_name);
            for attribute in table.attributes.iter().filter(|a| a.is_custom) {
                assert_eq!(attribute.schema_name.to_lowercase(), attribute.logical_name);
            }
        }
    }

    #[test]
    fn every_column_type_appears_and_lookups_point_at_tables_that_exist() {
        let tables = generated_tables(30);
        let types: HashSet<&str> =
            tables.iter().flat_map(|t| t.attributes.iter().map(|a| a.kind.metadata_type())).collect();
        for expected in [
            "StringAttributeMetadata",
            "MemoAttributeMetadata",
            "IntegerAttributeMetadata",
            "BigIntAttributeMetadata",
            "DecimalAttributeMetadata",
            "DoubleAttributeMetadata",
            "MoneyAttributeMetadata",
            "BooleanAttributeMetadata",
            "DateTimeAttributeMetadata",
            "PicklistAttributeMetadata",
            "MultiSelectPicklistAttributeMetadata",
            "StateAttributeMetadata",
            "StatusAttributeMetadata",
            "LookupAttributeMetadata",
            "UniqueIdentifierAttributeMetadata",
        ] {
            assert!(types.contains(expected), "no {expected}");
        }
        let date_only =
            tables.iter().flat_map(|t| &t.attributes).any(|a| a.is_custom && a.kind == AttributeKind::date_only());
        assert!(date_only);
        let known: HashSet<String> =
            tables.iter().map(|t| t.logical_name.clone()).chain(["contact".into(), "account".into()]).collect();
        for table in &tables {
            for attribute in table.attributes.iter().filter(|a| a.is_custom) {
                for target in attribute.lookup_targets() {
                    assert!(known.contains(&target.table), "{} points at {}", attribute.logical_name, target.table);
                    assert!(table.navigation(&target.navigation_property).is_some());
                }
            }
        }
    }

    #[test]
    fn most_tables_track_changes_and_a_few_are_private() {
        let tables = generated_tables(500);
        let tracked = tables.iter().filter(|t| t.change_tracking_enabled).count();
        let private = tables.iter().filter(|t| t.is_private).count();
        assert_eq!((tracked, private), (400, 20));
    }

    #[test]
    fn generated_rows_hold_values_their_columns_accept() {
        let tables = generated_tables(30);
        let owner = Uuid::nil();
        for table in &tables {
            let row = generated_row(table, 1, owner, 7);
            for (name, value) in &row {
                let attribute = table.attribute(name).unwrap_or_else(|| panic!("{} has no {name}", table.logical_name));
                let json = value.to_json();
                if attribute.is_lookup() || attribute.is_read_only() || attribute.logical_name == table.primary_id {
                    continue;
                }
                let target = crate::value::Target { entity_set: &table.entity_set_name, table: &table.logical_name };
                let read = Value::from_json(attribute, &json, target).unwrap_or_else(|e| panic!("{name}: {e:?}"));
                assert_eq!(read.as_ref(), Some(value), "{}.{name}", table.logical_name);
            }
        }
    }
}
