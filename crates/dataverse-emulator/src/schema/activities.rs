//! Activities: rows that record something done, or to do, regarding a contact, an account or a lead — a
//! `task`, or a row of a custom activity table created with `"IsActivity": true` — and `activitypointer`, the
//! table every activity row also appears in, whatever its type, which is what a record's timeline reads.
//!
//! Contract, as Dataverse has it:
//! - Every activity table has the primary key `activityid` and the columns of `activitypointer`: `subject` (its
//!   primary name), `description`, `regardingobjectid` (a lookup to account, contact or lead, bound through
//!   `regardingobjectid_<target>_<activity table>`), `activitytypecode` (read-only: the activity table's logical
//!   name), `scheduledstart`, `scheduledend`, `actualstart`, `actualend`, `prioritycode` (Low 0, Normal 1, High 2),
//!   `statecode`/`statuscode`, and what every table has (owner, created/modified, `versionnumber`).
//! - Writing an activity row puts the `activitypointer` row with the same `activityid`, holding those columns;
//!   deleting it deletes that row. `store::Data::put_row` and `remove_row` do it, in the same unit and under the
//!   same lock as the write: no reader sees one without the other, and a write rolled back (a bulk message, a
//!   change set) rolls both back. The pointer row carries the activity row's `versionnumber`, so change tracking
//!   of `activitypointer` sees each change of an activity once.
//! - `activitypointer` answers `GET` only (Retrieve and RetrieveMultiple are its only messages): a create, update
//!   or delete of it is refused, naming the table to write instead. A `BulkDelete` of activitypointer rows deletes
//!   the activities they stand for, as the platform's bulk deletion of "Activities" does.
//! - The regarding relationships are parental (`Contact_Tasks`, `contact_new_visits`, …: `Delete` is `Cascade`):
//!   deleting a contact, account or lead deletes the activities regarding it, and so their pointer rows.
//!
//! Why: the timeline of a contact is a query of `activitypointers` by `_regardingobjectid_value`; an integration
//! that writes tasks or custom activities must see them there, and gone when they or their contact are deleted.

use super::builtin::TableBuilder;
use super::*;
use crate::error::{ApiError, ApiResult, code};
use crate::value::{Row, Value};
use axum::http::StatusCode;
use serde_json::Value as Json;

/// The table every activity row is mirrored into.
pub const POINTER: &str = "activitypointer";
/// The primary key of every activity table and of `activitypointer`.
pub const PRIMARY_KEY: &str = "activityid";
/// The read-only column naming an activity row's table.
pub const TYPE_CODE: &str = "activitytypecode";
/// The lookup to the record an activity regards.
pub const REGARDING: &str = "regardingobjectid";
/// The tables an activity can regard.
pub const REGARDING_TARGETS: &[&str] = &["account", "contact", "lead"];

/// The states of `activitypointer` and of a new custom activity table, with their default status.
const ACTIVITY_STATES: &[(i32, &str, i32)] =
    &[(0, "Open", 1), (1, "Completed", 2), (2, "Canceled", 3), (3, "Scheduled", 4)];
const ACTIVITY_STATUSES: &[(i32, &str, i32)] =
    &[(1, "Open", 0), (2, "Completed", 1), (3, "Canceled", 2), (4, "Scheduled", 3)];

/// A task's states and status reasons, as Microsoft documents the `task` table.
const TASK_STATES: &[(i32, &str, i32)] = &[(0, "Open", 2), (1, "Completed", 5), (2, "Canceled", 6)];
const TASK_STATUSES: &[(i32, &str, i32)] = &[
    (2, "Not Started", 0),
    (3, "In Progress", 0),
    (4, "Waiting on someone else", 0),
    (5, "Completed", 1),
    (6, "Canceled", 2),
    (7, "Deferred", 0),
];

/// The single-valued navigation property through which a row of `table` regards a row of `target`:
/// `regardingobjectid_contact_task`, `regardingobjectid_contact_new_visit`, and on `activitypointer`
/// `regardingobjectid_contact`.
pub fn regarding_navigation(table: &str, target: &str) -> String {
    if table == POINTER { format!("{REGARDING}_{target}") } else { format!("{REGARDING}_{target}_{table}") }
}

/// The columns every activity table shares with `activitypointer`, after its primary key and subject, with the
/// given states and status reasons.
fn activity_columns(b: TableBuilder, states: &[(i32, &str, i32)], statuses: &[(i32, &str, i32)]) -> TableBuilder {
    let table = b.logical_name().to_string();
    let targets = REGARDING_TARGETS
        .iter()
        .map(|t| LookupTarget { table: (*t).into(), navigation_property: regarding_navigation(&table, t) })
        .collect();
    b.attr("description", "Description", AttributeKind::Memo { max_length: 2000 })
        .attr(REGARDING, "Regarding", AttributeKind::Lookup { lookup_type: LookupType::Lookup, targets })
        // Written by the platform on every write, not kept in step with a lookup.
        .attr(TYPE_CODE, "Activity Type", AttributeKind::EntityName { lookup: String::new() })
        .system_required()
        .read_only()
        .attr("scheduledstart", "Start Date", AttributeKind::date_time())
        .attr("scheduledend", "Due Date", AttributeKind::date_time())
        .attr("actualstart", "Actual Start", AttributeKind::date_time())
        .attr("actualend", "Actual End", AttributeKind::date_time())
        .attr("prioritycode", "Priority", AttributeKind::picklist(&[(0, "Low"), (1, "Normal"), (2, "High")]))
        .default_option(1)
        .standard_columns(states, statuses)
}

/// `activitypointer` (entity set `activitypointers`, object type code 4200): one row per activity of any type.
/// It is not an activity table itself: Dataverse reports `IsActivity` false for it.
pub fn activitypointer() -> Table {
    let b = TableBuilder::new(POINTER, "activitypointers", ("Activity", "Activities"), "subject", 4200)
        .schema_name("ActivityPointer")
        .primary_key(PRIMARY_KEY)
        .description(
            "Task performed, or to be performed, by a user. An activity is any action for which an entry can be made on a calendar.",
        )
        .attr("subject", "Subject", AttributeKind::string(400))
        .required(RequiredLevel::ApplicationRequired);
    activity_columns(b, ACTIVITY_STATES, ACTIVITY_STATUSES).build()
}

/// `task` (entity set `tasks`, object type code 4212): generic work to be done, the built-in activity table.
pub fn task() -> Table {
    let b = TableBuilder::new("task", "tasks", ("Task", "Tasks"), "subject", 4212)
        .primary_key(PRIMARY_KEY)
        .activity()
        .description("Generic activity representing work needed to be done.")
        .attr("subject", "Subject", AttributeKind::string(200))
        .required(RequiredLevel::ApplicationRequired);
    activity_columns(b, TASK_STATES, TASK_STATUSES).build()
}

/// A custom activity table as `POST EntityDefinitions` with `"IsActivity": true` makes it: the primary key
/// `activityid` and the common columns, with the states every new activity table starts with (Open, Completed,
/// Canceled, Scheduled). The caller adds its `Subject` column as the primary name.
pub(crate) fn custom_activity(b: TableBuilder) -> TableBuilder {
    activity_columns(b.primary_key(PRIMARY_KEY).activity(), ACTIVITY_STATES, ACTIVITY_STATUSES)
}

/// Checks the properties Dataverse requires of a custom activity table's definition, with its errors: it is
/// user- or team-owned, has no activities of its own, has notes, and has no mail merge.
pub(crate) fn check_definition(body: &Json) -> ApiResult<()> {
    let refused = |code: &'static str, message: String| ApiError::new(StatusCode::BAD_REQUEST, code, message);
    if let Some(ownership) = body.get("OwnershipType").and_then(Json::as_str)
        && !matches!(ownership, "UserOwned" | "TeamOwned")
    {
        return Err(refused(
            code::ACTIVITY_OWNERSHIP_INVALID,
            format!(
                "OwnershipTypeMask: {ownership} is not valid for an activity entity. A custom activity table is UserOwned or TeamOwned."
            ),
        ));
    }
    if body.get("HasActivities").and_then(Json::as_bool) == Some(true) {
        return Err(refused(
            code::ACTIVITY_CANNOT_HAVE_RELATED_ACTIVITIES,
            "A custom entity defined as an activity must not have a relationship with Activities. Set \"HasActivities\": false."
                .into(),
        ));
    }
    if body.get("HasNotes").and_then(Json::as_bool) == Some(false) {
        return Err(refused(
            code::ACTIVITY_MUST_HAVE_RELATED_NOTES,
            "A custom entity defined as an activity must have a relationship to Notes by default. Set \"HasNotes\": true."
                .into(),
        ));
    }
    if body.get("IsMailMergeEnabled").and_then(|v| v.get("Value").or(Some(v))).and_then(Json::as_bool) == Some(true) {
        return Err(refused(
            code::ACTIVITY_CANNOT_HAVE_MAIL_MERGE,
            "A custom entity defined as an activity already cannot have MailMerge enabled. Set IsMailMergeEnabled to false."
                .into(),
        ));
    }
    Ok(())
}

/// The refusal of a primary name column other than `Subject` on an activity table.
pub(crate) fn subject_required(given: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        code::ACTIVITY_METADATA_INVALID,
        format!(
            "The metadata specified for activity is invalid. The primary name column of an activity table must have the \
             SchemaName 'Subject' (it is the subject every activity shares with activitypointer), not '{given}'."
        ),
    )
}

/// Sets `activitytypecode` on a row of an activity table, as the platform does on every write.
pub fn stamp_type(table: &Table, row: &mut Row) {
    if table.is_activity {
        row.insert(TYPE_CODE.into(), Value::Text(table.logical_name.clone()));
    }
}

/// The `activitypointer` row of an activity row: the columns `activitypointer` has, and the activity table's
/// logical name in `activitytypecode`. Status reasons are kept as the activity table numbers them.
pub fn pointer_row(pointer: &Table, activity: &Table, row: &Row) -> Row {
    let mut mirrored: Row = row
        .iter()
        .filter(|(column, _)| pointer.attribute(column).is_some())
        .map(|(c, v)| (c.clone(), v.clone()))
        .collect();
    mirrored.insert(TYPE_CODE.into(), Value::Text(activity.logical_name.clone()));
    mirrored
}

/// The activity table an `activitypointer` row stands for, read from its `activitytypecode`.
pub fn activity_of(pointer_row: &Row) -> Option<&str> {
    match pointer_row.get(TYPE_CODE) {
        Some(Value::Text(table)) => Some(table),
        _ => None,
    }
}

/// Dataverse's answer to a write of `activitypointer` through `message` (`Create`, `Update`, `Delete`,
/// `CreateMultiple`, …).
pub fn pointer_not_writable(message: &str) -> ApiError {
    ApiError::invalid_argument(format!(
        "The '{message}' method does not support entities of type '{POINTER}'. An {POINTER} row follows its activity: \
         write the activity through its own table instead (tasks, or the entity set of the activity table its \
         {TYPE_CODE} names)."
    ))
}

/// Whether `attribute` of `table` is an activity's regarding lookup, whose relationships are parental.
pub fn is_regarding(table: &Table, attribute: &str) -> bool {
    attribute == REGARDING && (table.is_activity || table.logical_name == POINTER)
}

/// The schema name of the relationship through which `activity` rows regard `referenced` rows: `Contact_Tasks`
/// and `Contact_ActivityPointers` for system tables, `contact_new_visits` for a custom activity table.
pub fn regarding_relationship(referenced: &Table, activity: &Table) -> String {
    if activity.is_custom {
        format!("{}_{}", referenced.logical_name, activity.entity_set_name)
    } else {
        format!("{}_{}s", referenced.schema_name, activity.schema_name)
    }
}

/// The cascades of a regarding relationship: parental, so the activities follow the record they regard —
/// assigned, shared and deleted with it.
pub fn regarding_cascade() -> Cascade {
    [
        ("Assign", "Cascade"),
        ("Delete", "Cascade"),
        ("Merge", "Cascade"),
        ("Reparent", "Cascade"),
        ("Share", "Cascade"),
        ("Unshare", "Cascade"),
        ("RollupView", "NoCascade"),
        ("Archive", "NoCascade"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_has_the_documented_columns_states_and_navigation_properties() {
        let task = task();
        assert_eq!((task.entity_set_name.as_str(), task.primary_id.as_str()), ("tasks", "activityid"));
        assert_eq!((task.primary_name.as_str(), task.object_type_code), ("subject", 4212));
        assert!(task.is_activity);
        assert_eq!(task.attribute("subject").unwrap().kind, AttributeKind::string(200));
        assert!(task.attribute(TYPE_CODE).unwrap().is_read_only());
        for target in REGARDING_TARGETS {
            let (attribute, lookup) = task.navigation(&format!("regardingobjectid_{target}_task")).unwrap();
            assert_eq!((attribute.logical_name.as_str(), lookup.table.as_str()), (REGARDING, *target));
        }
        let states = task.attribute("statecode").unwrap().kind.options().unwrap();
        assert_eq!(states[1], OptionValue::related(1, "Completed", 5));
        let statuses = task.attribute("statuscode").unwrap().kind.options().unwrap();
        assert_eq!(statuses.iter().map(|o| o.value).collect::<Vec<_>>(), [2, 3, 4, 5, 6, 7]);
        let priority = &task.attribute("prioritycode").unwrap().kind;
        assert_eq!(
            priority,
            &AttributeKind::Picklist { options: priority.options().unwrap().to_vec(), default: Some(1) }
        );
        for column in ["ownerid", "createdon", "modifiedon", "versionnumber", "scheduledend", "actualend"] {
            assert!(task.attribute(column).is_some(), "{column}");
        }
    }

    #[test]
    fn activitypointer_holds_every_column_a_task_shares_with_it() {
        let (pointer, task) = (activitypointer(), task());
        assert!(!pointer.is_activity);
        assert_eq!((pointer.schema_name.as_str(), pointer.object_type_code), ("ActivityPointer", 4200));
        assert_eq!(pointer.navigation("regardingobjectid_contact").unwrap().1.table, "contact");
        for attribute in &pointer.attributes {
            let shared = task.attribute(&attribute.logical_name).expect("a task has every pointer column");
            assert_eq!(shared.kind.attribute_type(), attribute.kind.attribute_type(), "{}", attribute.logical_name);
        }
    }

    #[test]
    fn a_pointer_row_keeps_the_shared_columns_and_names_the_activity_table() {
        let (pointer, task) = (activitypointer(), task());
        let id = Uuid::new_v4();
        let row = Row::from([
            (PRIMARY_KEY.into(), Value::Guid(id)),
            ("subject".into(), Value::Text("Call back".into())),
            ("statuscode".into(), Value::Int(5)),
            ("new_extra".into(), Value::Int(1)),
        ]);
        let mirrored = pointer_row(&pointer, &task, &row);
        assert_eq!(mirrored.get("subject"), Some(&Value::Text("Call back".into())));
        assert_eq!(mirrored.get("statuscode"), Some(&Value::Int(5)));
        assert_eq!(activity_of(&mirrored), Some("task"));
        assert!(!mirrored.contains_key("new_extra"), "a column of the activity table alone stays there");
    }

    #[test]
    fn regarding_relationships_are_named_as_dataverse_names_them() {
        let contact = crate::schema::builtin_tables().into_iter().find(|t| t.logical_name == "contact").unwrap();
        assert_eq!(regarding_relationship(&contact, &task()), "Contact_Tasks");
        assert_eq!(regarding_relationship(&contact, &activitypointer()), "Contact_ActivityPointers");
        assert_eq!(regarding_cascade()["Delete"], "Cascade");
    }

    #[test]
    fn a_custom_activity_definition_follows_the_documented_rules() {
        assert!(check_definition(&serde_json::json!({"OwnershipType": "UserOwned", "HasNotes": true})).is_ok());
        let owned = check_definition(&serde_json::json!({"OwnershipType": "OrganizationOwned"})).unwrap_err();
        assert_eq!(owned.code, code::ACTIVITY_OWNERSHIP_INVALID);
        let activities = check_definition(&serde_json::json!({"HasActivities": true})).unwrap_err();
        assert_eq!(activities.code, code::ACTIVITY_CANNOT_HAVE_RELATED_ACTIVITIES);
        let notes = check_definition(&serde_json::json!({"HasNotes": false})).unwrap_err();
        assert_eq!(notes.code, code::ACTIVITY_MUST_HAVE_RELATED_NOTES);
    }
}
