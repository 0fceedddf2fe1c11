//! The catalog (what dynsync connects: its four jobs, the connection specs and how each signs in), the sandbox's
//! connections, and the connect form: one field per parameter of the auth spec, secrets entered and never shown
//! again, the connection tested as it is saved, and a failure said in plain words (a wrong secret, an unknown
//! tenant, another environment's URL, no access) with what was typed kept, but the secrets.

use super::session::Viewer;
use super::{Nav, page, problem_page, shown_time};
use crate::access::Role;
use crate::api::AppState;
use crate::api::connections::{AuthBody, CreateConnection, SpecRef, create_connection};
use crate::connection::ADDITIONAL_REGISTRATIONS;
use crate::ids::ConnectionSpecId;
use crate::specs;
use askama::Template;
use axum::extract::{Query, RawForm, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A job of the catalog.
pub struct JobEntry {
    pub name: &'static str,
    pub does: &'static str,
    pub needs: &'static str,
}

/// The four jobs, as the catalog shows them.
pub const JOBS: [JobEntry; 4] = [
    JobEntry {
        name: "Audience activation",
        does: "Profiles streamed in (XDM, with their audiences) become Dynamics contacts' audience statuses and attributes, within seconds.",
        needs: "a Dynamics 365 destination connection and a target with the customization prefix of your columns.",
    },
    JobEntry {
        name: "Table ingestion",
        does: "Dynamics tables and views loaded into datasets, fully then incrementally: Parquet files, a PostgreSQL table, object storage or a signed webhook.",
        needs: "a Microsoft Dynamics source connection and a dataset target.",
    },
    JobEntry {
        name: "Email engagement",
        does: "Sends, opens, clicks, bounces and unsubscribes from your email service on the Dynamics timeline, and opt-outs kept in step both ways.",
        needs: "a Dynamics 365 destination connection.",
    },
    JobEntry {
        name: "Marketplace leads",
        does: "Leads posted by Microsoft's marketplace become Dynamics leads, once each, with a notification by email.",
        needs: "a Dynamics 365 destination connection.",
    },
];

/// A connection spec of the catalog.
pub struct SpecEntry {
    pub id: ConnectionSpecId,
    pub name: &'static str,
    pub description: &'static str,
    pub auths: &'static [&'static str],
}

fn spec_entries() -> Vec<SpecEntry> {
    let entry = |id, name, description| SpecEntry { id, name, description, auths: specs::auth_spec_names(id) };
    vec![
        entry(
            specs::DYNAMICS_DESTINATION,
            "Microsoft Dynamics 365 (destination)",
            "Write to Dynamics: audience statuses and attributes onto contacts, engagement on the timeline, leads.",
        ),
        entry(
            specs::DYNAMICS_SOURCE,
            "Microsoft Dynamics (source)",
            "Read from Dynamics: explore its tables and views, and load them into datasets.",
        ),
    ]
}

fn spec_name(id: ConnectionSpecId) -> &'static str {
    spec_entries().into_iter().find(|s| s.id == id).map_or("a connection", |s| s.name)
}

#[derive(Template)]
#[template(path = "catalog.html")]
struct CatalogPage {
    nav: Option<Nav>,
    jobs: &'static [JobEntry],
    specs: Vec<SpecEntry>,
    may_manage: bool,
}

pub async fn catalog(viewer: Viewer) -> Response {
    let may_manage = viewer.may(Role::Manage);
    page(
        StatusCode::OK,
        &CatalogPage { nav: Nav::new("catalog", &viewer), jobs: &JOBS, specs: spec_entries(), may_manage },
    )
}

/// A connection as the list shows it.
pub struct ConnectionEntry {
    pub id: String,
    pub name: String,
    pub spec: &'static str,
    pub environment: String,
    pub auth: &'static str,
    pub created: String,
}

#[derive(Template)]
#[template(path = "connections.html")]
struct ConnectionsPage {
    nav: Option<Nav>,
    sandbox: String,
    connections: Vec<ConnectionEntry>,
    /// The datasets ingestion flows write: (id, name, dataset).
    datasets: Vec<(String, String, String)>,
    may_manage: bool,
    done: Option<String>,
}

#[derive(Deserialize)]
pub struct Done {
    done: Option<String>,
}

pub async fn connections(State(state): State<Arc<AppState>>, viewer: Viewer, Query(query): Query<Done>) -> Response {
    let read = async {
        let connections = state.store.connections(&viewer.caller.sandbox).await?;
        let datasets = state.store.dataset_targets(&viewer.caller.sandbox).await?;
        Ok::<_, crate::store::StoreError>((connections, datasets))
    };
    let (all, datasets) = match read.await {
        Ok(read) => read,
        Err(e) => return problem_page(&viewer, e.into()),
    };
    let datasets = datasets.into_iter().map(|d| (d.id.to_string(), d.name, d.dataset.to_string())).collect();
    let connections = all
        .iter()
        .map(|c| ConnectionEntry {
            id: c.id.to_string(),
            name: c.name.clone(),
            spec: spec_name(c.spec),
            environment: c.auth.environment().map_or_else(|e| e.to_string(), |e| e.url()),
            auth: c.auth.spec_name(),
            created: shown_time(c.created_at),
        })
        .collect();
    // Only the form's own word comes back from the query: nothing a link could make the page say.
    let done = query
        .done
        .filter(|d| d == "connected")
        .map(|_| "Connected: the connection signed in and is saved.".to_string());
    page(
        StatusCode::OK,
        &ConnectionsPage {
            nav: Nav::new("connections", &viewer),
            sandbox: viewer.caller.sandbox.to_string(),
            connections,
            datasets,
            may_manage: viewer.may(Role::Manage),
            done,
        },
    )
}

/// A field of the connect form.
pub struct Field {
    pub name: &'static str,
    pub description: &'static str,
    pub required: bool,
    pub secret: bool,
    /// What was typed, for a form shown again; never a secret's.
    pub value: String,
}

#[derive(Template)]
#[template(path = "connect.html")]
struct ConnectPage {
    nav: Option<Nav>,
    spec_id: ConnectionSpecId,
    spec_name: &'static str,
    auth: &'static str,
    name: String,
    fields: Vec<Field>,
    /// For a destination: the client id typed in each row of more app registrations (empty rows included); none
    /// for the other auth specs.
    registrations: Vec<String>,
    problem: Option<String>,
}

/// Empty rows of more app registrations the connect form offers; the API takes up to
/// [`crate::connection::MAX_ADDITIONAL_REGISTRATIONS`].
const REGISTRATION_ROWS: usize = 3;

#[derive(Deserialize)]
pub struct ConnectQuery {
    spec: String,
    auth: String,
}

/// The spec and auth spec a form names, as dynsync knows them.
fn known_auth(spec: &str, auth: &str) -> Option<(ConnectionSpecId, &'static str)> {
    let spec: ConnectionSpecId = spec.parse().ok()?;
    let auth = specs::auth_spec_names(spec).iter().find(|a| **a == auth)?;
    Some((spec, *auth))
}

fn connect_form(
    viewer: &Viewer,
    (spec, auth): (ConnectionSpecId, &'static str),
    name: String,
    typed: &Map<String, Json>,
    problem: Option<String>,
) -> ConnectPage {
    let fields = specs::auth_params(spec, auth)
        .unwrap_or_default()
        .iter()
        .map(|p| Field {
            name: p.name,
            description: p.description,
            required: p.required,
            secret: p.secret,
            value: match p.secret {
                true => String::new(),
                false => typed.get(p.name).and_then(Json::as_str).unwrap_or_default().to_string(),
            },
        })
        .collect();
    let mut registrations = Vec::new();
    if auth == specs::CLIENT_CREDENTIALS_AUTH {
        let typed = typed.get(ADDITIONAL_REGISTRATIONS).and_then(Json::as_array).map(Vec::as_slice).unwrap_or_default();
        registrations = typed.iter().map(|r| r["clientId"].as_str().unwrap_or_default().to_string()).collect();
        registrations.resize(registrations.len().max(REGISTRATION_ROWS), String::new());
    }
    ConnectPage {
        nav: Nav::new("connections", viewer),
        spec_id: spec,
        spec_name: spec_name(spec),
        auth,
        name,
        fields,
        registrations,
        problem,
    }
}

fn unknown_auth(viewer: &Viewer, spec: &str, auth: &str) -> Response {
    let detail = format!("{spec} with '{auth}' is not a connection dynsync makes: pick one from the catalog");
    problem_page(viewer, crate::api::ApiError::bad_request(detail))
}

pub async fn connect_page(viewer: Viewer, Query(query): Query<ConnectQuery>) -> Response {
    let Some(known) = known_auth(&query.spec, &query.auth) else {
        return unknown_auth(&viewer, &query.spec, &query.auth);
    };
    if let Err(e) = viewer.caller.may(Role::Manage) {
        return problem_page(&viewer, e);
    }
    page(StatusCode::OK, &connect_form(&viewer, known, String::new(), &Map::new(), None))
}

/// Tests and saves the connection the form describes; shows the form again, with why, when it does not work.
pub async fn connect(State(state): State<Arc<AppState>>, viewer: Viewer, RawForm(body): RawForm) -> Response {
    let (mut spec, mut auth, mut name, mut params) = (String::new(), String::new(), String::new(), Map::new());
    // Rows of more app registrations by their number: client id, secret.
    let mut registrations: BTreeMap<usize, Map<String, Json>> = BTreeMap::new();
    for (key, value) in url::form_urlencoded::parse(&body) {
        let value = value.trim();
        match key.as_ref() {
            "spec" => spec = value.to_string(),
            "auth" => auth = value.to_string(),
            "name" => name = value.to_string(),
            _ if value.is_empty() => {}
            other => {
                if let Some(param) = other.strip_prefix("param.") {
                    params.insert(param.to_string(), Json::String(value.to_string()));
                } else if let Some((row, field @ ("clientId" | "clientSecret"))) =
                    other.strip_prefix("registration.").and_then(|r| r.split_once('.'))
                    && let Ok(row) = row.parse::<usize>()
                    && row < crate::connection::MAX_ADDITIONAL_REGISTRATIONS
                {
                    registrations.entry(row).or_default().insert(field.to_string(), Json::String(value.to_string()));
                }
            }
        }
    }
    // A row with either field typed is a registration; the API names what such a row lacks.
    if !registrations.is_empty() {
        let listed = registrations.into_values().map(Json::Object).collect();
        params.insert(ADDITIONAL_REGISTRATIONS.to_string(), Json::Array(listed));
    }
    let Some(known) = known_auth(&spec, &auth) else {
        return unknown_auth(&viewer, &spec, &auth);
    };
    let request = CreateConnection {
        name: name.clone(),
        description: String::new(),
        auth: AuthBody { spec_name: auth, params: params.clone() },
        connection_spec: SpecRef { id: spec },
    };
    match create_connection(&state, &viewer.caller, request).await {
        Ok(_) => Redirect::to("/connections?done=connected").into_response(),
        Err(e) => page(StatusCode::OK, &connect_form(&viewer, known, name, &params, Some(e.detail))),
    }
}
