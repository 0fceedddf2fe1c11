//! Audience activation (seed 002): which audiences go onto which contact columns, and which profile attributes onto
//! which others. A flow is checked against the contact table when it is saved, not when data fails.

pub mod job;
pub mod patch;
pub mod profile;
pub mod validation;
pub mod xdm;

use crate::ids::TargetConnectionId;
use serde::{Deserialize, Serialize};

pub use crate::store::FlowState;
pub use validation::{Problem, ValidationReport, validate};
pub use xdm::XdmType;

/// An activation flow as stored: what the user defined, and its state.
pub type ActivationFlow = crate::pipeline::Flow<FlowDefinition>;

/// What a user writes to define a flow (the body of `POST /flows`, or `[flow]` in `dynsync apply -f`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlowDefinition {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Flow Service names its targets in a list; an activation flow has exactly one.
    pub target_connection_ids: Vec<TargetConnectionId>,
    #[serde(default)]
    pub audiences: Vec<AudienceMapping>,
    #[serde(default)]
    pub mappings: Vec<AttributeMapping>,
    #[serde(default)]
    pub status_values: StatusValues,
    #[serde(default)]
    pub empty_values: EmptyValues,
}

impl FlowDefinition {
    pub fn target_connection_id(&self) -> Option<TargetConnectionId> {
        self.target_connection_ids.first().copied()
    }

    /// The definition as stored: names trimmed, and target columns in lower case, as the Web API names them
    /// (seed 002's older screens wrote `FirstName`).
    pub fn normalized(mut self) -> FlowDefinition {
        self.name = self.name.trim().to_string();
        for m in &mut self.mappings {
            m.source = m.source.trim().to_string();
            m.target = m.target.trim().to_ascii_lowercase();
        }
        for a in &mut self.audiences {
            a.id = a.id.trim().to_string();
            a.mapping_id = a.mapping_id.trim().to_string();
        }
        self
    }

    /// The mapping of the `contactId` identity.
    pub fn identity(&self) -> Option<&AttributeMapping> {
        self.mappings.iter().find(|m| m.is_identity())
    }
}

/// An audience to activate, and the contact column that receives its status (seed 002's "Mapping ID").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AudienceMapping {
    /// The audience (segment) id, as profiles' `segmentMembership` carries it.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The custom column's name, with or without the customization prefix.
    pub mapping_id: String,
}

impl AudienceMapping {
    /// The contact column that holds this audience's status: the mapping ID with the customization prefix.
    pub fn column(&self, prefix: &crate::target::CustomizationPrefix) -> String {
        prefix.column(&self.mapping_id)
    }

    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("audience '{name}'"),
            None => format!("audience {}", self.id),
        }
    }
}

/// A profile attribute (an XDM path) written onto a contact column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttributeMapping {
    /// `person.name.firstName`, or the identity `contactId` (also written `identityMap.contactId`).
    pub source: String,
    /// The contact column's logical name (`firstname`).
    pub target: String,
    /// The source's type when dynsync does not know the path (a custom field group's field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_type: Option<XdmType>,
}

impl AttributeMapping {
    pub fn is_identity(&self) -> bool {
        let source = self.source.trim();
        let name = source.strip_prefix("identityMap.").unwrap_or(source);
        name.eq_ignore_ascii_case("contactid")
    }
}

/// What is written in an audience's column for each membership status. By default the status itself, as Adobe's
/// destination writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusValues {
    pub realized: String,
    pub existing: String,
    pub exited: String,
}

impl Default for StatusValues {
    fn default() -> Self {
        StatusValues { realized: "realized".into(), existing: "existing".into(), exited: "exited".into() }
    }
}

impl StatusValues {
    pub fn longest(&self) -> usize {
        [&self.realized, &self.existing, &self.exited].iter().map(|v| v.chars().count()).max().unwrap_or(0)
    }
}

/// What to do with a mapped attribute that a profile has no value for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmptyValues {
    /// Leave the column as it is in Dynamics (and never send an empty date, which Dynamics refuses).
    #[default]
    Skip,
    /// Clear the column (write null).
    Clear,
}

/// A contact column as Dynamics describes it, for tests: custom when prefixed, read-only for the computed ones.
#[cfg(test)]
pub(crate) fn test_column(name: &str, kind: dataverse::metadata::ColumnType) -> dataverse::metadata::ColumnDefinition {
    dataverse::metadata::ColumnDefinition {
        logical_name: name.into(),
        schema_name: name.into(),
        kind,
        is_custom: name.contains('_'),
        is_primary_id: name == "contactid",
        valid_for_create: true,
        valid_for_update: name != "fullname" && name != "contactid",
        required_level: "None".into(),
        display_name: None,
        precision: None,
        targets: Vec::new(),
    }
}
