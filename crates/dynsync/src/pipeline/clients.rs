//! One Dataverse client per connection, shared by every flow and by the API: flows that write through the same
//! application user share its token, its adaptive concurrency and its `Retry-After` pause, as Dataverse counts
//! them together. When a connection's credentials change (a rotated secret), the next use of its client signs
//! in with the new ones (each registration's, a refused one back in rotation); the client keeps its throttling
//! state. A connection that now lists another number of app registrations gets a new client.

use super::StepError;
use crate::connection::Connection;
use crate::ids::{ConnectionId, Etag, Sandbox};
use crate::store::Store;
use dataverse::Client;
use std::collections::HashMap;
use std::sync::Mutex;

struct Entry {
    etag: Etag,
    client: Client,
}

#[derive(Default)]
pub struct Clients {
    entries: Mutex<HashMap<ConnectionId, Entry>>,
}

impl Clients {
    pub fn new() -> Clients {
        Clients::default()
    }

    /// The client of a connection as it is now: made on first use, given the connection's new credentials when
    /// they changed, made anew when the connection now names another environment. `None` when the connection
    /// is not a Dynamics destination.
    pub fn client(&self, connection: &Connection) -> Option<Client> {
        let destination = connection.destination()?;
        let mut entries = self.entries.lock().expect("clients lock");
        match entries.get_mut(&connection.id) {
            Some(entry) if entry.etag == connection.etag => Some(entry.client.clone()),
            Some(entry)
                if entry.client.environment() == &destination.environment
                    && entry.client.registrations().len() == destination.registrations().len() =>
            {
                for (index, credentials) in destination.registrations().into_iter().enumerate() {
                    entry.client.set_registration_credentials(index, credentials);
                }
                entry.etag = connection.etag.clone();
                tracing::info!(connection = %connection.id, "the connection changed: its client signs in with the new credentials");
                Some(entry.client.clone())
            }
            _ => {
                let client = destination.client();
                entries.insert(connection.id, Entry { etag: connection.etag.clone(), client: client.clone() });
                Some(client)
            }
        }
    }

    /// The client of a connection read from the store, up to date with it.
    pub async fn current(&self, store: &Store, sandbox: &Sandbox, id: ConnectionId) -> Result<Client, StepError> {
        let connection = store.connection(sandbox, id).await?.ok_or(StepError::NoDestination)?;
        self.client(&connection).ok_or(StepError::NoDestination)
    }

    /// Whether the stored connection differs from the one the client was made with.
    pub async fn changed(&self, store: &Store, sandbox: &Sandbox, id: ConnectionId) -> Result<bool, StepError> {
        let connection = store.connection(sandbox, id).await?;
        let entries = self.entries.lock().expect("clients lock");
        Ok(match (connection, entries.get(&id)) {
            (Some(c), Some(entry)) => c.etag != entry.etag,
            _ => true,
        })
    }

    /// Gives the connection's client, if it has one in this process, the connection's credentials as they are now:
    /// a registration refused for a secret just replaced is back in rotation at once.
    pub fn refresh(&self, connection: &Connection) {
        let present = self.entries.lock().expect("clients lock").contains_key(&connection.id);
        if present {
            self.client(connection);
        }
    }

    /// Each app registration the connection's client signs in as and whether it is in rotation; `None` while the
    /// connection has no client in this process yet.
    pub fn registrations(&self, id: ConnectionId) -> Option<Vec<dataverse::RegistrationStatus>> {
        self.entries.lock().expect("clients lock").get(&id).map(|entry| entry.client.registrations())
    }

    pub fn forget(&self, id: ConnectionId) {
        self.entries.lock().expect("clients lock").remove(&id);
    }

    /// Each connection's client, for metrics.
    pub fn all(&self) -> Vec<(ConnectionId, Client)> {
        let entries = self.entries.lock().expect("clients lock");
        let mut all: Vec<_> = entries.iter().map(|(id, e)| (*id, e.client.clone())).collect();
        all.sort_by_key(|(id, _)| *id);
        all
    }
}
