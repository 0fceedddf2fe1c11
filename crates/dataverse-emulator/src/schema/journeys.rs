//! Customer Insights – Journeys' consent tables, which an environment has only once the app's solution is
//! installed: `msdynmkt_purpose` (what consent is given for), `msdynmkt_topic` (a finer subject under one
//! purpose) and `msdynmkt_contactpointconsent4` (consent per contact point: an email address or a phone number,
//! for a purpose or a topic), with the columns, option values, lookups and relationships Microsoft's entity
//! reference documents for them.
//!
//! Contract:
//! - [`install`] writes the three tables when the environment lacks them (`EmulatorConfig::journeys`,
//!   `--with-journeys`), with their views, and the default compliance profile's purposes: "Commercial"
//!   (non-restrictive for email) and "Transactional" (enforcement disabled), whose ids [`purpose_id`] gives. With a
//!   state file the tables stay, as an installed solution does; starting again without the option removes nothing.
//! - Lookups are bound through the documented navigation properties, `msdynmkt_purposeId` and `msdynmkt_topicId`
//!   (case matters), and read as `_msdynmkt_purposeid_value` and `_msdynmkt_topicid_value`. Their relationships
//!   carry the documented names (`msdynmkt_msdynmkt_contactpointconsent4_purposeId_m`, …).
//! - The consent table tracks changes; purposes and topics do not.
//! - No alternate key: Microsoft documents none, and its own guidance for writing consent is to query by contact
//!   point and purpose, then create or update.
//! - A consent or topic row without a purpose is refused ([`check_row`]). The platform does not enforce a
//!   column whose `RequiredLevel` is `ApplicationRequired`, as `msdynmkt_purposeid` is; the refusal stands for
//!   the solution, whose consent checks key every record on its purpose, and uses the code and wording of the
//!   emulator's other required-column refusal.
//!
//! Left out: the lookup `msdynmkt_messageid` (to `email`, a table the emulator lacks), the purposes' lookups to
//! other tables of the solution (compliance profiles, consent providers), the built-in Tracking purpose (its
//! default enforcement model is not documented), and the solution's consent evaluation itself.

use super::builtin::{TableBuilder, metadata_id};
use super::*;
use crate::error::{ApiError, ApiResult};
use crate::store::{Change, Data};
use crate::value::{Row, Value};
use chrono::Timelike;

/// Consent per contact point (entity set `msdynmkt_contactpointconsent4s`).
pub const CONSENT: &str = "msdynmkt_contactpointconsent4";
/// What consent is given for (entity set `msdynmkt_purposes`).
pub const PURPOSE: &str = "msdynmkt_purpose";
/// A subject under one purpose (entity set `msdynmkt_topics`).
pub const TOPIC: &str = "msdynmkt_topic";
/// The lookup to the purpose, on consent rows and topics.
pub const PURPOSE_LOOKUP: &str = "msdynmkt_purposeid";

/// `msdynmkt_contactpointtype` (Channel).
pub const CHANNELS: &[(i32, &str)] =
    &[(534_120_000, "Email"), (534_120_001, "Text Message"), (534_120_002, "Custom"), (534_120_003, "Voice")];
/// `msdynmkt_contactpointconsenttype` (Consent type).
pub const CONSENT_TYPES: &[(i32, &str)] = &[(534_120_000, "Purpose"), (534_120_001, "Topic")];
/// `msdynmkt_value` (Consent status).
pub const CONSENT_VALUES: &[(i32, &str)] =
    &[(534_120_000, "Not Set"), (534_120_001, "Opted In"), (534_120_002, "Opted Out")];
/// `msdynmkt_source`.
pub const SOURCES: &[(i32, &str)] = &[
    (534_120_000, "Internal"),
    (534_120_001, "Preference page"),
    (534_120_002, "Text message"),
    (534_120_003, "Loaded"),
    (534_120_004, "Preference Center"),
    (534_120_005, "Realtime Marketing Form"),
    (534_120_006, "Subscription Center"),
    (534_120_007, "Email - list-unsubscribe"),
];
/// `msdynmkt_logicalreason` (Reason).
pub const REASONS: &[(i32, &str)] = &[
    (534_119_999, "No reasons"),
    (534_120_000, "Opt-in - Advertisement"),
    (534_120_001, "Opt-in - Landing page"),
    (534_120_002, "Opt-in - Events"),
    (534_120_003, "Opt-out - Content was irrelevant"),
    (534_120_004, "Opt-out - Received too frequently"),
    (534_120_005, "Opt-out - Didn’t recall signing up"),
    (534_120_006, "Opt-out - Privacy concerns"),
    (534_120_007, "Opt-out - One-click unsubscribe"),
];
/// `msdynmkt_type` of a purpose.
pub const PURPOSE_TYPES: &[(i32, &str)] = &[
    (534_120_000, "Commercial Communication"),
    (534_120_001, "Transactional Communication"),
    (534_120_002, "Tracking"),
];
/// The enforcement models of a purpose, per channel.
pub const ENFORCEMENT_MODELS: &[(i32, &str)] =
    &[(534_120_000, "Restrictive"), (534_120_001, "Non-Restrictive"), (534_120_002, "Disabled")];

const RESTRICTIVE: i32 = 534_120_000;
const NON_RESTRICTIVE: i32 = 534_120_001;
const DISABLED: i32 = 534_120_002;
const INTERNAL: i32 = 534_120_000;
const NOT_SET: i32 = 534_120_000;

/// The purposes the default compliance profile starts with: (name, type, email enforcement model). SMS, voice
/// and custom channels need an opt-in (restrictive), their columns' default.
const DEFAULT_PURPOSES: &[(&str, i32, i32)] =
    &[("Commercial", 534_120_000, NON_RESTRICTIVE), ("Transactional", 534_120_001, DISABLED)];

const STATES: &[(i32, &str, i32)] = &[(0, "Active", 1), (1, "Inactive", 2)];
const STATUSES: &[(i32, &str, i32)] = &[(1, "Active", 0), (2, "Inactive", 1)];

/// The documented relationship of each lookup the solution adds: (table, lookup) → schema name.
const RELATIONSHIPS: &[(&str, &str, &str)] = &[
    (CONSENT, PURPOSE_LOOKUP, "msdynmkt_msdynmkt_contactpointconsent4_purposeId_m"),
    (CONSENT, "msdynmkt_topicid", "msdynmkt_msdynmkt_contactpointconsent4_topicId_msd"),
    (TOPIC, PURPOSE_LOOKUP, "msdynmkt_msdynmkt_purpose_msdynmkt_topic"),
];

/// The schema name of the relationship behind a lookup of the solution's tables, as Microsoft names it.
pub fn relationship(table: &str, attribute: &str) -> Option<&'static str> {
    RELATIONSHIPS.iter().find(|(t, a, _)| *t == table && *a == attribute).map(|(_, _, name)| *name)
}

/// The id of a purpose [`install`] writes ("Commercial", "Transactional"): the same in every environment.
pub fn purpose_id(name: &str) -> Uuid {
    metadata_id(&format!("journeys/purpose/{name}"))
}

/// Object type codes are environment-specific for a solution's tables (10,000 and up); these stay clear of the
/// codes customization (10,000 + n) and generated tables (20,000 + n) hand out.
const OBJECT_TYPE_CODES: [i32; 3] = [18_000, 18_001, 18_002];

/// The solution names its columns in lower case, the primary keys and lookups ending in `Id`
/// (`msdynmkt_purposeId`); the platform's own columns keep the builder's names.
fn solution_schema_names(mut table: Table) -> Table {
    let primary_id = table.primary_id.clone();
    table.schema_name = table.logical_name.clone();
    for attribute in table.attributes.iter_mut().filter(|a| a.logical_name.starts_with("msdynmkt_")) {
        let name = &attribute.logical_name;
        attribute.schema_name = match name.strip_suffix("id") {
            Some(stem) if *name == primary_id || attribute.is_lookup() => format!("{stem}Id"),
            _ => name.clone(),
        };
    }
    table
}

fn describe(mut table: Table, descriptions: &[(&str, &str)]) -> Table {
    for (column, text) in descriptions {
        if let Some(attribute) = table.attributes.iter_mut().find(|a| a.logical_name == *column) {
            attribute.description = (*text).to_string();
        }
    }
    table
}

/// `msdynmkt_purpose`: a purpose of the compliance profile, with its enforcement model per channel.
pub fn purpose() -> Table {
    let models = || AttributeKind::picklist(ENFORCEMENT_MODELS);
    let table = TableBuilder::new(
        PURPOSE,
        "msdynmkt_purposes",
        ("Purpose", "Purposes"),
        "msdynmkt_name",
        OBJECT_TYPE_CODES[0],
    )
    .description(
        "A purpose consent is collected for: commercial communication, transactional communication or tracking.",
    )
    .attr("msdynmkt_name", "Name", AttributeKind::string(100))
    .required(RequiredLevel::ApplicationRequired)
    .attr("msdynmkt_description", "Description", AttributeKind::string(100))
    .attr("msdynmkt_type", "Type", AttributeKind::picklist(PURPOSE_TYPES))
    .required(RequiredLevel::ApplicationRequired)
    .attr("msdynmkt_enforcementmodel", "Email Enforcement Model", models())
    .required(RequiredLevel::ApplicationRequired)
    .attr("msdynmkt_smsenforcementmodel", "SMS Enforcement Model", models())
    .default_option(RESTRICTIVE)
    .attr("msdynmkt_voiceenforcementmodel", "Voice Enforcement Model", models())
    .default_option(RESTRICTIVE)
    .attr("msdynmkt_customenforcementmodel", "Custom Enforcement Model", models())
    .default_option(RESTRICTIVE)
    .attr("msdynmkt_topiccount", "Topics", AttributeKind::Integer { min: 0, max: i32::MAX as i64 })
    .required(RequiredLevel::ApplicationRequired)
    .standard_columns(STATES, STATUSES)
    .build();
    describe(
        solution_schema_names(table),
        &[
            ("msdynmkt_name", "The name of the purpose"),
            ("msdynmkt_type", "Purpose Type (Commerical, Transactional, Tracking)"),
            ("msdynmkt_enforcementmodel", "enforcement model of purpose"),
            ("msdynmkt_topiccount", "Number of topics associated with this purpose"),
        ],
    )
}

/// `msdynmkt_topic`: a subject under one purpose ("Newsletters", "Daily Deals").
pub fn topic() -> Table {
    let table = TableBuilder::new(TOPIC, "msdynmkt_topics", ("Topic", "Topics"), "msdynmkt_name", OBJECT_TYPE_CODES[1])
        .description("A subject under one purpose that contact points can opt in to or out of.")
        .attr("msdynmkt_name", "Name", AttributeKind::string(100))
        .required(RequiredLevel::ApplicationRequired)
        .attr(PURPOSE_LOOKUP, "Purpose", AttributeKind::lookup(PURPOSE, "msdynmkt_purposeId"))
        .required(RequiredLevel::ApplicationRequired)
        .standard_columns(STATES, STATUSES)
        .build();
    describe(solution_schema_names(table), &[(PURPOSE_LOOKUP, "Unique identifier for Purpose associated with Topic.")])
}

/// `msdynmkt_contactpointconsent4`: the consent of one contact point (an address or a number, on one channel)
/// for one purpose or topic.
pub fn contact_point_consent() -> Table {
    let mut table = TableBuilder::new(
        CONSENT,
        "msdynmkt_contactpointconsent4s",
        ("Contact Point Consent", "Contact Point Consents"),
        "msdynmkt_contactpointvalue",
        OBJECT_TYPE_CODES[2],
    )
    .description("The consent of a contact point (an email address, a phone number) for a purpose or a topic.")
    .attr("msdynmkt_contactpointvalue", "Contact point", AttributeKind::string(400))
    .required(RequiredLevel::ApplicationRequired)
    .attr("msdynmkt_contactpointtype", "Channel", AttributeKind::picklist(CHANNELS))
    .required(RequiredLevel::ApplicationRequired)
    .attr("msdynmkt_contactpointconsenttype", "Consent type", AttributeKind::picklist(CONSENT_TYPES))
    .attr("msdynmkt_value", "Consent status", AttributeKind::picklist(CONSENT_VALUES))
    .required(RequiredLevel::ApplicationRequired)
    .attr(PURPOSE_LOOKUP, "Purpose", AttributeKind::lookup(PURPOSE, "msdynmkt_purposeId"))
    .required(RequiredLevel::ApplicationRequired)
    .attr("msdynmkt_topicid", "Topic", AttributeKind::lookup(TOPIC, "msdynmkt_topicId"))
    .attr("msdynmkt_source", "Source", AttributeKind::picklist(SOURCES))
    .required(RequiredLevel::ApplicationRequired)
    .default_option(INTERNAL)
    .attr("msdynmkt_logicalreason", "Reason", AttributeKind::picklist(REASONS))
    .required(RequiredLevel::ApplicationRequired)
    .attr("msdynmkt_reason", "Reason Description", AttributeKind::string(500))
    .attr("msdynmkt_modifiedonbehalf", "Who requested the change", AttributeKind::string(500))
    .attr(
        "msdynmkt_migrationtimestamp",
        "Migration timestamp",
        AttributeKind::DateTime { format: DateFormat::DateAndTime, behavior: "TimeZoneIndependent".into() },
    )
    .attr("msdynmkt_uionly_value_tracking", "Tracking (used in ui only)", AttributeKind::picklist(CONSENT_VALUES))
    .default_option(NOT_SET)
    .standard_columns(STATES, STATUSES)
    .build();
    // A sync follows consent through change tracking.
    table.change_tracking_enabled = true;
    describe(
        solution_schema_names(table),
        &[
            (PURPOSE_LOOKUP, "Unique identifier for Purpose associated with Contact Point Consent."),
            ("msdynmkt_topicid", "Unique identifier for Topic associated with Contact Point Consent."),
        ],
    )
}

/// The solution's tables, each after the tables its lookups point at.
pub fn tables() -> Vec<Table> {
    vec![purpose(), topic(), contact_point_consent()]
}

/// A default purpose, owned (and created) by `owner`.
fn purpose_row(name: &str, kind: i32, email_model: i32, owner: Uuid, version: i64) -> Row {
    let now = Value::DateTime(chrono::Utc::now().with_nanosecond(0).unwrap_or_else(chrono::Utc::now));
    let user = Value::Lookup { id: owner, table: "systemuser".into() };
    let mut row = Row::new();
    row.insert(PURPOSE_LOOKUP.into(), Value::Guid(purpose_id(name)));
    row.insert("msdynmkt_name".into(), Value::Text(name.into()));
    row.insert("msdynmkt_type".into(), Value::Int(kind.into()));
    row.insert("msdynmkt_enforcementmodel".into(), Value::Int(email_model.into()));
    for channel in ["msdynmkt_smsenforcementmodel", "msdynmkt_voiceenforcementmodel", "msdynmkt_customenforcementmodel"]
    {
        row.insert(channel.into(), Value::Int(RESTRICTIVE.into()));
    }
    row.insert("msdynmkt_topiccount".into(), Value::Int(0));
    for stamp in ["createdon", "modifiedon"] {
        row.insert(stamp.into(), now.clone());
    }
    for column in ["createdby", "modifiedby", "ownerid"] {
        row.insert(column.into(), user.clone());
    }
    row.insert("statecode".into(), Value::Int(0));
    row.insert("statuscode".into(), Value::Int(1));
    row.insert("versionnumber".into(), Value::Int(version));
    row
}

/// Installs the solution's tables the environment lacks, each with its views, and with the purpose table the
/// default purposes, owned by `owner`. Tables already there (kept in the state file, their rows perhaps
/// changed by clients) are left as they are.
pub fn install(data: &mut Data, changes: &mut Vec<Change>, owner: Uuid) {
    for table in tables() {
        if data.schema.table(&table.logical_name).is_some() {
            continue;
        }
        let logical_name = table.logical_name.clone();
        data.put_table(changes, table);
        if logical_name == PURPOSE {
            for (name, kind, model) in DEFAULT_PURPOSES {
                let version = data.next_version();
                data.put_row(changes, PURPOSE, purpose_id(name), purpose_row(name, *kind, *model, owner, version));
            }
        }
    }
}

/// Refuses a consent or topic row without a purpose, as it is about to be written: the solution keys every
/// consent on its purpose, and a topic belongs to one.
pub fn check_row(table: &Table, row: &Row) -> ApiResult<()> {
    let needs_purpose = table.logical_name == CONSENT || table.logical_name == TOPIC;
    if !needs_purpose || table.attribute(PURPOSE_LOOKUP).is_none() || row.contains_key(PURPOSE_LOOKUP) {
        return Ok(());
    }
    Err(ApiError::invalid_argument(format!(
        "{PURPOSE_LOOKUP} is a required column of {} and cannot be empty: every {} is given for a purpose. Bind one \
         with \"msdynmkt_purposeId@odata.bind\": \"/msdynmkt_purposes(<id>)\" (GET msdynmkt_purposes lists them).",
        table.logical_name,
        if table.logical_name == CONSENT { "contact point consent" } else { "topic" },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(table: &Table, column: &str) -> Vec<(i32, String)> {
        let kind = &table.attribute(column).unwrap_or_else(|| panic!("{column}")).kind;
        kind.options().unwrap().iter().map(|o| (o.value, o.label.clone())).collect()
    }

    #[test]
    fn the_consent_table_has_the_documented_columns_option_values_and_lookups() {
        let consent = contact_point_consent();
        assert_eq!(
            (consent.entity_set_name.as_str(), consent.primary_id.as_str(), consent.primary_name.as_str()),
            ("msdynmkt_contactpointconsent4s", "msdynmkt_contactpointconsent4id", "msdynmkt_contactpointvalue")
        );
        assert_eq!(consent.schema_name, CONSENT);
        assert!(consent.change_tracking_enabled);
        assert!(consent.keys.is_empty(), "Microsoft documents no alternate key");
        assert_eq!(consent.attribute("msdynmkt_contactpointvalue").unwrap().kind, AttributeKind::string(400));
        assert_eq!(options(&consent, "msdynmkt_contactpointtype")[3], (534_120_003, "Voice".to_string()));
        assert_eq!(options(&consent, "msdynmkt_contactpointconsenttype")[1], (534_120_001, "Topic".to_string()));
        assert_eq!(options(&consent, "msdynmkt_value")[2], (534_120_002, "Opted Out".to_string()));
        assert_eq!(options(&consent, "msdynmkt_source")[7], (534_120_007, "Email - list-unsubscribe".to_string()));
        assert_eq!(options(&consent, "msdynmkt_logicalreason")[0], (534_119_999, "No reasons".to_string()));
        let purpose = consent.attribute(PURPOSE_LOOKUP).unwrap();
        assert_eq!(
            (purpose.schema_name.as_str(), purpose.required),
            ("msdynmkt_purposeId", RequiredLevel::ApplicationRequired)
        );
        assert_eq!(consent.navigation("msdynmkt_purposeId").unwrap().1.table, PURPOSE);
        assert_eq!(consent.navigation("msdynmkt_topicId").unwrap().1.table, TOPIC);
        assert!(consent.navigation("msdynmkt_purposeid").is_none(), "navigation properties are case sensitive");
        assert_eq!(consent.attribute(&consent.primary_id).unwrap().schema_name, "msdynmkt_contactpointconsent4Id");
        assert_eq!(consent.attribute("msdynmkt_value").unwrap().schema_name, "msdynmkt_value");
        for column in [
            "ownerid",
            "createdon",
            "modifiedon",
            "createdby",
            "modifiedby",
            "versionnumber",
            "statecode",
            "statuscode",
        ] {
            assert!(consent.attribute(column).is_some(), "{column}");
        }
    }

    #[test]
    fn purposes_and_topics_have_the_documented_columns() {
        let (purpose, topic) = (purpose(), topic());
        assert_eq!(
            (purpose.entity_set_name.as_str(), purpose.primary_name.as_str()),
            ("msdynmkt_purposes", "msdynmkt_name")
        );
        assert_eq!(options(&purpose, "msdynmkt_type")[1], (534_120_001, "Transactional Communication".to_string()));
        assert_eq!(options(&purpose, "msdynmkt_enforcementmodel")[1], (534_120_001, "Non-Restrictive".to_string()));
        assert_eq!(topic.entity_set_name, "msdynmkt_topics");
        assert_eq!(topic.navigation("msdynmkt_purposeId").unwrap().1.table, PURPOSE);
        assert!(!purpose.change_tracking_enabled && !topic.change_tracking_enabled);
    }

    #[test]
    fn the_relationships_carry_microsofts_names() {
        let schema = Schema::new(crate::schema::builtin_tables().into_iter().chain(tables()));
        let names: Vec<String> = schema
            .one_to_many()
            .into_iter()
            .filter(|r| r.referenced_entity == PURPOSE || r.referenced_entity == TOPIC)
            .map(|r| format!("{} {}", r.schema_name, r.referencing_navigation))
            .collect();
        assert_eq!(
            names,
            [
                "msdynmkt_msdynmkt_contactpointconsent4_purposeId_m msdynmkt_purposeId",
                "msdynmkt_msdynmkt_contactpointconsent4_topicId_msd msdynmkt_topicId",
                "msdynmkt_msdynmkt_purpose_msdynmkt_topic msdynmkt_purposeId",
            ]
        );
    }

    #[test]
    fn installing_writes_the_tables_and_default_purposes_once() {
        let (mut data, mut changes) = (Data::journaled(), Vec::new());
        let owner = Uuid::new_v4();
        install(&mut data, &mut changes, owner);
        let purposes = data.rows(PURPOSE);
        assert_eq!(purposes.len(), 2);
        let commercial = purposes.get(&purpose_id("Commercial")).unwrap().clone();
        assert_eq!(commercial.get("msdynmkt_name"), Some(&Value::Text("Commercial".into())));
        assert_eq!(commercial.get("msdynmkt_enforcementmodel"), Some(&Value::Int(NON_RESTRICTIVE.into())));
        let transactional = purposes.get(&purpose_id("Transactional")).unwrap();
        assert_eq!(transactional.get("msdynmkt_enforcementmodel"), Some(&Value::Int(DISABLED.into())));
        assert!(data.rows(CONSENT).is_empty() && data.rows(TOPIC).is_empty());
        let written = changes.len();
        install(&mut data, &mut changes, owner);
        assert_eq!(changes.len(), written, "installed tables are left as they are");
        // Every value of a default purpose is one its column accepts.
        let table = purpose();
        for (name, value) in &commercial {
            let attribute = table.attribute(name).unwrap_or_else(|| panic!("{name}"));
            if attribute.is_lookup() || attribute.is_read_only() || name.as_str() == table.primary_id {
                continue;
            }
            let target = crate::value::Target { entity_set: &table.entity_set_name, table: PURPOSE };
            let read =
                Value::from_json(attribute, &value.to_json(), target).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!(read.as_ref(), Some(value), "{name}");
        }
    }

    #[test]
    fn a_consent_or_topic_without_a_purpose_is_refused() {
        let (consent, topic) = (contact_point_consent(), topic());
        let mut row = Row::from([("msdynmkt_contactpointvalue".into(), Value::Text("ann@example.com".into()))]);
        let refused = check_row(&consent, &row).unwrap_err();
        assert_eq!(refused.code, crate::error::code::INVALID_ARGUMENT);
        assert!(check_row(&topic, &Row::new()).is_err());
        row.insert(PURPOSE_LOOKUP.into(), Value::Lookup { id: purpose_id("Commercial"), table: PURPOSE.into() });
        assert!(check_row(&consent, &row).is_ok());
        assert!(check_row(&purpose(), &Row::new()).is_ok(), "a purpose has no purpose of its own");
    }
}
