//! Identifiers of dynsync's resources: each its own type, so that a flow id never stands where a connection id
//! is expected.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new() -> Self {
                $name(Uuid::new_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(text.trim()).map($name)
            }
        }
    };
}

uuid_id!(
    /// A base connection: the credentials of one Dynamics 365 environment.
    ConnectionId
);
uuid_id!(
    /// A target connection: a destination's details (name, customization prefix) over a base connection.
    TargetConnectionId
);
uuid_id!(
    /// A flow of any job.
    FlowId
);
uuid_id!(
    /// A source connection: which table or view of a Dynamics connection an ingestion reads.
    SourceConnectionId
);
uuid_id!(
    /// A connection spec: which system a connection talks to, and how it signs in.
    ConnectionSpecId
);

/// A sandbox: every resource lives in one, and is invisible from the others.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Sandbox(String);

impl TryFrom<String> for Sandbox {
    type Error = BadSandboxName;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not a sandbox name: use 1 to 64 lower-case letters, digits and '-' (for example prod or dev-eu), in the x-sandbox-name header"
)]
pub struct BadSandboxName(pub String);

impl Sandbox {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Sandbox {
    type Err = BadSandboxName;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let valid = !text.is_empty()
            && text.len() <= 64
            && text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if valid { Ok(Sandbox(text.to_string())) } else { Err(BadSandboxName(text.to_string())) }
    }
}

impl fmt::Display for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A version tag for optimistic concurrency, quoted as Adobe's `etag`s are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Etag(pub String);

impl Etag {
    pub fn new() -> Self {
        Etag(format!("\"{}\"", Uuid::new_v4()))
    }
}

impl Default for Etag {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for Etag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_names_are_checked() {
        assert_eq!("prod".parse::<Sandbox>().unwrap().as_str(), "prod");
        assert!("dev-eu-2".parse::<Sandbox>().is_ok());
        assert!("".parse::<Sandbox>().is_err());
        assert!("Prod".parse::<Sandbox>().is_err());
        assert!("../x".parse::<Sandbox>().is_err());
    }
}
