//! A client for the Microsoft Dataverse (Dynamics 365) Web API. It knows Dataverse and nothing of dynsync.

pub mod auth;
pub mod batch;
pub mod bulk;
pub mod changes;
pub mod client;
pub mod entity;
pub mod environment;
pub mod error;
pub mod executor;
pub mod metadata;
pub mod query;

pub use auth::{AuthError, ClientCredentials, Credentials, PasswordCredentials, Secret, TokenProvider};
pub use batch::{Batch, BatchItem, Operation, OperationOutcome, PartResponse};
pub use bulk::{BulkOperation, BulkOptions, BulkReport, RecordOutcome};
pub use changes::{Change, DeltaToken};
pub use client::{Client, Reply, Request, WhoAmI};
pub use entity::{KeyValue, Record, RecordId, RecordKey, Table};
pub use environment::{Environment, EnvironmentError, Region};
pub use error::{ApiError, Error, ErrorKind, ThrottleLimit};
pub use executor::{ExecutorOptions, Metrics};
pub use metadata::{ColumnDefinition, ColumnType, NewColumn, NewColumnType, TableDefinition};
pub use query::{Filter, Literal, Order, Page, Query};
