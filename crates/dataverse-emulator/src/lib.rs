//! A local server that behaves like a Microsoft Dataverse (Dynamics 365) environment.

pub mod error;
pub mod odata;
pub mod schema;
pub mod value;
