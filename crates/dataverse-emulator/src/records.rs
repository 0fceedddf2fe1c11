//! Rows as the Web API reads and writes them: bodies checked column by column, lookups bound through
//! navigation properties, create/update/upsert with their preconditions, server-set columns, and rows
//! written back as JSON with `$select` and annotations.

use crate::api::WriteJson;
use crate::error::{ApiError, ApiResult, code};
use crate::odata::path::{Key, KeyValue};
use crate::odata::query::Prefer;
use crate::schema::{Attribute, AttributeKind, LookupTarget, LookupType, Table, activities, journeys};
use crate::store::{Change, Data, TableRows};
use crate::value::{Name, Row, Target, Value};
use axum::http::StatusCode;
use chrono::Utc;
use serde_json::{Map, Value as Json};
use uuid::Uuid;

pub const FORMATTED: &str = "OData.Community.Display.V1.FormattedValue";
pub const NAVIGATION: &str = "Microsoft.Dynamics.CRM.associatednavigationproperty";
pub const LOOKUP_TABLE: &str = "Microsoft.Dynamics.CRM.lookuplogicalname";

/// The columns a body sets (`None` clears one).
pub type Changes = Vec<(String, Option<Value>)>;

/// How a write was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// `POST /contacts`
    Create,
    /// `PATCH /contacts(<key>)`: update, or create when the row is not there.
    Upsert,
}

/// `If-Match` / `If-None-Match` on a write.
#[derive(Debug, Clone, Default)]
pub struct Preconditions {
    /// `*` or a weak etag.
    pub if_match: Option<String>,
    /// `*` prevents an update.
    pub if_none_match_any: bool,
}

#[derive(Debug)]
pub struct WriteOutcome {
    pub id: Uuid,
    pub created: bool,
}

/// A row's weak etag, `W/"<versionnumber>"`, as `@odata.etag` and the `ETag` header carry it.
pub fn etag(row: &Row) -> String {
    etag_of(row.get("versionnumber"))
}

/// The etag of a row whose `versionnumber` is `version`.
fn etag_of(version: Option<&Value>) -> String {
    let version = match version {
        Some(Value::Int(v)) => *v,
        _ => 0,
    };
    let mut text = String::with_capacity(24);
    text.push_str("W/\"");
    text.push_str(&version.to_string());
    text.push('"');
    text
}

/// Resolves a key from a URL to a row id: the primary key, or a defined alternate key.
pub fn resolve_key(data: &Data, table: &Table, key: &Key) -> ApiResult<Option<Uuid>> {
    let rows = data.rows(&table.logical_name);
    match key {
        Key::Id(id) => Ok(rows.get(id).map(|_| *id)),
        Key::Named(parts) => {
            if let [(name, KeyValue::Guid(id))] = parts.as_slice()
                && name == &table.primary_id
            {
                return Ok(rows.get(id).map(|_| *id));
            }
            let names: Vec<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();
            let alternate = table.key_with_attributes(&names).ok_or_else(|| {
                ApiError::bad_query(format!(
                    "The key '{}' is not an alternate key defined on {}. Define one with POST EntityDefinitions(LogicalName='{}')/Keys, or use the primary key.",
                    names.join(","),
                    table.logical_name,
                    table.logical_name
                ))
            })?;
            let values: Vec<String> = alternate
                .attributes
                .iter()
                .map(|a| parts.iter().find(|(n, _)| n == a).map(|(_, v)| v.key_text()).unwrap_or_default())
                .collect();
            Ok(rows.find_by_key(&alternate.logical_name, &values))
        }
    }
}

/// Reads `/accounts(<id>)`, `accounts(<id>)` or an absolute URL in an `@odata.bind` value.
fn bind_target(data: &Data, reference: &str, entity_set: &str, navigation: &str) -> ApiResult<(String, Uuid)> {
    let bad = || {
        ApiError::payload(
            entity_set,
            format!(
                "The value '{reference}' of '{navigation}@odata.bind' is not a reference such as '/accounts(00000000-0000-0000-0000-000000000001)'."
            ),
        )
    };
    let tail = match reference.find("/api/data/") {
        Some(i) => reference[i + "/api/data/".len()..].split_once('/').map(|(_, rest)| rest).ok_or_else(bad)?,
        None => reference.trim_start_matches('/'),
    };
    let segments = crate::odata::path::parse_path(tail).map_err(|_| bad())?;
    let [segment] = segments.as_slice() else {
        return Err(bad());
    };
    let key = segment.key.as_ref().ok_or_else(bad)?;
    let table = data.schema.table_by_set(&segment.name).ok_or_else(|| ApiError::segment_not_found(&segment.name))?;
    let id = match resolve_key(data, table, key)? {
        Some(id) => id,
        None => {
            return Err(match key {
                Key::Id(id) => ApiError::record_not_found(&table.logical_name, id),
                Key::Named(_) => ApiError::key_not_found(&table.logical_name),
            });
        }
    };
    Ok((table.logical_name.clone(), id))
}

/// Reads a request body into column changes, with Dataverse's errors for each kind of mistake.
pub fn read_body(data: &Data, table: &Table, body: &Map<String, Json>, kind_of_write: WriteKind) -> ApiResult<Changes> {
    let target = Target { table: &table.logical_name, entity_set: &table.entity_set_name };
    let mut changes = Changes::new();
    for (name, json) in body {
        if let Some(navigation) = name.strip_suffix("@odata.bind") {
            let Some((attribute, lookup)) = table.navigation(navigation) else {
                return Err(ApiError::payload(
                    &table.entity_set_name,
                    format!(
                        "An undeclared property '{navigation}' which only has property annotations in the payload but no property value \
                         was found in the payload. In OData, only declared navigation properties and declared named streams can be \
                         represented as properties without values."
                    ),
                ));
            };
            let value = match json {
                Json::Null => None,
                Json::String(reference) => {
                    let (bound_table, id) = bind_target(data, reference, &table.entity_set_name, navigation)?;
                    if bound_table != lookup.table {
                        return Err(ApiError::payload(
                            &table.entity_set_name,
                            format!("'{navigation}' refers to {} records, not to {bound_table} records.", lookup.table),
                        ));
                    }
                    Some(Value::Lookup { id, table: bound_table })
                }
                _ => {
                    return Err(ApiError::payload(
                        &table.entity_set_name,
                        format!("The value of '{name}' must be a reference string or null."),
                    ));
                }
            };
            changes.push((attribute.logical_name.clone(), value));
            continue;
        }
        if name.starts_with('@') || name.contains('@') {
            continue; // instance and property annotations such as @odata.type or @odata.etag
        }
        if let Some((attribute, _)) = table.navigation(name) {
            // A navigation property given a value rather than a binding: only null (disassociate) is valid here.
            if json.is_null() {
                changes.push((attribute.logical_name.clone(), None));
                continue;
            }
            return Err(ApiError::payload(
                &table.entity_set_name,
                format!(
                    "Deep insert through '{name}' is not supported by the emulator; bind an existing record with '{name}@odata.bind'."
                ),
            ));
        }
        if name.starts_with('_') && name.ends_with("_value") && table.attribute_by_property(name).is_some() {
            let inner = &name[1..name.len() - 6];
            let navigations: Vec<&str> = table
                .attribute(inner)
                .map(|a| a.lookup_targets().iter().map(|t| t.navigation_property.as_str()).collect())
                .unwrap_or_default();
            return Err(ApiError::payload(
                &table.entity_set_name,
                format!(
                    "The property '{name}' is read-only: it reports the lookup. Set the lookup with '{}@odata.bind'.",
                    navigations.join("@odata.bind' or '")
                ),
            ));
        }
        let Some(attribute) = table.attribute_by_property(name) else {
            return Err(ApiError::unknown_body_property(&table.entity_set_name, name, &table.logical_name));
        };
        let writable = match kind_of_write {
            WriteKind::Create => attribute.valid_for_create,
            WriteKind::Upsert => attribute.valid_for_create || attribute.valid_for_update,
        };
        let value = Value::from_json(attribute, json, target)?;
        if !writable {
            continue; // Dataverse ignores values for columns it computes or sets itself
        }
        if value.is_none()
            && attribute.required == crate::schema::RequiredLevel::SystemRequired
            && attribute.logical_name != table.primary_id
        {
            return Err(ApiError::invalid_argument(format!(
                "{} is a required column of {} and cannot be set to null.",
                attribute.logical_name, table.logical_name
            )));
        }
        changes.push((attribute.logical_name.clone(), value));
    }
    Ok(changes)
}

fn status_for_state(table: &Table, state: i64) -> Option<i64> {
    let states = table.attribute("statecode")?.kind.options()?;
    states.iter().find(|o| o.value as i64 == state).and_then(|o| o.related).map(i64::from)
}

fn state_of_status(table: &Table, status: i64) -> Option<i64> {
    let statuses = table.attribute("statuscode")?.kind.options()?;
    statuses.iter().find(|o| o.value as i64 == status).and_then(|o| o.related).map(i64::from)
}

/// Keeps `statecode` and `statuscode` consistent, as the platform does.
fn settle_state(table: &Table, row: &mut Row, state_set: bool, status_set: bool) -> ApiResult<()> {
    if table.attribute("statecode").is_none() {
        return Ok(());
    }
    let int = |row: &Row, c: &str| match row.get(c) {
        Some(Value::Int(v)) => Some(*v),
        _ => None,
    };
    match (state_set, status_set) {
        (_, true) => {
            let status = int(row, "statuscode").unwrap_or(1);
            let owner_state = state_of_status(table, status).unwrap_or(0);
            if state_set && int(row, "statecode") != Some(owner_state) {
                return Err(ApiError::invalid_argument(format!(
                    "{status} is not a valid status code for state code {} on {}. Status {status} belongs to state {owner_state}.",
                    int(row, "statecode").unwrap_or_default(),
                    table.logical_name
                )));
            }
            row.insert("statecode".into(), Value::Int(owner_state));
        }
        (true, false) => {
            let state = int(row, "statecode").unwrap_or(0);
            if let Some(status) = status_for_state(table, state) {
                row.insert("statuscode".into(), Value::Int(status));
            }
        }
        (false, false) => {
            if int(row, "statecode").is_none() {
                row.insert("statecode".into(), Value::Int(0));
                if let Some(status) = status_for_state(table, 0) {
                    row.insert("statuscode".into(), Value::Int(status));
                }
            }
        }
    }
    Ok(())
}

/// `fullname` from first, middle and last name, where the table computes it.
fn compute_names(table: &Table, row: &mut Row) {
    let computes =
        table.attribute("fullname").is_some_and(Attribute::is_read_only) && table.attribute("lastname").is_some();
    if !computes {
        return;
    }
    let text = |c: &str| match row.get(c) {
        Some(Value::Text(t)) if !t.is_empty() => Some(t.clone()),
        _ => None,
    };
    let parts: Vec<String> = ["firstname", "middlename", "lastname"].iter().filter_map(|c| text(c)).collect();
    if parts.is_empty() {
        row.remove("fullname");
    } else {
        row.insert("fullname".into(), Value::Text(parts.join(" ")));
    }
}

/// Columns that name the table a polymorphic lookup points at (a note's `objecttypecode` reads `lead`
/// when `objectid` regards a lead), kept in step with their lookup; cleared with it.
fn record_entity_names(table: &Table, row: &mut Row) {
    for attribute in &table.attributes {
        let AttributeKind::EntityName { lookup } = &attribute.kind else { continue };
        if lookup.is_empty() {
            // Written by the client (a view's `returnedtypecode`), not kept in step with a lookup.
            continue;
        }
        match row.get(lookup.as_str()) {
            Some(Value::Lookup { table: target, .. }) => {
                let name = Value::Text(target.clone());
                row.insert(attribute.logical_name.as_str().into(), name);
            }
            _ => {
                row.remove(attribute.logical_name.as_str());
            }
        }
    }
}

/// A note's `filesize`: the size in bytes of the file whose base64 text `documentbody` holds.
fn compute_file_size(table: &Table, row: &mut Row) {
    let computes =
        table.attribute("filesize").is_some_and(Attribute::is_read_only) && table.attribute("documentbody").is_some();
    if !computes {
        return;
    }
    match row.get("documentbody") {
        Some(Value::Text(body)) => {
            let symbols: Vec<u8> = body.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
            let padding = symbols.iter().rev().take_while(|b| **b == b'=').count().min(2);
            let n = symbols.len();
            let size = (n / 4 * 3 + n % 4 * 3 / 4).saturating_sub(padding);
            row.insert("filesize".into(), Value::Int(size as i64));
        }
        _ => {
            row.remove("filesize");
        }
    }
}

fn check_etag(existing: Option<&Row>, preconditions: &Preconditions, table: &Table, id: Option<Uuid>) -> ApiResult<()> {
    match (&preconditions.if_match, existing) {
        (Some(_), None) => {
            return Err(match id {
                Some(id) => ApiError::record_not_found(&table.logical_name, id),
                None => ApiError::key_not_found(&table.logical_name),
            });
        }
        (Some(tag), Some(row)) if tag != "*" && tag.trim() != etag(row) => {
            return Err(ApiError::version_mismatch());
        }
        _ => {}
    }
    if preconditions.if_none_match_any && existing.is_some() {
        return Err(ApiError::duplicate_record());
    }
    Ok(())
}

/// One create, update or upsert, as a request asks for it.
pub struct WriteRequest<'a> {
    pub table: &'a Table,
    /// The key in the URL; `None` for a create through the collection.
    pub key: Option<&'a Key>,
    pub body: &'a Map<String, Json>,
    pub kind: WriteKind,
    pub preconditions: &'a Preconditions,
    /// The systemuser acting, recorded as owner, creator and modifier.
    pub caller: Uuid,
}

/// Creates or updates one row. Everything is checked before anything changes.
pub fn write(data: &mut Data, journal: &mut Vec<Change>, request: WriteRequest<'_>) -> ApiResult<WriteOutcome> {
    let WriteRequest { table, key, body, kind, preconditions, caller } = request;
    if table.logical_name == activities::POINTER {
        return Err(activities::pointer_not_writable(match kind {
            WriteKind::Create => "Create",
            WriteKind::Upsert => "Update",
        }));
    }
    let changes = read_body(data, table, body, kind)?;
    let body_id = changes.iter().find(|(c, _)| c == &table.primary_id).and_then(|(_, v)| match v {
        Some(Value::Guid(g)) => Some(*g),
        _ => None,
    });
    let existing_id = match key {
        Some(k) => resolve_key(data, table, k)?,
        None => None,
    };
    let rows: &TableRows = data.rows(&table.logical_name);
    let existing = existing_id.and_then(|id| rows.get(&id));
    let url_id = match key {
        Some(Key::Id(id)) => Some(*id),
        _ => None,
    };
    check_etag(existing, preconditions, table, url_id)?;

    let now = Value::DateTime(Utc::now().with_nanosecond_zero());
    let caller_ref = Value::Lookup { id: caller, table: "systemuser".into() };
    let (id, mut row, created) = match existing_id {
        Some(id) => (id, existing.cloned().expect("resolved rows exist"), false),
        None => {
            let id = url_id.or(body_id).unwrap_or_else(Uuid::new_v4);
            if rows.get(&id).is_some() {
                return Err(ApiError::duplicate_record());
            }
            let mut row = Row::new();
            for attribute in &table.attributes {
                if let AttributeKind::Boolean { default, .. } = &attribute.kind {
                    row.insert(attribute.logical_name.as_str().into(), Value::Bool(*default));
                }
                if let AttributeKind::Picklist { default: Some(d), .. } = &attribute.kind {
                    row.insert(attribute.logical_name.as_str().into(), Value::Int(*d as i64));
                }
            }
            // Creating through an alternate key copies the key's values into the new row.
            if let Some(Key::Named(parts)) = key {
                for (name, value) in parts {
                    let Some(attribute) = table.attribute(name) else {
                        continue;
                    };
                    let json = match value {
                        KeyValue::Text(t) => Json::String(t.clone()),
                        KeyValue::Number(n) => serde_json::from_str(n).unwrap_or(Json::Null),
                        KeyValue::Guid(g) => Json::String(g.to_string()),
                    };
                    if let Some(v) = Value::from_json(
                        attribute,
                        &json,
                        Target { table: &table.logical_name, entity_set: &table.entity_set_name },
                    )? {
                        row.insert(name.as_str().into(), v);
                    }
                }
            }
            row.insert(table.primary_id.as_str().into(), Value::Guid(id));
            row.insert("createdon".into(), now.clone());
            row.insert("createdby".into(), caller_ref.clone());
            if table.attribute("ownerid").is_some() {
                row.insert("ownerid".into(), caller_ref.clone());
            }
            (id, row, true)
        }
    };
    let updating_key_columns: Vec<String> = match (key, created) {
        (Some(Key::Named(parts)), false) => parts.iter().map(|(n, _)| n.clone()).collect(),
        _ => Vec::new(),
    };
    let mut state_set = false;
    let mut status_set = false;
    for (column, value) in changes {
        if column == table.primary_id || updating_key_columns.contains(&column) {
            continue; // the row's identity never changes through its body
        }
        let attribute = table.attribute(&column).expect("read_body only returns known columns");
        if !created && !attribute.valid_for_update {
            continue;
        }
        state_set |= column == "statecode";
        status_set |= column == "statuscode";
        match value {
            Some(v) => row.insert(column.into(), v),
            None => row.remove(column.as_str()),
        };
    }
    if let Some(Value::Date(d)) = row.get("overriddencreatedon").cloned().filter(|_| created) {
        row.insert("createdon".into(), Value::DateTime(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc()));
    }
    settle_state(table, &mut row, state_set, status_set)?;
    compute_names(table, &mut row);
    record_entity_names(table, &mut row);
    activities::stamp_type(table, &mut row);
    compute_file_size(table, &mut row);
    journeys::check_row(table, &row)?;
    if let Some(key) = data.rows(&table.logical_name).key_conflict(table, id, &row) {
        let values: Vec<String> =
            key.attributes.iter().filter_map(|a| row.get(a.as_str()).map(Value::to_text)).collect();
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            code::DUPLICATE_ENTITY_KEY,
            format!(
                "Entity Key {} violated. A record with the same value for {} already exists. A duplicate record cannot be created. Select one or more unique values and try again.",
                key.schema_name,
                values.join(", ")
            ),
        ));
    }
    row.insert("modifiedon".into(), now);
    row.insert("modifiedby".into(), caller_ref);
    row.insert("versionnumber".into(), Value::Int(data.next_version()));
    data.put_row(journal, &table.logical_name, id, row);
    Ok(WriteOutcome { id, created })
}

trait NanosecondZero {
    fn with_nanosecond_zero(self) -> Self;
}

impl NanosecondZero for chrono::DateTime<Utc> {
    fn with_nanosecond_zero(self) -> Self {
        use chrono::Timelike;
        self.with_nanosecond(0).unwrap_or(self)
    }
}

// ------------------------------------------------------------------------------------------ reading

/// Which columns a response carries.
#[derive(Debug, Clone)]
pub enum Selection {
    All,
    /// Logical names, in the order `$select` gave them.
    Columns(Vec<String>),
}

impl Selection {
    /// Resolves `$select` property names to columns, with Dataverse's error for an unknown one.
    pub fn parse(table: &Table, select: Option<&Vec<String>>) -> ApiResult<Selection> {
        let Some(names) = select else {
            return Ok(Selection::All);
        };
        let mut columns = Vec::new();
        for name in names {
            let attribute = table
                .attribute_by_property(name)
                .ok_or_else(|| ApiError::unknown_query_property(name, &table.logical_name))?;
            if !columns.contains(&attribute.logical_name) {
                columns.push(attribute.logical_name.clone());
            }
        }
        Ok(Selection::Columns(columns))
    }

    /// The property list of `@odata.context` (`contacts(firstname,lastname)`), or nothing for all columns.
    pub fn context_suffix(&self, table: &Table) -> String {
        match self {
            Selection::All => String::new(),
            Selection::Columns(columns) => {
                let props: Vec<String> =
                    columns.iter().filter_map(|c| table.attribute(c)).map(Attribute::property_name).collect();
                format!("({})", props.join(","))
            }
        }
    }
}

/// A table's rows by id with the column that names them, to write a lookup's formatted value.
#[derive(Clone, Copy)]
struct NamedRows<'a> {
    rows: &'a TableRows,
    primary_name: &'a str,
}

impl<'a> NamedRows<'a> {
    fn of(data: &'a Data, table: &str) -> Option<Self> {
        let definition = data.schema.table(table)?;
        Some(NamedRows { rows: data.rows(table), primary_name: &definition.primary_name })
    }

    /// The name Dataverse shows for a row: its primary name column, when it is text.
    fn name(&self, id: &Uuid) -> Option<&'a str> {
        match self.rows.get(id)?.get(self.primary_name)? {
            Value::Text(t) => Some(t),
            _ => None,
        }
    }
}

/// A table a lookup column can point at, resolved for a [`Projection`].
struct LookupRows<'a> {
    target: &'a LookupTarget,
    /// `None` when the table is not in the schema: its rows have no formatted value.
    named: Option<NamedRows<'a>>,
}

/// The name a row's entry is written under: as text, for a JSON object, and as JSON ready to write into a
/// response (`"name":`), escaped once for every row rather than for each.
struct EntryKey {
    name: String,
    json: Box<[u8]>,
}

impl EntryKey {
    fn new(name: String) -> EntryKey {
        let mut json = serde_json::to_vec(&name).expect("a string serializes");
        json.push(b':');
        EntryKey { name, json: json.into_boxed_slice() }
    }
}

/// One column of a [`Projection`], with the property and annotation names it is written under.
struct Column<'a> {
    attribute: &'a Attribute,
    property: EntryKey,
    /// `<property>@OData.Community.Display.V1.FormattedValue`, when the request asked for it.
    formatted: Option<EntryKey>,
    /// `<property>@Microsoft.Dynamics.CRM.associatednavigationproperty`, when the request asked for it and the
    /// column is a lookup to more than one table (or an owner).
    navigation: Option<EntryKey>,
    /// `<property>@Microsoft.Dynamics.CRM.lookuplogicalname`, when the request asked for it.
    lookup_table: Option<EntryKey>,
    /// The tables a lookup column points at.
    targets: Vec<LookupRows<'a>>,
}

/// How a request's rows are written, resolved once for all of them: the columns selected in the order they are
/// written (the primary key last) with their property and annotation names, and the tables lookups point at, so
/// that writing a row looks up only its values.
///
/// A row is written as the Web API does: `@odata.etag` first, then each column, preceded by the annotations asked
/// for (a lookup's formatted value, navigation property and table, in that order).
pub struct Projection<'a> {
    data: &'a Data,
    columns: Vec<Column<'a>>,
    /// The index of each column in `columns`, by logical name in a row's order, so that a row's values are
    /// found in one pass over it rather than by a search per column; `versionnumber`, for the etag, at
    /// `columns.len()` when it is not a column.
    by_name: Vec<(Name, usize)>,
    /// Where the row's `versionnumber` is among its values.
    version_at: usize,
    etag: EntryKey,
}

impl<'a> Projection<'a> {
    pub fn new(data: &'a Data, table: &'a Table, selection: &Selection, prefer: &Prefer) -> Self {
        let mut attributes: Vec<&Attribute> = match selection {
            Selection::All => table.attributes.iter().filter(|a| a.logical_name != table.primary_id).collect(),
            Selection::Columns(columns) => {
                columns.iter().filter(|c| *c != &table.primary_id).filter_map(|c| table.attribute(c)).collect()
            }
        };
        attributes.extend(table.attribute(&table.primary_id));
        let wants_formatted = prefer.includes(FORMATTED);
        let wants_navigation = prefer.includes(NAVIGATION);
        let wants_lookup_table = prefer.includes(LOOKUP_TABLE);
        let columns = attributes
            .into_iter()
            .map(|attribute| {
                let property = attribute.property_name();
                let annotation = |wanted: bool, term: &str| wanted.then(|| EntryKey::new(format!("{property}@{term}")));
                let has_many_targets = attribute.lookup_targets().len() > 1
                    || matches!(attribute.kind, AttributeKind::Lookup { lookup_type: LookupType::Owner, .. });
                Column {
                    attribute,
                    formatted: annotation(wants_formatted, FORMATTED),
                    navigation: annotation(wants_navigation && has_many_targets, NAVIGATION),
                    lookup_table: annotation(wants_lookup_table, LOOKUP_TABLE),
                    targets: attribute
                        .lookup_targets()
                        .iter()
                        .map(|target| LookupRows { target, named: NamedRows::of(data, &target.table) })
                        .collect(),
                    property: EntryKey::new(property),
                }
            })
            .collect::<Vec<_>>();
        let mut by_name: Vec<(Name, usize)> =
            columns.iter().enumerate().map(|(i, c)| (Name::new(&c.attribute.logical_name), i)).collect();
        let version_at = match by_name.iter().find(|(name, _)| name.as_str() == "versionnumber") {
            Some((_, i)) => *i,
            None => {
                by_name.push((Name::new("versionnumber"), columns.len()));
                columns.len()
            }
        };
        by_name.sort_unstable();
        Projection { data, columns, by_name, version_at, etag: EntryKey::new("@odata.etag".into()) }
    }

    /// The row's value of each column, in the order of `columns`, then its `versionnumber` when that is not
    /// a column: a merge of the row's columns, which it keeps sorted by logical name, with `by_name`.
    fn values<'r>(&self, row: &'r Row) -> Vec<Option<&'r Value>> {
        let mut values = vec![None; self.columns.len() + 1];
        let mut wanted = self.by_name.iter().peekable();
        for (name, value) in row {
            while wanted.next_if(|(w, _)| w < name).is_some() {}
            match wanted.peek() {
                Some((w, i)) if w == name => values[*i] = Some(value),
                Some(_) => {}
                None => break,
            }
        }
        values
    }

    /// The row as it is written, to serialize straight into a response.
    pub fn row(&'a self, row: &'a Row) -> ProjectedRow<'a> {
        ProjectedRow { projection: self, row }
    }

    /// The row as a JSON object, for answers that add to it.
    pub fn map(&self, row: &Row) -> Map<String, Json> {
        let mut map = Map::new();
        self.write(row, &mut map);
        map
    }

    /// Writes the row's entries as the Web API does: `@odata.etag` first, then each column, preceded by the
    /// annotations asked for (a value's formatted value; a lookup's formatted value, navigation property and
    /// table, in that order).
    fn write(&self, row: &Row, sink: &mut impl RowSink) {
        let values = self.values(row);
        sink.text(&self.etag, &etag_of(values[self.version_at]));
        for (column, value) in self.columns.iter().zip(values) {
            match value {
                Some(Value::Lookup { id, table: target }) => {
                    let known = column.targets.iter().find(|t| &t.target.table == target);
                    if let Some(key) = &column.formatted {
                        let named = match known {
                            Some(known) => known.named,
                            None => NamedRows::of(self.data, target),
                        };
                        if let Some(name) = named.and_then(|n| n.name(id)) {
                            sink.text(key, name);
                        }
                    }
                    if let (Some(key), Some(known)) = (&column.navigation, known) {
                        sink.text(key, &known.target.navigation_property);
                    }
                    if let Some(key) = &column.lookup_table {
                        sink.text(key, target);
                    }
                }
                Some(v) => {
                    if let Some(key) = &column.formatted
                        && let Some(text) = v.formatted(&column.attribute.kind)
                    {
                        sink.text(key, &text);
                    }
                }
                None => {}
            }
            sink.value(&column.property, value);
        }
    }
}

/// Where a row's entries go: a JSON object, or a response's bytes.
trait RowSink {
    fn text(&mut self, key: &EntryKey, text: &str);
    fn value(&mut self, key: &EntryKey, value: Option<&Value>);
}

impl RowSink for Map<String, Json> {
    fn text(&mut self, key: &EntryKey, text: &str) {
        self.insert(key.name.clone(), Json::String(text.to_string()));
    }

    fn value(&mut self, key: &EntryKey, value: Option<&Value>) {
        self.insert(key.name.clone(), value.map_or(Json::Null, Value::to_json));
    }
}

/// A JSON object written into a response's bytes, entry by entry.
struct ObjectWriter<'w> {
    out: &'w mut Vec<u8>,
    first: bool,
}

impl ObjectWriter<'_> {
    fn key(&mut self, key: &EntryKey) {
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
        self.out.extend_from_slice(&key.json);
    }
}

impl RowSink for ObjectWriter<'_> {
    fn text(&mut self, key: &EntryKey, text: &str) {
        self.key(key);
        serde_json::to_writer(&mut *self.out, text).expect("writing to memory does not fail");
    }

    fn value(&mut self, key: &EntryKey, value: Option<&Value>) {
        self.key(key);
        serde_json::to_writer(&mut *self.out, &value.map(Value::json_form)).expect("writing to memory does not fail");
    }
}

/// A row written through a [`Projection`].
pub struct ProjectedRow<'a> {
    projection: &'a Projection<'a>,
    row: &'a Row,
}

impl WriteJson for ProjectedRow<'_> {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        self.projection.write(self.row, &mut ObjectWriter { out, first: true });
        out.push(b'}');
    }
}
