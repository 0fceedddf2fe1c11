//! Relationships between tables, as `RelationshipDefinitions` shows them and creates them.
//!
//! A one-to-many relationship is a lookup column seen from the metadata: every target of every lookup is
//! one, so the relationships always agree with the columns that carry them. A lookup created through
//! `RelationshipDefinitions` keeps the name, id, navigation property and cascade its creator gave
//! ([`CustomOneToMany`], kept with the referencing table); any other lookup's relationship is named and
//! identified from its column, stably. A many-to-many relationship has no column; it is kept with its first
//! table. Both live in table definitions so that they are persisted, and dropped, with the tables they join.

use super::activities;
use super::builtin::metadata_id;
use super::customize::{PublisherPrefix, label, metadata_error};
use super::journeys;
use super::*;
use crate::error::{ApiError, ApiResult, code};
use axum::http::StatusCode;
use serde_json::Value as Json;

/// The cascade behaviours of a one-to-many relationship (`Assign`, `Delete`, … → `Cascade`, `NoCascade`,
/// `RemoveLink`, `Restrict`), as the creator gave them over the defaults a new relationship has.
pub type Cascade = BTreeMap<String, String>;

/// The cascades every relationship has unless told otherwise: nothing cascades, a deleted parent's
/// children lose the link.
fn default_cascade() -> Cascade {
    [
        ("Assign", "NoCascade"),
        ("Delete", "RemoveLink"),
        ("Merge", "NoCascade"),
        ("Reparent", "NoCascade"),
        ("Share", "NoCascade"),
        ("Unshare", "NoCascade"),
        ("RollupView", "NoCascade"),
        ("Archive", "NoCascade"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The cascades of a lookup's relationship that no `RelationshipDefinitions` request gave: parental for an
/// activity's regarding lookup, the defaults otherwise.
fn cascade_of(table: &Table, attribute: &str) -> Cascade {
    if activities::is_regarding(table, attribute) { activities::regarding_cascade() } else { default_cascade() }
}

/// The defining facts of a one-to-many relationship created through `RelationshipDefinitions`, kept with
/// the referencing table, whose lookup column carries the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomOneToMany {
    pub schema_name: String,
    pub metadata_id: Uuid,
    pub referencing_attribute: String,
    pub referenced_entity: String,
    /// The collection-valued navigation property on the referenced table.
    pub referenced_navigation: String,
    pub cascade: Cascade,
}

/// A many-to-many relationship: its tables, its intersect table's name and the collection-valued
/// navigation properties on each side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManyToMany {
    pub schema_name: String,
    pub metadata_id: Uuid,
    pub entity1: String,
    pub entity2: String,
    pub intersect_entity: String,
    pub entity1_navigation: String,
    pub entity2_navigation: String,
}

/// A one-to-many relationship as metadata shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct OneToMany {
    pub schema_name: String,
    pub metadata_id: Uuid,
    pub referenced_entity: String,
    pub referenced_attribute: String,
    pub referencing_entity: String,
    pub referencing_attribute: String,
    pub referenced_navigation: String,
    pub referencing_navigation: String,
    pub cascade: Cascade,
    pub is_custom: bool,
}

/// Any relationship.
#[derive(Debug, Clone, PartialEq)]
pub enum Relationship {
    OneToMany(OneToMany),
    ManyToMany(ManyToMany),
}

impl Relationship {
    pub fn schema_name(&self) -> &str {
        match self {
            Relationship::OneToMany(r) => &r.schema_name,
            Relationship::ManyToMany(r) => &r.schema_name,
        }
    }
    pub fn metadata_id(&self) -> Uuid {
        match self {
            Relationship::OneToMany(r) => r.metadata_id,
            Relationship::ManyToMany(r) => r.metadata_id,
        }
    }
}

impl Schema {
    /// Every one-to-many relationship: one per target table of each lookup column.
    pub fn one_to_many(&self) -> Vec<OneToMany> {
        let mut out = Vec::new();
        for table in self.tables() {
            for attribute in table.attributes.iter().filter(|a| a.is_lookup()) {
                for target in attribute.lookup_targets() {
                    let Some(referenced) = self.table(&target.table) else { continue };
                    let custom = table.relationships.iter().find(|r| {
                        r.referencing_attribute == attribute.logical_name && r.referenced_entity == target.table
                    });
                    let regarding = activities::is_regarding(table, &attribute.logical_name);
                    let schema_name = match custom {
                        Some(c) => c.schema_name.clone(),
                        None if regarding => activities::regarding_relationship(referenced, table),
                        None => match journeys::relationship(&table.logical_name, &attribute.logical_name) {
                            Some(documented) => documented.to_string(),
                            None => format!("{}_{}_{}", target.table, table.logical_name, attribute.logical_name),
                        },
                    };
                    out.push(OneToMany {
                        metadata_id: custom.map(|c| c.metadata_id).unwrap_or_else(|| metadata_id(&schema_name)),
                        referenced_navigation: custom
                            .map(|c| c.referenced_navigation.clone())
                            .unwrap_or_else(|| schema_name.clone()),
                        cascade: match custom {
                            Some(c) => c.cascade.clone(),
                            None => cascade_of(table, &attribute.logical_name),
                        },
                        is_custom: custom.is_some(),
                        schema_name,
                        referenced_entity: target.table.clone(),
                        referenced_attribute: referenced.primary_id.clone(),
                        referencing_entity: table.logical_name.clone(),
                        referencing_attribute: attribute.logical_name.clone(),
                        referencing_navigation: target.navigation_property.clone(),
                    });
                }
            }
        }
        out
    }

    /// The lookups whose rows are deleted with the row of `table` they point at (`CascadeConfiguration.Delete`
    /// `Cascade`), as (referencing table, lookup column). `activitypointer` is left out: its rows go with the
    /// activity rows they mirror.
    pub fn delete_cascades(&self, table: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for referencing in self.tables().filter(|t| t.logical_name != activities::POINTER) {
            for attribute in
                referencing.attributes.iter().filter(|a| a.lookup_targets().iter().any(|t| t.table == table))
            {
                let custom = referencing
                    .relationships
                    .iter()
                    .find(|r| r.referencing_attribute == attribute.logical_name && r.referenced_entity == table);
                let cascades = match custom {
                    Some(c) => c.cascade.get("Delete").is_some_and(|d| d == "Cascade"),
                    None => {
                        cascade_of(referencing, &attribute.logical_name).get("Delete").is_some_and(|d| d == "Cascade")
                    }
                };
                if cascades {
                    out.push((referencing.logical_name.clone(), attribute.logical_name.clone()));
                }
            }
        }
        out
    }

    pub fn many_to_many(&self) -> impl Iterator<Item = &ManyToMany> {
        self.tables().flat_map(|t| t.many_to_many.iter())
    }

    /// Every relationship, one-to-many first.
    pub fn relationships(&self) -> Vec<Relationship> {
        let mut all: Vec<Relationship> = self.one_to_many().into_iter().map(Relationship::OneToMany).collect();
        all.extend(self.many_to_many().cloned().map(Relationship::ManyToMany));
        all
    }

    /// A relationship by schema name (case-insensitive, as Dataverse compares names) or by id.
    pub fn relationship(&self, schema_name: Option<&str>, id: Option<Uuid>) -> Option<Relationship> {
        self.relationships().into_iter().find(|r| {
            schema_name.is_some_and(|n| r.schema_name().eq_ignore_ascii_case(n)) || id == Some(r.metadata_id())
        })
    }

    /// The many-to-many relationship a table reaches through a collection-valued navigation property.
    pub fn many_to_many_navigation(&self, table: &str, navigation: &str) -> Option<&ManyToMany> {
        self.many_to_many().find(|r| {
            (r.entity1 == table && r.entity1_navigation == navigation)
                || (r.entity2 == table && r.entity2_navigation == navigation)
        })
    }
}

fn text<'b>(body: &'b Json, property: &str, example: &str) -> ApiResult<&'b str> {
    body.get(property)
        .and_then(Json::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| metadata_error(format!("The relationship definition needs '{property}', such as '{example}'.")))
}

fn existing_table<'s>(schema: &'s Schema, logical_name: &str, role: &str) -> ApiResult<&'s Table> {
    schema.table(logical_name).map(|t| t.as_ref()).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            code::OBJECT_DOES_NOT_EXIST,
            format!("The {role} entity '{logical_name}' does not exist; create the table first, or name it by its logical name."),
        )
    })
}

/// Refuses a relationship name already taken, by any relationship of the environment.
fn unused_name(schema: &Schema, schema_name: &str) -> ApiResult<()> {
    PublisherPrefix::of_schema_name(schema_name)?;
    if schema.relationship(Some(schema_name), None).is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            code::METADATA_ALREADY_EXISTS,
            format!("A relationship with the name {schema_name} already exists. Choose another SchemaName."),
        ));
    }
    Ok(())
}

/// A one-to-many relationship with its lookup column, from a `POST RelationshipDefinitions` body of type
/// `OneToManyRelationshipMetadata` with a `Lookup`.
pub struct NewOneToMany;

impl NewOneToMany {
    /// The referencing table with its new lookup column and relationship record.
    pub fn from_json(schema: &Schema, body: &Json) -> ApiResult<Table> {
        let schema_name = text(body, "SchemaName", "new_account_new_order")?;
        unused_name(schema, schema_name)?;
        let referenced = existing_table(schema, text(body, "ReferencedEntity", "account")?, "referenced")?;
        let mut referencing =
            Table::clone(existing_table(schema, text(body, "ReferencingEntity", "new_order")?, "referencing")?);
        if let Some(attribute) = body.get("ReferencedAttribute").and_then(Json::as_str)
            && attribute != referenced.primary_id
        {
            return Err(metadata_error(format!(
                "ReferencedAttribute '{attribute}' must be the primary key of {}: '{}'.",
                referenced.logical_name, referenced.primary_id
            )));
        }
        let lookup = body.get("Lookup").filter(|l| l.is_object()).ok_or_else(|| {
            metadata_error("A one-to-many relationship is created with its lookup column: add 'Lookup', a LookupAttributeMetadata with a SchemaName.")
        })?;
        let lookup_schema_name = lookup
            .get("SchemaName")
            .and_then(Json::as_str)
            .ok_or_else(|| metadata_error("The 'Lookup' needs a 'SchemaName', such as 'new_AccountId'."))?;
        PublisherPrefix::of_schema_name(lookup_schema_name)?;
        let logical_name = lookup_schema_name.to_ascii_lowercase();
        if let Some(given) = body.get("ReferencingAttribute").and_then(Json::as_str)
            && !given.eq_ignore_ascii_case(&logical_name)
        {
            return Err(metadata_error(format!(
                "ReferencingAttribute '{given}' must name the new lookup '{logical_name}', or be left out."
            )));
        }
        if referencing.attribute(&logical_name).is_some() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                code::METADATA_ALREADY_EXISTS,
                format!(
                    "An attribute with the name {logical_name} already exists on entity {}.",
                    referencing.logical_name
                ),
            ));
        }
        let referencing_navigation = body
            .get("ReferencingEntityNavigationPropertyName")
            .and_then(Json::as_str)
            .unwrap_or(lookup_schema_name)
            .to_string();
        if referencing.navigation(&referencing_navigation).is_some() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                code::METADATA_ALREADY_EXISTS,
                format!("{} already has a navigation property {referencing_navigation}.", referencing.logical_name),
            ));
        }
        let mut cascade = default_cascade();
        if let Some(Json::Object(given)) = body.get("CascadeConfiguration") {
            for (behaviour, value) in given.iter().filter(|(k, _)| !k.starts_with('@')) {
                let Some(value) = value.as_str() else { continue };
                if !["Cascade", "NoCascade", "RemoveLink", "Restrict", "Active", "UserOwned"].contains(&value) {
                    return Err(metadata_error(format!(
                        "CascadeConfiguration.{behaviour} '{value}' is not one of Cascade, NoCascade, RemoveLink, Restrict, Active, UserOwned."
                    )));
                }
                cascade.insert(behaviour.clone(), value.to_string());
            }
        }
        // Deleting a record applies `Cascade` (`Schema::delete_cascades`), as it does for an activity's regarding
        // relationships; a relationship promising another delete behaviour (`Restrict`) is refused rather than kept
        // and not honoured.
        if let Some(delete) = cascade.get("Delete").filter(|d| !matches!(d.as_str(), "RemoveLink" | "Cascade")) {
            return Err(metadata_error(format!(
                "The emulator does not apply CascadeConfiguration.Delete '{delete}': create the relationship with \
                 'RemoveLink' (the default) or 'Cascade', and check related records yourself."
            )));
        }
        let mut attribute = NewAttribute::from_json(
            &referencing,
            &serde_json::json!({
                "@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
                "SchemaName": lookup_schema_name,
                "DisplayName": lookup.get("DisplayName").cloned().unwrap_or(Json::Null),
                "Description": lookup.get("Description").cloned().unwrap_or(Json::Null),
                "RequiredLevel": lookup.get("RequiredLevel").cloned().unwrap_or(Json::Null),
            }),
        )?;
        if label(lookup, "DisplayName").is_none() {
            attribute.display_name = referenced.display_name.clone();
        }
        attribute.kind = AttributeKind::Lookup {
            lookup_type: LookupType::Lookup,
            targets: vec![LookupTarget {
                table: referenced.logical_name.clone(),
                navigation_property: referencing_navigation,
            }],
        };
        referencing.relationships.push(CustomOneToMany {
            schema_name: schema_name.to_string(),
            metadata_id: Uuid::new_v4(),
            referencing_attribute: logical_name,
            referenced_entity: referenced.logical_name.clone(),
            referenced_navigation: body
                .get("ReferencedEntityNavigationPropertyName")
                .and_then(Json::as_str)
                .unwrap_or(schema_name)
                .to_string(),
            cascade,
        });
        referencing.attributes.push(attribute);
        Ok(referencing)
    }
}

/// A many-to-many relationship, from a `POST RelationshipDefinitions` body of type
/// `ManyToManyRelationshipMetadata`.
pub struct NewManyToMany;

impl NewManyToMany {
    pub fn from_json(schema: &Schema, body: &Json) -> ApiResult<ManyToMany> {
        let schema_name = text(body, "SchemaName", "new_employee_project")?;
        unused_name(schema, schema_name)?;
        let entity1 = existing_table(schema, text(body, "Entity1LogicalName", "new_employee")?, "first")?;
        let entity2 = existing_table(schema, text(body, "Entity2LogicalName", "new_project")?, "second")?;
        let intersect =
            body.get("IntersectEntityName").and_then(Json::as_str).unwrap_or(schema_name).to_ascii_lowercase();
        if schema.table(&intersect).is_some() || schema.many_to_many().any(|r| r.intersect_entity == intersect) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                code::METADATA_ALREADY_EXISTS,
                format!("An entity with the name {intersect} already exists; choose another IntersectEntityName."),
            ));
        }
        let navigation = |property: &str| {
            body.get(property).and_then(Json::as_str).map(str::to_string).unwrap_or_else(|| schema_name.to_string())
        };
        Ok(ManyToMany {
            schema_name: schema_name.to_string(),
            metadata_id: Uuid::new_v4(),
            entity1: entity1.logical_name.clone(),
            entity2: entity2.logical_name.clone(),
            intersect_entity: intersect,
            entity1_navigation: navigation("Entity1NavigationPropertyName"),
            entity2_navigation: navigation("Entity2NavigationPropertyName"),
        })
    }
}
