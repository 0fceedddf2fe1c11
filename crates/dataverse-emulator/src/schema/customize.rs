//! Custom columns, tables (activity tables among them) and alternate keys, read from the bodies an admin posts
//! to `EntityDefinitions` (or to `CreateEntities`, whose `Complex…Metadata` types are read as the plain ones),
//! and the changes a `PUT` of a column's definition makes.

use super::activities;
use super::builtin::{TableBuilder, metadata_id};
use super::*;
use crate::error::{ApiError, ApiResult, code};
use axum::http::StatusCode;
use serde_json::Value as Json;

/// A solution publisher's customization prefix (`new`, `cr8a3`): 2–8 letters and digits, starting with a
/// letter, never `mscrm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherPrefix(String);

impl PublisherPrefix {
    pub fn parse(prefix: &str) -> Result<Self, String> {
        let ok_chars = prefix.chars().all(|c| c.is_ascii_alphanumeric());
        let starts_with_letter = prefix.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
        if !(2..=8).contains(&prefix.len()) || !ok_chars || !starts_with_letter {
            return Err(format!(
                "The customization prefix '{prefix}' is not valid: it must be 2 to 8 letters or digits and start with a letter."
            ));
        }
        if prefix.to_ascii_lowercase().starts_with("mscrm") {
            return Err(format!("The customization prefix '{prefix}' is not valid: it cannot start with 'mscrm'."));
        }
        Ok(PublisherPrefix(prefix.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Splits a custom schema name (`new_BankName`) into its prefix and checks both halves.
    pub(super) fn of_schema_name(schema_name: &str) -> ApiResult<Self> {
        let invalid = |why: String| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                code::INVALID_SCHEMA_NAME,
                format!("Invalid SchemaName '{schema_name}': {why}"),
            )
        };
        let Some((prefix, rest)) = schema_name.split_once('_') else {
            return Err(invalid(
                "a custom name starts with the publisher's customization prefix and '_', as in new_BankName.".into(),
            ));
        };
        if rest.is_empty() || !rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(invalid("after the prefix, use only letters, digits and '_'.".into()));
        }
        PublisherPrefix::parse(prefix).map_err(invalid)
    }
}

/// The first label of a `Label` object (`{"LocalizedLabels":[{"Label":"…","LanguageCode":1033}]}`).
pub(super) fn label(body: &Json, property: &str) -> Option<String> {
    let label = body.get(property)?;
    label
        .pointer("/LocalizedLabels/0/Label")
        .or_else(|| label.pointer("/UserLocalizedLabel/Label"))
        .and_then(Json::as_str)
        .map(str::to_string)
}

/// The most localized labels one property may carry: more than any environment has languages.
const MAX_LABELS: usize = 64;

/// Every localized label of a `Label` object, as (language, text). Empty when the property is absent.
fn labels(body: &Json, property: &str) -> ApiResult<Vec<(u32, String)>> {
    let Some(localized) = body.get(property).and_then(|l| l.get("LocalizedLabels")).and_then(Json::as_array) else {
        return Ok(Vec::new());
    };
    if localized.len() > MAX_LABELS {
        return Err(metadata_error(format!(
            "{property} carries {} labels; at most {MAX_LABELS} are accepted.",
            localized.len()
        )));
    }
    let mut out = Vec::new();
    for l in localized {
        let text = l.get("Label").and_then(Json::as_str).ok_or_else(|| {
            metadata_error(format!("Each of {property}.LocalizedLabels needs a 'Label' text and a 'LanguageCode'."))
        })?;
        let language =
            l.get("LanguageCode").and_then(Json::as_u64).and_then(|c| u32::try_from(c).ok()).unwrap_or(BASE_LANGUAGE);
        out.push((language, text.to_string()));
    }
    Ok(out)
}

/// The environment's base language, whose labels are the attribute's own display name and description.
pub const BASE_LANGUAGE: u32 = 1033;

/// Sets the labels of `DisplayName` or `Description` from a body. With `merge` (`MSCRM.MergeLabels: true`)
/// labels in languages the body leaves out are kept; without it they are removed, as Dataverse replaces
/// the whole label.
fn set_labels(attribute: &mut Attribute, body: &Json, property: &str, merge: bool) -> ApiResult<()> {
    if body.get(property).is_none_or(Json::is_null) {
        return Ok(());
    }
    let given = labels(body, property)?;
    if !merge {
        attribute.other_labels.retain(|l| l.property != property);
    }
    for (language, text) in given {
        if language == BASE_LANGUAGE {
            match property {
                "DisplayName" => attribute.display_name = text,
                _ => attribute.description = text,
            }
            continue;
        }
        attribute.other_labels.retain(|l| !(l.property == property && l.language == language));
        attribute.other_labels.push(OtherLabel { property: property.to_string(), language, label: text });
    }
    Ok(())
}

fn required_level(body: &Json) -> ApiResult<Option<RequiredLevel>> {
    Ok(match body.pointer("/RequiredLevel/Value").and_then(Json::as_str) {
        None => None,
        Some("None") => Some(RequiredLevel::None),
        Some("Recommended") => Some(RequiredLevel::Recommended),
        Some("ApplicationRequired") => Some(RequiredLevel::ApplicationRequired),
        Some(other) => {
            return Err(metadata_error(format!(
                "RequiredLevel '{other}' cannot be set on a column; use None, Recommended or ApplicationRequired."
            )));
        }
    })
}

pub(super) fn metadata_error(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code::INVALID_ARGUMENT, message)
}

fn type_name(body: &Json) -> ApiResult<String> {
    let t = body
        .get("@odata.type")
        .and_then(Json::as_str)
        .ok_or_else(|| metadata_error("The attribute definition needs an '@odata.type', such as 'Microsoft.Dynamics.CRM.StringAttributeMetadata'."))?;
    let name = t.trim_start_matches('#').trim_start_matches("Microsoft.Dynamics.CRM.");
    // `CreateEntities` takes `ComplexStringAttributeMetadata` and the like: the same definitions.
    Ok(name.strip_prefix("Complex").unwrap_or(name).to_string())
}

fn int_of(body: &Json, property: &str) -> Option<i64> {
    body.get(property).and_then(Json::as_i64)
}

fn float_of(body: &Json, property: &str) -> Option<f64> {
    body.get(property).and_then(Json::as_f64)
}

/// Options of a local choice. Values left out are numbered from the default publisher's option prefix
/// (100000000, 100000001, …), as Dataverse numbers them.
fn options_of(body: &Json) -> ApiResult<Vec<OptionValue>> {
    let options = body.pointer("/OptionSet/Options").and_then(Json::as_array).ok_or_else(|| {
        metadata_error("A choice column needs 'OptionSet': {\"Options\": [{\"Value\": 100000000, \"Label\": {…}}]}.")
    })?;
    let mut out: Vec<OptionValue> = Vec::new();
    for (i, option) in options.iter().enumerate() {
        let value = match option.get("Value").and_then(Json::as_i64) {
            Some(v) => i32::try_from(v)
                .map_err(|_| metadata_error(format!("Option value {v} does not fit a whole number.")))?,
            None => 100_000_000 + i as i32,
        };
        let text = label(option, "Label").unwrap_or_else(|| value.to_string());
        if out.iter().any(|o| o.value == value) {
            return Err(metadata_error(format!("The option value {value} is used twice in the option set.")));
        }
        out.push(OptionValue::new(value, &text));
    }
    if out.is_empty() {
        return Err(metadata_error("A choice column needs at least one option."));
    }
    Ok(out)
}

/// A custom column, from a `POST EntityDefinitions(LogicalName='x')/Attributes` body.
pub struct NewAttribute;

impl NewAttribute {
    pub fn from_json(table: &Table, body: &Json) -> ApiResult<Attribute> {
        let schema_name = body.get("SchemaName").and_then(Json::as_str).ok_or_else(|| {
            metadata_error("The attribute definition needs a 'SchemaName', such as 'new_LoyaltyTier'.")
        })?;
        PublisherPrefix::of_schema_name(schema_name)?;
        let logical_name = schema_name.to_ascii_lowercase();
        if table.attributes.iter().any(|a| a.logical_name == logical_name) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                code::METADATA_ALREADY_EXISTS,
                format!("An attribute with the name {logical_name} already exists on entity {}.", table.logical_name),
            ));
        }
        let kind = Self::kind(body)?;
        let mut attribute = Attribute {
            display_name: schema_name.to_string(),
            metadata_id: Uuid::new_v4(),
            schema_name: schema_name.to_string(),
            logical_name,
            kind,
            required: required_level(body)?.unwrap_or(RequiredLevel::None),
            is_custom: true,
            valid_for_create: true,
            valid_for_update: true,
            description: String::new(),
            other_labels: Vec::new(),
        };
        set_labels(&mut attribute, body, "DisplayName", true)?;
        set_labels(&mut attribute, body, "Description", true)?;
        Ok(attribute)
    }

    /// An activity table's primary name column, `Subject`: the column every activity shares with
    /// `activitypointer`, the one a customizer names without the publisher's prefix. Its length is the body's
    /// `MaxLength`, else activitypointer's 400.
    fn subject(body: &Json) -> ApiResult<Attribute> {
        let given = body.get("SchemaName").and_then(Json::as_str).unwrap_or_default();
        if !given.eq_ignore_ascii_case("Subject") {
            return Err(activities::subject_required(given));
        }
        let mut definition = body.clone();
        if definition.get("MaxLength").is_none_or(Json::is_null) {
            definition["MaxLength"] = 400.into();
        }
        let mut attribute = Attribute {
            logical_name: "subject".into(),
            schema_name: "Subject".into(),
            display_name: "Subject".into(),
            metadata_id: Uuid::new_v4(),
            kind: Self::kind(&definition)?,
            required: RequiredLevel::ApplicationRequired,
            // Inherited from activitypointer, as Dataverse reports it, rather than a column the customizer added.
            is_custom: false,
            valid_for_create: true,
            valid_for_update: true,
            description: String::new(),
            other_labels: Vec::new(),
        };
        set_labels(&mut attribute, body, "DisplayName", true)?;
        set_labels(&mut attribute, body, "Description", true)?;
        Ok(attribute)
    }

    /// Applies a `PUT` of a column's definition: labels (merged with `MSCRM.MergeLabels: true`), the
    /// required level, and the constraints of its type (`MaxLength`, `MinValue`/`MaxValue`, `Precision`,
    /// `Format`). Its type and names cannot change; everything else in the body is left as it is.
    pub fn update(attribute: &mut Attribute, body: &Json, merge_labels: bool) -> ApiResult<()> {
        if body.get("@odata.type").is_some() {
            let wanted = type_name(body)?;
            if wanted != attribute.kind.metadata_type() {
                return Err(metadata_error(format!(
                    "The type of {} cannot be changed from {} to {wanted}; create a new column instead.",
                    attribute.logical_name,
                    attribute.kind.metadata_type()
                )));
            }
        }
        if let Some(name) = body.get("SchemaName").and_then(Json::as_str)
            && !name.eq_ignore_ascii_case(&attribute.schema_name)
        {
            return Err(metadata_error(format!(
                "The SchemaName of {} cannot be changed (to '{name}').",
                attribute.logical_name
            )));
        }
        set_labels(attribute, body, "DisplayName", merge_labels)?;
        set_labels(attribute, body, "Description", merge_labels)?;
        if let Some(level) = required_level(body)? {
            if attribute.required == RequiredLevel::SystemRequired && level != RequiredLevel::SystemRequired {
                return Err(metadata_error(format!(
                    "{} is required by the system; its RequiredLevel cannot be changed.",
                    attribute.logical_name
                )));
            }
            attribute.required = level;
        }
        let mut merged = serde_json::json!({"@odata.type": attribute.kind.metadata_type()});
        if let AttributeKind::String { max_length, format } = &attribute.kind {
            merged["MaxLength"] = (*max_length).into();
            merged["FormatName"] = serde_json::json!({"Value": format});
        }
        for property in ["MaxLength", "MinValue", "MaxValue", "Precision", "Format", "FormatName", "DateTimeBehavior"] {
            if let Some(v) = body.get(property).filter(|v| !v.is_null()) {
                merged[property] = v.clone();
            }
        }
        let changed = match &attribute.kind {
            AttributeKind::String { .. }
            | AttributeKind::Memo { .. }
            | AttributeKind::Integer { .. }
            | AttributeKind::Decimal { .. }
            | AttributeKind::Double { .. }
            | AttributeKind::Money { .. }
            | AttributeKind::DateTime { .. } => Some(Self::kind(&Self::with_current(attribute, merged))?),
            _ => None,
        };
        if let Some(kind) = changed {
            attribute.kind = kind;
        }
        Ok(())
    }

    /// A definition body of the column's current constraints, overlaid with the ones a `PUT` gives.
    fn with_current(attribute: &Attribute, mut given: Json) -> Json {
        let current = match &attribute.kind {
            AttributeKind::Memo { max_length } => serde_json::json!({"MaxLength": max_length}),
            AttributeKind::Integer { min, max } => serde_json::json!({"MinValue": min, "MaxValue": max}),
            AttributeKind::Decimal { min, max, precision }
            | AttributeKind::Double { min, max, precision }
            | AttributeKind::Money { min, max, precision } => {
                serde_json::json!({"MinValue": min, "MaxValue": max, "Precision": precision})
            }
            AttributeKind::DateTime { format, behavior } => serde_json::json!({
                "Format": if *format == DateFormat::DateOnly { "DateOnly" } else { "DateAndTime" },
                "DateTimeBehavior": {"Value": behavior},
            }),
            _ => serde_json::json!({}),
        };
        if let (Json::Object(out), Json::Object(current)) = (&mut given, current) {
            for (k, v) in current {
                out.entry(k).or_insert(v);
            }
        }
        given
    }

    fn kind(body: &Json) -> ApiResult<AttributeKind> {
        let type_name = type_name(body)?;
        Ok(match type_name.as_str() {
            "StringAttributeMetadata" => {
                let max_length = int_of(body, "MaxLength").unwrap_or(100);
                if !(1..=4000).contains(&max_length) {
                    return Err(metadata_error(format!(
                        "MaxLength {max_length} is out of range: a text column holds 1 to 4000 characters."
                    )));
                }
                let format = body
                    .pointer("/FormatName/Value")
                    .or_else(|| body.get("Format"))
                    .and_then(Json::as_str)
                    .unwrap_or("Text")
                    .to_string();
                AttributeKind::String { max_length: max_length as u32, format }
            }
            "MemoAttributeMetadata" => {
                let max_length = int_of(body, "MaxLength").unwrap_or(2000);
                if !(1..=1_048_576).contains(&max_length) {
                    return Err(metadata_error(format!(
                        "MaxLength {max_length} is out of range for a multiple lines of text column (1 to 1048576)."
                    )));
                }
                AttributeKind::Memo { max_length: max_length as u32 }
            }
            "IntegerAttributeMetadata" => {
                let min = int_of(body, "MinValue").unwrap_or(i32::MIN as i64);
                let max = int_of(body, "MaxValue").unwrap_or(i32::MAX as i64);
                if min > max || min < i32::MIN as i64 || max > i32::MAX as i64 {
                    return Err(metadata_error(format!(
                        "MinValue {min} and MaxValue {max} are not a valid whole number range."
                    )));
                }
                AttributeKind::Integer { min, max }
            }
            "BigIntAttributeMetadata" => AttributeKind::BigInt,
            "DecimalAttributeMetadata" | "DoubleAttributeMetadata" | "MoneyAttributeMetadata" => {
                let precision = int_of(body, "Precision").unwrap_or(2).clamp(0, 10) as u8;
                let min = float_of(body, "MinValue").unwrap_or(-100_000_000_000.0);
                let max = float_of(body, "MaxValue").unwrap_or(100_000_000_000.0);
                match type_name.as_str() {
                    "DecimalAttributeMetadata" => AttributeKind::Decimal { min, max, precision },
                    "DoubleAttributeMetadata" => AttributeKind::Double { min, max, precision },
                    _ => AttributeKind::Money { min, max, precision },
                }
            }
            "BooleanAttributeMetadata" => {
                let true_label = body
                    .pointer("/OptionSet/TrueOption")
                    .and_then(|o| label(o, "Label"))
                    .unwrap_or_else(|| "Yes".into());
                let false_label = body
                    .pointer("/OptionSet/FalseOption")
                    .and_then(|o| label(o, "Label"))
                    .unwrap_or_else(|| "No".into());
                let default = body.get("DefaultValue").and_then(Json::as_bool).unwrap_or(false);
                AttributeKind::Boolean { true_label, false_label, default }
            }
            "DateTimeAttributeMetadata" => {
                let format = match body.get("Format").and_then(Json::as_str).unwrap_or("DateAndTime") {
                    "DateOnly" => DateFormat::DateOnly,
                    "DateAndTime" => DateFormat::DateAndTime,
                    other => {
                        return Err(metadata_error(format!(
                            "Format '{other}' is not a date/time format; use DateOnly or DateAndTime."
                        )));
                    }
                };
                let behavior =
                    body.pointer("/DateTimeBehavior/Value").and_then(Json::as_str).map(str::to_string).unwrap_or_else(
                        || if format == DateFormat::DateOnly { "DateOnly" } else { "UserLocal" }.into(),
                    );
                if !["UserLocal", "DateOnly", "TimeZoneIndependent"].contains(&behavior.as_str()) {
                    return Err(metadata_error(format!(
                        "DateTimeBehavior '{behavior}' is not one of UserLocal, DateOnly, TimeZoneIndependent."
                    )));
                }
                AttributeKind::DateTime { format, behavior }
            }
            "PicklistAttributeMetadata" => {
                let options = options_of(body)?;
                let default = int_of(body, "DefaultFormValue").and_then(|v| i32::try_from(v).ok()).filter(|v| *v >= 0);
                AttributeKind::Picklist { options, default }
            }
            "LookupAttributeMetadata" => {
                return Err(metadata_error(
                    "A lookup column is created with its relationship: POST RelationshipDefinitions with a OneToManyRelationshipMetadata.",
                ));
            }
            other => {
                return Err(metadata_error(format!("'{other}' is not an attribute type that can be created.")));
            }
        })
    }
}

/// Makes the plural a table's entity set is named with, as Dataverse does for custom tables.
pub(crate) fn plural(logical_name: &str) -> String {
    if let Some(stem) = logical_name.strip_suffix('y').filter(|s| !s.ends_with(['a', 'e', 'i', 'o', 'u'])) {
        format!("{stem}ies")
    } else if logical_name.ends_with('s')
        || logical_name.ends_with('x')
        || logical_name.ends_with("ch")
        || logical_name.ends_with("sh")
    {
        format!("{logical_name}es")
    } else {
        format!("{logical_name}s")
    }
}

/// The entity set a new table is addressed by: the body's `EntitySetName`, which a customizer may choose for a
/// custom table, else the plural of its logical name (its LogicalCollectionName), as Dataverse names it.
fn entity_set_name(body: &Json, logical_name: &str) -> ApiResult<String> {
    match body.get("EntitySetName").and_then(Json::as_str).filter(|s| !s.is_empty()) {
        None => Ok(plural(logical_name)),
        Some(name) => {
            let starts_with_letter = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
            if !starts_with_letter || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(metadata_error(format!(
                    "EntitySetName '{name}' is not valid: use letters, digits and '_', starting with a letter."
                )));
            }
            Ok(name.to_string())
        }
    }
}

/// A custom table, from a `POST EntityDefinitions` body. With `"IsActivity": true` it is an activity table
/// ([`activities`]): its primary name column must be `Subject`, and it gets `activityid` and the columns every
/// activity shares with `activitypointer`.
pub struct NewTable;

impl NewTable {
    pub fn from_json(schema: &Schema, body: &Json) -> ApiResult<Table> {
        let schema_name = body
            .get("SchemaName")
            .and_then(Json::as_str)
            .ok_or_else(|| metadata_error("The table definition needs a 'SchemaName', such as 'new_BankAccount'."))?;
        PublisherPrefix::of_schema_name(schema_name)?;
        let logical_name = schema_name.to_ascii_lowercase();
        if schema.table(&logical_name).is_some() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                code::METADATA_ALREADY_EXISTS,
                format!("An entity with the name {logical_name} already exists."),
            ));
        }
        let is_activity = body.get("IsActivity").and_then(Json::as_bool).unwrap_or(false);
        if is_activity {
            activities::check_definition(body)?;
        }
        let attributes = body.get("Attributes").and_then(Json::as_array).cloned().unwrap_or_default();
        let primary = attributes
            .iter()
            .find(|a| a.get("IsPrimaryName").and_then(Json::as_bool) == Some(true))
            .ok_or_else(|| {
                metadata_error(if is_activity {
                    "An activity table needs its primary name column in 'Attributes': a StringAttributeMetadata with \"SchemaName\": \"Subject\" and \"IsPrimaryName\": true."
                } else {
                    "The table needs its primary name column in 'Attributes': a StringAttributeMetadata with \"IsPrimaryName\": true."
                })
            })?;
        let display = label(body, "DisplayName").unwrap_or_else(|| schema_name.to_string());
        let display_plural = label(body, "DisplayCollectionName").unwrap_or_else(|| format!("{display}s"));
        let placeholder = TableBuilder::new(&logical_name, "", (&display, &display_plural), "", 0).build();
        let mut primary_name =
            if is_activity { NewAttribute::subject(primary)? } else { NewAttribute::from_json(&placeholder, primary)? };
        if !matches!(primary_name.kind, AttributeKind::String { .. }) {
            return Err(metadata_error("The primary name column must be a StringAttributeMetadata."));
        }
        primary_name.required = RequiredLevel::ApplicationRequired;
        let object_type_code = 10_000 + schema.tables().filter(|t| t.is_custom).count() as i32;
        let builder = TableBuilder::new(
            &logical_name,
            &entity_set_name(body, &logical_name)?,
            (&display, &display_plural),
            &primary_name.logical_name,
            object_type_code,
        )
        .description(&label(body, "Description").unwrap_or_default());
        let organization_owned = body.get("OwnershipType").and_then(Json::as_str) == Some("OrganizationOwned");
        let mut table = if is_activity {
            activities::custom_activity(builder).build()
        } else {
            builder
                .standard_columns(&[(0, "Active", 1), (1, "Inactive", 2)], &[(1, "Active", 0), (2, "Inactive", 1)])
                .build()
        };
        if organization_owned {
            table.ownership = "OrganizationOwned".into();
            table.attributes.retain(|a| a.logical_name != "ownerid");
        }
        table.schema_name = schema_name.to_string();
        table.is_custom = true;
        table.metadata_id = Uuid::new_v4();
        table.change_tracking_enabled = body.get("ChangeTrackingEnabled").and_then(Json::as_bool).unwrap_or(false);
        for a in &mut table.attributes {
            a.metadata_id = metadata_id(&format!("{}.{}.{}", table.metadata_id, table.logical_name, a.logical_name));
        }
        table.attributes.insert(1, primary_name);
        for extra in attributes.iter().filter(|a| a.get("IsPrimaryName").and_then(Json::as_bool) != Some(true)) {
            let attribute = NewAttribute::from_json(&table, extra)?;
            table.attributes.push(attribute);
        }
        Ok(table)
    }
}

/// An alternate key, from a `POST EntityDefinitions(LogicalName='x')/Keys` body.
pub struct NewKey;

impl NewKey {
    pub fn from_json(table: &Table, body: &Json) -> ApiResult<AlternateKey> {
        let schema_name = body
            .get("SchemaName")
            .and_then(Json::as_str)
            .ok_or_else(|| metadata_error("The key definition needs a 'SchemaName', such as 'new_EmailKey'."))?;
        PublisherPrefix::of_schema_name(schema_name)?;
        let attributes: Vec<String> = body
            .get("KeyAttributes")
            .and_then(Json::as_array)
            .map(|a| a.iter().filter_map(Json::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        if attributes.is_empty() {
            return Err(metadata_error("The key definition needs 'KeyAttributes': the logical names of its columns."));
        }
        for name in &attributes {
            let attribute = table.attribute(name).ok_or_else(|| {
                metadata_error(format!("The key column '{name}' does not exist on entity {}.", table.logical_name))
            })?;
            let allowed = matches!(
                attribute.kind,
                AttributeKind::String { .. }
                    | AttributeKind::Integer { .. }
                    | AttributeKind::Decimal { .. }
                    | AttributeKind::DateTime { .. }
                    | AttributeKind::Lookup { .. }
                    | AttributeKind::Picklist { .. }
                    | AttributeKind::Uniqueidentifier
            );
            if !allowed || attribute.logical_name == table.primary_id {
                return Err(metadata_error(format!(
                    "The column '{name}' ({}) cannot be part of a key.",
                    attribute.kind.attribute_type()
                )));
            }
        }
        let logical_name = schema_name.to_ascii_lowercase();
        if table.keys.iter().any(|k| k.logical_name == logical_name) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                code::METADATA_ALREADY_EXISTS,
                format!("A key with the name {logical_name} already exists on entity {}.", table.logical_name),
            ));
        }
        Ok(AlternateKey {
            display_name: label(body, "DisplayName").unwrap_or_else(|| schema_name.to_string()),
            schema_name: schema_name.to_string(),
            logical_name,
            metadata_id: Uuid::new_v4(),
            attributes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prefixes_follow_the_publisher_rules() {
        assert!(PublisherPrefix::parse("new").is_ok());
        assert!(PublisherPrefix::parse("cr8a3").is_ok());
        assert!(PublisherPrefix::parse("n").is_err());
        assert!(PublisherPrefix::parse("mscrmx").is_err());
        assert!(PublisherPrefix::parse("toolongprefix").is_err());
        assert!(PublisherPrefix::parse("9ab").is_err());
    }

    #[test]
    fn plurals_follow_english() {
        assert_eq!(plural("new_bankaccount"), "new_bankaccounts");
        assert_eq!(plural("new_category"), "new_categories");
        assert_eq!(plural("new_day"), "new_days");
        assert_eq!(plural("new_box"), "new_boxes");
    }

    #[test]
    fn a_choice_column_numbers_its_options_from_the_publisher_prefix() {
        let table = crate::schema::builtin_tables().into_iter().find(|t| t.logical_name == "contact").unwrap();
        let body = json!({
            "@odata.type": "Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
            "SchemaName": "new_Tier",
            "OptionSet": {"Options": [
                {"Label": {"LocalizedLabels": [{"Label": "Gold", "LanguageCode": 1033}]}},
                {"Label": {"LocalizedLabels": [{"Label": "Silver", "LanguageCode": 1033}]}}
            ]}
        });
        let attribute = NewAttribute::from_json(&table, &body).unwrap();
        assert_eq!(attribute.logical_name, "new_tier");
        assert_eq!(attribute.kind.options().unwrap()[1], OptionValue::new(100_000_001, "Silver"));
    }

    fn activity_definition(primary: &str) -> Json {
        json!({
            "SchemaName": "new_Visit", "IsActivity": true, "OwnershipType": "UserOwned",
            "HasActivities": false, "HasNotes": true,
            "Attributes": [{
                "@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
                "SchemaName": primary, "IsPrimaryName": true, "MaxLength": 300,
            }],
        })
    }

    #[test]
    fn an_activity_table_gets_activityid_the_common_columns_and_its_subject() {
        let schema = Schema::new(crate::schema::builtin_tables());
        let table = NewTable::from_json(&schema, &activity_definition("Subject")).unwrap();
        assert!(table.is_activity && table.is_custom);
        assert_eq!((table.primary_id.as_str(), table.primary_name.as_str()), ("activityid", "subject"));
        assert_eq!(table.entity_set_name, "new_visits");
        let subject = table.attribute("subject").unwrap();
        assert_eq!((subject.schema_name.as_str(), &subject.kind), ("Subject", &AttributeKind::string(300)));
        let pointer = schema.table(activities::POINTER).unwrap();
        for attribute in &pointer.attributes {
            assert!(table.attribute(&attribute.logical_name).is_some(), "{}", attribute.logical_name);
        }
        let (regarding, target) = table.navigation("regardingobjectid_contact_new_visit").unwrap();
        assert_eq!((regarding.logical_name.as_str(), target.table.as_str()), ("regardingobjectid", "contact"));
        let ids: Vec<Uuid> = table.attributes.iter().map(|a| a.metadata_id).collect();
        assert!(ids.iter().all(|id| ids.iter().filter(|other| *other == id).count() == 1));
    }

    #[test]
    fn an_activity_table_whose_primary_name_is_not_subject_is_refused() {
        let schema = Schema::new(crate::schema::builtin_tables());
        let refused = NewTable::from_json(&schema, &activity_definition("new_Name")).unwrap_err();
        assert_eq!(refused.code, code::ACTIVITY_METADATA_INVALID);
        assert!(refused.message.contains("'Subject'") && refused.message.contains("'new_Name'"), "{}", refused.message);
        let mut owned = activity_definition("Subject");
        owned["OwnershipType"] = json!("OrganizationOwned");
        assert_eq!(NewTable::from_json(&schema, &owned).unwrap_err().code, code::ACTIVITY_OWNERSHIP_INVALID);
    }
}
