//! A client for the Microsoft Dataverse (Dynamics 365) Web API. It knows Dataverse and nothing of dynsync.
//!
//! - [`Client`]: one environment, one token cache, one [executor](executor) that every request goes through
//!   (concurrency by AIMD under `x-ms-dop-hint`, a client-wide pause on `Retry-After`, jittered retries
//!   ([`Backoff`]) of transient failures, never a retry of a 400) and its [`Metrics`]; credentials that can
//!   be replaced while it runs ([`Client::set_credentials`]).
//! - [`entity`]: create, retrieve, update, upsert, delete; [`query`]: a typed query whose records stream
//!   page after page; [`batch`]: `$batch` with change sets; [`bulk`]: `CreateMultiple`/`UpdateMultiple`/
//!   `UpsertMultiple` in chunks, and [`Client::write_each`], which answers for every record and never lets a
//!   bad one fail its neighbours; [`changes`]: change tracking as a stream with a resumable token.
//!
//! ```no_run
//! # async fn example() -> Result<(), dataverse::Error> {
//! use dataverse::{BulkOperation, BulkOptions, Client, ClientCredentials, Environment, Region, Secret, Table};
//! let environment = Environment::from_organization("contoso", Region::Europe).unwrap();
//! let credentials = ClientCredentials {
//!     tenant_id: "contoso.onmicrosoft.com".into(),
//!     client_id: "00000000-0000-0000-0000-000000000000".into(),
//!     client_secret: Secret::new("…"),
//!     authority: "https://login.microsoftonline.com".into(),
//! };
//! let client = Client::new(environment, credentials);
//! let contacts: Vec<dataverse::Record> = Vec::new();
//! let report = client.write_each(BulkOperation::Upsert, &Table::contact(), &contacts, BulkOptions::default()).await;
//! for (index, reason) in report.rejected() {
//!     eprintln!("contact {index} was not written: {reason}");
//! }
//! # Ok(())
//! # }
//! ```

pub mod auth;
pub mod backoff;
pub mod batch;
pub mod budget;
pub mod bulk;
pub mod changes;
pub mod client;
pub mod customize;
pub mod entity;
pub mod environment;
pub mod error;
pub mod executor;
pub mod fetch;
pub mod metadata;
pub mod query;

/// Parsers of server text that are not public on their own, for the fuzz targets in `fuzz/`; not an API.
#[doc(hidden)]
pub mod fuzzing {
    use crate::{Change, Error};

    /// A page of changes as [`Client::changes`](crate::Client::changes) reads it: the changes, then the next link.
    pub fn delta_page(body: &[u8]) -> Result<(Vec<Change>, Option<String>), Error> {
        let page = serde_json::from_slice(body)
            .map_err(|e| Error::UnexpectedBody { url: "delta page".into(), detail: e.to_string() })?;
        crate::changes::changes_of(page, "delta page")
    }
}

pub use auth::{AuthError, ClientCredentials, Credentials, PasswordCredentials, Secret, TokenProvider};
pub use backoff::Backoff;
pub use batch::{Batch, BatchItem, Operation, OperationOutcome, PartResponse};
pub use budget::{LimitStatement, Spending, StatedLimit, WindowLimits};
pub use bulk::{BulkOperation, BulkOptions, BulkReport, Isolation, RecordOutcome};
pub use changes::{Change, ChangeLink, ChangePage, ChangePageItem, DeltaToken, PageNext};
pub use client::{Client, RegistrationStatus, Reply, Request, UserSpending, WhoAmI};
pub use customize::{NewColumn, NewColumnType, NewKey, NewTable, Ownership};
pub use entity::{KeyValue, Record, RecordId, RecordKey, Table};
pub use environment::{Environment, EnvironmentError, Region};
pub use error::{ApiError, Error, ErrorKind, ThrottleLimit};
pub use executor::{ExecutorOptions, LATENCY_BUCKETS, LaneMetrics, LaneSpending, LatencyHistogram, Metrics};
pub use fetch::FetchPage;
pub use metadata::{ChoiceOption, ColumnDefinition, ColumnType, SystemView, TableDefinition, TableSummary};
pub use query::{Filter, Literal, Order, Page, PageReply, Query};
