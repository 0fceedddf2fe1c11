//! Metadata: the service document, `$metadata` (CSDL), and `EntityDefinitions` with their attributes and
//! keys — read with `$select`/`$filter`/`$expand` and type casts, and written the way an admin adds a
//! column, a table or an alternate key.

use super::{Request, empty_response, json_response, set_header};
use crate::error::{ApiError, ApiResult};
use crate::odata::filter::matches_json;
use crate::odata::path::{Key, KeyValue, Segment};
use crate::schema::{
    AlternateKey, Attribute, AttributeKind, DateFormat, LookupType, NewAttribute, NewKey, NewTable, Table, activities,
};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

const NS: &str = "Microsoft.Dynamics.CRM";

pub fn service_document(request: &Request) -> ApiResult<Response> {
    let data = request.env.store.read();
    let mut sets: Vec<Json> = data
        .schema
        .tables()
        .map(|t| json!({"name": t.entity_set_name, "kind": "EntitySet", "url": t.entity_set_name}))
        .collect();
    sets.push(json!({"name": "EntityDefinitions", "kind": "EntitySet", "url": "EntityDefinitions"}));
    Ok(json_response(StatusCode::OK, &json!({"@odata.context": format!("{}/$metadata", request.base), "value": sets})))
}

// --------------------------------------------------------------------------------------------- CSDL

fn xml(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `$metadata`: the CSDL of every table, with `?annotations=true` adding the change-tracking and
/// computed-column annotations.
pub fn csdl(request: &Request) -> ApiResult<Response> {
    let annotations = request.raw_query.as_deref().is_some_and(|q| q.split('&').any(|p| p == "annotations=true"));
    let data = request.env.store.read();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    out.push_str(
        "<edmx:Edmx Version=\"4.0\" xmlns:edmx=\"http://docs.oasis-open.org/odata/ns/edmx\">\n<edmx:DataServices>\n",
    );
    out.push_str(&format!(
        "<Schema Namespace=\"{NS}\" Alias=\"mscrm\" xmlns=\"http://docs.oasis-open.org/odata/ns/edm\">\n"
    ));
    out.push_str("<EntityType Name=\"crmbaseentity\" Abstract=\"true\" />\n");
    for table in data.schema.tables() {
        out.push_str(&format!("<EntityType Name=\"{}\" BaseType=\"mscrm.crmbaseentity\">\n", table.logical_name));
        out.push_str(&format!("<Key><PropertyRef Name=\"{}\" /></Key>\n", table.primary_id));
        for attribute in &table.attributes {
            let extra = match &attribute.kind {
                AttributeKind::String { .. } | AttributeKind::Memo { .. } | AttributeKind::EntityName { .. } => {
                    " Unicode=\"false\""
                }
                AttributeKind::Decimal { .. } | AttributeKind::Money { .. } => " Scale=\"Variable\"",
                _ => "",
            };
            let property = attribute.property_name();
            if annotations && attribute.is_read_only() {
                out.push_str(&format!(
                    "<Property Name=\"{property}\" Type=\"{}\"{extra}><Annotation Term=\"Org.OData.Core.V1.Computed\" Bool=\"true\" /></Property>\n",
                    attribute.kind.edm_type()
                ));
            } else {
                out.push_str(&format!(
                    "<Property Name=\"{property}\" Type=\"{}\"{extra} />\n",
                    attribute.kind.edm_type()
                ));
            }
        }
        for attribute in table.attributes.iter().filter(|a| a.is_lookup()) {
            for target in attribute.lookup_targets() {
                let Some(target_table) = data.schema.table(&target.table) else {
                    continue;
                };
                out.push_str(&format!(
                    "<NavigationProperty Name=\"{}\" Type=\"mscrm.{}\"><ReferentialConstraint Property=\"{}\" ReferencedProperty=\"{}\" /></NavigationProperty>\n",
                    target.navigation_property,
                    target.table,
                    attribute.property_name(),
                    target_table.primary_id
                ));
            }
        }
        out.push_str("</EntityType>\n");
    }
    out.push_str(
        "<ComplexType Name=\"WhoAmIResponse\"><Property Name=\"BusinessUnitId\" Type=\"Edm.Guid\" Nullable=\"false\" />\
         <Property Name=\"UserId\" Type=\"Edm.Guid\" Nullable=\"false\" /><Property Name=\"OrganizationId\" Type=\"Edm.Guid\" Nullable=\"false\" /></ComplexType>\n",
    );
    out.push_str(
        "<Function Name=\"WhoAmI\"><ReturnType Type=\"mscrm.WhoAmIResponse\" Nullable=\"false\" /></Function>\n",
    );
    out.push_str("<EntityContainer Name=\"System\">\n");
    for table in data.schema.tables() {
        out.push_str(&format!(
            "<EntitySet Name=\"{}\" EntityType=\"mscrm.{}\">\n",
            xml(&table.entity_set_name),
            table.logical_name
        ));
        for attribute in table.attributes.iter().filter(|a| a.is_lookup()) {
            for target in attribute.lookup_targets() {
                if let Some(t) = data.schema.table(&target.table) {
                    out.push_str(&format!(
                        "<NavigationPropertyBinding Path=\"{}\" Target=\"{}\" />\n",
                        target.navigation_property, t.entity_set_name
                    ));
                }
            }
        }
        if annotations {
            out.push_str(&format!(
                "<Annotation Term=\"Org.OData.Capabilities.V1.ChangeTracking\"><Record><PropertyValue Property=\"Supported\" Bool=\"{}\" /></Record></Annotation>\n",
                table.change_tracking_enabled
            ));
        }
        out.push_str("</EntitySet>\n");
    }
    out.push_str("<FunctionImport Name=\"WhoAmI\" Function=\"mscrm.WhoAmI\" IncludeInServiceDocument=\"false\" />\n");
    out.push_str("</EntityContainer>\n</Schema>\n</edmx:DataServices>\n</edmx:Edmx>\n");
    let mut response = axum::response::IntoResponse::into_response(out);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    Ok(response)
}

// --------------------------------------------------------------------------------- metadata as JSON

pub(super) fn label(text: &str, id_seed: Uuid) -> Json {
    labels(text, &[], id_seed)
}

/// A `Label`: the base language's text, which is also the caller's (`UserLocalizedLabel`), then the
/// texts in other languages.
fn labels(text: &str, others: &[(u32, &str)], id_seed: Uuid) -> Json {
    let localized = |language: u32, text: &str| {
        json!({
            "Label": text,
            "LanguageCode": language,
            "IsManaged": true,
            "MetadataId": Uuid::new_v5(&id_seed, format!("{language}/{text}").as_bytes()),
            "HasChanged": null,
        })
    };
    let base = localized(1033, text);
    let mut all = vec![base.clone()];
    all.extend(others.iter().map(|(language, text)| localized(*language, text)));
    json!({"LocalizedLabels": all, "UserLocalizedLabel": base})
}

/// A managed property: a value, and whether a customizer may change it.
fn managed(value: bool, can_be_changed: bool, logical_name: &str) -> Json {
    json!({"Value": value, "CanBeChanged": can_be_changed, "ManagedPropertyLogicalName": logical_name})
}

pub(super) fn table_json(table: &Table) -> Map<String, Json> {
    let object = json!({
        "MetadataId": table.metadata_id,
        "LogicalName": table.logical_name,
        "SchemaName": table.schema_name,
        "EntitySetName": table.entity_set_name,
        "LogicalCollectionName": table.entity_set_name,
        "CollectionSchemaName": format!("{}s", table.schema_name),
        "PrimaryIdAttribute": table.primary_id,
        "PrimaryNameAttribute": table.primary_name,
        "ObjectTypeCode": table.object_type_code,
        "IsCustomEntity": table.is_custom,
        "IsManaged": !table.is_custom,
        "OwnershipType": table.ownership,
        "TableType": "Standard",
        "ChangeTrackingEnabled": table.change_tracking_enabled,
        // Every table the emulator holds can track changes; a custom table's setting can be changed.
        "CanChangeTrackingBeEnabled": managed(true, table.is_custom, "canchangetrackingbeenabled"),
        "IsCustomizable": managed(true, table.is_custom, "iscustomizable"),
        "IsPrivate": table.is_private,
        "IsIntersect": false,
        "IsLogicalEntity": false,
        "IsOptimisticConcurrencyEnabled": true,
        "IsActivity": table.is_activity,
        "HasNotes": false,
        // The tables activities can regard have activities; an activity table has none of its own.
        "HasActivities": activities::REGARDING_TARGETS.contains(&table.logical_name.as_str()),
        "IsValidForAdvancedFind": true,
        "DisplayName": label(&table.display_name, table.metadata_id),
        "DisplayCollectionName": label(&table.display_collection_name, table.metadata_id),
        "Description": label(&table.description, table.metadata_id),
    });
    match object {
        Json::Object(m) => m,
        _ => unreachable!("a JSON object literal"),
    }
}

const ATTRIBUTE_BASE: &[&str] = &[
    "MetadataId",
    "LogicalName",
    "SchemaName",
    "EntityLogicalName",
    "AttributeType",
    "AttributeTypeName",
    "AttributeOf",
    "ColumnNumber",
    "IsCustomAttribute",
    "IsManaged",
    "IsPrimaryId",
    "IsPrimaryName",
    "IsLogical",
    "IsValidForCreate",
    "IsValidForRead",
    "IsValidForUpdate",
    "RequiredLevel",
    "DisplayName",
    "Description",
];

fn type_name(kind: &AttributeKind) -> &'static str {
    match kind {
        AttributeKind::Uniqueidentifier => "UniqueidentifierType",
        AttributeKind::String { .. } => "StringType",
        AttributeKind::Memo { .. } => "MemoType",
        AttributeKind::Integer { .. } => "IntegerType",
        AttributeKind::BigInt => "BigIntType",
        AttributeKind::Decimal { .. } => "DecimalType",
        AttributeKind::Double { .. } => "DoubleType",
        AttributeKind::Money { .. } => "MoneyType",
        AttributeKind::Boolean { .. } => "BooleanType",
        AttributeKind::DateTime { .. } => "DateTimeType",
        AttributeKind::Picklist { .. } => "PicklistType",
        AttributeKind::State { .. } => "StateType",
        AttributeKind::Status { .. } => "StatusType",
        AttributeKind::MultiSelectPicklist { .. } => "MultiSelectPicklistType",
        AttributeKind::Lookup { lookup_type: LookupType::Lookup, .. } => "LookupType",
        AttributeKind::Lookup { lookup_type: LookupType::Customer, .. } => "CustomerType",
        AttributeKind::Lookup { lookup_type: LookupType::Owner, .. } => "OwnerType",
        AttributeKind::EntityName { .. } => "EntityNameType",
    }
}

/// The type-specific properties of an attribute (those a client reaches through a cast).
fn derived_properties(attribute: &Attribute) -> Map<String, Json> {
    let mut m = Map::new();
    match &attribute.kind {
        AttributeKind::String { max_length, format } => {
            m.insert("MaxLength".into(), json!(max_length));
            m.insert("DatabaseLength".into(), json!(max_length * 2));
            m.insert("Format".into(), json!(format));
            m.insert("FormatName".into(), json!({"Value": format}));
        }
        AttributeKind::Memo { max_length } => {
            m.insert("MaxLength".into(), json!(max_length));
            m.insert("Format".into(), json!("TextArea"));
        }
        AttributeKind::Integer { min, max } => {
            m.insert("MinValue".into(), json!(min));
            m.insert("MaxValue".into(), json!(max));
            m.insert("Format".into(), json!("None"));
        }
        AttributeKind::BigInt => {
            m.insert("MinValue".into(), json!(i64::MIN));
            m.insert("MaxValue".into(), json!(i64::MAX));
        }
        AttributeKind::Decimal { min, max, precision }
        | AttributeKind::Double { min, max, precision }
        | AttributeKind::Money { min, max, precision } => {
            m.insert("MinValue".into(), json!(min));
            m.insert("MaxValue".into(), json!(max));
            m.insert("Precision".into(), json!(precision));
        }
        AttributeKind::Boolean { default, .. } => {
            m.insert("DefaultValue".into(), json!(default));
        }
        AttributeKind::DateTime { format, behavior } => {
            let format = if *format == DateFormat::DateOnly { "DateOnly" } else { "DateAndTime" };
            m.insert("Format".into(), json!(format));
            m.insert("FormatName".into(), json!({"Value": format}));
            m.insert("DateTimeBehavior".into(), json!({"Value": behavior}));
        }
        AttributeKind::Picklist { default, .. } => {
            m.insert("DefaultFormValue".into(), json!(default.unwrap_or(-1)));
        }
        AttributeKind::MultiSelectPicklist { .. } => {
            m.insert("DefaultFormValue".into(), json!(-1));
        }
        AttributeKind::State { .. }
        | AttributeKind::Status { .. }
        | AttributeKind::Uniqueidentifier
        | AttributeKind::EntityName { .. } => {}
        AttributeKind::Lookup { targets, .. } => {
            m.insert("Targets".into(), json!(targets.iter().map(|t| t.table.clone()).collect::<Vec<_>>()));
        }
    }
    m
}

/// The `OptionSet` navigation property of a choice, state, status or yes/no attribute.
fn option_set(table: &Table, attribute: &Attribute) -> Option<Json> {
    let name = format!("{}_{}", table.logical_name, attribute.logical_name);
    let id = attribute.metadata_id;
    match &attribute.kind {
        AttributeKind::Boolean { true_label, false_label, .. } => Some(json!({
            "MetadataId": Uuid::new_v5(&id, b"optionset"),
            "Name": name,
            "IsGlobal": false,
            "OptionSetType": "Boolean",
            "TrueOption": {"Value": 1, "Label": label(true_label, id)},
            "FalseOption": {"Value": 0, "Label": label(false_label, id)},
        })),
        kind => {
            let options = kind.options()?;
            let option_type = match kind {
                AttributeKind::State { .. } => "State",
                AttributeKind::Status { .. } => "Status",
                // A choices column's option set is a picklist option set, as Dataverse reports it.
                _ => "Picklist",
            };
            let options: Vec<Json> = options
                .iter()
                .map(|o| {
                    let mut option = json!({"Value": o.value, "Label": label(&o.label, id)});
                    match (kind, o.related) {
                        (AttributeKind::State { .. }, Some(status)) => option["DefaultStatus"] = json!(status),
                        (AttributeKind::Status { .. }, Some(state)) => option["State"] = json!(state),
                        _ => {}
                    }
                    option
                })
                .collect();
            Some(json!({
                "MetadataId": Uuid::new_v5(&id, b"optionset"),
                "Name": name,
                "IsGlobal": false,
                "OptionSetType": option_type,
                "Options": options,
            }))
        }
    }
}

pub(super) fn attribute_json(table: &Table, attribute: &Attribute, position: usize) -> Map<String, Json> {
    let mut m = Map::new();
    m.insert("@odata.type".into(), json!(format!("#{NS}.{}", attribute.kind.metadata_type())));
    let base = json!({
        "MetadataId": attribute.metadata_id,
        "LogicalName": attribute.logical_name,
        "SchemaName": attribute.schema_name,
        "EntityLogicalName": table.logical_name,
        "AttributeType": attribute.kind.attribute_type(),
        "AttributeTypeName": {"Value": type_name(&attribute.kind)},
        "AttributeOf": null,
        "ColumnNumber": position + 1,
        "IsCustomAttribute": attribute.is_custom,
        "IsManaged": !attribute.is_custom,
        "IsPrimaryId": attribute.logical_name == table.primary_id,
        "IsPrimaryName": attribute.logical_name == table.primary_name,
        "IsLogical": false,
        "IsValidForCreate": attribute.valid_for_create,
        "IsValidForRead": true,
        "IsValidForUpdate": attribute.valid_for_update,
        "RequiredLevel": {
            "Value": attribute.required.as_str(),
            "CanBeChanged": attribute.required != crate::schema::RequiredLevel::SystemRequired,
            "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings",
        },
        "DisplayName": labels(&attribute.display_name, &attribute.labels_in_other_languages("DisplayName"), attribute.metadata_id),
        "Description": labels(&attribute.description, &attribute.labels_in_other_languages("Description"), attribute.metadata_id),
    });
    if let Json::Object(b) = base {
        m.extend(b);
    }
    m.extend(derived_properties(attribute));
    m
}

const KEY_PROPERTIES: &[&str] = &[
    "MetadataId",
    "LogicalName",
    "SchemaName",
    "DisplayName",
    "KeyAttributes",
    "EntityLogicalName",
    "EntityKeyIndexStatus",
    "IsManaged",
];

pub(super) fn key_json(table: &Table, key: &AlternateKey) -> Map<String, Json> {
    match json!({
        "MetadataId": key.metadata_id,
        "LogicalName": key.logical_name,
        "SchemaName": key.schema_name,
        "DisplayName": label(&key.display_name, key.metadata_id),
        "KeyAttributes": key.attributes,
        "EntityLogicalName": table.logical_name,
        "EntityKeyIndexStatus": "Active",
        "IsManaged": false,
    }) {
        Json::Object(m) => m,
        _ => unreachable!("a JSON object literal"),
    }
}

// ------------------------------------------------------------------------------ options on metadata

/// `$select`, `$filter` and `$expand` of a metadata request, as they apply to one kind of item.
pub(super) struct MetadataOptions {
    select: Option<Vec<String>>,
    filter: Option<crate::odata::filter::Expr>,
    expand: Vec<(String, MetadataOptionsText)>,
}

/// The nested options of one `$expand` item (`Attributes($select=LogicalName;$filter=…)`).
#[derive(Default, Clone)]
struct MetadataOptionsText {
    select: Option<String>,
    filter: Option<String>,
}

fn split_top_level(text: &str, separator: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut quoted = false;
    let mut current = String::new();
    for c in text.chars() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            c if c == separator && depth == 0 && !quoted => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts.into_iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect()
}

impl MetadataOptions {
    pub(super) fn parse(request: &Request) -> ApiResult<MetadataOptions> {
        let options = request.options()?;
        let mut expand = Vec::new();
        if let Some(text) = &options.expand {
            for item in split_top_level(text, ',') {
                let (name, nested) = match item.find('(') {
                    Some(i) if item.ends_with(')') => (item[..i].to_string(), item[i + 1..item.len() - 1].to_string()),
                    _ => (item.clone(), String::new()),
                };
                let mut n = MetadataOptionsText::default();
                for option in split_top_level(&nested, ';') {
                    match option.split_once('=') {
                        Some(("$select", v)) => n.select = Some(v.to_string()),
                        Some(("$filter", v)) => n.filter = Some(v.to_string()),
                        _ => {
                            return Err(ApiError::bad_query(format!(
                                "'{option}' is not supported inside $expand of metadata; use $select or $filter."
                            )));
                        }
                    }
                }
                expand.push((name, n));
            }
        }
        Ok(MetadataOptions { select: options.select, filter: options.filter, expand })
    }

    fn nested(text: &MetadataOptionsText) -> ApiResult<MetadataOptions> {
        Ok(MetadataOptions {
            select: text.select.as_ref().map(|s| s.split(',').map(|p| p.trim().to_string()).collect()),
            filter: text.filter.as_deref().map(|f| crate::odata::filter::parse(f, &Default::default())).transpose()?,
            expand: Vec::new(),
        })
    }

    /// Keeps the selected properties of an item (and `MetadataId`, always), checking each against the
    /// properties its type declares.
    pub(super) fn project(
        &self,
        mut item: Map<String, Json>,
        declared: &[&str],
        type_name: &str,
    ) -> ApiResult<Map<String, Json>> {
        let Some(select) = &self.select else {
            return Ok(item);
        };
        for name in select {
            if !declared.contains(&name.as_str()) {
                return Err(ApiError::unknown_query_property(name, type_name));
            }
        }
        item.retain(|k, _| k == "MetadataId" || k == "@odata.type" || select.contains(k));
        Ok(item)
    }

    pub(super) fn keep(&self, item: &Map<String, Json>, type_name: &str) -> ApiResult<bool> {
        match &self.filter {
            None => Ok(true),
            Some(expr) => matches_json(expr, &Json::Object(item.clone()), type_name),
        }
    }
}

// -------------------------------------------------------------------------------------- endpoints

pub(super) fn find_table<'s>(schema: &'s crate::schema::Schema, key: &Key) -> ApiResult<&'s std::sync::Arc<Table>> {
    let found = match key {
        Key::Id(id) => schema.table_by_metadata_id(*id),
        Key::Named(parts) => match parts.as_slice() {
            [(name, KeyValue::Text(value))] if name == "LogicalName" => schema.table(value),
            _ => {
                return Err(ApiError::bad_query(
                    "EntityDefinitions are addressed by MetadataId or by LogicalName='name'.",
                ));
            }
        },
    };
    found.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            crate::error::code::OBJECT_DOES_NOT_EXIST,
            format!("Could not find an entity with the key {}.", key.to_url()),
        )
    })
}

/// The attribute properties a request may select: the base type's, plus the cast type's.
fn attribute_properties(cast: Option<&str>, sample: Option<&Map<String, Json>>) -> Vec<String> {
    let mut names: Vec<String> = ATTRIBUTE_BASE.iter().map(|s| s.to_string()).collect();
    if cast.is_some()
        && let Some(item) = sample
    {
        names.extend(item.keys().filter(|k| !k.starts_with('@')).cloned());
    }
    names
}

pub async fn entity_definitions(request: &Request, segments: &[Segment]) -> ApiResult<Response> {
    let first = &segments[0];
    match (&first.key, segments.len(), &request.method) {
        (None, 1, &Method::GET) => list_tables(request),
        (None, 1, &Method::POST) => create_table(request).await,
        (Some(key), 1, &Method::GET) => get_table(request, key),
        (Some(key), 1, &Method::PUT) => update_table(request, key).await,
        (Some(key), 1, &Method::DELETE) => super::schema_changes::delete_table(request, key).await,
        (Some(_), 1, _) => Err(ApiError::method_not_allowed(
            "A table definition answers GET, PUT to update it and DELETE to delete a custom table.",
        )),
        (Some(key), 2, &Method::DELETE) if segments[1].name == "Attributes" => {
            super::schema_changes::delete_attribute(request, key, &segments[1]).await
        }
        (Some(key), 2, &Method::PUT) if segments[1].name == "Attributes" => {
            super::schema_changes::update_attribute(request, key, &segments[1]).await
        }
        (Some(key), _, _) if segments[1].name == "Attributes" => attributes(request, key, &segments[1..]).await,
        (Some(key), 2, &Method::DELETE) if segments[1].name == "Keys" => {
            super::schema_changes::delete_key(request, key, &segments[1]).await
        }
        (Some(key), 2, _) if segments[1].name == "Keys" && segments[1].key.is_none() => keys(request, key).await,
        (Some(key), 2, &Method::GET)
            if matches!(
                segments[1].name.as_str(),
                "OneToManyRelationships" | "ManyToOneRelationships" | "ManyToManyRelationships"
            ) =>
        {
            super::relationships::of_table(request, key, &segments[1])
        }
        _ => Err(ApiError::segment_not_found(&segments.last().expect("non-empty").name)),
    }
}

fn table_with_expansions(table: &Table, options: &MetadataOptions) -> ApiResult<Map<String, Json>> {
    let item = table_json(table);
    let declared: Vec<String> = item.keys().cloned().collect();
    let declared_refs: Vec<&str> = declared.iter().map(String::as_str).collect();
    let mut item = options.project(item, &declared_refs, "EntityMetadata")?;
    for (name, nested) in &options.expand {
        let nested = MetadataOptions::nested(nested)?;
        match name.as_str() {
            "Attributes" => {
                let items = attribute_items(table, &nested, None)?;
                item.insert("Attributes".into(), Json::Array(items.into_iter().map(Json::Object).collect()));
            }
            "Keys" => {
                let mut keys = Vec::new();
                for k in &table.keys {
                    let key = key_json(table, k);
                    if nested.keep(&key, "EntityKeyMetadata")? {
                        keys.push(Json::Object(nested.project(key, KEY_PROPERTIES, "EntityKeyMetadata")?));
                    }
                }
                item.insert("Keys".into(), Json::Array(keys));
            }
            other => return Err(ApiError::unknown_query_property(other, "EntityMetadata")),
        }
    }
    Ok(item)
}

fn list_tables(request: &Request) -> ApiResult<Response> {
    let options = MetadataOptions::parse(request)?;
    let data = request.env.store.read();
    let mut value = Vec::new();
    for table in data.schema.tables() {
        if options.keep(&table_json(table), "EntityMetadata")? {
            value.push(Json::Object(table_with_expansions(table, &options)?));
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"@odata.context": format!("{}/$metadata#EntityDefinitions", request.base), "value": value}),
    ))
}

fn get_table(request: &Request, key: &Key) -> ApiResult<Response> {
    let options = MetadataOptions::parse(request)?;
    let data = request.env.store.read();
    let table = find_table(&data.schema, key)?;
    let mut body = Map::new();
    body.insert("@odata.context".into(), json!(format!("{}/$metadata#EntityDefinitions/$entity", request.base)));
    body.extend(table_with_expansions(table, &options)?);
    Ok(json_response(StatusCode::OK, &Json::Object(body)))
}

/// The attributes of a table as metadata items, filtered, cast and projected.
fn attribute_items(table: &Table, options: &MetadataOptions, cast: Option<&str>) -> ApiResult<Vec<Map<String, Json>>> {
    let mut out = Vec::new();
    for (position, attribute) in table.attributes.iter().enumerate() {
        if cast.is_some_and(|c| c != attribute.kind.metadata_type()) {
            continue;
        }
        let item = attribute_json(table, attribute, position);
        let type_label = cast.unwrap_or("AttributeMetadata");
        if !options.keep(&item, type_label)? {
            continue;
        }
        let declared = attribute_properties(cast, Some(&item));
        let declared_refs: Vec<&str> = declared.iter().map(String::as_str).collect();
        let mut projected = options.project(item, &declared_refs, type_label)?;
        for (name, _) in &options.expand {
            match name.as_str() {
                "OptionSet" if cast.is_some() => {
                    projected.insert("OptionSet".into(), option_set(table, attribute).unwrap_or(Json::Null));
                }
                "GlobalOptionSet" if cast.is_some() => {
                    projected.insert("GlobalOptionSet".into(), Json::Null);
                }
                other => return Err(ApiError::unknown_query_property(other, type_label)),
            }
        }
        out.push(projected);
    }
    Ok(out)
}

async fn attributes(request: &Request, table_key: &Key, segments: &[Segment]) -> ApiResult<Response> {
    let attributes_segment = &segments[0];
    let cast_segment = segments.iter().skip(1).find(|s| s.name.starts_with("Microsoft.Dynamics.CRM."));
    let cast = match cast_segment {
        Some(s) => {
            let name = s.name.trim_start_matches("Microsoft.Dynamics.CRM.");
            if !name.ends_with("AttributeMetadata") {
                return Err(ApiError::segment_not_found(&s.name));
            }
            Some(name.to_string())
        }
        None => None,
    };
    if segments.len() > 1 + usize::from(cast_segment.is_some()) {
        return Err(ApiError::segment_not_found(&segments.last().expect("non-empty").name));
    }
    if request.method == Method::POST {
        if attributes_segment.key.is_some() || cast.is_some() {
            return Err(ApiError::method_not_allowed(
                "Create a column with POST EntityDefinitions(LogicalName='x')/Attributes.",
            ));
        }
        return create_attribute(request, table_key).await;
    }
    if request.method != Method::GET {
        return Err(ApiError::method_not_allowed(
            "Attributes answer GET, POST to create a column, PUT to update one and DELETE to delete one.",
        ));
    }
    let options = MetadataOptions::parse(request)?;
    let data = request.env.store.read();
    let table = find_table(&data.schema, table_key)?;
    if attributes_segment.key.is_some() {
        let position = super::schema_changes::attribute_position(table, attributes_segment)?;
        let attribute = &table.attributes[position];
        if cast.as_deref().is_some_and(|c| c != attribute.kind.metadata_type()) {
            return Err(ApiError::bad_query(format!(
                "The attribute {} is a {}, not a {}.",
                attribute.logical_name,
                attribute.kind.metadata_type(),
                cast.unwrap_or_default()
            )));
        }
        let item = attribute_json(table, attribute, position);
        let effective_cast = cast.clone().or_else(|| Some(attribute.kind.metadata_type().to_string()));
        let declared = attribute_properties(effective_cast.as_deref(), Some(&item));
        let declared_refs: Vec<&str> = declared.iter().map(String::as_str).collect();
        let mut body = Map::new();
        body.insert(
            "@odata.context".into(),
            json!(format!("{}/$metadata#EntityDefinitions('{}')/Attributes/$entity", request.base, table.metadata_id)),
        );
        body.extend(options.project(item, &declared_refs, attribute.kind.metadata_type())?);
        for (name, _) in &options.expand {
            match name.as_str() {
                "OptionSet" => {
                    body.insert("OptionSet".into(), option_set(table, attribute).unwrap_or(Json::Null));
                }
                "GlobalOptionSet" => {
                    body.insert("GlobalOptionSet".into(), Json::Null);
                }
                other => {
                    return Err(ApiError::unknown_query_property(other, attribute.kind.metadata_type()));
                }
            }
        }
        return Ok(json_response(StatusCode::OK, &Json::Object(body)));
    }
    let items = attribute_items(table, &options, cast.as_deref())?;
    let context = match &cast {
        Some(c) => format!("{}/$metadata#EntityDefinitions('{}')/Attributes/{NS}.{c}", request.base, table.metadata_id),
        None => format!("{}/$metadata#EntityDefinitions('{}')/Attributes", request.base, table.metadata_id),
    };
    Ok(json_response(StatusCode::OK, &json!({"@odata.context": context, "value": items})))
}

pub(super) fn created(location: String) -> Response {
    let mut response = empty_response(StatusCode::NO_CONTENT);
    set_header(&mut response, "odata-entityid", &location);
    response
}

/// The first value of options a maker adds, with the default publisher's option value prefix.
const FIRST_CUSTOM_OPTION: i32 = 100_000_000;

/// Changes the options of the choice column a body of `InsertOptionValue` or `DeleteOptionValue` names.
async fn change_options<T: Send + 'static>(
    request: &Request,
    message: &'static str,
    change: impl FnOnce(&mut Vec<crate::schema::OptionValue>, &str) -> ApiResult<T> + Send,
) -> ApiResult<T> {
    let body = request.json_object(message)?;
    let text = |name: &str| {
        body.get(name)
            .and_then(Json::as_str)
            .map(str::to_string)
            .ok_or_else(|| ApiError::payload(message, format!("{name} is required, as a string.")))
    };
    let (table_name, column) = (text("EntityLogicalName")?, text("AttributeLogicalName")?);
    request
        .env
        .store
        .write(|data, journal| {
            let key = Key::Named(vec![("LogicalName".into(), KeyValue::Text(table_name.clone()))]);
            let mut table = Table::clone(find_table(&data.schema, &key)?);
            let attribute = table.attributes.iter_mut().find(|a| a.logical_name == column).ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    crate::error::code::OBJECT_DOES_NOT_EXIST,
                    format!("Could not find an attribute {column} on {table_name}."),
                )
            })?;
            let AttributeKind::Picklist { options, .. } = &mut attribute.kind else {
                return Err(ApiError::invalid_argument(format!(
                    "{column} on {table_name} is not a choice column; options are changed on choice columns only."
                )));
            };
            let done = change(options, &format!("{column} on {table_name}"))?;
            data.put_table(journal, table);
            Ok(done)
        })
        .await
}

fn option_value(body: &Map<String, Json>, message: &str) -> ApiResult<Option<i32>> {
    match body.get("Value") {
        None | Some(Json::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .and_then(|v| i32::try_from(v).ok())
            .map(Some)
            .ok_or_else(|| ApiError::payload(message, format!("Value is a whole number, not {v}."))),
    }
}

/// `POST InsertOptionValue`: adds an option to a table's choice column, as a maker does in the designer.
/// `Value` may be left out: the next free value from 100,000,000 is given. The answer names the option's value.
pub async fn insert_option_value(request: &Request) -> ApiResult<Response> {
    const MESSAGE: &str = "InsertOptionValue";
    let body = request.json_object(MESSAGE)?;
    let label = body
        .get("Label")
        .and_then(|l| l["LocalizedLabels"].get(0))
        .and_then(|l| l["Label"].as_str())
        .ok_or_else(|| ApiError::payload(MESSAGE, "Label.LocalizedLabels[0].Label is required."))?
        .to_string();
    let wanted = option_value(&body, MESSAGE)?;
    let value = change_options(request, MESSAGE, move |options, column| {
        let value = wanted.unwrap_or_else(|| {
            options
                .iter()
                .map(|o| o.value + 1)
                .filter(|v| *v > FIRST_CUSTOM_OPTION)
                .max()
                .unwrap_or(FIRST_CUSTOM_OPTION)
        });
        if options.iter().any(|o| o.value == value) {
            return Err(ApiError::invalid_argument(format!("{column} already has an option with the value {value}.")));
        }
        options.push(crate::schema::OptionValue { value, label, related: None });
        Ok(value)
    })
    .await?;
    let context = format!("{}/$metadata#Microsoft.Dynamics.CRM.InsertOptionValueResponse", request.base);
    Ok(json_response(StatusCode::OK, &json!({"@odata.context": context, "NewOptionValue": value})))
}

/// `POST DeleteOptionValue`: removes an option from a table's choice column. Rows keep the value they hold.
pub async fn delete_option_value(request: &Request) -> ApiResult<Response> {
    const MESSAGE: &str = "DeleteOptionValue";
    let body = request.json_object(MESSAGE)?;
    let value = option_value(&body, MESSAGE)?.ok_or_else(|| ApiError::payload(MESSAGE, "Value is required."))?;
    change_options(request, MESSAGE, move |options, column| {
        let before = options.len();
        options.retain(|o| o.value != value);
        if options.len() == before {
            return Err(ApiError::invalid_argument(format!("{column} has no option with the value {value}.")));
        }
        Ok(())
    })
    .await?;
    Ok(empty_response(StatusCode::NO_CONTENT))
}

async fn create_attribute(request: &Request, table_key: &Key) -> ApiResult<Response> {
    let body = Json::Object(request.json_object("EntityDefinitions")?);
    let (table_id, attribute_id) = request
        .env
        .store
        .write(|data, journal| {
            let mut table = Table::clone(find_table(&data.schema, table_key)?);
            let attribute = NewAttribute::from_json(&table, &body)?;
            let ids = (table.metadata_id, attribute.metadata_id);
            table.attributes.push(attribute);
            data.put_table(journal, table);
            Ok::<_, ApiError>(ids)
        })
        .await?;
    Ok(created(format!("{}/EntityDefinitions({table_id})/Attributes({attribute_id})", request.base)))
}

/// `PUT EntityDefinitions(…)`: updates a table's definition. The emulator takes the properties it models —
/// `ChangeTrackingEnabled` — from the body and keeps everything else as it is.
async fn update_table(request: &Request, table_key: &Key) -> ApiResult<Response> {
    let body = request.json_object("EntityDefinitions")?;
    request
        .env
        .store
        .write(|data, journal| {
            let mut table = Table::clone(find_table(&data.schema, table_key)?);
            match body.get("ChangeTrackingEnabled") {
                None | Some(Json::Null) => {}
                Some(Json::Bool(true)) => table.change_tracking_enabled = true,
                Some(Json::Bool(false)) if table.change_tracking_enabled => {
                    return Err(ApiError::invalid_argument(format!(
                        "Change tracking is enabled on {} and cannot be disabled once enabled.",
                        table.logical_name
                    )));
                }
                Some(Json::Bool(false)) => {}
                Some(other) => {
                    return Err(ApiError::payload(
                        "EntityDefinitions",
                        format!("ChangeTrackingEnabled is true or false, not {other}."),
                    ));
                }
            }
            data.put_table(journal, table);
            Ok::<_, ApiError>(())
        })
        .await?;
    Ok(super::empty_response(StatusCode::NO_CONTENT))
}

async fn create_table(request: &Request) -> ApiResult<Response> {
    let body = Json::Object(request.json_object("EntityDefinitions")?);
    let id = request
        .env
        .store
        .write(|data, journal| {
            let table = NewTable::from_json(&data.schema, &body)?;
            if data.schema.table_by_set(&table.entity_set_name).is_some() {
                return Err(ApiError::invalid_argument(format!(
                    "The entity set name {} is already used by another table.",
                    table.entity_set_name
                )));
            }
            let id = table.metadata_id;
            data.put_table(journal, table);
            Ok(id)
        })
        .await?;
    Ok(created(format!("{}/EntityDefinitions({id})", request.base)))
}

async fn keys(request: &Request, table_key: &Key) -> ApiResult<Response> {
    match request.method {
        Method::GET => {
            let options = MetadataOptions::parse(request)?;
            let data = request.env.store.read();
            let table = find_table(&data.schema, table_key)?;
            let mut value = Vec::new();
            for key in &table.keys {
                let item = key_json(table, key);
                if options.keep(&item, "EntityKeyMetadata")? {
                    value.push(Json::Object(options.project(item, KEY_PROPERTIES, "EntityKeyMetadata")?));
                }
            }
            Ok(json_response(
                StatusCode::OK,
                &json!({"@odata.context": format!("{}/$metadata#EntityDefinitions('{}')/Keys", request.base, table.metadata_id), "value": value}),
            ))
        }
        Method::POST => {
            let body = Json::Object(request.json_object("EntityDefinitions")?);
            let (table_id, key_id) = request
                .env
                .store
                .write(|data, journal| {
                    let mut table = Table::clone(find_table(&data.schema, table_key)?);
                    let key = NewKey::from_json(&table, &body)?;
                    let ids = (table.metadata_id, key.metadata_id);
                    let mut rows = data.rows(&table.logical_name).clone();
                    rows.index_key(&key).map_err(|values| {
                        ApiError::new(
                            StatusCode::PRECONDITION_FAILED,
                            crate::error::code::DUPLICATE_ENTITY_KEY,
                            format!(
                                "The key {} cannot be created: more than one {} record has the values ({}). Make them unique first.",
                                key.schema_name,
                                table.logical_name,
                                values.join(", ")
                            ),
                        )
                    })?;
                    table.keys.push(key);
                    data.tables.insert(table.logical_name.clone(), rows);
                    data.put_table(journal, table);
                    Ok::<_, ApiError>(ids)
                })
                .await?;
            Ok(created(format!("{}/EntityDefinitions({table_id})/Keys({key_id})", request.base)))
        }
        _ => Err(ApiError::method_not_allowed("Keys answer GET, and POST to create an alternate key.")),
    }
}
