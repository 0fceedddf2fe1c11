//! Target connections: a destination's details over a base connection — a name, a description, and the customization
//! prefix of the publisher whose columns hold audience statuses (seed 002, "Fill in destination details").

use crate::ids::{ConnectionId, Etag, Sandbox, TargetConnectionId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone)]
pub struct TargetConnection {
    pub id: TargetConnectionId,
    pub sandbox: Sandbox,
    pub name: String,
    pub description: String,
    pub base_connection_id: ConnectionId,
    pub customization_prefix: CustomizationPrefix,
    pub etag: Etag,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A publisher's customization prefix, without its `_`: `new` for the default solution, `cr8a3` for an
/// environment's CDS default publisher, `contoso` for one's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CustomizationPrefix(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not a customization prefix: Dynamics prefixes are 2 to 8 letters or digits, starting with a letter and not with mscrm (new, cr8a3, contoso); find yours in Settings, Customizations, Publishers"
)]
pub struct BadPrefix(pub String);

impl CustomizationPrefix {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The logical name of a custom column as Dynamics names it: `<prefix>_<name>`, lower case. A name that already
    /// carries this prefix is kept as it is.
    pub fn column(&self, name: &str) -> String {
        let name = name.trim().to_ascii_lowercase();
        if name.starts_with(&format!("{}_", self.0)) { name } else { format!("{}_{name}", self.0) }
    }
}

impl FromStr for CustomizationPrefix {
    type Err = BadPrefix;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let prefix = text.trim().trim_end_matches('_').to_ascii_lowercase();
        let valid = (2..=8).contains(&prefix.len())
            && prefix.chars().all(|c| c.is_ascii_alphanumeric())
            && prefix.starts_with(|c: char| c.is_ascii_alphabetic())
            && !prefix.starts_with("mscrm");
        if valid { Ok(CustomizationPrefix(prefix)) } else { Err(BadPrefix(text.to_string())) }
    }
}

impl TryFrom<String> for CustomizationPrefix {
    type Error = BadPrefix;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<CustomizationPrefix> for String {
    fn from(prefix: CustomizationPrefix) -> String {
        prefix.0
    }
}

impl fmt::Display for CustomizationPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_name_columns_as_dynamics_does() {
        let prefix: CustomizationPrefix = "cr8a3_".parse().unwrap();
        assert_eq!(prefix.as_str(), "cr8a3");
        assert_eq!(prefix.column("GoldMembers"), "cr8a3_goldmembers");
        assert_eq!(prefix.column("cr8a3_goldmembers"), "cr8a3_goldmembers");
        assert!("n".parse::<CustomizationPrefix>().is_err());
        assert!("mscrmx".parse::<CustomizationPrefix>().is_err());
        assert!("9abc".parse::<CustomizationPrefix>().is_err());
        assert!("new-one".parse::<CustomizationPrefix>().is_err());
    }
}
