//! A local server that behaves like a Microsoft Dataverse (Dynamics 365) environment: the token endpoint,
//! the Web API with its tables, metadata, queries and errors, and a SQLite state file — so that a Dynamics
//! integration can be built, tested and measured without a tenant.

mod api;
pub mod auth;
pub mod environment;
pub mod error;
pub mod faults;
pub mod limits;
pub mod odata;
pub mod records;
pub mod row;
pub mod schema;
mod serve;
pub mod store;
pub mod value;

/// The `$batch` request parser, for the fuzz targets in `fuzz/`; not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::api::batch::{Item as BatchItem, Operation as BatchOperation, boundary_of, parse_batch};
}

pub use auth::{AppRegistration, Secret};
pub use environment::{DEFAULT_CHANGE_RETENTION, EmulatorConfig, Environment, RunningEmulator};
pub use faults::{Fault, FaultPlan, FaultRule, Faults, When};
pub use limits::{CostModel, Limits};
