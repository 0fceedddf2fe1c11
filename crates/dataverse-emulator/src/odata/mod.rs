//! The OData pieces of the Web API: resource paths and keys, `$filter`, and query options.

pub mod filter;
pub mod path;
pub mod query;
