//! Discovering an environment the way a table ingestion does, against an emulator with a generated catalog: the
//! tables in one request, a table's columns with their display names, precisions, lookup targets and date
//! behaviours, and the system views of one table or of all.

mod common;

use common::{client, free};
use dataverse::metadata::ColumnType;
use dataverse_emulator::EmulatorConfig;
use dataverse_emulator::schema::generated::generated_tables;
use dataverse_emulator::schema::{AttributeKind, DateFormat};

const GENERATED: usize = 40;

#[tokio::test]
async fn tables_lists_every_public_table_in_one_request() {
    let emulator = EmulatorConfig { generated_tables: GENERATED, ..free() }.start().await.unwrap();
    let client = client(&emulator);
    let before = client.metrics().requests;
    let tables = client.tables().await.unwrap();
    assert_eq!(client.metrics().requests - before, 1);
    let generated = generated_tables(GENERATED);
    let public = generated.iter().filter(|t| !t.is_private).count();
    // The built-in tables (task and activitypointer among them) and the generated public ones.
    assert_eq!(tables.len(), 10 + public);
    assert!(tables.windows(2).all(|w| w[0].logical_name < w[1].logical_name));
    let contact = tables.iter().find(|t| t.logical_name == "contact").unwrap();
    assert_eq!((contact.entity_set_name.as_str(), contact.primary_id.as_str()), ("contacts", "contactid"));
    assert_eq!((contact.display_name.as_deref(), contact.primary_name.as_deref()), (Some("Contact"), Some("fullname")));
    assert!(contact.change_tracking);
    for table in generated.iter().filter(|t| !t.is_private) {
        let listed = tables.iter().find(|t| t.logical_name == table.logical_name).unwrap();
        assert_eq!(listed.change_tracking, table.change_tracking_enabled);
        assert_eq!(listed.display_name.as_deref(), Some(table.display_name.as_str()));
    }
    assert!(tables.iter().all(|t| !generated.iter().any(|g| g.is_private && g.logical_name == t.logical_name)));
}

#[tokio::test]
async fn a_generated_table_reads_with_every_column_detail_an_ingestion_needs() {
    let emulator = EmulatorConfig { generated_tables: GENERATED, ..free() }.start().await.unwrap();
    let client = client(&emulator);
    let generated = generated_tables(GENERATED);
    let mut seen = (false, false, false, false);
    for table in generated.iter().filter(|t| !t.is_private).take(16) {
        let definition = client.table(&table.logical_name).await.unwrap();
        assert_eq!(definition.change_tracking, table.change_tracking_enabled);
        assert_eq!(definition.display_name.as_deref(), Some(table.display_name.as_str()));
        assert_eq!(definition.columns.len(), table.attributes.len());
        for attribute in &table.attributes {
            let column = definition.column(&attribute.logical_name).unwrap();
            assert_eq!(column.display_name.as_deref(), Some(attribute.display_name.as_str()));
            match &attribute.kind {
                AttributeKind::Decimal { precision, .. } | AttributeKind::Money { precision, .. } => {
                    assert_eq!(column.precision, Some(*precision), "{}", attribute.logical_name);
                    seen.0 = true;
                }
                AttributeKind::DateTime { format, .. } => {
                    let date_only = *format == DateFormat::DateOnly;
                    assert_eq!(column.kind, ColumnType::DateTime { date_only }, "{}", attribute.logical_name);
                    seen.1 |= date_only;
                }
                AttributeKind::Lookup { targets, .. } => {
                    let expected: Vec<String> = targets.iter().map(|t| t.table.clone()).collect();
                    assert_eq!(column.targets, expected, "{}", attribute.logical_name);
                    seen.2 = true;
                }
                AttributeKind::MultiSelectPicklist { .. } => {
                    assert_eq!(column.kind, ColumnType::MultiSelectPicklist);
                    seen.3 = true;
                }
                AttributeKind::String { max_length, .. } => {
                    assert_eq!(column.kind, ColumnType::String { max_length: Some(*max_length) });
                }
                _ => assert!(column.precision.is_none() && column.targets.is_empty()),
            }
        }
    }
    assert_eq!(seen, (true, true, true, true), "precisions, dates, lookups and choices were all checked");
}

#[tokio::test]
async fn system_views_are_listed_for_one_table_or_for_all() {
    let emulator = EmulatorConfig { generated_tables: GENERATED, ..free() }.start().await.unwrap();
    let client = client(&emulator);
    let contact = client.system_views(Some("contact")).await.unwrap();
    let names: Vec<&str> = contact.iter().map(|v| v.name.as_str()).collect();
    assert!(names.contains(&"Active Contacts") && names.contains(&"All Contacts"), "{names:?}");
    assert!(contact.iter().all(|v| v.table == "contact" && v.fetch_xml.contains("<entity name=\"contact\">")));
    assert_eq!(contact.iter().filter(|v| v.is_default).count(), 1);

    let all = client.system_views(None).await.unwrap();
    for table in client.tables().await.unwrap() {
        assert!(
            all.iter().any(|v| v.table == table.logical_name && v.is_default),
            "{} has a default view",
            table.logical_name
        );
    }
    assert!(all.iter().all(|v| !v.id.is_empty() && !v.name.is_empty()));
}

#[tokio::test]
async fn the_options_of_a_tables_choices_states_and_statuses_are_read_in_one_request_per_kind() {
    let emulator = EmulatorConfig { generated_tables: GENERATED, ..free() }.start().await.unwrap();
    let client = client(&emulator);
    let generated = generated_tables(GENERATED);
    let table = generated
        .iter()
        .filter(|t| !t.is_private)
        .find(|t| t.attributes.iter().any(|a| matches!(a.kind, AttributeKind::MultiSelectPicklist { .. })))
        .expect("a generated table with a choices column");
    let definition = client.table(&table.logical_name).await.unwrap();
    let choices: Vec<&str> =
        table.attributes.iter().filter(|a| a.kind.options().is_some()).map(|a| a.logical_name.as_str()).collect();
    let kinds: std::collections::HashSet<&str> =
        table.attributes.iter().filter(|a| a.kind.options().is_some()).map(|a| a.kind.metadata_type()).collect();
    assert!(kinds.len() >= 3 && kinds.contains("StateAttributeMetadata"), "{kinds:?}");
    let mut asked = choices.clone();
    asked.push("versionnumber");
    let before = client.metrics().requests;
    let options = client.choice_options_of(&definition, &asked).await.unwrap();
    assert_eq!(client.metrics().requests - before, kinds.len() as u64, "one request per kind of choice");
    assert_eq!(options.len(), choices.len(), "every choice, and nothing for a column that is not one");
    for attribute in table.attributes.iter().filter(|a| a.kind.options().is_some()) {
        let read: Vec<(i32, &str)> =
            options[&attribute.logical_name].iter().map(|o| (o.value, o.label.as_str())).collect();
        let listed: Vec<(i32, &str)> =
            attribute.kind.options().unwrap().iter().map(|o| (o.value, o.label.as_str())).collect();
        assert_eq!(read, listed, "{}", attribute.logical_name);
    }
    // One column's options, a state's among them (its options are reached through its own cast).
    let state = client.choice_options(&table.logical_name, "statecode").await.unwrap();
    assert_eq!(state.first().map(|o| o.value), Some(0));
    assert!(client.choice_options(&table.logical_name, "versionnumber").await.unwrap().is_empty());
}
