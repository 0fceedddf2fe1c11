//! Changing and removing what `EntityDefinitions` hold — a column's definition (`PUT`), a custom column, an
//! alternate key, a custom table (`DELETE`) — and creating tables with their columns in one `CreateEntities`.
//!
//! Dataverse lets a customizer remove only what was customized: system tables and columns are refused, and
//! so is anything another component still depends on (a column in a key, a lookup that a relationship
//! owns, a table another table's lookup points at), naming what to remove first. Every change goes through
//! `put_table`/`drop_table`, so it is journaled with the other customizations and survives a restart.

use super::metadata::find_table;
use super::{Request, empty_response, json_response};
use crate::error::{ApiError, ApiResult, code};
use crate::odata::path::{Key, KeyValue, Segment};
use crate::schema::{Attribute, NewAttribute, NewTable, Table};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value as Json, json};

/// The most tables one `CreateEntities` may create.
const MAX_ENTITIES: usize = 10;

fn refused(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code::INVALID_ARGUMENT, message)
}

/// The attribute a segment's key names: `Attributes(<MetadataId>)` or `Attributes(LogicalName='x')`.
pub(super) fn attribute_position(table: &Table, segment: &Segment) -> ApiResult<usize> {
    let Some(key) = &segment.key else {
        return Err(ApiError::method_not_allowed(
            "Name the column: EntityDefinitions(LogicalName='t')/Attributes(LogicalName='c') or Attributes(<MetadataId>).",
        ));
    };
    table
        .attributes
        .iter()
        .position(|a| match key {
            Key::Id(id) => a.metadata_id == *id,
            Key::Named(parts) => {
                matches!(parts.as_slice(), [(n, KeyValue::Text(v))] if n == "LogicalName" && v == &a.logical_name)
            }
        })
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                code::OBJECT_DOES_NOT_EXIST,
                format!("Could not find an attribute with the key {} on entity {}.", key.to_url(), table.logical_name),
            )
        })
}

/// Why a column cannot be deleted, if it cannot: it is a system column, the table's primary name, part of
/// a key, or the lookup of a relationship (deleted with the relationship instead).
fn deletion_refused(table: &Table, attribute: &Attribute) -> Option<String> {
    let name = format!("{}.{}", table.logical_name, attribute.logical_name);
    if !attribute.is_custom {
        return Some(format!("{name} is a system column; only custom columns can be deleted."));
    }
    if attribute.logical_name == table.primary_name {
        return Some(format!("{name} is the primary name column of the table; it is deleted with the table."));
    }
    if let Some(key) = table.keys.iter().find(|k| k.attributes.contains(&attribute.logical_name)) {
        return Some(format!("{name} is part of the alternate key {}; delete the key first.", key.schema_name));
    }
    if let Some(r) = table.relationships.iter().find(|r| r.referencing_attribute == attribute.logical_name) {
        return Some(format!(
            "{name} is the lookup of the relationship {}; delete it with DELETE RelationshipDefinitions({}).",
            r.schema_name, r.metadata_id
        ));
    }
    None
}

/// `DELETE EntityDefinitions(…)/Attributes(…)`: deletes a custom column and the values rows held in it.
pub async fn delete_attribute(request: &Request, table_key: &Key, segment: &Segment) -> ApiResult<Response> {
    request
        .env
        .store
        .write(|data, journal| {
            let mut table = Table::clone(find_table(&data.schema, table_key)?);
            let position = attribute_position(&table, segment)?;
            if let Some(why) = deletion_refused(&table, &table.attributes[position]) {
                return Err(refused(why));
            }
            let attribute = table.attributes.remove(position);
            let name = table.logical_name.clone();
            data.put_table(journal, table);
            data.drop_column(journal, &name, &attribute.logical_name);
            Ok::<_, ApiError>(())
        })
        .await?;
    Ok(empty_response(StatusCode::NO_CONTENT))
}

/// `PUT EntityDefinitions(…)/Attributes(…)`: updates a column's definition from the whole definition in the
/// body. `MSCRM.MergeLabels: true` keeps labels in languages the body leaves out.
pub async fn update_attribute(request: &Request, table_key: &Key, segment: &Segment) -> ApiResult<Response> {
    let body = Json::Object(request.json_object("EntityDefinitions")?);
    let merge = request.header("MSCRM.MergeLabels").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    request
        .env
        .store
        .write(|data, journal| {
            let mut table = Table::clone(find_table(&data.schema, table_key)?);
            let position = attribute_position(&table, segment)?;
            NewAttribute::update(&mut table.attributes[position], &body, merge)?;
            data.put_table(journal, table);
            Ok::<_, ApiError>(())
        })
        .await?;
    Ok(empty_response(StatusCode::NO_CONTENT))
}

/// `DELETE EntityDefinitions(…)/Keys(<MetadataId>)` or `Keys(LogicalName='…')`: removes an alternate key,
/// after which its columns no longer identify rows (upserts and `table(key=…)` addresses stop working).
pub async fn delete_key(request: &Request, table_key: &Key, segment: &Segment) -> ApiResult<Response> {
    let Some(key) = &segment.key else {
        return Err(ApiError::method_not_allowed("Name the key: Keys(<MetadataId>) or Keys(LogicalName='name')."));
    };
    request
        .env
        .store
        .write(|data, journal| {
            let mut table = Table::clone(find_table(&data.schema, table_key)?);
            let position = table
                .keys
                .iter()
                .position(|k| match key {
                    Key::Id(id) => k.metadata_id == *id,
                    Key::Named(parts) => matches!(parts.as_slice(), [(n, KeyValue::Text(v))]
                        if n == "LogicalName" && v.eq_ignore_ascii_case(&k.logical_name)),
                })
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::NOT_FOUND,
                        code::OBJECT_DOES_NOT_EXIST,
                        format!(
                            "Could not find an entity key with the key {} on entity {}. A key is named by its own MetadataId (GET …/Keys lists them), not the table's.",
                            key.to_url(),
                            table.logical_name
                        ),
                    )
                })?;
            let removed = table.keys.remove(position);
            if let Some(rows) = data.tables.get_mut(&table.logical_name) {
                rows.forget_key(&removed.logical_name);
            }
            data.put_table(journal, table);
            Ok::<_, ApiError>(())
        })
        .await?;
    Ok(empty_response(StatusCode::NO_CONTENT))
}

/// `DELETE EntityDefinitions(…)`: deletes a custom table with its rows, its keys and the relationships it
/// holds. A system table is refused, and so is a table another table's lookup or a many-to-many
/// relationship of another table still refers to.
pub async fn delete_table(request: &Request, table_key: &Key) -> ApiResult<Response> {
    request
        .env
        .store
        .write(|data, journal| {
            let table = find_table(&data.schema, table_key)?.clone();
            if !table.is_custom {
                return Err(refused(format!(
                    "{} is a system table; only custom tables can be deleted.",
                    table.logical_name
                )));
            }
            let name = &table.logical_name;
            if let Some(r) = data
                .schema
                .one_to_many()
                .into_iter()
                .find(|r| &r.referenced_entity == name && &r.referencing_entity != name)
            {
                return Err(refused(format!(
                    "{name} is referenced by the lookup {}.{} (relationship {}); delete that relationship first.",
                    r.referencing_entity, r.referencing_attribute, r.schema_name
                )));
            }
            if let Some(r) = data.schema.many_to_many().find(|r| &r.entity2 == name && &r.entity1 != name) {
                return Err(refused(format!(
                    "{name} is part of the many-to-many relationship {}; delete that relationship first.",
                    r.schema_name
                )));
            }
            data.drop_table(journal, name);
            Ok(())
        })
        .await?;
    Ok(empty_response(StatusCode::NO_CONTENT))
}

/// `POST CreateEntities`: creates tables, each with its columns, from `ComplexEntityMetadata` definitions
/// (`{"Entities": [{… "Attributes": [{"@odata.type": "…ComplexStringAttributeMetadata", "IsPrimaryName":
/// true, …}, …]}]}`). All or none are created. The answer lists the new tables' MetadataIds.
pub async fn create_entities(request: &Request) -> ApiResult<Response> {
    const MESSAGE: &str = "CreateEntities";
    let body = request.json_object(MESSAGE)?;
    let entities = body
        .get("Entities")
        .and_then(Json::as_array)
        .filter(|e| !e.is_empty())
        .ok_or_else(|| ApiError::payload(MESSAGE, "Entities is required: a list of ComplexEntityMetadata."))?
        .clone();
    if entities.len() > MAX_ENTITIES {
        return Err(ApiError::payload(
            MESSAGE,
            format!("{} entities were sent; create at most {MAX_ENTITIES} in one request.", entities.len()),
        ));
    }
    let ids = request
        .env
        .store
        .write(|data, journal| {
            let mut schema = data.schema.clone();
            let mut tables = Vec::new();
            for entity in &entities {
                let table = NewTable::from_json(&schema, entity)?;
                if schema.table_by_set(&table.entity_set_name).is_some() {
                    return Err(refused(format!(
                        "The entity set name {} is already used by another table.",
                        table.entity_set_name
                    )));
                }
                schema.insert(table.clone());
                tables.push(table);
            }
            let ids: Vec<_> = tables.iter().map(|t| t.metadata_id).collect();
            for table in tables {
                data.put_table(journal, table);
            }
            Ok::<_, ApiError>(ids)
        })
        .await?;
    let context = format!("{}/$metadata#Microsoft.Dynamics.CRM.CreateEntitiesResponse", request.base);
    Ok(json_response(StatusCode::OK, &json!({"@odata.context": context, "EntityIds": ids})))
}
