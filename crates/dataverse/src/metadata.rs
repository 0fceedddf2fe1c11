//! Table metadata: what columns a table has and of which type (`EntityDefinitions` with its attributes), read
//! once per client and cached, and custom columns created the way an admin adds them.

use crate::client::Client;
use crate::error::Error;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// What a column holds, as `AttributeType` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    String {
        max_length: Option<u32>,
    },
    Memo {
        max_length: Option<u32>,
    },
    Integer,
    BigInt,
    Decimal,
    Double,
    Money,
    Boolean,
    /// `date_only` is the `DateOnly` format (`2021-03-15`); otherwise a date and time.
    DateTime {
        date_only: bool,
    },
    Picklist,
    MultiSelectPicklist,
    State,
    Status,
    Lookup,
    Customer,
    Owner,
    Uniqueidentifier,
    /// Any other type (`Virtual`, `EntityName`, `PartyList`, …): it is there, but dynsync does not write it.
    Other(String),
}

impl ColumnType {
    fn from_attribute_type(attribute_type: &str) -> ColumnType {
        match attribute_type {
            "String" => ColumnType::String { max_length: None },
            "Memo" => ColumnType::Memo { max_length: None },
            "Integer" => ColumnType::Integer,
            "BigInt" => ColumnType::BigInt,
            "Decimal" => ColumnType::Decimal,
            "Double" => ColumnType::Double,
            "Money" => ColumnType::Money,
            "Boolean" => ColumnType::Boolean,
            "DateTime" => ColumnType::DateTime { date_only: false },
            "Picklist" => ColumnType::Picklist,
            "MultiSelectPicklist" | "Virtual_MultiSelectPicklist" => ColumnType::MultiSelectPicklist,
            "State" => ColumnType::State,
            "Status" => ColumnType::Status,
            "Lookup" => ColumnType::Lookup,
            "Customer" => ColumnType::Customer,
            "Owner" => ColumnType::Owner,
            "Uniqueidentifier" => ColumnType::Uniqueidentifier,
            other => ColumnType::Other(other.to_string()),
        }
    }

    /// Whether the column holds text.
    pub fn is_text(&self) -> bool {
        matches!(self, ColumnType::String { .. } | ColumnType::Memo { .. })
    }
}

/// The values a number column takes. Dataverse refuses a value outside them, and with it the whole write of the
/// record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NumberRange {
    /// A whole number, big integer or choice column.
    Whole { min: i64, max: i64 },
    /// A decimal, floating point or currency column.
    Real { min: f64, max: f64 },
}

impl NumberRange {
    /// The range Dataverse gives a column of this type when its maker sets none: whole numbers are 32-bit,
    /// big integers 64-bit, decimal and floating point numbers ±100,000,000,000, currency ±922,337,203,685,477.
    /// `None` for a column that holds no number.
    pub fn default_for(kind: &ColumnType) -> Option<NumberRange> {
        match kind {
            ColumnType::Integer | ColumnType::Picklist => {
                Some(NumberRange::Whole { min: i32::MIN.into(), max: i32::MAX.into() })
            }
            ColumnType::BigInt => Some(NumberRange::Whole { min: i64::MIN, max: i64::MAX }),
            ColumnType::Decimal | ColumnType::Double => {
                Some(NumberRange::Real { min: -100_000_000_000.0, max: 100_000_000_000.0 })
            }
            ColumnType::Money => Some(NumberRange::Real { min: -922_337_203_685_477.0, max: 922_337_203_685_477.0 }),
            _ => None,
        }
    }

    pub fn holds_whole(&self, n: i64) -> bool {
        match *self {
            NumberRange::Whole { min, max } => (min..=max).contains(&n),
            NumberRange::Real { min, max } => (min..=max).contains(&(n as f64)),
        }
    }

    pub fn holds_real(&self, n: f64) -> bool {
        match *self {
            NumberRange::Whole { min, max } => (min as f64..=max as f64).contains(&n),
            NumberRange::Real { min, max } => (min..=max).contains(&n),
        }
    }
}

impl fmt::Display for NumberRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NumberRange::Whole { min, max } => write!(f, "{min} to {max}"),
            NumberRange::Real { min, max } => write!(f, "{min} to {max}"),
        }
    }
}

impl fmt::Display for ColumnType {
    /// The name the maker portal shows, so that an error reads like what the user sees in Dynamics.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::String { max_length: Some(n) } => write!(f, "single line of text ({n} characters)"),
            ColumnType::String { max_length: None } => f.write_str("single line of text"),
            ColumnType::Memo { .. } => f.write_str("multiple lines of text"),
            ColumnType::Integer => f.write_str("whole number"),
            ColumnType::BigInt => f.write_str("big integer"),
            ColumnType::Decimal => f.write_str("decimal number"),
            ColumnType::Double => f.write_str("floating point number"),
            ColumnType::Money => f.write_str("currency"),
            ColumnType::Boolean => f.write_str("yes/no"),
            ColumnType::DateTime { date_only: true } => f.write_str("date only"),
            ColumnType::DateTime { date_only: false } => f.write_str("date and time"),
            ColumnType::Picklist => f.write_str("choice"),
            ColumnType::MultiSelectPicklist => f.write_str("choices"),
            ColumnType::State => f.write_str("status"),
            ColumnType::Status => f.write_str("status reason"),
            ColumnType::Lookup => f.write_str("lookup"),
            ColumnType::Customer => f.write_str("customer"),
            ColumnType::Owner => f.write_str("owner"),
            ColumnType::Uniqueidentifier => f.write_str("unique identifier"),
            ColumnType::Other(name) => write!(f, "{name}"),
        }
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDefinition {
    /// The lower-case name the Web API uses (`new_loyaltyid`).
    pub logical_name: String,
    /// The Pascal-cased name with the publisher prefix (`new_LoyaltyId`).
    pub schema_name: String,
    pub kind: ColumnType,
    pub is_custom: bool,
    pub is_primary_id: bool,
    pub valid_for_create: bool,
    pub valid_for_update: bool,
    /// `None`, `Recommended`, `ApplicationRequired` or `SystemRequired`.
    pub required_level: String,
}

/// A table and its columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDefinition {
    pub logical_name: String,
    pub entity_set_name: String,
    pub primary_id: String,
    pub primary_name: Option<String>,
    pub columns: Vec<ColumnDefinition>,
}

impl TableDefinition {
    /// The column of this logical name (compared without case, as Dataverse does).
    pub fn column(&self, logical_name: &str) -> Option<&ColumnDefinition> {
        self.columns.iter().find(|c| c.logical_name.eq_ignore_ascii_case(logical_name))
    }

    /// Reads the answer to [`TableDefinition::QUERY`] and, optionally, to [`TableDefinition::TEXT_LENGTHS_QUERY`].
    pub fn from_json(table: &Json, text_lengths: Option<&Json>) -> Result<TableDefinition, String> {
        let wire: WireTable = serde_json::from_value(table.clone()).map_err(|e| e.to_string())?;
        let mut lengths = HashMap::new();
        if let Some(answer) = text_lengths {
            let items: WireList<WireLength> = serde_json::from_value(answer.clone()).map_err(|e| e.to_string())?;
            for item in items.value {
                if let Some(n) = item.max_length {
                    lengths.insert(item.logical_name, n);
                }
            }
        }
        let columns = wire
            .attributes
            .into_iter()
            .map(|a| {
                let mut kind = ColumnType::from_attribute_type(&a.attribute_type);
                let length = lengths.get(&a.logical_name).copied();
                match &mut kind {
                    ColumnType::String { max_length } | ColumnType::Memo { max_length } => *max_length = length,
                    ColumnType::DateTime { date_only } => *date_only = a.format.as_deref() == Some("DateOnly"),
                    _ => {}
                }
                ColumnDefinition {
                    is_primary_id: a.is_primary_id.unwrap_or(a.logical_name == wire.primary_id),
                    logical_name: a.logical_name,
                    schema_name: a.schema_name,
                    kind,
                    is_custom: a.is_custom_attribute.unwrap_or(false),
                    valid_for_create: a.is_valid_for_create.unwrap_or(true),
                    valid_for_update: a.is_valid_for_update.unwrap_or(true),
                    required_level: a.required_level.map(|r| r.value).unwrap_or_else(|| "None".into()),
                }
            })
            .collect();
        Ok(TableDefinition {
            logical_name: wire.logical_name,
            entity_set_name: wire.entity_set_name,
            primary_id: wire.primary_id,
            primary_name: wire.primary_name,
            columns,
        })
    }

    const TABLE_SELECT: &'static str = "LogicalName,EntitySetName,PrimaryIdAttribute,PrimaryNameAttribute";
    const ATTRIBUTE_SELECT: &'static str = "LogicalName,SchemaName,AttributeType,IsCustomAttribute,IsPrimaryId,\
                                            IsValidForCreate,IsValidForUpdate,RequiredLevel";

    fn query(logical_name: &str) -> String {
        format!(
            "EntityDefinitions(LogicalName='{}')?$select={}&$expand=Attributes($select={})",
            escape(logical_name),
            Self::TABLE_SELECT,
            Self::ATTRIBUTE_SELECT
        )
    }

    /// Lengths and formats are type-specific properties, only reachable through a cast.
    fn text_lengths_query(logical_name: &str, cast: &str) -> String {
        format!(
            "EntityDefinitions(LogicalName='{}')/Attributes/Microsoft.Dynamics.CRM.{cast}?$select=LogicalName,MaxLength",
            escape(logical_name)
        )
    }

    fn date_formats_query(logical_name: &str) -> String {
        format!(
            "EntityDefinitions(LogicalName='{}')/Attributes/Microsoft.Dynamics.CRM.DateTimeAttributeMetadata?$select=LogicalName,Format",
            escape(logical_name)
        )
    }
}

fn escape(text: &str) -> String {
    text.replace('\'', "''")
}

/// A number column's range, as a typed cast of its attribute answers it.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireNumberColumn {
    logical_name: String,
    min_value: Option<f64>,
    max_value: Option<f64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireTable {
    logical_name: String,
    entity_set_name: String,
    #[serde(rename = "PrimaryIdAttribute")]
    primary_id: String,
    #[serde(rename = "PrimaryNameAttribute")]
    primary_name: Option<String>,
    #[serde(default)]
    attributes: Vec<WireAttribute>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireAttribute {
    logical_name: String,
    schema_name: String,
    attribute_type: String,
    is_custom_attribute: Option<bool>,
    is_primary_id: Option<bool>,
    is_valid_for_create: Option<bool>,
    is_valid_for_update: Option<bool>,
    required_level: Option<WireRequiredLevel>,
    format: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireRequiredLevel {
    value: String,
}

#[derive(Deserialize)]
struct WireList<T> {
    value: Vec<T>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireLength {
    logical_name: String,
    max_length: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireFormat {
    logical_name: String,
    format: Option<String>,
}

/// An option of a choice column: its value and its label in the user's language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChoiceOption {
    pub value: i32,
    pub label: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireChoiceColumn {
    option_set: Option<WireOptionSet>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireOptionSet {
    options: Vec<WireOption>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireOption {
    value: i32,
    label: WireLabel,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireLabel {
    user_localized_label: Option<WireLocalizedLabel>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireLocalizedLabel {
    label: String,
}

/// A custom column to add to a table. The schema name carries the publisher's customization prefix
/// (`new_LoyaltyId`); Dataverse refuses one without it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewColumn {
    pub schema_name: String,
    pub display_name: String,
    pub kind: NewColumnType,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NewColumnType {
    String {
        max_length: u32,
    },
    Integer {
        min: i32,
        max: i32,
    },
    DateTime {
        date_only: bool,
    },
    Boolean {
        true_label: String,
        false_label: String,
    },
    /// Choices by label; Dataverse numbers them from 100,000,000 (the default publisher's option prefix).
    Picklist {
        options: Vec<String>,
    },
}

fn label(text: &str) -> Json {
    json!({"@odata.type": "Microsoft.Dynamics.CRM.Label", "LocalizedLabels": [
        {"@odata.type": "Microsoft.Dynamics.CRM.LocalizedLabel", "Label": text, "LanguageCode": 1033}
    ]})
}

impl NewColumn {
    /// The body of `POST EntityDefinitions(LogicalName='…')/Attributes`, as Microsoft documents it.
    pub fn to_json(&self) -> Json {
        let mut body = json!({
            "SchemaName": self.schema_name,
            "DisplayName": label(&self.display_name),
            "Description": label(""),
            "RequiredLevel": {
                "Value": "None",
                "CanBeChanged": true,
                "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings"
            },
        });
        let specific = match &self.kind {
            NewColumnType::String { max_length } => json!({
                "@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
                "AttributeType": "String",
                "AttributeTypeName": {"Value": "StringType"},
                "MaxLength": max_length,
                "FormatName": {"Value": "Text"},
            }),
            NewColumnType::Integer { min, max } => json!({
                "@odata.type": "Microsoft.Dynamics.CRM.IntegerAttributeMetadata",
                "AttributeType": "Integer",
                "AttributeTypeName": {"Value": "IntegerType"},
                "MinValue": min,
                "MaxValue": max,
                "Format": "None",
            }),
            NewColumnType::DateTime { date_only } => json!({
                "@odata.type": "Microsoft.Dynamics.CRM.DateTimeAttributeMetadata",
                "AttributeType": "DateTime",
                "AttributeTypeName": {"Value": "DateTimeType"},
                "Format": if *date_only { "DateOnly" } else { "DateAndTime" },
                "DateTimeBehavior": {"Value": if *date_only { "DateOnly" } else { "UserLocal" }},
            }),
            NewColumnType::Boolean { true_label, false_label } => json!({
                "@odata.type": "Microsoft.Dynamics.CRM.BooleanAttributeMetadata",
                "AttributeType": "Boolean",
                "AttributeTypeName": {"Value": "BooleanType"},
                "DefaultValue": false,
                "OptionSet": {
                    "@odata.type": "Microsoft.Dynamics.CRM.BooleanOptionSetMetadata",
                    "TrueOption": {"Value": 1, "Label": label(true_label)},
                    "FalseOption": {"Value": 0, "Label": label(false_label)},
                    "OptionSetType": "Boolean",
                },
            }),
            NewColumnType::Picklist { options } => json!({
                "@odata.type": "Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
                "AttributeType": "Picklist",
                "AttributeTypeName": {"Value": "PicklistType"},
                "OptionSet": {
                    "@odata.type": "Microsoft.Dynamics.CRM.OptionSetMetadata",
                    "IsGlobal": false,
                    "OptionSetType": "Picklist",
                    "Options": options.iter().enumerate().map(|(i, o)| json!({
                        "Value": 100_000_000 + i as i64,
                        "Label": label(o),
                    })).collect::<Vec<_>>(),
                },
            }),
        };
        if let (Json::Object(b), Json::Object(s)) = (&mut body, specific) {
            b.extend(s);
        }
        body
    }
}

/// Table definitions this client has read, by logical name. Metadata changes rarely and costs a round trip
/// each, so a client reads it once and re-reads only when told to (after it added a column, or when a caller
/// suspects it is stale).
#[derive(Debug, Default)]
pub struct MetadataCache {
    tables: Mutex<HashMap<String, Arc<TableDefinition>>>,
}

impl MetadataCache {
    fn get(&self, logical_name: &str) -> Option<Arc<TableDefinition>> {
        self.tables.lock().expect("metadata cache lock").get(logical_name).cloned()
    }
    fn put(&self, table: Arc<TableDefinition>) {
        self.tables.lock().expect("metadata cache lock").insert(table.logical_name.clone(), table);
    }
    fn forget(&self, logical_name: &str) {
        self.tables.lock().expect("metadata cache lock").remove(logical_name);
    }
}

impl Client {
    /// The definition of a table and its columns, from this client's cache or read from the environment.
    pub async fn table(&self, logical_name: &str) -> Result<Arc<TableDefinition>, Error> {
        let key = logical_name.to_ascii_lowercase();
        if let Some(table) = self.metadata.get(&key) {
            return Ok(table);
        }
        let table = Arc::new(self.read_table(&key).await?);
        self.metadata.put(table.clone());
        Ok(table)
    }

    /// Forgets the cached definition of a table, so that the next [`Client::table`] reads it again.
    pub fn invalidate_table(&self, logical_name: &str) {
        self.metadata.forget(&logical_name.to_ascii_lowercase());
    }

    async fn read_table(&self, logical_name: &str) -> Result<TableDefinition, Error> {
        let table = self.get_json(&TableDefinition::query(logical_name)).await?;
        let mut lengths =
            self.get_json(&TableDefinition::text_lengths_query(logical_name, "StringAttributeMetadata")).await?;
        let memo = self.get_json(&TableDefinition::text_lengths_query(logical_name, "MemoAttributeMetadata")).await?;
        if let (Some(all), Some(more)) = (lengths["value"].as_array_mut(), memo["value"].as_array()) {
            all.extend(more.iter().cloned());
        }
        let formats = self.get_json(&TableDefinition::date_formats_query(logical_name)).await?;
        let unexpected = |detail: String| Error::UnexpectedBody {
            url: format!("{}{}", self.environment().web_api(), TableDefinition::query(logical_name)),
            detail,
        };
        let mut definition = TableDefinition::from_json(&table, Some(&lengths)).map_err(unexpected)?;
        let formats: WireList<WireFormat> = serde_json::from_value(formats).map_err(|e| unexpected(e.to_string()))?;
        for format in formats.value {
            if let Some(column) = definition.columns.iter_mut().find(|c| c.logical_name == format.logical_name) {
                column.kind = ColumnType::DateTime { date_only: format.format.as_deref() == Some("DateOnly") };
            }
        }
        Ok(definition)
    }

    async fn get_json(&self, path: &str) -> Result<Json, Error> {
        let response = self.send(Method::GET, path, None).await?;
        let url = response.url().to_string();
        response.json().await.map_err(|e| Error::UnexpectedBody { url, detail: e.to_string() })
    }

    /// The options of a table's choice column, as the environment has them now (not cached: a maker adds
    /// options while flows run).
    pub async fn choice_options(&self, table: &str, column: &str) -> Result<Vec<ChoiceOption>, Error> {
        let path = format!(
            "EntityDefinitions(LogicalName='{}')/Attributes(LogicalName='{}')/Microsoft.Dynamics.CRM.PicklistAttributeMetadata?$select=LogicalName&$expand=OptionSet",
            escape(&table.to_ascii_lowercase()),
            escape(&column.to_ascii_lowercase())
        );
        let body = self.get_json(&path).await?;
        let column: WireChoiceColumn = serde_json::from_value(body).map_err(|e| Error::UnexpectedBody {
            url: format!("{}{path}", self.environment().web_api()),
            detail: e.to_string(),
        })?;
        let options = column.option_set.map(|set| set.options).unwrap_or_default();
        Ok(options
            .into_iter()
            .map(|o| ChoiceOption {
                value: o.value,
                label: o.label.user_localized_label.map(|l| l.label).unwrap_or_default(),
            })
            .collect())
    }

    /// The ranges of a table's number columns of the given types, by logical name, as their makers set them (a
    /// whole number narrowed to 0 to 1,000). Type-specific metadata is reached through a cast: one request per
    /// type, none for no type. Not cached: a maker changes a range while flows run.
    pub async fn number_ranges(
        &self,
        table: &str,
        kinds: &[ColumnType],
    ) -> Result<HashMap<String, NumberRange>, Error> {
        let mut casts: Vec<&'static str> = kinds
            .iter()
            .filter_map(|kind| match kind {
                ColumnType::Integer => Some("IntegerAttributeMetadata"),
                ColumnType::BigInt => Some("BigIntAttributeMetadata"),
                ColumnType::Decimal => Some("DecimalAttributeMetadata"),
                ColumnType::Double => Some("DoubleAttributeMetadata"),
                ColumnType::Money => Some("MoneyAttributeMetadata"),
                // A choice's values are its options, not a range.
                _ => None,
            })
            .collect();
        casts.sort_unstable();
        casts.dedup();
        let mut ranges = HashMap::new();
        for cast in casts {
            let path = format!(
                "EntityDefinitions(LogicalName='{}')/Attributes/Microsoft.Dynamics.CRM.{cast}?$select=LogicalName,MinValue,MaxValue",
                escape(&table.to_ascii_lowercase())
            );
            let body = self.get_json(&path).await?;
            let columns: WireList<WireNumberColumn> = serde_json::from_value(body).map_err(|e| {
                Error::UnexpectedBody { url: format!("{}{path}", self.environment().web_api()), detail: e.to_string() }
            })?;
            let whole = matches!(cast, "IntegerAttributeMetadata" | "BigIntAttributeMetadata");
            for column in columns.value {
                let range = match (column.min_value, column.max_value) {
                    (Some(min), Some(max)) if whole => Some(NumberRange::Whole { min: min as i64, max: max as i64 }),
                    (Some(min), Some(max)) => Some(NumberRange::Real { min, max }),
                    _ => None,
                };
                if let Some(range) = range {
                    ranges.insert(column.logical_name.to_ascii_lowercase(), range);
                }
            }
        }
        Ok(ranges)
    }

    /// Adds a custom column to a table, and forgets the table's cached definition so the column shows.
    pub async fn create_column(&self, table: &str, column: &NewColumn) -> Result<(), Error> {
        let path = format!("EntityDefinitions(LogicalName='{}')/Attributes", escape(&table.to_ascii_lowercase()));
        let result = self.send(Method::POST, &path, Some(&column.to_json())).await;
        self.invalidate_table(table);
        result.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_table_with_lengths_and_types() {
        let table = json!({
            "@odata.context": "…/$metadata#EntityDefinitions(LogicalName,Attributes(LogicalName))/$entity",
            "MetadataId": "608861bc-50a4-4c5f-a02c-21fe1943e2cf",
            "LogicalName": "contact", "EntitySetName": "contacts",
            "PrimaryIdAttribute": "contactid", "PrimaryNameAttribute": "fullname",
            "Attributes": [
                {"@odata.type": "#Microsoft.Dynamics.CRM.UniqueidentifierAttributeMetadata", "MetadataId": "1",
                 "LogicalName": "contactid", "SchemaName": "ContactId", "AttributeType": "Uniqueidentifier",
                 "IsCustomAttribute": false, "IsPrimaryId": true, "IsValidForCreate": true, "IsValidForUpdate": false,
                 "RequiredLevel": {"Value": "SystemRequired", "CanBeChanged": false}},
                {"@odata.type": "#Microsoft.Dynamics.CRM.StringAttributeMetadata", "MetadataId": "2",
                 "LogicalName": "new_gold", "SchemaName": "new_Gold", "AttributeType": "String",
                 "IsCustomAttribute": true, "IsPrimaryId": false, "IsValidForCreate": true, "IsValidForUpdate": true,
                 "RequiredLevel": {"Value": "None"}},
                {"LogicalName": "birthdate", "SchemaName": "BirthDate", "AttributeType": "DateTime"},
                {"LogicalName": "adx_x", "SchemaName": "adx_X", "AttributeType": "Virtual"}
            ]
        });
        let lengths = json!({"value": [{"LogicalName": "new_gold", "MaxLength": 100, "MetadataId": "2"}]});
        let definition = TableDefinition::from_json(&table, Some(&lengths)).unwrap();
        assert_eq!(definition.entity_set_name, "contacts");
        assert_eq!(definition.primary_name.as_deref(), Some("fullname"));
        let id = definition.column("contactid").unwrap();
        assert!(id.is_primary_id && !id.valid_for_update);
        assert_eq!(id.required_level, "SystemRequired");
        let gold = definition.column("NEW_GOLD").unwrap();
        assert_eq!(gold.kind, ColumnType::String { max_length: Some(100) });
        assert!(gold.is_custom && gold.kind.is_text());
        assert_eq!(gold.kind.to_string(), "single line of text (100 characters)");
        assert_eq!(definition.column("birthdate").unwrap().kind, ColumnType::DateTime { date_only: false });
        assert_eq!(definition.column("adx_x").unwrap().kind, ColumnType::Other("Virtual".into()));
        assert!(TableDefinition::from_json(&json!({"LogicalName": "x"}), None).is_err());
    }

    #[test]
    fn new_columns_have_the_documented_bodies() {
        let text = NewColumn {
            schema_name: "new_Gold".into(),
            display_name: "Gold".into(),
            kind: NewColumnType::String { max_length: 100 },
        };
        let body = text.to_json();
        assert_eq!(body["@odata.type"], "Microsoft.Dynamics.CRM.StringAttributeMetadata");
        assert_eq!(body["AttributeTypeName"]["Value"], "StringType");
        assert_eq!(body["MaxLength"], 100);
        assert_eq!(body["FormatName"]["Value"], "Text");
        assert_eq!(body["SchemaName"], "new_Gold");
        assert_eq!(body["DisplayName"]["LocalizedLabels"][0]["Label"], "Gold");
        assert_eq!(body["RequiredLevel"]["Value"], "None");
        let choice = NewColumn {
            schema_name: "cr8a3_Tier".into(),
            display_name: "Tier".into(),
            kind: NewColumnType::Picklist { options: vec!["Gold".into(), "Silver".into()] },
        };
        let body = choice.to_json();
        assert_eq!(body["OptionSet"]["Options"][1]["Value"], 100_000_001);
        let date = NewColumn {
            schema_name: "new_JoinedOn".into(),
            display_name: "Joined on".into(),
            kind: NewColumnType::DateTime { date_only: true },
        };
        assert_eq!(date.to_json()["Format"], "DateOnly");
        let flag = NewColumn {
            schema_name: "new_Vip".into(),
            display_name: "VIP".into(),
            kind: NewColumnType::Boolean { true_label: "Yes".into(), false_label: "No".into() },
        };
        assert_eq!(flag.to_json()["OptionSet"]["TrueOption"]["Value"], 1);
        let number = NewColumn {
            schema_name: "new_Points".into(),
            display_name: "Points".into(),
            kind: NewColumnType::Integer { min: 0, max: 1000 },
        };
        assert_eq!(number.to_json()["MaxValue"], 1000);
    }
}
