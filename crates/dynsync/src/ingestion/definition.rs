//! An ingestion flow as Flow Service's `POST /flows` defines it: the CRM-to-dataset flow spec, one source
//! connection, one dataset target, `transformations` (`Copy` with its `deltaColumn`, `Mapping` with the columns to
//! load and their names in the dataset) and `scheduleParams`. Every problem of a body is reported at once, each
//! with the field it is in.

use super::outbound::{self, Outbound, Replacement};
use super::schedule::{Schedule, ScheduleParams};
use super::shape::{ChoiceAs, ColumnMapping};
use crate::governance::ExportedField;
use crate::ids::{SourceConnectionId, TargetConnectionId};
use crate::pipeline::JobDefinition;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// The job ingestion flows are stored with.
pub const JOB: &str = "ingestion";

/// The column a table without change tracking is read incrementally by, when the flow names none.
pub const DEFAULT_DELTA_COLUMN: &str = "modifiedon";

/// A table without change tracking is scanned for deletes once a day, unless the flow says otherwise.
pub const DEFAULT_SCAN_SECONDS: i64 = 86_400;

fn default_scan_seconds() -> i64 {
    DEFAULT_SCAN_SECONDS
}

/// What an ingestion flow is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestionDefinition {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub source_connection_id: SourceConnectionId,
    pub target_connection_id: TargetConnectionId,
    pub schedule: Schedule,
    /// The column a table without change tracking is read incrementally by.
    pub delta_column: String,
    /// How often a table without change tracking is read whole, to find the rows deleted since, in seconds.
    #[serde(default = "default_scan_seconds")]
    pub scan_seconds: i64,
    /// The columns loaded, and their names in the dataset; every loadable column under its own name when empty.
    #[serde(default)]
    pub columns: Vec<ColumnMapping>,
    /// What is done to each row on its way out: replacements, a filter, deletes.
    #[serde(default)]
    pub outbound: Outbound,
}

impl IngestionDefinition {
    /// The dataset columns an update leaves as the destination has them: those mapped with "apply updates" off,
    /// with the label of a choice and the table of a lookup that come with them.
    pub fn kept_on_update(&self) -> Vec<String> {
        let kept = self.columns.iter().filter(|m| !m.apply_updates);
        kept.flat_map(|m| {
            [m.destination.clone(), format!("{}_label", m.destination), format!("{}_table", m.destination)]
        })
        .collect()
    }
}

impl JobDefinition for IngestionDefinition {
    const JOB: &'static str = JOB;

    fn name(&self) -> &str {
        &self.name
    }

    fn target_connection_id(&self) -> Option<TargetConnectionId> {
        Some(self.target_connection_id)
    }

    /// An ingestion sends nothing out of dynsync's sources: it reads Dynamics into a dataset.
    fn exported_fields(&self) -> Vec<ExportedField> {
        Vec::new()
    }
}

/// A problem with a flow's body: where, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DefinitionProblem {
    pub field: String,
    pub message: String,
}

/// `POST /flows` for an ingestion, as Flow Service takes it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowRequest {
    pub name: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub source_connection_ids: Vec<String>,
    #[serde(default)]
    pub target_connection_ids: Vec<String>,
    #[serde(default)]
    pub transformations: Vec<Transformation>,
    pub schedule_params: Option<ScheduleParams>,
}

#[derive(Debug, Deserialize)]
pub struct Transformation {
    pub name: String,
    #[serde(default)]
    pub params: Json,
}

/// `Copy`'s params: the delta column of a table read without change tracking.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CopyParams {
    delta_column: Option<DeltaColumn>,
    /// dynsync's: how often, in seconds, a table without change tracking is read whole to find deletes.
    scan_interval_seconds: Option<i64>,
    /// dynsync's: whether a record deleted in Dynamics is deleted from the destination (yes by default).
    apply_deletes: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct DeltaColumn {
    name: String,
}

/// `Mapping`'s params: dynsync takes the mappings inline, in the shape of a mapping set's.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MappingParams {
    mapping_id: Option<String>,
    #[serde(default)]
    mappings: Vec<WireMapping>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMapping {
    source_attribute: Option<String>,
    #[serde(alias = "destinationXdmPath")]
    destination: Option<String>,
    /// A choice as `value`, `label`, or `both` (the value beside a `_label` column).
    picklist: Option<String>,
    apply_updates: Option<bool>,
}

/// `Replace`'s params: values swapped for others on the way out.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReplaceParams {
    #[serde(default)]
    replacements: Vec<WireReplacement>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireReplacement {
    column: Option<String>,
    #[serde(default)]
    value: Json,
    #[serde(default)]
    new_value: Json,
}

/// Where the mappings are in a flow's body, for problems and shape checks.
pub fn mappings_field(request: &FlowRequest) -> String {
    let index = request.transformations.iter().position(|t| t.name.eq_ignore_ascii_case("Mapping")).unwrap_or(0);
    format!("transformations[{index}].params.mappings")
}

impl FlowRequest {
    /// The definition this body describes, or every problem with it.
    pub fn definition(&self, now: DateTime<Utc>) -> Result<IngestionDefinition, Vec<DefinitionProblem>> {
        let mut problems = Vec::new();
        let mut problem = |field: &str, message: String| {
            problems.push(DefinitionProblem { field: field.to_string(), message });
        };
        let name = self.name.as_deref().map(str::trim).unwrap_or("");
        if name.is_empty() {
            problem("name", "a flow needs a name".into());
        }
        let source = one_id::<SourceConnectionId>(&self.source_connection_ids, "sourceConnectionIds", &mut problem);
        let target = one_id::<TargetConnectionId>(&self.target_connection_ids, "targetConnectionIds", &mut problem);
        let schedule = match Schedule::from_params(self.schedule_params.as_ref(), now) {
            Ok(schedule) => Some(schedule),
            Err(found) => {
                for (field, message) in found {
                    problem(&field, message);
                }
                None
            }
        };
        let mut delta_column = DEFAULT_DELTA_COLUMN.to_string();
        let mut scan_seconds = DEFAULT_SCAN_SECONDS;
        let mut columns = Vec::new();
        let mut rules = Outbound::default();
        for (i, t) in self.transformations.iter().enumerate() {
            let field = format!("transformations[{i}]");
            match t.name.as_str() {
                "Copy" => match serde_json::from_value::<CopyParams>(t.params.clone()) {
                    Ok(params) => {
                        if let Some(d) = params.delta_column {
                            delta_column = d.name.trim().to_ascii_lowercase();
                        }
                        match params.scan_interval_seconds {
                            Some(n) if n >= 1 => scan_seconds = n,
                            Some(n) => problem(
                                &format!("{field}.params.scanIntervalSeconds"),
                                format!("{n} is not a number of seconds: give 1 or more (86400 scans once a day)"),
                            ),
                            None => {}
                        }
                        rules.apply_deletes = params.apply_deletes.unwrap_or(true);
                    }
                    Err(e) => problem(&format!("{field}.params"), format!("Copy's params cannot be read: {e}")),
                },
                "Mapping" => match serde_json::from_value::<MappingParams>(t.params.clone()) {
                    Ok(params) => {
                        if params.mapping_id.is_some() && params.mappings.is_empty() {
                            problem(
                                &format!("{field}.params.mappingId"),
                                "dynsync keeps no mapping sets: give the columns inline, as \"mappings\": \
                                 [{\"sourceAttribute\": \"firstname\", \"destination\": \"first_name\"}]"
                                    .into(),
                            );
                        }
                        for (j, m) in params.mappings.iter().enumerate() {
                            let at = format!("{field}.params.mappings[{j}]");
                            let source = m.source_attribute.as_deref().map(str::trim).unwrap_or("");
                            if source.is_empty() {
                                problem(&format!("{at}.sourceAttribute"), "name the Dynamics column to load".into());
                                continue;
                            }
                            let destination = m.destination.as_deref().map(str::trim).filter(|d| !d.is_empty());
                            let destination = destination.unwrap_or(source);
                            if !valid_column_name(destination) {
                                problem(
                                    &format!("{at}.destination"),
                                    format!(
                                        "'{destination}' is not a dataset column name: use letters, digits and _, \
                                         starting with a letter"
                                    ),
                                );
                                continue;
                            }
                            let choice = match m.picklist.as_deref() {
                                None | Some("both") => ChoiceAs::Both,
                                Some("value") => ChoiceAs::Value,
                                Some("label") => ChoiceAs::Label,
                                Some(other) => {
                                    problem(
                                        &format!("{at}.picklist"),
                                        format!("'{other}' is not how a choice is written: use value, label or both"),
                                    );
                                    ChoiceAs::Both
                                }
                            };
                            columns.push(ColumnMapping {
                                source: source.to_ascii_lowercase(),
                                destination: destination.to_string(),
                                choice,
                                apply_updates: m.apply_updates.unwrap_or(true),
                            });
                        }
                    }
                    Err(e) => problem(&format!("{field}.params"), format!("Mapping's params cannot be read: {e}")),
                },
                "Replace" => match serde_json::from_value::<ReplaceParams>(t.params.clone()) {
                    Ok(params) => {
                        for (j, r) in params.replacements.into_iter().enumerate() {
                            let at = format!("{field}.params.replacements[{j}]");
                            let column = r.column.as_deref().map(str::trim).unwrap_or("");
                            if column.is_empty() {
                                problem(
                                    &format!("{at}.column"),
                                    "name the dataset column whose value is replaced".into(),
                                );
                                continue;
                            }
                            if r.value.is_array()
                                || r.value.is_object()
                                || r.new_value.is_array()
                                || r.new_value.is_object()
                            {
                                problem(&at, "a replacement swaps one value for another: give value and newValue as text, a number, true or false, or null".into());
                                continue;
                            }
                            rules.replacements.push(Replacement {
                                column: column.to_string(),
                                value: r.value,
                                new_value: r.new_value,
                                new_label: None,
                            });
                        }
                    }
                    Err(e) => problem(&format!("{field}.params"), format!("Replace's params cannot be read: {e}")),
                },
                "Filter" => {
                    let mut found = Vec::new();
                    rules.filter = outbound::parse_filter(&t.params, &format!("{field}.params"), &mut found);
                    for (at, message) in found {
                        problem(&at, message);
                    }
                    match t.params.get("deleteFilteredOut").map(Json::as_bool) {
                        None => {}
                        Some(Some(delete)) => rules.delete_filtered_out = delete,
                        Some(None) => {
                            problem(&format!("{field}.params.deleteFilteredOut"), "give true or false".into())
                        }
                    }
                }
                other => problem(
                    &format!("{field}.name"),
                    format!("'{other}' is not a transformation of an ingestion: use Copy, Mapping, Replace or Filter"),
                ),
            }
        }
        match (source, target, schedule) {
            (Some(source), Some(target), Some(schedule)) if problems.is_empty() => Ok(IngestionDefinition {
                name: name.to_string(),
                description: self.description.clone(),
                source_connection_id: source,
                target_connection_id: target,
                schedule,
                delta_column,
                scan_seconds,
                columns,
                outbound: rules,
            }),
            _ => Err(problems),
        }
    }
}

fn valid_column_name(name: &str) -> bool {
    name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("_dynsync")
}

fn one_id<T: std::str::FromStr>(ids: &[String], field: &str, problem: &mut impl FnMut(&str, String)) -> Option<T> {
    match ids {
        [one] => match one.parse() {
            Ok(id) => Some(id),
            Err(_) => {
                problem(&format!("{field}[0]"), format!("'{one}' is not an id"));
                None
            }
        },
        [] => {
            problem(field, format!("an ingestion flow needs one id in {field}"));
            None
        }
        _ => {
            problem(
                field,
                format!("an ingestion flow reads one source and writes one dataset: give one id in {field}"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_seeds_flow_body_reads_as_a_definition() {
        let body = json!({
            "name": "Dynamics contacts",
            "flowSpec": {"id": "14518937-270c-4525-bdec-c2ba7cce3860", "version": "1.0"},
            "sourceConnectionIds": ["2f1ba7b5-bb47-4c1b-8a7f-6d7a1ea9e0a4"],
            "targetConnectionIds": ["7a1e1b22-58a4-4a6e-9c58-8f3a7c1d6a10"],
            "transformations": [
                {"name": "Copy", "params": {"deltaColumn": {"name": "modifiedOn", "dateFormat": "yyyy-MM-ddTHH:mm:ssZ", "timezone": "UTC"}}},
                {"name": "Mapping", "params": {"mappings": [
                    {"sourceAttribute": "firstname", "destinationXdmPath": "first_name"},
                    {"sourceAttribute": "emailaddress1"}
                ]}}
            ],
            "scheduleParams": {"startTime": "1567411548", "frequency": "minute", "interval": "15"}
        });
        let request: FlowRequest = serde_json::from_value(body).unwrap();
        let d = request.definition(Utc::now()).unwrap();
        assert_eq!(d.delta_column, "modifiedon");
        assert_eq!(d.columns[0], ColumnMapping::new("firstname", "first_name"));
        assert_eq!(d.columns[1].destination, "emailaddress1");
    }

    #[test]
    fn every_problem_of_a_flow_body_is_reported_with_its_field() {
        let body = json!({
            "sourceConnectionIds": [],
            "targetConnectionIds": ["x"],
            "transformations": [
                {"name": "Mapping", "params": {"mappingId": "abc"}},
                {"name": "Mapping", "params": {"mappings": [{"sourceAttribute": "firstname", "destination": "first name"}]}},
                {"name": "Enrich"}
            ],
            "scheduleParams": {"frequency": "minute", "interval": "5"}
        });
        let request: FlowRequest = serde_json::from_value(body).unwrap();
        let problems = request.definition(Utc::now()).unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "name",
                "sourceConnectionIds",
                "targetConnectionIds[0]",
                "scheduleParams.interval",
                "transformations[0].params.mappingId",
                "transformations[1].params.mappings[0].destination",
                "transformations[2].name"
            ]
        );
    }
}
