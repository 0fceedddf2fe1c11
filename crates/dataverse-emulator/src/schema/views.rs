//! The standard system views (`savedquery` rows) the platform keeps for every table: what each view queries
//! (its FetchXML) and how its grid shows it (its layout XML), built from the table's definition.
//!
//! Contract: every table has "Active {Plural}" (public view, `querytype` 0, the default), "All {Plural}" when
//! the table has state (`querytype` 0), "Quick Find Active {Plural}" (`querytype` 4, `isquickfindquery`) and
//! "{Singular} Lookup View" (`querytype` 64). Each selects the primary name and a few columns, keeps active rows
//! only (`statecode` 0) when the table has state, and orders by the primary name. Their ids derive from the
//! table's logical name and the view's kind, so they are the same on every start and in every environment.
//! Built-in tables get their views at start ([`write_missing`]); a table created later gets them when it is
//! created, and loses them when it is deleted (both from `store::Data`).

use super::builtin::metadata_id;
use super::{AttributeKind, Table};
use crate::store::{Change, Data};
use crate::value::{Row, Value};
use uuid::Uuid;

/// Dataverse's `querytype` values for the views written here.
pub const PUBLIC: i32 = 0;
pub const QUICK_FIND: i32 = 4;
pub const LOOKUP: i32 = 64;

/// One system view of a table, as it is written to `savedquery`.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub query_type: i32,
    pub is_default: bool,
    pub is_quick_find: bool,
    pub fetch_xml: String,
    pub layout_xml: String,
}

/// The stable id of a table's view of one kind (`active`, `all`, `quickfind`, `lookup`).
pub fn view_id(table: &str, kind: &str) -> Uuid {
    metadata_id(&format!("savedquery/{table}/{kind}"))
}

fn xml_attr(text: &str) -> String {
    text.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Columns the platform keeps on every table: not what a view shows beside the primary name.
const STANDARD: &[&str] = &[
    "createdon",
    "modifiedon",
    "createdby",
    "modifiedby",
    "versionnumber",
    "overriddencreatedon",
    "importsequencenumber",
    "statecode",
    "statuscode",
    "ownerid",
];

/// Columns Dataverse's own views of contacts, accounts and leads show, in that order, when a table has them.
const PREFERRED: &[&str] = &["parentcustomerid", "companyname", "emailaddress1", "telephone1", "accountnumber"];

/// What a public view shows: the primary name, up to three of the table's own columns, and `createdon`. A custom
/// table's views show only its primary name and `createdon`, as Dataverse makes them: so they name no column a
/// customizer may delete later.
fn view_columns(table: &Table) -> Vec<String> {
    let mut columns = Vec::new();
    if table.attribute(&table.primary_name).is_some() {
        columns.push(table.primary_name.clone());
    }
    if table.is_custom {
        columns.extend(table.attribute("createdon").map(|a| a.logical_name.clone()));
        return columns;
    }
    let shown = |name: &str| {
        table.attribute(name).is_some_and(|a| {
            !matches!(
                a.kind,
                AttributeKind::Memo { .. } | AttributeKind::EntityName { .. } | AttributeKind::Uniqueidentifier
            )
        }) && name != table.primary_name
            && !STANDARD.contains(&name)
    };
    let mut own: Vec<String> = PREFERRED.iter().filter(|c| shown(c)).map(|c| c.to_string()).collect();
    for attribute in &table.attributes {
        let name = attribute.logical_name.as_str();
        if own.len() >= 3 {
            break;
        }
        // Parts of the primary name (first/middle/last of a full name) say nothing more than it does.
        let part_of_name = table.primary_name == "fullname" && matches!(name, "firstname" | "middlename" | "lastname");
        if shown(name) && !part_of_name && !attribute.is_read_only() && !own.iter().any(|c| c == name) {
            own.push(name.to_string());
        }
    }
    own.truncate(3);
    columns.extend(own);
    if table.attribute("createdon").is_some() {
        columns.push("createdon".into());
    }
    columns
}

fn has_state(table: &Table) -> bool {
    table.attribute("statecode").is_some_and(|a| matches!(a.kind, AttributeKind::State { .. }))
}

/// A view's FetchXML: its columns (and the primary key), the given filter, ordered by the primary name.
fn fetch_xml(table: &Table, columns: &[String], filter: &str) -> String {
    let mut xml = format!(
        "<fetch version=\"1.0\" output-format=\"xml-platform\" mapping=\"logical\" distinct=\"false\">\
         <entity name=\"{}\">",
        xml_attr(&table.logical_name)
    );
    for column in columns {
        xml.push_str(&format!("<attribute name=\"{}\" />", xml_attr(column)));
    }
    xml.push_str(&format!("<attribute name=\"{}\" />", xml_attr(&table.primary_id)));
    if table.attribute(&table.primary_name).is_some() {
        xml.push_str(&format!("<order attribute=\"{}\" descending=\"false\" />", xml_attr(&table.primary_name)));
    }
    xml.push_str(filter);
    xml.push_str("</entity></fetch>");
    xml
}

/// The grid: one cell per column, the primary name wider, as Dataverse's views lay them out.
fn layout_xml(table: &Table, columns: &[String]) -> String {
    let mut xml = format!(
        "<grid name=\"resultset\" object=\"{}\" jump=\"{}\" select=\"1\" icon=\"1\" preview=\"1\">\
         <row name=\"result\" id=\"{}\">",
        table.object_type_code,
        xml_attr(&table.primary_name),
        xml_attr(&table.primary_id)
    );
    for column in columns {
        let width = if *column == table.primary_name { 300 } else { 150 };
        xml.push_str(&format!("<cell name=\"{}\" width=\"{width}\" />", xml_attr(column)));
    }
    xml.push_str("</row></grid>");
    xml
}

const ACTIVE: &str = "<filter type=\"and\"><condition attribute=\"statecode\" operator=\"eq\" value=\"0\" /></filter>";

/// The standard views of a table.
pub fn views_of(table: &Table) -> Vec<View> {
    let plural = &table.display_collection_name;
    let singular = &table.display_name;
    let state = has_state(table);
    let active = if state { ACTIVE } else { "" };
    let columns = view_columns(table);
    let view =
        |kind: &str, name: String, description: String, query_type: i32, columns: &[String], filter: &str| View {
            id: view_id(&table.logical_name, kind),
            name,
            description,
            query_type,
            is_default: kind != "all",
            is_quick_find: query_type == QUICK_FIND,
            fetch_xml: fetch_xml(table, columns, filter),
            layout_xml: layout_xml(table, columns),
        };
    let mut views = vec![view(
        "active",
        format!("Active {plural}"),
        format!("Shows all active {}.", plural.to_lowercase()),
        PUBLIC,
        &columns,
        active,
    )];
    if state {
        views.push(view(
            "all",
            format!("All {plural}"),
            format!("Shows all {}, active or not.", plural.to_lowercase()),
            PUBLIC,
            &columns,
            "",
        ));
    }
    let search = if table.attribute(&table.primary_name).is_some() {
        format!(
            "<filter type=\"or\" isquickfindfields=\"1\"><condition attribute=\"{}\" operator=\"like\" value=\"{{0}}\" /></filter>",
            xml_attr(&table.primary_name)
        )
    } else {
        String::new()
    };
    views.push(view(
        "quickfind",
        format!("Quick Find Active {plural}"),
        format!(
            "Searches active {} by {}; {{0}} stands for the search text.",
            plural.to_lowercase(),
            table.primary_name
        ),
        QUICK_FIND,
        &columns,
        &format!("{active}{search}"),
    ));
    let lookup_columns: Vec<String> = columns.iter().take(2).cloned().collect();
    views.push(view(
        "lookup",
        format!("{singular} Lookup View"),
        format!("The view a lookup to a {} shows.", singular.to_lowercase()),
        LOOKUP,
        &lookup_columns,
        active,
    ));
    views
}

fn view_row(table: &Table, view: &View, version: i64) -> Row {
    let now = Value::DateTime(chrono::Utc::now());
    let mut row = Row::new();
    row.insert("savedqueryid".into(), Value::Guid(view.id));
    row.insert("name".into(), Value::Text(view.name.clone()));
    row.insert("description".into(), Value::Text(view.description.clone()));
    row.insert("returnedtypecode".into(), Value::Text(table.logical_name.clone()));
    row.insert("fetchxml".into(), Value::Text(view.fetch_xml.clone()));
    row.insert("layoutxml".into(), Value::Text(view.layout_xml.clone()));
    row.insert("querytype".into(), Value::Int(view.query_type as i64));
    row.insert("isdefault".into(), Value::Bool(view.is_default));
    row.insert("isquickfindquery".into(), Value::Bool(view.is_quick_find));
    row.insert("iscustomizable".into(), Value::Bool(true));
    row.insert("iscustom".into(), Value::Bool(table.is_custom));
    row.insert("statecode".into(), Value::Int(0));
    row.insert("statuscode".into(), Value::Int(1));
    row.insert("createdon".into(), now.clone());
    row.insert("modifiedon".into(), now);
    row.insert("versionnumber".into(), Value::Int(version));
    row
}

/// Writes the views of `table` that `savedquery` does not hold yet; views already there (perhaps changed by a
/// client) are left as they are.
pub fn write_views(data: &mut Data, changes: &mut Vec<Change>, table: &Table) {
    if data.schema.table("savedquery").is_none() {
        return;
    }
    for view in views_of(table) {
        if data.rows("savedquery").get(&view.id).is_some() {
            continue;
        }
        let version = data.next_version();
        let row = view_row(table, &view, version);
        data.put_row(changes, "savedquery", view.id, row);
    }
}

/// Writes the missing views of every table, as the platform has them from the start.
pub fn write_missing(data: &mut Data, changes: &mut Vec<Change>) {
    let tables: Vec<_> = data.schema.tables().cloned().collect();
    for table in tables {
        write_views(data, changes, &table);
    }
}

/// Removes the views that return `table`, as deleting the table does.
pub fn remove_views(data: &mut Data, changes: &mut Vec<Change>, table: &str) {
    if data.schema.table("savedquery").is_none() {
        return;
    }
    let ids: Vec<Uuid> = data
        .rows("savedquery")
        .iter()
        .filter(|(_, row)| matches!(row.get("returnedtypecode"), Some(Value::Text(t)) if t == table))
        .map(|(id, _)| *id)
        .collect();
    for id in ids {
        data.remove_row(changes, "savedquery", id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::odata::fetchxml;

    #[test]
    fn every_built_in_view_is_fetchxml_the_emulator_reads_with_stable_ids() {
        for table in crate::schema::builtin_tables() {
            let views = views_of(&table);
            assert!(views.len() >= 3, "{}", table.logical_name);
            for view in &views {
                let fetch = fetchxml::parse(&view.fetch_xml).unwrap_or_else(|e| panic!("{}: {e:?}", view.name));
                assert_eq!(fetch.entity, table.logical_name);
                roxmltree::Document::parse(&view.layout_xml).unwrap();
            }
            assert_eq!(views, views_of(&table));
        }
    }

    #[test]
    fn the_active_contacts_view_keeps_active_rows_in_name_order() {
        let contact = crate::schema::builtin_tables().into_iter().find(|t| t.logical_name == "contact").unwrap();
        let active = &views_of(&contact)[0];
        assert_eq!(active.name, "Active Contacts");
        assert!(active.is_default);
        assert!(active.fetch_xml.contains(ACTIVE));
        assert!(active.fetch_xml.contains("<order attribute=\"fullname\" descending=\"false\" />"));
        assert!(active.layout_xml.starts_with("<grid name=\"resultset\" object=\"2\" jump=\"fullname\""));
        assert_eq!(active.id, view_id("contact", "active"));
    }
}
