//! Customizing an environment the way a solution does: custom tables (activity tables among them), columns and
//! alternate keys, with the request bodies Microsoft documents for `POST EntityDefinitions`. Every schema name
//! carries the publisher's customization prefix (`new_LoyaltyId`); Dataverse refuses one without it.
//!
//! A table's definition is cached by the client ([`Client::table`]); each change here forgets it, so the next read
//! shows what was added.

use crate::client::Client;
use crate::error::Error;
use reqwest::Method;
use serde_json::{Value as Json, json};

/// A custom column to add to a table. The schema name carries the publisher's customization prefix
/// (`new_LoyaltyId`); Dataverse refuses one without it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewColumn {
    pub schema_name: String,
    pub display_name: String,
    pub kind: NewColumnType,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NewColumnType {
    String {
        max_length: u32,
    },
    Integer {
        min: i32,
        max: i32,
    },
    DateTime {
        date_only: bool,
    },
    Boolean {
        true_label: String,
        false_label: String,
    },
    /// Choices by label; Dataverse numbers them from 100,000,000 (the default publisher's option prefix).
    Picklist {
        options: Vec<String>,
    },
}

fn label(text: &str) -> Json {
    json!({"@odata.type": "Microsoft.Dynamics.CRM.Label", "LocalizedLabels": [
        {"@odata.type": "Microsoft.Dynamics.CRM.LocalizedLabel", "Label": text, "LanguageCode": 1033}
    ]})
}

impl NewColumn {
    /// The body of `POST EntityDefinitions(LogicalName='…')/Attributes`, as Microsoft documents it.
    pub fn to_json(&self) -> Json {
        let mut body = json!({
            "SchemaName": self.schema_name,
            "DisplayName": label(&self.display_name),
            "Description": label(""),
            "RequiredLevel": {
                "Value": "None",
                "CanBeChanged": true,
                "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings"
            },
        });
        let specific = match &self.kind {
            NewColumnType::String { max_length } => json!({
                "@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
                "AttributeType": "String",
                "AttributeTypeName": {"Value": "StringType"},
                "MaxLength": max_length,
                "FormatName": {"Value": "Text"},
            }),
            NewColumnType::Integer { min, max } => json!({
                "@odata.type": "Microsoft.Dynamics.CRM.IntegerAttributeMetadata",
                "AttributeType": "Integer",
                "AttributeTypeName": {"Value": "IntegerType"},
                "MinValue": min,
                "MaxValue": max,
                "Format": "None",
            }),
            NewColumnType::DateTime { date_only } => json!({
                "@odata.type": "Microsoft.Dynamics.CRM.DateTimeAttributeMetadata",
                "AttributeType": "DateTime",
                "AttributeTypeName": {"Value": "DateTimeType"},
                "Format": if *date_only { "DateOnly" } else { "DateAndTime" },
                "DateTimeBehavior": {"Value": if *date_only { "DateOnly" } else { "UserLocal" }},
            }),
            NewColumnType::Boolean { true_label, false_label } => json!({
                "@odata.type": "Microsoft.Dynamics.CRM.BooleanAttributeMetadata",
                "AttributeType": "Boolean",
                "AttributeTypeName": {"Value": "BooleanType"},
                "DefaultValue": false,
                "OptionSet": {
                    "@odata.type": "Microsoft.Dynamics.CRM.BooleanOptionSetMetadata",
                    "TrueOption": {"Value": 1, "Label": label(true_label)},
                    "FalseOption": {"Value": 0, "Label": label(false_label)},
                    "OptionSetType": "Boolean",
                },
            }),
            NewColumnType::Picklist { options } => json!({
                "@odata.type": "Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
                "AttributeType": "Picklist",
                "AttributeTypeName": {"Value": "PicklistType"},
                "OptionSet": {
                    "@odata.type": "Microsoft.Dynamics.CRM.OptionSetMetadata",
                    "IsGlobal": false,
                    "OptionSetType": "Picklist",
                    "Options": options.iter().enumerate().map(|(i, o)| json!({
                        "Value": 100_000_000 + i as i64,
                        "Label": label(o),
                    })).collect::<Vec<_>>(),
                },
            }),
        };
        if let (Json::Object(b), Json::Object(s)) = (&mut body, specific) {
            b.extend(s);
        }
        body
    }
}

/// Who owns a table's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// A user or team owns each record; activities must be.
    User,
    Organization,
}

/// A custom table to create, with its primary name column (an activity's is `Subject`, as Dataverse requires).
#[derive(Debug, Clone, PartialEq)]
pub struct NewTable {
    pub schema_name: String,
    pub display_name: String,
    pub plural_name: String,
    pub description: String,
    /// The primary name column: a text column.
    pub primary_name: NewColumn,
    /// An activity table: its rows go on the timeline of the record they are regarding.
    pub is_activity: bool,
    pub ownership: Ownership,
    pub change_tracking: bool,
}

impl NewTable {
    /// The body of `POST EntityDefinitions`, as Microsoft documents it.
    pub fn to_json(&self) -> Json {
        let mut primary = self.primary_name.to_json();
        primary["IsPrimaryName"] = json!(true);
        json!({
            "@odata.type": "Microsoft.Dynamics.CRM.EntityMetadata",
            "SchemaName": self.schema_name,
            "DisplayName": label(&self.display_name),
            "DisplayCollectionName": label(&self.plural_name),
            "Description": label(&self.description),
            "OwnershipType": match self.ownership {
                Ownership::User => "UserOwned",
                Ownership::Organization => "OrganizationOwned",
            },
            "IsActivity": self.is_activity,
            "HasActivities": false,
            // Dataverse requires an activity table to have notes.
            "HasNotes": self.is_activity,
            "ChangeTrackingEnabled": self.change_tracking,
            "Attributes": [primary],
        })
    }
}

/// An alternate key: columns whose values together find one record, in URLs (`new_events(new_key='…')`) and
/// upserts.
#[derive(Debug, Clone, PartialEq)]
pub struct NewKey {
    pub schema_name: String,
    pub display_name: String,
    /// The logical names of its columns.
    pub columns: Vec<String>,
}

impl NewKey {
    /// The body of `POST EntityDefinitions(LogicalName='…')/Keys`, as Microsoft documents it.
    pub fn to_json(&self) -> Json {
        json!({
            "SchemaName": self.schema_name,
            "DisplayName": label(&self.display_name),
            "KeyAttributes": self.columns,
        })
    }
}

fn escape(text: &str) -> String {
    text.replace('\'', "''")
}

impl Client {
    /// Creates a custom table with its primary name column.
    pub async fn create_table(&self, table: &NewTable) -> Result<(), Error> {
        let result = self.send(Method::POST, "EntityDefinitions", Some(&table.to_json())).await;
        self.invalidate_table(&table.schema_name);
        result.map(|_| ())
    }

    /// Adds a custom column to a table, and forgets the table's cached definition so the column shows.
    pub async fn create_column(&self, table: &str, column: &NewColumn) -> Result<(), Error> {
        let path = format!("EntityDefinitions(LogicalName='{}')/Attributes", escape(&table.to_ascii_lowercase()));
        let result = self.send(Method::POST, &path, Some(&column.to_json())).await;
        self.invalidate_table(table);
        result.map(|_| ())
    }

    /// The schema names of a table's alternate keys.
    pub async fn key_names(&self, table: &str) -> Result<Vec<String>, Error> {
        #[derive(serde::Deserialize)]
        struct Keys {
            value: Vec<KeyName>,
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct KeyName {
            schema_name: String,
        }
        let path =
            format!("EntityDefinitions(LogicalName='{}')/Keys?$select=SchemaName", escape(&table.to_ascii_lowercase()));
        let reply = self.send(Method::GET, &path, None).await?;
        let keys: Keys = reply.json().await?;
        Ok(keys.value.into_iter().map(|k| k.schema_name).collect())
    }

    /// Adds an alternate key to a table.
    pub async fn create_key(&self, table: &str, key: &NewKey) -> Result<(), Error> {
        let path = format!("EntityDefinitions(LogicalName='{}')/Keys", escape(&table.to_ascii_lowercase()));
        let result = self.send(Method::POST, &path, Some(&key.to_json())).await;
        self.invalidate_table(table);
        result.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_columns_have_the_documented_bodies() {
        let text = NewColumn {
            schema_name: "new_Gold".into(),
            display_name: "Gold".into(),
            kind: NewColumnType::String { max_length: 100 },
        };
        let body = text.to_json();
        assert_eq!(body["@odata.type"], "Microsoft.Dynamics.CRM.StringAttributeMetadata");
        assert_eq!(body["AttributeTypeName"]["Value"], "StringType");
        assert_eq!(body["MaxLength"], 100);
        assert_eq!(body["FormatName"]["Value"], "Text");
        assert_eq!(body["SchemaName"], "new_Gold");
        assert_eq!(body["DisplayName"]["LocalizedLabels"][0]["Label"], "Gold");
        assert_eq!(body["RequiredLevel"]["Value"], "None");
        let choice = NewColumn {
            schema_name: "cr8a3_Tier".into(),
            display_name: "Tier".into(),
            kind: NewColumnType::Picklist { options: vec!["Gold".into(), "Silver".into()] },
        };
        let body = choice.to_json();
        assert_eq!(body["OptionSet"]["Options"][1]["Value"], 100_000_001);
        let date = NewColumn {
            schema_name: "new_JoinedOn".into(),
            display_name: "Joined on".into(),
            kind: NewColumnType::DateTime { date_only: true },
        };
        assert_eq!(date.to_json()["Format"], "DateOnly");
        let flag = NewColumn {
            schema_name: "new_Vip".into(),
            display_name: "VIP".into(),
            kind: NewColumnType::Boolean { true_label: "Yes".into(), false_label: "No".into() },
        };
        assert_eq!(flag.to_json()["OptionSet"]["TrueOption"]["Value"], 1);
        let number = NewColumn {
            schema_name: "new_Points".into(),
            display_name: "Points".into(),
            kind: NewColumnType::Integer { min: 0, max: 1000 },
        };
        assert_eq!(number.to_json()["MaxValue"], 1000);
    }

    #[test]
    fn an_activity_table_has_the_documented_body_with_its_subject() {
        let table = NewTable {
            schema_name: "new_EmailEvent".into(),
            display_name: "Email event".into(),
            plural_name: "Email events".into(),
            description: "What happened to a marketing email".into(),
            primary_name: NewColumn {
                schema_name: "Subject".into(),
                display_name: "Subject".into(),
                kind: NewColumnType::String { max_length: 400 },
            },
            is_activity: true,
            ownership: Ownership::User,
            change_tracking: true,
        };
        let body = table.to_json();
        assert_eq!(body["IsActivity"], true);
        assert_eq!(body["HasActivities"], false);
        assert_eq!(body["OwnershipType"], "UserOwned");
        assert_eq!(body["Attributes"][0]["SchemaName"], "Subject");
        assert_eq!(body["Attributes"][0]["IsPrimaryName"], true);
        assert_eq!(body["DisplayCollectionName"]["LocalizedLabels"][0]["Label"], "Email events");
        let key = NewKey {
            schema_name: "new_EventKey".into(),
            display_name: "Event".into(),
            columns: vec!["new_key".into()],
        };
        assert_eq!(key.to_json()["KeyAttributes"], json!(["new_key"]));
    }
}
