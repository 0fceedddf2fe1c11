//! `RelationshipDefinitions` and a table's `OneToManyRelationships`, `ManyToOneRelationships` and
//! `ManyToManyRelationships`: the relationships of the schema as metadata, read with `$select`, `$filter`
//! and type casts, created (a one-to-many one with its lookup column, a many-to-many one without an
//! intersect table) and deleted.
//!
//! The one-to-many relationships are those of the lookup columns (see `schema::relationships`), so a
//! lookup created here binds with `<navigation property>@odata.bind` like any other. Records are not
//! associated through a many-to-many relationship: the emulator keeps no intersect rows, and says so when
//! a request reaches through one, rather than answering as if the relationship were unknown.

use super::metadata::{MetadataOptions, created, find_table};
use super::{Request, empty_response, json_response};
use crate::error::{ApiError, ApiResult, code};
use crate::odata::path::{Key, KeyValue, Segment};
use crate::schema::{ManyToMany, NewManyToMany, NewOneToMany, OneToMany, Relationship, Schema, Table};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value as Json, json};

const NS: &str = "Microsoft.Dynamics.CRM";
const ONE_TO_MANY: &str = "OneToManyRelationshipMetadata";
const MANY_TO_MANY: &str = "ManyToManyRelationshipMetadata";
const BASE: &str = "RelationshipMetadataBase";

/// The properties every relationship has, which a request on the base type may select or filter.
const BASE_PROPERTIES: &[&str] = &[
    "MetadataId",
    "SchemaName",
    "RelationshipType",
    "IsCustomRelationship",
    "IsManaged",
    "IsCustomizable",
    "IsValidForAdvancedFind",
    "SecurityTypes",
    "IntroducedVersion",
    "HasChanged",
];

fn base_json(schema_name: &str, id: uuid::Uuid, kind: &str, is_custom: bool) -> Map<String, Json> {
    let mut m = Map::new();
    m.insert("MetadataId".into(), json!(id));
    m.insert("SchemaName".into(), json!(schema_name));
    m.insert("RelationshipType".into(), json!(kind));
    m.insert("IsCustomRelationship".into(), json!(is_custom));
    m.insert("IsManaged".into(), json!(!is_custom));
    m.insert(
        "IsCustomizable".into(),
        json!({"Value": true, "CanBeChanged": is_custom, "ManagedPropertyLogicalName": "iscustomizable"}),
    );
    m.insert("IsValidForAdvancedFind".into(), json!(true));
    m.insert("SecurityTypes".into(), json!(if kind == "OneToManyRelationship" { "Append" } else { "None" }));
    m.insert("IntroducedVersion".into(), json!("1.0"));
    m.insert("HasChanged".into(), Json::Null);
    m
}

fn one_to_many_json(r: &OneToMany) -> Map<String, Json> {
    let mut m = base_json(&r.schema_name, r.metadata_id, "OneToManyRelationship", r.is_custom);
    m.insert("ReferencedAttribute".into(), json!(r.referenced_attribute));
    m.insert("ReferencedEntity".into(), json!(r.referenced_entity));
    m.insert("ReferencingAttribute".into(), json!(r.referencing_attribute));
    m.insert("ReferencingEntity".into(), json!(r.referencing_entity));
    m.insert("ReferencedEntityNavigationPropertyName".into(), json!(r.referenced_navigation));
    m.insert("ReferencingEntityNavigationPropertyName".into(), json!(r.referencing_navigation));
    m.insert("IsHierarchical".into(), json!(false));
    m.insert("RelationshipBehavior".into(), json!(if r.is_custom { 1 } else { 0 }));
    m.insert("CascadeConfiguration".into(), json!(r.cascade));
    m
}

fn many_to_many_json(r: &ManyToMany) -> Map<String, Json> {
    let mut m = base_json(&r.schema_name, r.metadata_id, "ManyToManyRelationship", true);
    m.insert("Entity1LogicalName".into(), json!(r.entity1));
    m.insert("Entity2LogicalName".into(), json!(r.entity2));
    m.insert("IntersectEntityName".into(), json!(r.intersect_entity));
    m.insert("Entity1IntersectAttribute".into(), json!(format!("{}id", r.entity1)));
    m.insert("Entity2IntersectAttribute".into(), json!(format!("{}id", r.entity2)));
    m.insert("Entity1NavigationPropertyName".into(), json!(r.entity1_navigation));
    m.insert("Entity2NavigationPropertyName".into(), json!(r.entity2_navigation));
    m
}

/// A relationship as metadata, and the name of its type.
fn relationship_json(r: &Relationship) -> (Map<String, Json>, &'static str) {
    match r {
        Relationship::OneToMany(r) => (one_to_many_json(r), ONE_TO_MANY),
        Relationship::ManyToMany(r) => (many_to_many_json(r), MANY_TO_MANY),
    }
}

/// The type a cast segment (`/Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata`) names.
fn cast_of(segment: Option<&Segment>) -> ApiResult<Option<&'static str>> {
    match segment.map(|s| s.name.trim_start_matches("Microsoft.Dynamics.CRM.")) {
        None => Ok(None),
        Some(ONE_TO_MANY) => Ok(Some(ONE_TO_MANY)),
        Some(MANY_TO_MANY) => Ok(Some(MANY_TO_MANY)),
        Some(_) => Err(ApiError::segment_not_found(&segment.map(|s| s.name.clone()).unwrap_or_default())),
    }
}

/// Filters and projects relationships seen as `declared` (a cast type, or the base type), adding
/// `@odata.type` where an item is of a type derived from the declared one.
fn items(relationships: Vec<Relationship>, options: &MetadataOptions, declared: &'static str) -> ApiResult<Vec<Json>> {
    let mut out = Vec::new();
    for r in &relationships {
        let (mut item, type_name) = relationship_json(r);
        if declared != BASE && type_name != declared {
            continue;
        }
        if declared == BASE {
            // What a request on the base type may name is only what every relationship has.
            item.retain(|k, _| BASE_PROPERTIES.contains(&k.as_str()));
        }
        if !options.keep(&item, declared)? {
            continue;
        }
        let full = relationship_json(r).0;
        let names: Vec<String> = if declared == BASE {
            BASE_PROPERTIES.iter().map(|s| s.to_string()).collect()
        } else {
            full.keys().cloned().collect()
        };
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut projected = options.project(full, &names, declared)?;
        if declared == BASE {
            let mut typed = Map::new();
            typed.insert("@odata.type".into(), json!(format!("#{NS}.{type_name}")));
            typed.extend(projected);
            projected = typed;
        }
        out.push(Json::Object(projected));
    }
    Ok(out)
}

fn key_of(key: &Key) -> ApiResult<(Option<&str>, Option<uuid::Uuid>)> {
    match key {
        Key::Id(id) => Ok((None, Some(*id))),
        Key::Named(parts) => match parts.as_slice() {
            [(n, KeyValue::Text(v))] if n == "SchemaName" => Ok((Some(v.as_str()), None)),
            _ => {
                Err(ApiError::bad_query("RelationshipDefinitions are addressed by MetadataId or by SchemaName='name'."))
            }
        },
    }
}

fn not_found(key: &Key) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        code::OBJECT_DOES_NOT_EXIST,
        format!("Could not find a relationship with the key {}.", key.to_url()),
    )
}

/// `RelationshipDefinitions[(key)][/cast]`: GET, POST and DELETE.
pub async fn definitions(request: &Request, segments: &[Segment]) -> ApiResult<Response> {
    let first = &segments[0];
    if segments.len() > 2 {
        return Err(ApiError::segment_not_found(&segments[2].name));
    }
    let cast = cast_of(segments.get(1))?;
    match (&request.method, &first.key) {
        (&Method::GET, None) => {
            let options = MetadataOptions::parse(request)?;
            let all = request.env.store.read().schema.relationships();
            let declared = cast.unwrap_or(BASE);
            let value = items(all, &options, declared)?;
            let context = match cast {
                Some(c) => format!("{}/$metadata#RelationshipDefinitions/{NS}.{c}", request.base),
                None => format!("{}/$metadata#RelationshipDefinitions", request.base),
            };
            Ok(json_response(StatusCode::OK, &json!({"@odata.context": context, "value": value})))
        }
        (&Method::GET, Some(key)) => {
            let options = MetadataOptions::parse(request)?;
            let (name, id) = key_of(key)?;
            let found = request.env.store.read().schema.relationship(name, id).ok_or_else(|| not_found(key))?;
            let (item, type_name) = relationship_json(&found);
            if cast.is_some_and(|c| c != type_name) {
                return Err(not_found(key));
            }
            let names: Vec<String> = item.keys().cloned().collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let mut body = Map::new();
            body.insert(
                "@odata.context".into(),
                json!(format!("{}/$metadata#RelationshipDefinitions/{NS}.{type_name}/$entity", request.base)),
            );
            if cast.is_none() {
                body.insert("@odata.type".into(), json!(format!("#{NS}.{type_name}")));
            }
            body.extend(options.project(item, &names, type_name)?);
            Ok(json_response(StatusCode::OK, &Json::Object(body)))
        }
        (&Method::POST, None) if cast.is_none() => create(request).await,
        (&Method::DELETE, Some(key)) if cast.is_none() => delete(request, key).await,
        _ => Err(ApiError::method_not_allowed(
            "RelationshipDefinitions answer GET, POST to create a relationship, and DELETE RelationshipDefinitions(<MetadataId>).",
        )),
    }
}

async fn create(request: &Request) -> ApiResult<Response> {
    const SET: &str = "RelationshipDefinitions";
    let body = Json::Object(request.json_object(SET)?);
    let type_name = body
        .get("@odata.type")
        .and_then(Json::as_str)
        .map(|t| t.trim_start_matches('#').trim_start_matches("Microsoft.Dynamics.CRM.").to_string())
        .ok_or_else(|| {
            ApiError::payload(SET, "'@odata.type' is required: Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata or ManyToManyRelationshipMetadata.")
        })?;
    let id = request
        .env
        .store
        .write(|data, journal| match type_name.as_str() {
            ONE_TO_MANY => {
                let referencing = NewOneToMany::from_json(&data.schema, &body)?;
                let id = referencing.relationships.last().map(|r| r.metadata_id).unwrap_or_default();
                data.put_table(journal, referencing);
                Ok(id)
            }
            MANY_TO_MANY => {
                let relationship = NewManyToMany::from_json(&data.schema, &body)?;
                let id = relationship.metadata_id;
                let mut first = Table::clone(find_table(&data.schema, &logical(&relationship.entity1))?);
                first.many_to_many.push(relationship);
                data.put_table(journal, first);
                Ok(id)
            }
            other => Err(ApiError::payload(
                SET,
                format!("'{other}' is not a relationship type that can be created; use OneToManyRelationshipMetadata or ManyToManyRelationshipMetadata."),
            )),
        })
        .await?;
    Ok(created(format!("{}/RelationshipDefinitions({id})", request.base)))
}

fn logical(name: &str) -> Key {
    Key::Named(vec![("LogicalName".into(), KeyValue::Text(name.to_string()))])
}

/// Deletes a custom relationship. A one-to-many one takes its lookup column, and the values rows held in
/// it, with it, as Dataverse does; a system relationship is refused.
async fn delete(request: &Request, key: &Key) -> ApiResult<Response> {
    let (name, id) = key_of(key)?;
    let (name, id) = (name.map(str::to_string), id);
    request
        .env
        .store
        .write(|data, journal| {
            let found = data.schema.relationship(name.as_deref(), id).ok_or_else(|| not_found(key))?;
            match found {
                Relationship::OneToMany(r) => {
                    if !r.is_custom {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            code::INVALID_ARGUMENT,
                            format!(
                                "{} is a system relationship; only custom relationships can be deleted.",
                                r.schema_name
                            ),
                        ));
                    }
                    let mut table = Table::clone(find_table(&data.schema, &logical(&r.referencing_entity))?);
                    // As deleting a column: one an alternate key is made of goes after the key.
                    if let Some(key) = table.keys.iter().find(|k| k.attributes.contains(&r.referencing_attribute)) {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            code::INVALID_ARGUMENT,
                            format!(
                                "The lookup {} of {} is part of the alternate key {}; delete the key first.",
                                r.referencing_attribute, r.referencing_entity, key.logical_name
                            ),
                        ));
                    }
                    table.relationships.retain(|c| c.metadata_id != r.metadata_id);
                    table.attributes.retain(|a| a.logical_name != r.referencing_attribute);
                    data.put_table(journal, table);
                    data.drop_column(journal, &r.referencing_entity, &r.referencing_attribute);
                }
                Relationship::ManyToMany(r) => {
                    let mut table = Table::clone(find_table(&data.schema, &logical(&r.entity1))?);
                    table.many_to_many.retain(|m| m.metadata_id != r.metadata_id);
                    data.put_table(journal, table);
                }
            }
            Ok(())
        })
        .await?;
    Ok(empty_response(StatusCode::NO_CONTENT))
}

/// `EntityDefinitions(…)/OneToManyRelationships` (where the table is referenced),
/// `/ManyToOneRelationships` (where its lookups refer) and `/ManyToManyRelationships`.
pub fn of_table(request: &Request, table_key: &Key, segment: &Segment) -> ApiResult<Response> {
    if segment.key.is_some() {
        return Err(ApiError::segment_not_found(&segment.name));
    }
    let options = MetadataOptions::parse(request)?;
    let data = request.env.store.read();
    let table = find_table(&data.schema, table_key)?;
    let name = &table.logical_name;
    let (relationships, declared): (Vec<Relationship>, &'static str) = match segment.name.as_str() {
        "OneToManyRelationships" => (one_to_many_where(&data.schema, |r| &r.referenced_entity == name), ONE_TO_MANY),
        "ManyToOneRelationships" => (one_to_many_where(&data.schema, |r| &r.referencing_entity == name), ONE_TO_MANY),
        _ => (
            data.schema
                .many_to_many()
                .filter(|r| &r.entity1 == name || &r.entity2 == name)
                .cloned()
                .map(Relationship::ManyToMany)
                .collect(),
            MANY_TO_MANY,
        ),
    };
    let value = items(relationships, &options, declared)?;
    let context = format!("{}/$metadata#EntityDefinitions('{}')/{}", request.base, table.metadata_id, segment.name);
    Ok(json_response(StatusCode::OK, &json!({"@odata.context": context, "value": value})))
}

fn one_to_many_where(schema: &Schema, keep: impl Fn(&OneToMany) -> bool) -> Vec<Relationship> {
    schema.one_to_many().into_iter().filter(|r| keep(r)).map(Relationship::OneToMany).collect()
}

/// Refuses a record request that reaches through a many-to-many relationship's navigation property
/// (`accounts(…)/new_account_contact/$ref`, `…?$expand=new_account_contact`): the emulator keeps no
/// intersect rows, so it cannot associate, disassociate or read records through one.
pub fn refuse_many_to_many(request: &Request, segments: &[Segment]) -> ApiResult<()> {
    let data = request.env.store.read();
    if data.schema.many_to_many().next().is_none() {
        return Ok(());
    }
    let Some(table) = segments.first().and_then(|s| data.schema.table_by_set(&s.name)) else {
        return Ok(());
    };
    let expand = request.options().ok().and_then(|o| o.expand).unwrap_or_default();
    let named = segments
        .get(1)
        .map(|s| s.name.clone())
        .into_iter()
        .chain(expand.split(',').map(|e| e.split('(').next().unwrap_or_default().trim().to_string()));
    for navigation in named {
        if let Some(r) = data.schema.many_to_many_navigation(&table.logical_name, &navigation) {
            return Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                code::INVALID_ARGUMENT,
                format!(
                    "{navigation} is the many-to-many relationship {}; the emulator stores the relationship but not its intersect rows, so records cannot be associated or read through it.",
                    r.schema_name
                ),
            ));
        }
    }
    Ok(())
}
