//! Who may do what, where. An API token has roles — *manage* (connections, targets, flows), *activate* (enable,
//! disable, replay, send data to an inlet), *view* (read; every role may) — and the sandboxes it acts in. The
//! operator's tokens (the `api-tokens` file, `DYNSYNC_API_TOKENS`) may do everything everywhere, and alone manage
//! the other tokens, which live in the store so that every process sharing it knows them.

use crate::ids::Sandbox;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Create, change and delete connections, targets and flows (and rotate an intake's secret).
    Manage,
    /// Enable, disable and replay flows, validate an intake, and send data to inlets.
    Activate,
    /// Read: implied by the other roles.
    View,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Manage, Role::Activate, Role::View];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Manage => "manage",
            Role::Activate => "activate",
            Role::View => "view",
        }
    }

    /// What the role is for, to say what a token lacks.
    fn allows(self) -> &'static str {
        match self {
            Role::Manage => "create, change and delete connections, targets and flows",
            Role::Activate => "enable, disable and replay flows and send data to them",
            Role::View => "read",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a role: use manage, activate or view")]
pub struct BadRole(pub String);

impl FromStr for Role {
    type Err = BadRole;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|r| r.as_str().eq_ignore_ascii_case(text.trim())).ok_or(BadRole(text.to_string()))
    }
}

/// The sandboxes a token acts in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Sandboxes {
    /// `"*"`: every sandbox, those made later too.
    All(AllSandboxes),
    Only(BTreeSet<Sandbox>),
}

/// The `"*"` of [`Sandboxes::All`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AllSandboxes {
    #[serde(rename = "*")]
    Star,
}

impl Sandboxes {
    pub fn contains(&self, sandbox: &Sandbox) -> bool {
        match self {
            Sandboxes::All(_) => true,
            Sandboxes::Only(only) => only.contains(sandbox),
        }
    }
}

impl fmt::Display for Sandboxes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sandboxes::All(_) => f.write_str("every sandbox"),
            Sandboxes::Only(only) => {
                let names: Vec<&str> = only.iter().map(Sandbox::as_str).collect();
                write!(f, "sandbox{} {}", if names.len() == 1 { "" } else { "es" }, names.join(", "))
            }
        }
    }
}

/// What the token of a request may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// One of the operator's tokens: everything, everywhere, tokens included.
    Operator,
    /// A token made through the API.
    Token { id: Uuid, name: String, roles: BTreeSet<Role>, sandboxes: Sandboxes },
}

/// Why a token may not do something: said in the 403's detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error(
        "token '{name}' ({id}) may act in {sandboxes} only, not in sandbox {sandbox}: use a token of that sandbox, \
         or ask the operator for one (dynsync tokens create --sandboxes {sandbox})"
    )]
    Sandbox { id: Uuid, name: String, sandboxes: String, sandbox: Sandbox },
    #[error(
        "token '{name}' ({id}) has the role{} {roles}, and to {} takes the {role} role: use a token with it, or ask \
         the operator for one (dynsync tokens create --roles {role})",
        if .roles.contains(',') { "s" } else { "" },
        .role.allows()
    )]
    Role { id: Uuid, name: String, roles: String, role: Role },
    #[error(
        "API tokens are managed with one of the operator's tokens (from the api-tokens file in dynsync's data \
         directory, or DYNSYNC_API_TOKENS), and token '{name}' ({id}) is not one"
    )]
    NotOperator { id: Uuid, name: String },
}

impl Grant {
    /// Whether the token may act in `sandbox` at all.
    pub fn enter(&self, sandbox: &Sandbox) -> Result<(), Denied> {
        match self {
            Grant::Token { id, name, sandboxes, .. } if !sandboxes.contains(sandbox) => Err(Denied::Sandbox {
                id: *id,
                name: name.clone(),
                sandboxes: sandboxes.to_string(),
                sandbox: sandbox.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Whether the token may act as `role` in `sandbox`.
    pub fn may(&self, role: Role, sandbox: &Sandbox) -> Result<(), Denied> {
        self.enter(sandbox)?;
        match self {
            Grant::Token { id, name, roles, .. } if role != Role::View && !roles.contains(&role) => {
                Err(Denied::Role { id: *id, name: name.clone(), roles: roles_text(roles), role })
            }
            _ => Ok(()),
        }
    }

    /// Whether the token is the operator's.
    pub fn operate(&self) -> Result<(), Denied> {
        match self {
            Grant::Operator => Ok(()),
            Grant::Token { id, name, .. } => Err(Denied::NotOperator { id: *id, name: name.clone() }),
        }
    }
}

fn roles_text(roles: &BTreeSet<Role>) -> String {
    roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(roles: &[Role], sandboxes: &[&str]) -> Grant {
        Grant::Token {
            id: Uuid::nil(),
            name: "ci".into(),
            roles: roles.iter().copied().collect(),
            sandboxes: Sandboxes::Only(sandboxes.iter().map(|s| s.parse().unwrap()).collect()),
        }
    }

    #[test]
    fn each_role_allows_its_own_work_and_reading_in_its_sandboxes_only() {
        let (prod, dev): (Sandbox, Sandbox) = ("prod".parse().unwrap(), "dev".parse().unwrap());
        let viewer = token(&[Role::View], &["prod"]);
        assert_eq!(viewer.may(Role::View, &prod), Ok(()));
        let denied = viewer.may(Role::Manage, &prod).unwrap_err().to_string();
        assert!(denied.contains("has the role view, and to create, change and delete"), "{denied}");
        assert!(denied.contains("--roles manage"), "{denied}");
        let denied = viewer.may(Role::View, &dev).unwrap_err().to_string();
        assert!(denied.contains("may act in sandbox prod only, not in sandbox dev"), "{denied}");
        let activator = token(&[Role::Activate], &["prod", "dev"]);
        assert_eq!(activator.may(Role::Activate, &dev), Ok(()));
        assert_eq!(activator.may(Role::View, &dev), Ok(()), "every role may read");
        assert!(activator.may(Role::Manage, &dev).is_err());
        assert!(activator.operate().is_err());
        assert_eq!(Grant::Operator.may(Role::Manage, &dev), Ok(()));
        assert_eq!(Grant::Operator.operate(), Ok(()));
    }

    #[test]
    fn sandboxes_are_a_list_or_a_star() {
        let all: Sandboxes = serde_json::from_str("\"*\"").unwrap();
        assert!(all.contains(&"anything".parse().unwrap()));
        let some: Sandboxes = serde_json::from_str("[\"prod\"]").unwrap();
        assert_eq!(some.to_string(), "sandbox prod");
        assert!(serde_json::from_str::<Sandboxes>("[\"Prod\"]").is_err(), "sandbox names are checked");
        assert_eq!("ACTIVATE".parse::<Role>(), Ok(Role::Activate));
        assert!("admin".parse::<Role>().is_err());
    }
}
