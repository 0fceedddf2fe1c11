//! An email events flow as its user defines it: the body of `POST /flows` with the engagement events flow spec.
//! It names the email service that posts the events (so the inlet reads its format and checks its signature), the
//! Dynamics destination (a target connection, whose customization prefix names the Email event table), which
//! contact columns an opt-out sets, and which events also make a follow-up task. It is checked against the
//! environment's tables when saved, every problem reported at once.

use super::formats::Provider;
use super::formats::mailgun::MailgunKey;
use super::formats::sendgrid::SendGridKey;
use super::formats::sns::SigningCertificate;
use crate::checks::Problem;
use crate::governance::ExportedField;
use crate::ids::TargetConnectionId;
use crate::pipeline::{Flow, FlowSpecRef, JobDefinition};
use crate::secrets::Secret;
use crate::specs::ENGAGEMENT_EVENTS_FLOW_SPEC;
use dataverse::{ColumnType, TableDefinition};
use serde::{Deserialize, Serialize};

/// The name email events flows are stored with.
pub const JOB: &str = "engagement-events";

/// An email events flow as stored.
pub type EventsFlow = Flow<EventsDefinition>;

/// What a user writes to define an email events flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventsDefinition {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The engagement events flow spec.
    pub flow_spec: FlowSpecRef,
    /// The Dynamics destination, as a target connection; exactly one.
    pub target_connection_ids: Vec<TargetConnectionId>,
    /// The service that posts the events: `sendgrid`, `mailgun`, `ses` or `dynsync`.
    pub provider: Provider,
    /// SendGrid's verification key (Settings, Mail Settings, Signed Event Webhook): once given, every post must
    /// carry SendGrid's signature of it. A public key, not a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_key: Option<String>,
    /// Mailgun's HTTP webhook signing key: taken when the flow is saved, then kept encrypted in the store, apart
    /// from the definition, and never shown again. Once a flow has one, every post must carry Mailgun's signature.
    #[serde(default, skip_serializing, deserialize_with = "secret")]
    pub signing_key: Option<Secret>,
    /// Amazon SNS signing certificates (PEM) an SES flow trusts instead of fetching the one each message names, for
    /// environments that cannot reach AWS. Once given, every SNS message must be signed with one of them. Public
    /// certificates, not secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sns_certificates: Vec<String>,
    /// The contact's Yes/No columns an unsubscribe, a spam complaint or a hard bounce sets, and a resubscribe
    /// clears; empty to leave consent alone.
    #[serde(default = "default_opt_out_columns")]
    pub opt_out_columns: Vec<String>,
    /// Which events also make a task on the contact, for a person to follow up.
    #[serde(default)]
    pub follow_up: FollowUp,
}

/// Which events make a follow-up task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FollowUp {
    /// A click: the contact is interested now.
    #[serde(default)]
    pub on_click: bool,
    /// A hard bounce: the address is wrong and someone should find the right one.
    #[serde(default)]
    pub on_hard_bounce: bool,
}

fn secret<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Secret>, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.map(Secret::new))
}

fn default_opt_out_columns() -> Vec<String> {
    vec!["donotbulkemail".into()]
}

impl JobDefinition for EventsDefinition {
    const JOB: &'static str = JOB;

    fn name(&self) -> &str {
        &self.name
    }

    fn target_connection_id(&self) -> Option<TargetConnectionId> {
        self.target_connection_ids.first().copied()
    }

    /// What an event carries to Dynamics: the recipient and what happened to the message.
    fn exported_fields(&self) -> Vec<ExportedField> {
        ["email", "messageId", "type", "occurredAt", "campaign", "subject", "url", "reason"]
            .iter()
            .map(|path| ExportedField { field: "targetConnectionIds[0]".into(), path: path.to_string() })
            .collect()
    }
}

impl EventsDefinition {
    /// The definition as stored: names trimmed, column names in lower case as the Web API names them.
    pub fn normalized(mut self) -> EventsDefinition {
        self.name = self.name.trim().to_string();
        self.verification_key = self.verification_key.map(|k| k.trim().to_string()).filter(|k| !k.is_empty());
        for certificate in &mut self.sns_certificates {
            *certificate = certificate.trim().to_string();
        }
        for column in &mut self.opt_out_columns {
            *column = column.trim().to_ascii_lowercase();
        }
        self
    }

    /// SendGrid's key, read; `None` when the flow has none (or it does not read, which a saved flow never has).
    pub fn sendgrid_key(&self) -> Option<SendGridKey> {
        self.verification_key.as_deref().and_then(|k| SendGridKey::parse(k).ok())
    }

    /// The Amazon SNS certificates pinned on the flow, read (a saved flow's all read); empty when the flow fetches
    /// the certificate each message names.
    pub fn sns_certificates(&self) -> Vec<SigningCertificate> {
        self.sns_certificates.iter().filter_map(|pem| SigningCertificate::from_pem(pem.as_bytes()).ok()).collect()
    }

    /// Mailgun's signing key as given, checked; `None` when the definition brings none.
    pub fn mailgun_key(&self) -> Option<MailgunKey> {
        self.signing_key.as_ref().and_then(|k| MailgunKey::parse(k.expose()).ok())
    }

    /// What can be checked without Dynamics: the name, the spec, the target, the keys.
    pub fn check_shape(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |field: &str, message: String| problems.push(Problem::new(field, message));
        if self.name.is_empty() {
            problem("name", "the flow has no name: give it one, as the dashboard and runs show it".into());
        }
        if self.flow_spec.id != ENGAGEMENT_EVENTS_FLOW_SPEC {
            problem(
                "flowSpec.id",
                format!(
                    "{} is not the engagement events flow spec: use {ENGAGEMENT_EVENTS_FLOW_SPEC}",
                    self.flow_spec.id
                ),
            );
        }
        if self.target_connection_ids.len() != 1 {
            problem(
                "targetConnectionIds",
                format!(
                    "an email events flow writes to exactly one Dynamics target connection, and {} are given",
                    self.target_connection_ids.len()
                ),
            );
        }
        match (&self.verification_key, self.provider) {
            (Some(key), Provider::SendGrid) => {
                if let Err(e) = SendGridKey::parse(key) {
                    problem("verificationKey", e.to_string());
                }
            }
            (Some(_), other) => problem(
                "verificationKey",
                format!(
                    "a verification key is SendGrid's; {} posts are opened by the flow's URL code: leave it out",
                    other.name()
                ),
            ),
            (None, _) => {}
        }
        match (&self.signing_key, self.provider) {
            (Some(key), Provider::Mailgun) => {
                if let Err(e) = MailgunKey::parse(key.expose()) {
                    problem("signingKey", e.to_string());
                }
            }
            (Some(_), other) => problem(
                "signingKey",
                format!("a signing key is Mailgun's; {} posts are not signed so: leave it out", other.name()),
            ),
            (None, _) => {}
        }
        match (self.sns_certificates.is_empty(), self.provider) {
            (true, _) => {}
            (false, Provider::Ses) => {
                for (i, pem) in self.sns_certificates.iter().enumerate() {
                    if let Err(e) = SigningCertificate::from_pem(pem.as_bytes()) {
                        problem(&format!("snsCertificates[{i}]"), e.to_string());
                    }
                }
            }
            (false, other) => problem(
                "snsCertificates",
                format!(
                    "Amazon SNS certificates check the signatures of SES flows; {} posts are not signed by Amazon SNS: \
                     leave them out",
                    other.name()
                ),
            ),
        }
        problems
    }

    /// The opt-out columns, checked against the environment's contact table: each must exist and be Yes/No.
    pub fn check_contact(&self, contact: &TableDefinition) -> Vec<Problem> {
        let mut problems = Vec::new();
        for (i, name) in self.opt_out_columns.iter().enumerate() {
            let field = format!("optOutColumns[{i}]");
            match contact.column(name) {
                Some(c) if matches!(c.kind, ColumnType::Boolean) && c.valid_for_update => {}
                Some(c) => problems.push(Problem::new(
                    field,
                    format!(
                        "contact column {name} is not a writable Yes/No column ({:?}): pick one such as donotbulkemail",
                        c.kind
                    ),
                )),
                None => problems.push(Problem::missing_column(
                    field,
                    name,
                    contact,
                    format!("the contact table has no column {name}"),
                    "Use donotemail or donotbulkemail",
                )),
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::test_column;

    fn definition(extra: serde_json::Value) -> EventsDefinition {
        let mut body = serde_json::json!({
            "name": " Newsletter events ",
            "flowSpec": {"id": ENGAGEMENT_EVENTS_FLOW_SPEC},
            "targetConnectionIds": [uuid::Uuid::new_v4()],
            "provider": "sendgrid",
        });
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value::<EventsDefinition>(body).unwrap().normalized()
    }

    fn contact() -> TableDefinition {
        TableDefinition {
            logical_name: "contact".into(),
            entity_set_name: "contacts".into(),
            primary_id: "contactid".into(),
            primary_name: Some("fullname".into()),
            display_name: None,
            change_tracking: true,
            columns: vec![
                test_column("donotbulkemail", ColumnType::Boolean),
                test_column("donotemail", ColumnType::Boolean),
                test_column("emailaddress1", ColumnType::String { max_length: Some(100) }),
            ],
        }
    }

    #[test]
    fn a_minimal_flow_sets_bulk_email_opt_out_and_makes_no_tasks() {
        let d = definition(serde_json::json!({}));
        assert_eq!(d.name, "Newsletter events");
        assert_eq!(d.opt_out_columns, ["donotbulkemail"]);
        assert_eq!(d.follow_up, FollowUp::default());
        assert!(d.check_shape().is_empty(), "{:?}", d.check_shape());
        assert!(d.check_contact(&contact()).is_empty());
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_field() {
        let mut d = definition(serde_json::json!({
            "name": "", "provider": "mailgun", "verificationKey": "abc", "optOutColumns": ["DoNotEmail", "donotmail", "emailaddress1"]
        }));
        d.target_connection_ids.clear();
        let fields: Vec<String> = d.check_shape().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["name", "targetConnectionIds", "verificationKey"]);
        let problems = d.check_contact(&contact());
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["optOutColumns[1]", "optOutColumns[2]"]);
        assert_eq!(problems[0].closest.first().map(String::as_str), Some("donotemail"));
    }

    #[test]
    fn a_mailgun_signing_key_is_taken_but_never_stored_with_the_definition_nor_printed() {
        let d = definition(
            serde_json::json!({"provider": "mailgun", "signingKey": "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"}),
        );
        assert!(d.check_shape().is_empty(), "{:?}", d.check_shape());
        assert!(d.mailgun_key().is_some());
        let stored = serde_json::to_string(&d).unwrap();
        assert!(!stored.contains("3ax6xnjp") && !stored.contains("signingKey"), "{stored}");
        assert!(!format!("{d:?}").contains("3ax6xnjp"), "the key is redacted in Debug");
        let sendgrid = definition(serde_json::json!({"signingKey": "abc"}));
        assert_eq!(sendgrid.check_shape()[0].field, "signingKey");
    }

    #[test]
    fn every_pinned_sns_certificate_that_does_not_read_is_named_by_its_place_when_the_flow_is_saved() {
        let good = crate::engagement::formats::sns::tests::KEY.certificate_pem.clone();
        let d = definition(serde_json::json!({
            "provider": "ses",
            "snsCertificates": [format!("  {good}\n"), "not a certificate", good.replace("CERTIFICATE", "PUBLIC KEY")]
        }));
        assert_eq!(d.sns_certificates[0], good.trim(), "trimmed");
        let problems = d.check_shape();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["snsCertificates[1]", "snsCertificates[2]"]);
        assert!(problems[0].message.starts_with("is not PEM text"), "{}", problems[0].message);
        assert!(problems[0].message.contains("-----BEGIN CERTIFICATE-----"), "it says what to give");
        assert_eq!(d.sns_certificates().len(), 1);
        let shown = serde_json::to_value(&d).unwrap();
        assert_eq!(shown["snsCertificates"][0], good.trim(), "public: shown with the definition");

        let sendgrid = definition(serde_json::json!({"snsCertificates": [good]}));
        assert_eq!(sendgrid.check_shape()[0].field, "snsCertificates");
        let none = definition(serde_json::json!({"provider": "ses"}));
        assert!(none.check_shape().is_empty());
        assert!(!serde_json::to_string(&none).unwrap().contains("snsCertificates"), "left out when empty");
    }

    #[test]
    fn a_sendgrid_key_that_does_not_read_is_refused_when_the_flow_is_saved() {
        let d = definition(serde_json::json!({"verificationKey": "not a key"}));
        let problems = d.check_shape();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "verificationKey");
    }
}
