//! The OData pieces of the Web API: resource paths and keys, `$filter`, query options, the FetchXML and SQL
//! queries that stand in for them, and the paging they all share.

pub mod fetchxml;
pub mod filter;
pub mod paging;
pub mod path;
pub mod query;
pub mod sql;
