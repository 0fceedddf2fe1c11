//! What the engagement job needs in a Dynamics environment, and putting it there the way a solution would: a
//! custom activity table, **Email event** (`<prefix>_emailevent`), whose rows go on the timeline of the contact
//! they are regarding, with a column for each part of an event and an alternate key on the event's key.
//!
//! The contract:
//! - [`EngagementTables`] names every table, column and key from the publisher's customization prefix (the
//!   target connection's), so the job, the install and the checks agree on one set of names.
//! - [`install`] creates what is missing and leaves what is there: run twice, it creates nothing the second time;
//!   run on an environment that has the table but not a column added in a later dynsync, it adds the column.
//! - [`EngagementTables::check`] says, before a flow is saved, everything that is missing, at once.
//!
//! Why an activity table of our own rather than Dynamics' `email`: an `email` row is a message Dynamics sent or
//! received, with parties and a body; an open or a click is something that happened to a message sent elsewhere.
//! Customer Insights – Journeys keeps its interactions apart for the same reason.

use super::event::EventKind;
use crate::checks::Problem;
use crate::target::CustomizationPrefix;
use dataverse::{
    Client, ColumnType, Error, ErrorKind, NewColumn, NewColumnType, NewKey, NewTable, Ownership, TableDefinition,
};

/// The first value of a choice column's options, for the default publisher (Dataverse numbers a publisher's
/// options from its option-value prefix times 10,000).
const FIRST_OPTION: i32 = 100_000_000;

/// The names of the engagement job's table, columns and key in one environment.
#[derive(Debug, Clone, PartialEq)]
pub struct EngagementTables {
    prefix: CustomizationPrefix,
}

/// A column of the Email event table: its name without the prefix, what a maker reads, and its type.
struct EventColumn {
    name: &'static str,
    display: &'static str,
    kind: fn() -> NewColumnType,
}

const COLUMNS: &[EventColumn] = &[
    EventColumn { name: "eventkey", display: "Event key", kind: || NewColumnType::String { max_length: 100 } },
    EventColumn {
        name: "eventtype",
        display: "Event type",
        kind: || NewColumnType::Picklist { options: EventKind::ALL.iter().map(|k| k.label().to_string()).collect() },
    },
    EventColumn { name: "messageid", display: "Message id", kind: || NewColumnType::String { max_length: 400 } },
    EventColumn { name: "email", display: "Email address", kind: || NewColumnType::String { max_length: 254 } },
    EventColumn { name: "campaign", display: "Campaign", kind: || NewColumnType::String { max_length: 400 } },
    EventColumn { name: "url", display: "Link", kind: || NewColumnType::String { max_length: 4000 } },
    EventColumn { name: "reason", display: "Reason", kind: || NewColumnType::String { max_length: 4000 } },
    EventColumn { name: "provider", display: "Email service", kind: || NewColumnType::String { max_length: 40 } },
];

impl EngagementTables {
    pub fn new(prefix: CustomizationPrefix) -> EngagementTables {
        EngagementTables { prefix }
    }

    /// The Email event table's logical name (`new_emailevent`).
    pub fn activity_table(&self) -> String {
        self.prefix.column("emailevent")
    }

    /// A column of the Email event table by its name without the prefix (`eventkey` → `new_eventkey`).
    pub fn column(&self, name: &str) -> String {
        self.prefix.column(name)
    }

    fn schema_name(&self, name: &str) -> String {
        format!("{}_{name}", self.prefix.as_str())
    }

    /// The alternate key on the event key's column.
    pub fn event_key(&self) -> NewKey {
        NewKey {
            schema_name: self.schema_name("EventKeyKey"),
            display_name: "Event key".into(),
            columns: vec![self.column("eventkey")],
        }
    }

    fn table(&self) -> NewTable {
        NewTable {
            schema_name: self.schema_name("EmailEvent"),
            display_name: "Email event".into(),
            plural_name: "Email events".into(),
            description: "Something that happened to a marketing email: sent, delivered, opened, clicked, bounced, \
                          complained of, unsubscribed. Written by dynsync."
                .into(),
            primary_name: NewColumn {
                schema_name: "Subject".into(),
                display_name: "Subject".into(),
                kind: NewColumnType::String { max_length: 400 },
            },
            is_activity: true,
            ownership: Ownership::User,
            change_tracking: true,
        }
    }

    /// The choice value an event kind is written as in the event type column.
    pub fn event_type_value(kind: EventKind) -> i32 {
        let position = EventKind::ALL.iter().position(|k| *k == kind).expect("every kind is in EventKind::ALL");
        FIRST_OPTION + position as i32
    }

    /// Everything the job needs that the environment's Email event table lacks; empty when it is ready.
    pub fn check(&self, table: &TableDefinition) -> Vec<Problem> {
        let mut problems = Vec::new();
        for column in COLUMNS {
            let name = self.column(column.name);
            let ok = match (table.column(&name).map(|c| &c.kind), (column.kind)()) {
                (Some(ColumnType::String { .. }), NewColumnType::String { .. }) => true,
                (Some(ColumnType::Picklist), NewColumnType::Picklist { .. }) => true,
                (None, _) => false,
                (Some(_), _) => false,
            };
            if !ok {
                problems.push(Problem::new(
                    format!("{}.{name}", table.logical_name),
                    format!(
                        "the {} table has no {} column {name} of the type dynsync writes: run `dynsync engagement install`",
                        table.logical_name, column.display
                    ),
                ));
            }
        }
        problems
    }
}

/// What [`install`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstallReport {
    /// What was created, as a maker reads it (`table new_emailevent`, `column new_url`).
    pub created: Vec<String>,
    /// What was there already.
    pub present: Vec<String>,
}

/// Creates the Email event table, its columns and its key where they are missing.
pub async fn install(client: &Client, tables: &EngagementTables) -> Result<InstallReport, Error> {
    let mut report = InstallReport::default();
    let name = tables.activity_table();
    let mut note =
        |created: bool, what: String| if created { report.created.push(what) } else { report.present.push(what) };
    let existing = match client.table(&name).await {
        Ok(table) => Some(table),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    if existing.is_none() {
        client.create_table(&tables.table()).await?;
    }
    note(existing.is_none(), format!("table {name}"));
    let table = match existing {
        Some(table) => table,
        None => client.table(&name).await?,
    };
    let mut added = false;
    for column in COLUMNS {
        let logical = tables.column(column.name);
        let missing = table.column(&logical).is_none();
        if missing {
            let new = NewColumn {
                schema_name: tables.schema_name(column.name),
                display_name: column.display.into(),
                kind: (column.kind)(),
            };
            client.create_column(&name, &new).await?;
            added = true;
        }
        note(missing, format!("column {logical}"));
    }
    let key = tables.event_key();
    let keys = client.key_names(&name).await?;
    let missing = !keys.iter().any(|k| k.eq_ignore_ascii_case(&key.schema_name));
    if missing {
        client.create_key(&name, &key).await?;
    }
    note(missing, format!("key {}", key.schema_name.to_ascii_lowercase()));
    if added || missing {
        client.invalidate_table(&name);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> EngagementTables {
        EngagementTables::new("contoso".parse().unwrap())
    }

    #[test]
    fn every_name_carries_the_publisher_prefix() {
        let t = tables();
        assert_eq!(t.activity_table(), "contoso_emailevent");
        assert_eq!(t.column("url"), "contoso_url");
        assert_eq!(t.event_key().columns, ["contoso_eventkey"]);
        assert_eq!(t.table().schema_name, "contoso_EmailEvent");
        assert_eq!(t.table().primary_name.schema_name, "Subject", "an activity's primary name is its subject");
    }

    #[test]
    fn each_event_kind_has_its_own_choice_value_in_the_order_of_the_options() {
        let values: Vec<i32> = EventKind::ALL.iter().map(|k| EngagementTables::event_type_value(*k)).collect();
        assert_eq!(values[0], FIRST_OPTION);
        assert!(values.windows(2).all(|w| w[1] == w[0] + 1));
        let NewColumnType::Picklist { options } = (COLUMNS[1].kind)() else { panic!("the event type is a choice") };
        assert_eq!(options.len(), EventKind::ALL.len());
        assert_eq!(options[2], EventKind::Opened.label());
    }
}
