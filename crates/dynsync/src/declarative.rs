//! `dynsync apply -f flow.toml`: a connection, a target and a flow kept in a file (in git), applied by name —
//! created when missing, the flow updated when it exists. Secrets are never in the file: it names the environment
//! variable that holds each one.

use crate::activation::{AttributeMapping, AudienceMapping, EmptyValues, StatusValues};
use crate::connection::DestinationRequest;
use crate::remote::{Remote, RemoteError};
use crate::specs;
use dataverse::Secret;
use serde::Deserialize;
use serde_json::{Value as Json, json};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declaration {
    pub connection: ConnectionDeclaration,
    pub target: TargetDeclaration,
    pub flow: FlowDeclaration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionDeclaration {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub tenant_id: String,
    pub client_id: String,
    /// The environment variable that holds the client secret.
    pub client_secret_env: String,
    pub environment_url: String,
    pub region: Option<String>,
    pub authority_host: Option<String>,
    /// Other app registrations of the tenant the connection signs in as, each an application user with a budget
    /// of its own under Dataverse's limits.
    #[serde(default)]
    pub additional_registrations: Vec<RegistrationDeclaration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationDeclaration {
    pub client_id: String,
    /// The environment variable that holds its client secret.
    pub client_secret_env: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetDeclaration {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub customization_prefix: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowDeclaration {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub audiences: Vec<AudienceDeclaration>,
    #[serde(default)]
    pub mappings: Vec<MappingDeclaration>,
    #[serde(default)]
    pub status_values: Option<StatusValuesDeclaration>,
    #[serde(default)]
    pub empty_values: EmptyValues,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudienceDeclaration {
    pub id: String,
    pub name: Option<String>,
    pub mapping_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingDeclaration {
    pub source: String,
    pub target: String,
    pub source_type: Option<crate::activation::XdmType>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusValuesDeclaration {
    pub realized: String,
    pub existing: String,
    pub exited: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{path} is not a flow file: {detail}")]
    Parse { path: String, detail: String },
    /// Every variable not set, each with whose secret it holds.
    #[error("{}; the file names each variable, never the secret", .0.join("; "))]
    MissingSecrets(Vec<String>),
    #[error(
        "target connection '{name}' exists with the customization prefix {existing}, not {wanted}: rename the target in the file, or delete the old one with `dynsync targets delete {id}`"
    )]
    PrefixChanged { name: String, existing: String, wanted: String, id: String },
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

impl Declaration {
    pub fn parse(path: &str, text: &str) -> Result<Declaration, ApplyError> {
        toml::from_str(text).map_err(|e| ApplyError::Parse { path: path.to_string(), detail: e.to_string() })
    }
}

fn find_by_name<'a>(items: &'a [Json], name: &str) -> Option<&'a Json> {
    items.iter().find(|i| i["name"].as_str() == Some(name))
}

fn id_of(item: &Json) -> String {
    item["id"].as_str().unwrap_or_default().to_string()
}

/// Applies a declaration; one line per resource says what was done.
pub async fn apply(remote: &Remote, declaration: &Declaration) -> Result<Vec<String>, ApplyError> {
    let mut report = Vec::new();
    let c = &declaration.connection;
    let connections = remote.items("connections").await?;
    let connection_id = match find_by_name(&connections, &c.name) {
        Some(existing) => {
            report.push(format!("connection '{}' exists ({})", c.name, id_of(existing)));
            id_of(existing)
        }
        None => {
            let mut missing = Vec::new();
            let mut secret = |variable: &str, whose: String| match std::env::var(variable) {
                Ok(secret) => Secret::new(secret),
                Err(_) => {
                    missing.push(format!(
                        "the environment variable {variable} is not set: it holds the client secret of {whose}"
                    ));
                    Secret::new("")
                }
            };
            let client_secret = secret(&c.client_secret_env, format!("connection '{}'", c.name));
            let additional: Vec<(String, Secret)> = c
                .additional_registrations
                .iter()
                .map(|r| {
                    let whose = format!("app registration {} of connection '{}'", r.client_id, c.name);
                    (r.client_id.clone(), secret(&r.client_secret_env, whose))
                })
                .collect();
            if !missing.is_empty() {
                return Err(ApplyError::MissingSecrets(missing));
            }
            let request = DestinationRequest {
                name: c.name.clone(),
                description: c.description.clone(),
                tenant_id: c.tenant_id.clone(),
                client_id: c.client_id.clone(),
                client_secret,
                environment_url: c.environment_url.clone(),
                region: c.region.clone(),
                authority_host: c.authority_host.clone(),
                additional,
            };
            let id = id_of(&remote.post("connections", &request.body()).await?);
            report.push(format!("connection '{}' created and tested ({id})", c.name));
            id
        }
    };

    let t = &declaration.target;
    let targets = remote.items("targetConnections").await?;
    let existing = targets
        .iter()
        .find(|x| x["name"].as_str() == Some(&t.name) && x["baseConnectionId"].as_str() == Some(&connection_id));
    let target_id = match existing {
        Some(existing) => {
            let prefix = existing["params"]["customizationPrefix"].as_str().unwrap_or_default();
            let wanted = t.customization_prefix.trim().trim_end_matches('_').to_ascii_lowercase();
            if prefix != wanted {
                return Err(ApplyError::PrefixChanged {
                    name: t.name.clone(),
                    existing: prefix.into(),
                    wanted,
                    id: id_of(existing),
                });
            }
            report.push(format!("target connection '{}' exists ({})", t.name, id_of(existing)));
            id_of(existing)
        }
        None => {
            let body = json!({
                "name": t.name, "description": t.description, "baseConnectionId": connection_id,
                "connectionSpec": {"id": specs::DYNAMICS_DESTINATION, "version": "1.0"},
                "params": {"customizationPrefix": t.customization_prefix},
            });
            let id = id_of(&remote.post("targetConnections", &body).await?);
            report.push(format!("target connection '{}' created ({id})", t.name));
            id
        }
    };

    let f = &declaration.flow;
    let definition = crate::activation::FlowDefinition {
        name: f.name.clone(),
        description: f.description.clone(),
        target_connection_ids: vec![target_id.parse().expect("the API returns ids")],
        audiences: f
            .audiences
            .iter()
            .map(|a| AudienceMapping { id: a.id.clone(), name: a.name.clone(), mapping_id: a.mapping_id.clone() })
            .collect(),
        mappings: f
            .mappings
            .iter()
            .map(|m| AttributeMapping {
                source: m.source.clone(),
                target: m.target.clone(),
                source_type: m.source_type,
            })
            .collect(),
        status_values: f
            .status_values
            .as_ref()
            .map(|s| StatusValues {
                realized: s.realized.clone(),
                existing: s.existing.clone(),
                exited: s.exited.clone(),
            })
            .unwrap_or_default(),
        empty_values: f.empty_values,
    };
    let body = serde_json::to_value(&definition).expect("a flow serializes");
    let flows = remote.items("flows").await?;
    match find_by_name(&flows, &f.name) {
        Some(existing) => {
            let id = id_of(existing);
            remote.send(reqwest::Method::PUT, &format!("flows/{id}"), Some(&body)).await?;
            report.push(format!("flow '{}' updated and validated ({id})", f.name));
        }
        None => {
            let id = id_of(&remote.post("flows", &body).await?);
            report.push(format!("flow '{}' created, validated and enabled ({id})", f.name));
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_s_flow_file_is_a_declaration() {
        let readme = include_str!("../../../README.md");
        let example = readme
            .split("For mappings kept in git")
            .nth(1)
            .and_then(|rest| rest.split("```toml\n").nth(1))
            .and_then(|rest| rest.split("```").next())
            .expect("the README shows a flow file");
        let declaration = Declaration::parse("README.md", example).unwrap();
        let registrations = &declaration.connection.additional_registrations;
        assert_eq!(registrations.len(), 1);
        assert_eq!(registrations[0].client_secret_env, "DYNAMICS_SECOND_SECRET");
        assert_eq!(declaration.flow.mappings.len(), 2, "{declaration:?}");
    }
}
