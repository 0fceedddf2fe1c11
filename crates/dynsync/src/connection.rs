//! Testing a Dynamics 365 connection the way dynsync uses it: sign in, then `WhoAmI` in the environment.
//! A failure says, in plain words, what is wrong and what to change.

use dataverse::{AuthError, Client, ClientCredentials, Environment, Error, WhoAmI};
use std::fmt;

/// Why a connection does not work.
#[derive(Debug)]
pub struct ConnectionProblem {
    environment: String,
    error: Error,
}

impl fmt::Display for ConnectionProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env = &self.environment;
        match &self.error {
            Error::Auth(auth @ AuthError::Unreachable { .. }) => {
                write!(f, "{auth}; check the authority URL and the network")
            }
            Error::Auth(auth) => write!(f, "{auth}"),
            Error::Api(api) if api.status == 401 || api.status == 403 => write!(
                f,
                "the app signs in but has no access to {env}: add it to the environment as an application user with a \
                 security role (Power Platform admin center, Environments, Settings, Application users). Dataverse said: {}",
                api.message
            ),
            Error::Api(api) if api.status == 404 => {
                write!(f, "{env} does not answer as a Dataverse environment (404 on WhoAmI): check the environment URL")
            }
            Error::Transport { .. } => {
                write!(f, "could not reach {env}: check the environment URL and the network ({})", self.error)
            }
            other => write!(f, "{other}"),
        }
    }
}

impl std::error::Error for ConnectionProblem {}

/// Signs in and asks the environment who the app is.
pub async fn check(environment: Environment, credentials: ClientCredentials) -> Result<WhoAmI, ConnectionProblem> {
    let url = environment.url();
    Client::new(environment, credentials)
        .who_am_i()
        .await
        .map_err(|error| ConnectionProblem { environment: url, error })
}
