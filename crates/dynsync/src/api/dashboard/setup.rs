//! Making a destination and an activation flow in the browser, as AEP's destination workflow goes: destination
//! details (a name, a destination connection, the customization prefix), then audiences with their Mapping ID and
//! the column that results, and attributes from a profile path onto a contact column picked from the environment's
//! real columns. Saving checks the flow against the contact table as the API does, and every problem is shown
//! beside its field with the closest columns that exist; what was typed stays, to be fixed and saved again.
//!
//! Forms are plain HTML with a fixed number of rows (and two empty ones more each time the form comes back), so
//! they work without JavaScript.

use super::session::Viewer;
use super::{Nav, page, problem_page};
use crate::access::Role;
use crate::activation::ActivationFlow;
use crate::activation::{AttributeMapping, AudienceMapping, EmptyValues, FlowDefinition, StatusValues};
use crate::api::targets::{CreateTarget, create_target};
use crate::api::{ApiError, AppState};
use crate::checks::{Problem, Problems};
use crate::ids::{FlowId, TargetConnectionId};
use crate::specs;
use askama::Template;
use axum::extract::{Path, Query, RawForm, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Empty rows a new form offers, and how many more a form shown again adds.
const NEW_ROWS: usize = 4;
const MORE_ROWS: usize = 2;

/// A choice of a select.
pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "target_new.html")]
struct TargetPage {
    nav: Option<Nav>,
    name: String,
    prefix: String,
    connections: Vec<Choice>,
    problem: Option<String>,
}

async fn destination_connections(state: &AppState, viewer: &Viewer, chosen: &str) -> Result<Vec<Choice>, ApiError> {
    let all = state.store.connections(&viewer.caller.sandbox).await?;
    Ok(all
        .into_iter()
        .filter(|c| c.spec == specs::DYNAMICS_DESTINATION)
        .map(|c| Choice { selected: c.id.to_string() == chosen, value: c.id.to_string(), label: c.name })
        .collect())
}

pub async fn target_page(State(state): State<Arc<AppState>>, viewer: Viewer) -> Response {
    if let Err(e) = viewer.caller.may(Role::Manage) {
        return problem_page(&viewer, e);
    }
    match destination_connections(&state, &viewer, "").await {
        Ok(connections) => page(
            StatusCode::OK,
            &TargetPage {
                nav: Nav::new("flows", &viewer),
                name: String::new(),
                prefix: "new".into(),
                connections,
                problem: None,
            },
        ),
        Err(e) => problem_page(&viewer, e),
    }
}

/// The fields of a posted form, by name.
fn fields(body: &[u8]) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.trim().to_string())).collect()
}

pub async fn create_target_from(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    RawForm(body): RawForm,
) -> Response {
    let form = fields(&body);
    let get = |name: &str| form.get(name).cloned().unwrap_or_default();
    let request = CreateTarget::new(get("name"), get("connection"), get("prefix"));
    match create_target(&state, &viewer.caller, request).await {
        Ok(target) => Redirect::to(&format!("/flows/new?target={}", target.id)).into_response(),
        Err(e) => match destination_connections(&state, &viewer, &get("connection")).await {
            Ok(connections) => page(
                StatusCode::OK,
                &TargetPage {
                    nav: Nav::new("flows", &viewer),
                    name: get("name"),
                    prefix: get("prefix"),
                    connections,
                    problem: Some(e.detail),
                },
            ),
            Err(e) => problem_page(&viewer, e),
        },
    }
}

/// A row of the audiences' table.
pub struct AudienceRow {
    pub id: String,
    pub name: String,
    pub mapping: String,
    /// The column the Mapping ID makes, with the target's prefix.
    pub column: String,
    pub problems: Vec<Problem>,
}

/// A row of the attributes' table.
pub struct MappingRow {
    pub source: String,
    pub target: String,
    pub problems: Vec<Problem>,
}

#[derive(Template)]
#[template(path = "flow_new.html")]
struct FlowFormPage {
    nav: Option<Nav>,
    /// Where the form posts: `/flows/new`, or `/flows/{id}/edit`.
    action: String,
    /// The page's title.
    title: &'static str,
    /// The etag of the flow being changed, to refuse a save over a change made meanwhile.
    etag: String,
    name: String,
    targets: Vec<Choice>,
    /// The chosen target's id.
    target: String,
    /// The chosen target's customization prefix, to show the columns audiences make.
    prefix: Option<String>,
    audiences: Vec<AudienceRow>,
    mappings: Vec<MappingRow>,
    /// The contact table's columns, offered as the attributes' targets.
    columns: Vec<String>,
    /// Problems of no row (the name, the target).
    problems: Vec<Problem>,
    /// Why the columns could not be read, when they could not.
    columns_unavailable: Option<String>,
}

#[derive(Deserialize)]
pub struct FlowFormQuery {
    target: Option<String>,
}

/// What the form says, as typed.
#[derive(Default)]
struct FlowForm {
    /// The flow being changed, and its etag as read; none for a new flow.
    editing: Option<(String, String)>,
    name: String,
    target: String,
    audiences: Vec<(String, String, String)>,
    mappings: Vec<(String, String)>,
}

impl FlowForm {
    fn parse(body: &[u8]) -> FlowForm {
        let form = fields(body);
        let get = |name: String| form.get(&name).cloned().unwrap_or_default();
        let rows = |prefix: &str| {
            form.keys()
                .filter_map(|k| k.strip_prefix(prefix)?.split('.').next()?.parse::<usize>().ok())
                .max()
                .map_or(0, |n| n + 1)
        };
        let audiences = (0..rows("audience."))
            .map(|i| {
                (
                    get(format!("audience.{i}.id")),
                    get(format!("audience.{i}.name")),
                    get(format!("audience.{i}.mapping")),
                )
            })
            .filter(|(id, name, mapping)| !(id.is_empty() && name.is_empty() && mapping.is_empty()))
            .collect();
        let mappings = (0..rows("mapping."))
            .map(|i| (get(format!("mapping.{i}.source")), get(format!("mapping.{i}.target"))))
            .filter(|(source, target)| !(source.is_empty() && target.is_empty()))
            .collect();
        FlowForm { editing: None, name: get("name".into()), target: get("target".into()), audiences, mappings }
    }

    fn definition(&self) -> Result<FlowDefinition, Problem> {
        let target: TargetConnectionId = self
            .target
            .parse()
            .map_err(|_| Problem::new("targetConnectionIds[0]", "choose the destination the flow writes to"))?;
        Ok(FlowDefinition {
            name: self.name.clone(),
            description: String::new(),
            target_connection_ids: vec![target],
            audiences: self
                .audiences
                .iter()
                .map(|(id, name, mapping)| AudienceMapping {
                    id: id.clone(),
                    name: Some(name.clone()).filter(|n| !n.is_empty()),
                    mapping_id: mapping.clone(),
                })
                .collect(),
            mappings: self
                .mappings
                .iter()
                .map(|(source, target)| AttributeMapping {
                    source: source.clone(),
                    target: target.clone(),
                    source_type: None,
                })
                .collect(),
            status_values: StatusValues::default(),
            empty_values: EmptyValues::default(),
        })
    }
}

/// The index of the row a problem's field names (`audiences[2].mappingId` is audiences' row 2).
fn row_of(field: &str, list: &str) -> Option<usize> {
    field.strip_prefix(list)?.strip_prefix('[')?.split(']').next()?.parse().ok()
}

async fn flow_form(
    state: &AppState,
    viewer: &Viewer,
    form: &FlowForm,
    problems: Vec<Problem>,
    extra: usize,
) -> Response {
    let targets = match state.store.target_connections(&viewer.caller.sandbox).await {
        Ok(all) => all,
        Err(e) => return problem_page(viewer, e.into()),
    };
    // The destination asked for, else the first: its columns are read at once.
    let chosen = targets.iter().find(|t| t.id.to_string() == form.target).or(targets.first());
    let prefix = chosen.map(|t| t.customization_prefix.clone());
    let (mut columns, mut columns_unavailable) = (Vec::new(), None);
    if let Some(target) = chosen {
        let connection = state.store.connection(&viewer.caller.sandbox, target.base_connection_id).await.ok().flatten();
        match connection.as_ref().and_then(|c| state.clients.client(c)) {
            Some(client) => match client.table("contact").await {
                Ok(table) => {
                    columns = table.columns.iter().map(|c| c.logical_name.clone()).collect();
                    columns.sort();
                }
                Err(e) => columns_unavailable = Some(format!("the contact table's columns cannot be read now: {e}")),
            },
            None => columns_unavailable = Some("the destination's connection is gone".into()),
        }
    }
    let (mut audience_problems, mut mapping_problems, mut general) = (BTreeMap::new(), BTreeMap::new(), Vec::new());
    for problem in problems {
        if let Some(i) = row_of(&problem.field, "audiences") {
            audience_problems.entry(i).or_insert_with(Vec::new).push(problem);
        } else if let Some(i) = row_of(&problem.field, "mappings") {
            mapping_problems.entry(i).or_insert_with(Vec::new).push(problem);
        } else {
            general.push(problem);
        }
    }
    let mut audiences: Vec<AudienceRow> = form
        .audiences
        .iter()
        .enumerate()
        .map(|(i, (id, name, mapping))| AudienceRow {
            id: id.clone(),
            name: name.clone(),
            mapping: mapping.clone(),
            column: prefix.as_ref().filter(|_| !mapping.is_empty()).map(|p| p.column(mapping)).unwrap_or_default(),
            problems: audience_problems.remove(&i).unwrap_or_default(),
        })
        .collect();
    audiences.extend((0..extra).map(|_| AudienceRow {
        id: String::new(),
        name: String::new(),
        mapping: String::new(),
        column: String::new(),
        problems: Vec::new(),
    }));
    let mut mappings: Vec<MappingRow> = form
        .mappings
        .iter()
        .enumerate()
        .map(|(i, (source, target))| MappingRow {
            source: source.clone(),
            target: target.clone(),
            problems: mapping_problems.remove(&i).unwrap_or_default(),
        })
        .collect();
    mappings.extend((0..extra).map(|_| MappingRow {
        source: String::new(),
        target: String::new(),
        problems: Vec::new(),
    }));
    let targets = targets
        .iter()
        .map(|t| Choice {
            value: t.id.to_string(),
            label: format!("{} (prefix {})", t.name, t.customization_prefix),
            selected: Some(t.id) == chosen.map(|c| c.id),
        })
        .collect();
    page(
        StatusCode::OK,
        &FlowFormPage {
            nav: Nav::new("flows", viewer),
            action: match &form.editing {
                Some((id, _)) => format!("/flows/{id}/edit"),
                None => "/flows/new".into(),
            },
            title: if form.editing.is_some() { "Change the activation flow" } else { "New activation flow" },
            etag: form.editing.as_ref().map(|(_, etag)| etag.clone()).unwrap_or_default(),
            name: form.name.clone(),
            targets,
            target: chosen.map(|t| t.id.to_string()).unwrap_or_default(),
            prefix: prefix.map(|p| p.to_string()),
            audiences,
            mappings,
            columns,
            problems: general,
            columns_unavailable,
        },
    )
}

pub async fn flow_page(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Query(query): Query<FlowFormQuery>,
) -> Response {
    if let Err(e) = viewer.caller.may(Role::Manage) {
        return problem_page(&viewer, e);
    }
    // The identity is the one mapping every flow needs: it is there to start from.
    let form = FlowForm {
        target: query.target.unwrap_or_default(),
        mappings: vec![("contactId".into(), "contactid".into())],
        ..FlowForm::default()
    };
    flow_form(&state, &viewer, &form, Vec::new(), NEW_ROWS).await
}

pub async fn create_flow_from(State(state): State<Arc<AppState>>, viewer: Viewer, RawForm(body): RawForm) -> Response {
    let form = FlowForm::parse(&body);
    let definition = match form.definition() {
        Ok(definition) => definition,
        Err(problem) => return flow_form(&state, &viewer, &form, vec![problem], MORE_ROWS).await,
    };
    match crate::api::flows::create_activation(&state, &viewer.caller, definition).await {
        Ok(flow) => Redirect::to(&format!("/flows/{}?done=created", flow.id)).into_response(),
        Err(e) => flow_form(&state, &viewer, &form, problems_of(e), MORE_ROWS).await,
    }
}

/// The problems of a refused definition, each with its field; or the refusal itself.
pub(super) fn problems_of(e: ApiError) -> Vec<Problem> {
    e.report
        .clone()
        .and_then(|r| serde_json::from_value::<Problems>(r).ok())
        .map(|r| r.problems)
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| vec![Problem::new("", e.detail)])
}

/// The activation flow `id` of the viewer's sandbox.
async fn activation_flow(state: &AppState, viewer: &Viewer, id: &str) -> Result<ActivationFlow, ApiError> {
    let not_found = || ApiError::not_found("activation flow", id, &viewer.caller.sandbox);
    let flow_id: FlowId = id.parse().map_err(|_| not_found())?;
    let record = state.store.flow(&viewer.caller.sandbox, flow_id).await?.ok_or_else(not_found)?;
    if record.job != crate::activation::job::JOB {
        return Err(ApiError::bad_request(format!(
            "flow {id} is not an activation flow: its definition is changed with PUT /flows/{id}"
        )));
    }
    Ok(ActivationFlow::try_from(&record)?)
}

pub async fn edit_page(State(state): State<Arc<AppState>>, viewer: Viewer, Path(id): Path<String>) -> Response {
    if let Err(e) = viewer.caller.may(Role::Manage) {
        return problem_page(&viewer, e);
    }
    let flow = match activation_flow(&state, &viewer, &id).await {
        Ok(flow) => flow,
        Err(e) => return problem_page(&viewer, e),
    };
    let d = &flow.definition;
    let form = FlowForm {
        editing: Some((id, flow.etag.0.clone())),
        name: d.name.clone(),
        target: d.target_connection_id().map(|t| t.to_string()).unwrap_or_default(),
        audiences: d
            .audiences
            .iter()
            .map(|a| (a.id.clone(), a.name.clone().unwrap_or_default(), a.mapping_id.clone()))
            .collect(),
        mappings: d.mappings.iter().map(|m| (m.source.clone(), m.target.clone())).collect(),
    };
    flow_form(&state, &viewer, &form, Vec::new(), MORE_ROWS).await
}

pub async fn save_edit(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Path(id): Path<String>,
    RawForm(body): RawForm,
) -> Response {
    let mut form = FlowForm::parse(&body);
    let read_etag = fields(&body).remove("etag").unwrap_or_default();
    form.editing = Some((id.clone(), read_etag.clone()));
    let current = match activation_flow(&state, &viewer, &id).await {
        Ok(flow) => flow,
        Err(e) => return problem_page(&viewer, e),
    };
    if current.etag.0 != read_etag {
        let problem = super::stale("flow");
        return flow_form(&state, &viewer, &form, vec![problem], MORE_ROWS).await;
    }
    let definition = match form.definition() {
        Ok(definition) => definition,
        Err(problem) => return flow_form(&state, &viewer, &form, vec![problem], MORE_ROWS).await,
    };
    match crate::api::flows::replace_activation(&state, &viewer.caller, current, definition).await {
        Ok(flow) => Redirect::to(&format!("/flows/{}?done=changed", flow.id)).into_response(),
        Err(e) => flow_form(&state, &viewer, &form, problems_of(e), MORE_ROWS).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_is_shown_beside_the_row_its_field_names() {
        assert_eq!(row_of("mappings[2].target", "mappings"), Some(2));
        assert_eq!(row_of("audiences[0].mappingId", "audiences"), Some(0));
        assert_eq!(row_of("name", "mappings"), None);
        assert_eq!(row_of("mappingsX[1]", "mappings"), None);
    }

    #[test]
    fn the_form_s_empty_rows_are_left_out_and_its_rows_keep_their_order() {
        let body = b"name=Loyalty&target=x&mapping.0.source=contactId&mapping.0.target=contactid\
&mapping.1.source=&mapping.1.target=&mapping.2.source=person.name.firstName&mapping.2.target=firstname\
&audience.0.id=seg-gold&audience.0.name=Gold&audience.0.mapping=gold&audience.1.id=&audience.1.name=&audience.1.mapping=";
        let form = FlowForm::parse(body);
        assert_eq!(form.name, "Loyalty");
        assert_eq!(
            form.mappings,
            vec![("contactId".into(), "contactid".into()), ("person.name.firstName".into(), "firstname".into())]
        );
        assert_eq!(form.audiences, vec![("seg-gold".into(), "Gold".into(), "gold".into())]);
        assert_eq!(form.definition().unwrap_err().field, "targetConnectionIds[0]");
    }
}
