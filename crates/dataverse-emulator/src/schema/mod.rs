//! Table definitions: the columns, types, option values and lookups of each table, built-in or custom.

pub mod activities;
mod builtin;
mod customize;
pub mod generated;
pub mod journeys;
mod relationships;
pub mod views;

pub use builtin::builtin_tables;
pub use customize::{NewAttribute, NewKey, NewTable, PublisherPrefix};
pub use relationships::{Cascade, CustomOneToMany, ManyToMany, NewManyToMany, NewOneToMany, OneToMany, Relationship};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use uuid::Uuid;

/// How an attribute is required, as `RequiredLevel.Value` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequiredLevel {
    None,
    Recommended,
    ApplicationRequired,
    SystemRequired,
}

impl RequiredLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            RequiredLevel::None => "None",
            RequiredLevel::Recommended => "Recommended",
            RequiredLevel::ApplicationRequired => "ApplicationRequired",
            RequiredLevel::SystemRequired => "SystemRequired",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptionValue {
    pub value: i32,
    pub label: String,
    /// For a status reason: the state it belongs to. For a state: its default status reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub related: Option<i32>,
}

impl OptionValue {
    pub fn new(value: i32, label: &str) -> Self {
        OptionValue { value, label: label.to_string(), related: None }
    }
    pub fn related(value: i32, label: &str, related: i32) -> Self {
        OptionValue { value, label: label.to_string(), related: Some(related) }
    }
}

/// Whether a date/time column holds a moment or a calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DateFormat {
    DateAndTime,
    DateOnly,
}

/// The type of a column, with what each type needs to validate and describe its values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AttributeKind {
    /// The primary key, or any other unique identifier column.
    Uniqueidentifier,
    String {
        max_length: u32,
        format: String,
    },
    Memo {
        max_length: u32,
    },
    Integer {
        min: i64,
        max: i64,
    },
    BigInt,
    Decimal {
        min: f64,
        max: f64,
        precision: u8,
    },
    Double {
        min: f64,
        max: f64,
        precision: u8,
    },
    Money {
        min: f64,
        max: f64,
        precision: u8,
    },
    Boolean {
        true_label: String,
        false_label: String,
        default: bool,
    },
    DateTime {
        format: DateFormat,
        behavior: String,
    },
    Picklist {
        options: Vec<OptionValue>,
        default: Option<i32>,
    },
    State {
        options: Vec<OptionValue>,
    },
    Status {
        options: Vec<OptionValue>,
    },
    /// Choices: any number of options at once. Dataverse reports the column as `AttributeType` `Virtual` with
    /// `AttributeTypeName` `MultiSelectPicklistType`, and its value as the option values joined by commas
    /// (`"1,9"`), at most 150 of them.
    MultiSelectPicklist {
        options: Vec<OptionValue>,
    },
    /// A lookup to one or more tables (`Lookup`, `Customer`, `Owner`). A `Lookup` with several targets is
    /// polymorphic, as a note's `objectid` (Regarding) is: Dataverse reports it as `Lookup` all the same.
    Lookup {
        lookup_type: LookupType,
        targets: Vec<LookupTarget>,
    },
    /// The logical name of the table a polymorphic lookup points at (`objecttypecode` of a note reads
    /// `lead`), set by the server whenever `lookup` is written.
    EntityName {
        lookup: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LookupType {
    Lookup,
    Customer,
    Owner,
}

/// One table a lookup can point at, and the single-valued navigation property a client binds through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LookupTarget {
    pub table: String,
    pub navigation_property: String,
}

impl AttributeKind {
    pub fn string(max_length: u32) -> Self {
        AttributeKind::String { max_length, format: "Text".into() }
    }
    pub fn email() -> Self {
        AttributeKind::String { max_length: 100, format: "Email".into() }
    }
    pub fn phone(max_length: u32) -> Self {
        AttributeKind::String { max_length, format: "Phone".into() }
    }
    pub fn integer() -> Self {
        AttributeKind::Integer { min: i32::MIN as i64, max: i32::MAX as i64 }
    }
    pub fn money() -> Self {
        AttributeKind::Money { min: -922_337_203_685_477.0, max: 922_337_203_685_477.0, precision: 2 }
    }
    pub fn yes_no(true_label: &str, false_label: &str, default: bool) -> Self {
        AttributeKind::Boolean { true_label: true_label.into(), false_label: false_label.into(), default }
    }
    pub fn date_time() -> Self {
        AttributeKind::DateTime { format: DateFormat::DateAndTime, behavior: "UserLocal".into() }
    }
    pub fn date_only() -> Self {
        AttributeKind::DateTime { format: DateFormat::DateOnly, behavior: "DateOnly".into() }
    }
    pub fn picklist(options: &[(i32, &str)]) -> Self {
        AttributeKind::Picklist {
            options: options.iter().map(|(v, l)| OptionValue::new(*v, l)).collect(),
            default: None,
        }
    }
    pub fn lookup(table: &str, navigation_property: &str) -> Self {
        AttributeKind::Lookup {
            lookup_type: LookupType::Lookup,
            targets: vec![LookupTarget { table: table.into(), navigation_property: navigation_property.into() }],
        }
    }

    /// `AttributeType` in metadata.
    pub fn attribute_type(&self) -> &'static str {
        match self {
            AttributeKind::Uniqueidentifier => "Uniqueidentifier",
            AttributeKind::String { .. } => "String",
            AttributeKind::Memo { .. } => "Memo",
            AttributeKind::Integer { .. } => "Integer",
            AttributeKind::BigInt => "BigInt",
            AttributeKind::Decimal { .. } => "Decimal",
            AttributeKind::Double { .. } => "Double",
            AttributeKind::Money { .. } => "Money",
            AttributeKind::Boolean { .. } => "Boolean",
            AttributeKind::DateTime { .. } => "DateTime",
            AttributeKind::Picklist { .. } => "Picklist",
            AttributeKind::State { .. } => "State",
            AttributeKind::Status { .. } => "Status",
            AttributeKind::MultiSelectPicklist { .. } => "Virtual",
            AttributeKind::Lookup { lookup_type: LookupType::Lookup, .. } => "Lookup",
            AttributeKind::Lookup { lookup_type: LookupType::Customer, .. } => "Customer",
            AttributeKind::Lookup { lookup_type: LookupType::Owner, .. } => "Owner",
            AttributeKind::EntityName { .. } => "EntityName",
        }
    }

    /// The metadata type a client casts to (`Microsoft.Dynamics.CRM.<name>`).
    pub fn metadata_type(&self) -> &'static str {
        match self {
            AttributeKind::Uniqueidentifier => "UniqueIdentifierAttributeMetadata",
            AttributeKind::String { .. } => "StringAttributeMetadata",
            AttributeKind::Memo { .. } => "MemoAttributeMetadata",
            AttributeKind::Integer { .. } => "IntegerAttributeMetadata",
            AttributeKind::BigInt => "BigIntAttributeMetadata",
            AttributeKind::Decimal { .. } => "DecimalAttributeMetadata",
            AttributeKind::Double { .. } => "DoubleAttributeMetadata",
            AttributeKind::Money { .. } => "MoneyAttributeMetadata",
            AttributeKind::Boolean { .. } => "BooleanAttributeMetadata",
            AttributeKind::DateTime { .. } => "DateTimeAttributeMetadata",
            AttributeKind::Picklist { .. } => "PicklistAttributeMetadata",
            AttributeKind::State { .. } => "StateAttributeMetadata",
            AttributeKind::Status { .. } => "StatusAttributeMetadata",
            AttributeKind::MultiSelectPicklist { .. } => "MultiSelectPicklistAttributeMetadata",
            AttributeKind::Lookup { .. } => "LookupAttributeMetadata",
            AttributeKind::EntityName { .. } => "EntityNameAttributeMetadata",
        }
    }

    /// The OData primitive type of the column's property.
    pub fn edm_type(&self) -> &'static str {
        match self {
            AttributeKind::Uniqueidentifier | AttributeKind::Lookup { .. } => "Edm.Guid",
            AttributeKind::String { .. }
            | AttributeKind::Memo { .. }
            | AttributeKind::EntityName { .. }
            | AttributeKind::MultiSelectPicklist { .. } => "Edm.String",
            AttributeKind::Integer { .. }
            | AttributeKind::Picklist { .. }
            | AttributeKind::State { .. }
            | AttributeKind::Status { .. } => "Edm.Int32",
            AttributeKind::BigInt => "Edm.Int64",
            AttributeKind::Decimal { .. } | AttributeKind::Money { .. } => "Edm.Decimal",
            AttributeKind::Double { .. } => "Edm.Double",
            AttributeKind::Boolean { .. } => "Edm.Boolean",
            AttributeKind::DateTime { format: DateFormat::DateOnly, .. } => "Edm.Date",
            AttributeKind::DateTime { .. } => "Edm.DateTimeOffset",
        }
    }

    /// The option values of a choice, state or status column.
    pub fn options(&self) -> Option<&[OptionValue]> {
        match self {
            AttributeKind::Picklist { options, .. }
            | AttributeKind::State { options }
            | AttributeKind::Status { options }
            | AttributeKind::MultiSelectPicklist { options } => Some(options),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribute {
    pub logical_name: String,
    pub schema_name: String,
    pub display_name: String,
    pub metadata_id: Uuid,
    pub kind: AttributeKind,
    pub required: RequiredLevel,
    pub is_custom: bool,
    pub valid_for_create: bool,
    pub valid_for_update: bool,
    /// The description in the base language (1033).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// `DisplayName` and `Description` labels in languages other than the base one, which an update with
    /// `MSCRM.MergeLabels: true` keeps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_labels: Vec<OtherLabel>,
}

/// A label of a metadata property in a language other than the base language (1033).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtherLabel {
    /// `DisplayName` or `Description`.
    pub property: String,
    pub language: u32,
    pub label: String,
}

impl Attribute {
    /// The labels of a property in languages other than the base one.
    pub fn labels_in_other_languages(&self, property: &str) -> Vec<(u32, &str)> {
        self.other_labels.iter().filter(|l| l.property == property).map(|l| (l.language, l.label.as_str())).collect()
    }

    /// The property name clients read: `_x_value` for lookups, the logical name otherwise.
    pub fn property_name(&self) -> String {
        if self.is_lookup() { format!("_{}_value", self.logical_name) } else { self.logical_name.clone() }
    }

    pub fn is_lookup(&self) -> bool {
        matches!(self.kind, AttributeKind::Lookup { .. })
    }

    pub fn lookup_targets(&self) -> &[LookupTarget] {
        match &self.kind {
            AttributeKind::Lookup { targets, .. } => targets,
            _ => &[],
        }
    }

    /// A column that no client may write (computed or set by the server).
    pub fn is_read_only(&self) -> bool {
        !self.valid_for_create && !self.valid_for_update
    }
}

/// An alternate key: columns whose values together identify one row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlternateKey {
    pub logical_name: String,
    pub schema_name: String,
    pub display_name: String,
    pub metadata_id: Uuid,
    pub attributes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub logical_name: String,
    pub schema_name: String,
    pub entity_set_name: String,
    pub display_name: String,
    pub display_collection_name: String,
    pub description: String,
    pub primary_id: String,
    pub primary_name: String,
    pub metadata_id: Uuid,
    pub object_type_code: i32,
    pub is_custom: bool,
    pub ownership: String,
    pub change_tracking_enabled: bool,
    /// A table the platform keeps for itself (`IsPrivate`): listed in metadata, but not for customizers or
    /// integrations to read.
    #[serde(default)]
    pub is_private: bool,
    /// An activity table (`IsActivity`): `task`, or a custom table created as one. Its rows are mirrored
    /// into `activitypointer`; see [`activities`].
    #[serde(default)]
    pub is_activity: bool,
    pub attributes: Vec<Attribute>,
    pub keys: Vec<AlternateKey>,
    /// The one-to-many relationships created through `RelationshipDefinitions` whose lookup is on this
    /// table: their names, ids and cascades. Other lookups have relationships derived from the column.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relationships: Vec<CustomOneToMany>,
    /// The many-to-many relationships whose first table this is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub many_to_many: Vec<ManyToMany>,
}

impl Table {
    pub fn attribute(&self, logical_name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.logical_name == logical_name)
    }

    /// The attribute behind a property name as clients read it (`_parentcustomerid_value` → `parentcustomerid`).
    pub fn attribute_by_property(&self, property: &str) -> Option<&Attribute> {
        if let Some(inner) = property.strip_prefix('_').and_then(|p| p.strip_suffix("_value")) {
            return self.attribute(inner).filter(|a| a.is_lookup());
        }
        self.attribute(property).filter(|a| !a.is_lookup())
    }

    /// The lookup attribute and target behind a single-valued navigation property.
    pub fn navigation(&self, navigation_property: &str) -> Option<(&Attribute, &LookupTarget)> {
        self.attributes
            .iter()
            .flat_map(|a| a.lookup_targets().iter().map(move |t| (a, t)))
            .find(|(_, t)| t.navigation_property == navigation_property)
    }

    pub fn key_with_attributes(&self, attributes: &[&str]) -> Option<&AlternateKey> {
        self.keys.iter().find(|k| {
            k.attributes.len() == attributes.len() && attributes.iter().all(|a| k.attributes.iter().any(|ka| ka == a))
        })
    }
}

/// Every table of the environment, by logical name.
/// Tables are shared (`Arc`) so that a request can hold its table's definition without holding the lock.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    tables: BTreeMap<String, Arc<Table>>,
}

impl Schema {
    pub fn new(tables: impl IntoIterator<Item = Table>) -> Self {
        Schema { tables: tables.into_iter().map(|t| (t.logical_name.clone(), Arc::new(t))).collect() }
    }

    pub fn table(&self, logical_name: &str) -> Option<&Arc<Table>> {
        self.tables.get(logical_name)
    }

    /// Entity set names are case sensitive, as in Dataverse (`Contacts` is not `contacts`).
    pub fn table_by_set(&self, entity_set_name: &str) -> Option<&Arc<Table>> {
        self.tables.values().find(|t| t.entity_set_name == entity_set_name)
    }

    pub fn table_by_metadata_id(&self, id: Uuid) -> Option<&Arc<Table>> {
        self.tables.values().find(|t| t.metadata_id == id)
    }

    pub fn tables(&self) -> impl Iterator<Item = &Arc<Table>> {
        self.tables.values()
    }

    pub fn insert(&mut self, table: Table) {
        self.tables.insert(table.logical_name.clone(), Arc::new(table));
    }

    pub fn remove(&mut self, logical_name: &str) -> Option<Arc<Table>> {
        self.tables.remove(logical_name)
    }
}
