//! dynsync: connects customer data to Microsoft Dynamics 365.

/// mimalloc for every program built on dynsync (the service, its tests and benchmarks, the emulator they start):
/// reading and writing pages makes many small allocations freed together, where glibc's allocator spends a
/// third of the time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod access;
pub mod activation;
pub mod alerts;
pub mod api;
pub mod checks;
pub mod config;
pub mod connection;
pub mod dataset;
pub mod declarative;
pub mod demo;
pub mod email;
pub mod engagement;
pub mod governance;
pub mod health;
pub mod hosts;
pub mod ids;
pub mod ingestion;
pub mod leads;
pub mod mailbox;
pub mod pipeline;
pub mod remote;
pub mod secrets;
pub mod service;
pub mod source;
pub mod specs;
pub mod store;
pub mod target;
pub mod text;

pub use activation::{
    ActivationFlow, AttributeMapping, AudienceMapping, EmptyValues, FlowDefinition, FlowState, StatusValues,
};
pub use connection::{Connection, ConnectionAuth, DestinationAuth, DestinationConnection};
pub use ids::{ConnectionId, FlowId, Sandbox, TargetConnectionId};
pub use service::{RunningService, Service, ServiceConfig};
pub use store::Store;
pub use target::{CustomizationPrefix, TargetConnection};
