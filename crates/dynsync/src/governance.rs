//! Data governance: labels on the fields of a flow's source, and policies that say which labels may not reach
//! which destination — as AEP labels schema fields (contract `C1`–`C12`, identity `I1`–`I2`, sensitive `S1`–`S2`,
//! or labels of one's own) and enforces data-usage policies on activation. A label on a field holds for the fields
//! under it (`person` labelled `S1` labels `person.birthDate`). Saving or enabling a flow that would export a field
//! a policy denies for its destination is refused, naming the field, the label and the policy.
//!
//! Each sandbox has one governance document; each job says which source fields its flows export
//! ([`crate::pipeline::JobDefinition::exported_fields`]).

use crate::checks::Problem;
use crate::ids::TargetConnectionId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Labelled fields a sandbox may hold: far more than any source schema has, small enough to check at once.
pub const MAX_LABELLED_FIELDS: usize = 10_000;
/// Policies a sandbox may hold.
pub const MAX_POLICIES: usize = 200;

/// A data-usage label: `C2`, `I1`, `S1`, or one's own (`PHI`, `minors`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Label(String);

impl TryFrom<String> for Label {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let valid = !text.is_empty()
            && text.len() <= 32
            && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if valid {
            Ok(Label(text))
        } else {
            Err(format!("'{text}' is not a label: use 1 to 32 letters, digits, '_' or '-' (C2, I1, S1, PHI)"))
        }
    }
}

impl From<Label> for String {
    fn from(label: Label) -> String {
        label.0
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A policy: the labels that may not reach its destinations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    pub name: String,
    /// The labels denied.
    pub deny: BTreeSet<Label>,
    /// The destinations it holds for; every destination when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_connection_ids: Vec<TargetConnectionId>,
}

impl Policy {
    fn holds_for(&self, target: Option<TargetConnectionId>) -> bool {
        self.target_connection_ids.is_empty() || target.is_some_and(|t| self.target_connection_ids.contains(&t))
    }
}

/// A sandbox's labels and policies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Governance {
    /// Labels by field path, as the source names its fields (`person.birthDate`, `UserDetails.Email`).
    #[serde(default)]
    pub labels: BTreeMap<String, BTreeSet<Label>>,
    #[serde(default)]
    pub policies: Vec<Policy>,
}

/// A source field a flow sends to its destination, and where in the flow it is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedField {
    /// Where in the flow: `mappings[2].source`.
    pub field: String,
    /// The source field's path.
    pub path: String,
}

impl Governance {
    /// What is wrong with the document itself, every problem at once.
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.labels.len() > MAX_LABELLED_FIELDS {
            problems.push(Problem::new(
                "labels",
                format!("{} fields are labelled, more than the {MAX_LABELLED_FIELDS} a sandbox may hold: label a parent field instead of each of its fields", self.labels.len()),
            ));
        }
        if self.policies.len() > MAX_POLICIES {
            problems.push(Problem::new(
                "policies",
                format!("{} policies, more than the {MAX_POLICIES} a sandbox may hold: merge policies that deny for the same destinations", self.policies.len()),
            ));
        }
        if !problems.is_empty() {
            return problems;
        }
        for (path, labels) in &self.labels {
            if path.trim().is_empty() || path.len() > 1_000 || path.split('.').any(str::is_empty) {
                problems.push(Problem::new(
                    "labels",
                    format!(
                        "'{}' is not a field path: write it as the source names it, with dots (person.birthDate)",
                        crate::text::clip(path, 60)
                    ),
                ));
            } else if labels.is_empty() {
                problems.push(Problem::new(format!("labels.{path}"), "has no label: give one, or leave the field out"));
            }
        }
        let mut names = BTreeSet::new();
        for (i, policy) in self.policies.iter().enumerate() {
            let name = policy.name.trim();
            if name.is_empty() || name.chars().count() > 200 {
                problems.push(Problem::new(
                    format!("policies[{i}].name"),
                    "give the policy a name of 1 to 200 characters, to be named when it refuses a flow",
                ));
            } else if !names.insert(name.to_string()) {
                problems.push(Problem::new(
                    format!("policies[{i}].name"),
                    format!("another policy is named '{name}': give each its own name"),
                ));
            }
            if policy.deny.is_empty() {
                problems.push(Problem::new(
                    format!("policies[{i}].deny"),
                    "denies no label: name the labels that may not reach its destinations",
                ));
            }
        }
        problems
    }

    /// The labels of a field, each with the labelled path it comes from (the field itself or a field above it).
    pub fn labels_of<'a>(&'a self, path: &'a str) -> impl Iterator<Item = (&'a Label, &'a str)> + 'a {
        let ancestors = path.match_indices('.').map(|(i, _)| &path[..i]).chain(std::iter::once(path));
        ancestors
            .filter_map(|p| self.labels.get_key_value(p))
            .flat_map(|(p, labels)| labels.iter().map(move |l| (l, p.as_str())))
    }

    /// Every field of `exported` that a policy denies for `target`: one problem per field, label and policy.
    pub fn violations(&self, exported: &[ExportedField], target: Option<TargetConnectionId>) -> Vec<Problem> {
        let mut problems = Vec::new();
        for policy in self.policies.iter().filter(|p| p.holds_for(target)) {
            for field in exported {
                for (label, from) in self.labels_of(&field.path).filter(|(l, _)| policy.deny.contains(l)) {
                    let inherited = if from == field.path { String::new() } else { format!(" (from {from})") };
                    let scope = match target {
                        Some(t) if !policy.target_connection_ids.is_empty() => format!("target connection {t}"),
                        _ => "every destination".to_string(),
                    };
                    problems.push(Problem::new(
                        field.field.clone(),
                        format!(
                            "{} carries the label {label}{inherited}, and policy '{}' denies {label} for {scope}: \
                             leave the field out of the flow, or change the policy or the field's labels",
                            field.path, policy.name
                        ),
                    ));
                }
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn governance(json: serde_json::Value) -> Governance {
        serde_json::from_value(json).unwrap()
    }

    fn exported(field: &str, path: &str) -> ExportedField {
        ExportedField { field: field.into(), path: path.into() }
    }

    #[test]
    fn a_denied_label_on_a_field_or_above_it_is_named_with_the_policy() {
        let target = TargetConnectionId::new();
        let g = governance(serde_json::json!({
            "labels": {"person": ["S1"], "personalEmail.address": ["I1", "C2"]},
            "policies": [
                {"name": "No sensitive data", "deny": ["S1"]},
                {"name": "No identities to this one", "deny": ["I1"], "targetConnectionIds": [target]},
            ]
        }));
        assert_eq!(g.problems(), vec![]);
        let fields = [
            exported("mappings[0].source", "person.birthDate"),
            exported("mappings[1].source", "personalEmail.address"),
            exported("mappings[2].source", "loyalty.points"),
        ];
        let problems = g.violations(&fields, Some(target));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].field, "mappings[0].source");
        assert!(problems[0].message.starts_with("person.birthDate carries the label S1 (from person), and policy 'No sensitive data' denies S1 for every destination"), "{}", problems[0].message);
        assert!(
            problems[1].message.contains("policy 'No identities to this one' denies I1 for target connection"),
            "{}",
            problems[1].message
        );
        assert_eq!(
            g.violations(&fields, Some(TargetConnectionId::new())).len(),
            1,
            "the second policy holds for its target only"
        );
        assert!(
            g.violations(&[exported("x", "personal")], None).is_empty(),
            "a label holds below its field, not beside it"
        );
    }

    #[test]
    fn a_wrong_document_is_refused_with_every_problem() {
        let g = governance(serde_json::json!({
            "labels": {"a..b": ["S1"], "c": []},
            "policies": [{"name": "p", "deny": []}, {"name": "p", "deny": ["C2"]}]
        }));
        let fields: Vec<String> = g.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, vec!["labels", "labels.c", "policies[0].deny", "policies[1].name"]);
        assert!(serde_json::from_value::<Governance>(serde_json::json!({"labels": {"a": ["not a label"]}})).is_err());
    }
}
