//! The OData pieces of the Web API: resource paths and keys, `$filter`, query options, and the FetchXML and SQL
//! queries that stand in for them.

pub mod fetchxml;
pub mod filter;
pub mod path;
pub mod query;
pub mod sql;
