//! A lead intake as its user defines it: the body of `POST /flows` with the lead intake's flow spec. It names the
//! Dynamics destination (a target connection, as every flow does), how long a person's later steps still update
//! their lead, whether leads are matched to accounts, which custom columns take the parts the standard lead
//! table has no column for, and who is told of each new lead. It is checked against the environment's real
//! lead table when saved, every problem reported at once, so that a lead never fails for a column that was
//! never there.

use super::columns::{ChoiceColumn, LEAD_SOURCE_WEB, LeadColumns, TextColumn};
use super::notify::recipients;
use crate::checks::Problem;
use crate::governance::ExportedField;
use crate::ids::TargetConnectionId;
use crate::pipeline::{Flow, FlowSpecRef, JobDefinition};
use crate::specs::LEAD_INTAKE_FLOW_SPEC;
use dataverse::{ColumnType, TableDefinition};
use serde::{Deserialize, Serialize};

/// The name lead intake flows are stored with.
pub const JOB: &str = "leads";

/// The longest dedup window: ten years.
pub const MAX_WINDOW_DAYS: u32 = 3650;

/// A lead intake as stored.
pub type LeadIntake = Flow<IntakeDefinition>;

/// What a user writes to define a lead intake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IntakeDefinition {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The lead intake's flow spec.
    pub flow_spec: FlowSpecRef,
    /// The Dynamics destination, as a target connection; exactly one.
    pub target_connection_ids: Vec<TargetConnectionId>,
    /// How many days after a lead was created a later step of the same person for the same offer still updates
    /// it (and adds a note) instead of making a new lead.
    #[serde(default = "default_window")]
    pub dedup_window_days: u32,
    /// Set a new lead's parent account to the account whose email or website has the lead's email domain.
    #[serde(default)]
    pub match_accounts_by_domain: bool,
    /// Custom columns for the parts the standard lead table has no column for.
    #[serde(default)]
    pub columns: CustomColumns,
    /// Who is emailed each new lead: addresses separated by semicolons, as Partner Center's field takes them;
    /// empty for no one.
    #[serde(default)]
    pub notify: String,
}

fn default_window() -> u32 {
    30
}

/// Custom columns of the lead table (logical names), each optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomColumns {
    /// The lead source (`AzureMarketplace`, `AppSource`, `SaaS`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The action code (`PLT`, `INS`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The publisher id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    /// The offer (`publisher.offer`): when set, leads are matched by it rather than by the offer in the topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<String>,
    /// The ISO 3166-1 alpha-2 country code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country_code: Option<String>,
    /// A Yes/No column set on Partner Center's test leads, to filter them out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_flag: Option<String>,
    /// The `leadsourcecode` value written (8, Web, by default); `null` writes none.
    #[serde(default = "web", skip_serializing_if = "is_web")]
    pub lead_source_code: Option<i32>,
}

impl Default for CustomColumns {
    fn default() -> Self {
        CustomColumns {
            source: None,
            action: None,
            publisher: None,
            offer: None,
            country_code: None,
            test_flag: None,
            lead_source_code: web(),
        }
    }
}

fn web() -> Option<i32> {
    Some(LEAD_SOURCE_WEB)
}

fn is_web(code: &Option<i32>) -> bool {
    *code == web()
}

impl JobDefinition for IntakeDefinition {
    const JOB: &'static str = JOB;

    fn name(&self) -> &str {
        &self.name
    }

    fn target_connection_id(&self) -> Option<TargetConnectionId> {
        self.target_connection_ids.first().copied()
    }

    /// Every field of a Partner Center lead: an intake writes all it is given.
    fn exported_fields(&self) -> Vec<ExportedField> {
        LEAD_FIELDS
            .iter()
            .map(|path| ExportedField { field: "targetConnectionIds[0]".into(), path: path.to_string() })
            .collect()
    }
}

/// The fields of a Partner Center lead, as it posts them: what a lead intake's labels name.
pub const LEAD_FIELDS: &[&str] = &[
    "UserDetails.FirstName",
    "UserDetails.LastName",
    "UserDetails.Email",
    "UserDetails.Phone",
    "UserDetails.Country",
    "UserDetails.Company",
    "UserDetails.Title",
    "LeadSource",
    "ActionCode",
    "OfferTitle",
    "Description",
];

impl IntakeDefinition {
    /// The definition as stored: names trimmed, column names in lower case as the Web API names them.
    pub fn normalized(mut self) -> IntakeDefinition {
        self.name = self.name.trim().to_string();
        self.notify = self.notify.trim().to_string();
        for column in self.columns.names_mut() {
            *column = column.trim().to_ascii_lowercase();
        }
        self
    }

    pub fn window(&self) -> chrono::Duration {
        chrono::Duration::days(i64::from(self.dedup_window_days))
    }

    /// The recipients of new leads' notifications; none when `notify` is empty (or not addresses, which a saved
    /// intake never has).
    pub fn recipients(&self) -> Vec<String> {
        recipients(&self.notify).map(|r| r.iter().map(ToString::to_string).collect()).unwrap_or_default()
    }

    /// What can be checked without Dynamics: the name, the spec, the target, the window, the recipients.
    pub fn check_shape(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |field: &str, message: String| problems.push(Problem::new(field, message));
        if self.name.is_empty() {
            problem("name", "the intake has no name: give it one, as the dashboard and runs show it".into());
        }
        if self.flow_spec.id != LEAD_INTAKE_FLOW_SPEC {
            problem(
                "flowSpec.id",
                format!("{} is not the lead intake's flow spec: use {LEAD_INTAKE_FLOW_SPEC}", self.flow_spec.id),
            );
        }
        if self.target_connection_ids.len() != 1 {
            problem(
                "targetConnectionIds",
                format!(
                    "a lead intake writes to exactly one Dynamics target connection, and {} are given",
                    self.target_connection_ids.len()
                ),
            );
        }
        if !(1..=MAX_WINDOW_DAYS).contains(&self.dedup_window_days) {
            problem(
                "dedupWindowDays",
                format!("{} days is not a dedup window: give 1 to {MAX_WINDOW_DAYS} days", self.dedup_window_days),
            );
        }
        if !self.notify.is_empty()
            && let Err(e) = recipients(&self.notify)
        {
            problem("notify", e.to_string());
        }
        problems
    }

    /// The columns leads are written to, read off the environment's lead table: every custom column must exist,
    /// be writable, and hold what goes into it. Every problem is reported at once.
    pub fn lead_columns(&self, lead: &TableDefinition) -> Result<LeadColumns, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut columns = LeadColumns::default();
        for standard in [
            &mut columns.first_name,
            &mut columns.last_name,
            &mut columns.email,
            &mut columns.phone,
            &mut columns.company,
            &mut columns.job_title,
            &mut columns.country,
            &mut columns.subject,
            &mut columns.description,
        ] {
            if let Some(max) = lead.column(&standard.name).and_then(text_length) {
                standard.max_len = max;
            }
        }
        let custom = &self.columns;
        let mut text = |field: &str, name: &Option<String>| -> Option<TextColumn> {
            let name = name.as_ref()?;
            match lead.column(name) {
                Some(c) if !c.valid_for_create || !c.valid_for_update => {
                    problems
                        .push(Problem::new(field, format!("lead column {name} is read-only: pick a writable column")));
                    None
                }
                Some(c) => match text_length(c) {
                    Some(max) => Some(TextColumn::new(c.logical_name.clone(), max)),
                    None => {
                        problems.push(Problem::new(
                            field,
                            format!("lead column {name} is not text ({:?}): pick a text column", c.kind),
                        ));
                        None
                    }
                },
                None => {
                    problems.push(missing(field, name, lead));
                    None
                }
            }
        };
        columns.source = text("columns.source", &custom.source);
        columns.action = text("columns.action", &custom.action);
        columns.publisher = text("columns.publisher", &custom.publisher);
        columns.offer = text("columns.offer", &custom.offer);
        columns.country_code = text("columns.countryCode", &custom.country_code);
        if let Some(name) = &custom.test_flag {
            match lead.column(name) {
                Some(c) if matches!(c.kind, ColumnType::Boolean) => columns.test_flag = Some(c.logical_name.clone()),
                Some(c) => problems.push(Problem::new(
                    "columns.testFlag",
                    format!("lead column {name} is not Yes/No ({:?}): pick a Yes/No column", c.kind),
                )),
                None => problems.push(missing("columns.testFlag", name, lead)),
            }
        }
        columns.lead_source_code =
            custom.lead_source_code.map(|value| ChoiceColumn { name: "leadsourcecode".into(), value });
        if problems.is_empty() { Ok(columns) } else { Err(problems) }
    }
}

impl CustomColumns {
    fn names_mut(&mut self) -> impl Iterator<Item = &mut String> {
        [
            &mut self.source,
            &mut self.action,
            &mut self.publisher,
            &mut self.offer,
            &mut self.country_code,
            &mut self.test_flag,
        ]
        .into_iter()
        .flatten()
    }
}

fn text_length(column: &dataverse::ColumnDefinition) -> Option<usize> {
    match column.kind {
        ColumnType::String { max_length } | ColumnType::Memo { max_length } => {
            Some(max_length.map_or(4000, |m| m as usize))
        }
        _ => None,
    }
}

fn missing(field: &str, name: &str, lead: &TableDefinition) -> Problem {
    let message = format!("the lead table has no column {name}");
    Problem::missing_column(field, name, lead, message, "Create it in Dynamics, or check the name")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::test_column;
    use dataverse::ColumnType;

    fn definition(json: serde_json::Value) -> IntakeDefinition {
        serde_json::from_value::<IntakeDefinition>(json).unwrap().normalized()
    }

    fn intake(extra: serde_json::Value) -> IntakeDefinition {
        let mut body = serde_json::json!({
            "name": " Marketplace leads ",
            "flowSpec": {"id": LEAD_INTAKE_FLOW_SPEC},
            "targetConnectionIds": [uuid::Uuid::new_v4()],
        });
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        definition(body)
    }

    fn lead_table() -> TableDefinition {
        let mut columns: Vec<_> = ["firstname", "lastname", "emailaddress1", "subject", "new_offer", "new_source"]
            .iter()
            .map(|n| test_column(n, ColumnType::String { max_length: Some(100) }))
            .collect();
        columns.push(test_column("new_istest", ColumnType::Boolean));
        columns.push(test_column("new_count", ColumnType::Integer));
        TableDefinition {
            logical_name: "lead".into(),
            entity_set_name: "leads".into(),
            primary_id: "leadid".into(),
            primary_name: Some("fullname".into()),
            display_name: None,
            change_tracking: false,
            columns,
        }
    }

    #[test]
    fn a_minimal_intake_takes_the_defaults_a_dynamics_admin_expects() {
        let d = intake(serde_json::json!({}));
        assert_eq!(d.name, "Marketplace leads");
        assert_eq!(d.dedup_window_days, 30);
        assert!(!d.match_accounts_by_domain);
        assert!(d.check_shape().is_empty(), "{:?}", d.check_shape());
        let columns = d.lead_columns(&lead_table()).unwrap();
        assert_eq!(columns.lead_source_code, Some(ChoiceColumn { name: "leadsourcecode".into(), value: 8 }));
        assert_eq!(columns.subject.max_len, 100, "lengths are read off the environment's table");
    }

    #[test]
    fn every_shape_problem_is_reported_at_once() {
        let mut d = intake(
            serde_json::json!({"name": "", "dedupWindowDays": 0, "notify": "sales@contoso.com; not-an-address"}),
        );
        d.target_connection_ids.clear();
        let fields: Vec<String> = d.check_shape().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["name", "targetConnectionIds", "dedupWindowDays", "notify"]);
    }

    #[test]
    fn custom_columns_must_exist_hold_text_or_yes_no_and_missing_ones_get_the_closest_names() {
        let d = intake(serde_json::json!({"columns": {
            "offer": "New_Offer", "source": "new_sourse", "action": "new_count", "testFlag": "new_offer"
        }}));
        let problems = d.lead_columns(&lead_table()).unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["columns.source", "columns.action", "columns.testFlag"]);
        assert_eq!(problems[0].closest.first().map(String::as_str), Some("new_source"));
        assert!(problems[1].message.contains("not text"), "{}", problems[1].message);
        assert!(problems[2].message.contains("not Yes/No"), "{}", problems[2].message);

        let good = intake(
            serde_json::json!({"columns": {"offer": "New_Offer", "testFlag": "new_istest", "leadSourceCode": null}}),
        );
        let columns = good.lead_columns(&lead_table()).unwrap();
        assert_eq!(columns.offer, Some(TextColumn::new("new_offer", 100)));
        assert_eq!(columns.test_flag.as_deref(), Some("new_istest"));
        assert_eq!(columns.lead_source_code, None);
    }

    #[test]
    fn an_unknown_field_is_refused_by_name() {
        let err = serde_json::from_value::<IntakeDefinition>(serde_json::json!({
            "name": "x", "flowSpec": {"id": LEAD_INTAKE_FLOW_SPEC}, "targetConnectionIds": [], "dedupWindow": 3
        }))
        .unwrap_err();
        assert!(err.to_string().contains("dedupWindow"), "{err}");
    }
}
