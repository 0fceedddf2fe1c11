//! Table ingestion (seed 003): explore a Dynamics environment's tables and views, then load one into a dataset —
//! fully, then incrementally through change tracking — on a schedule or continuously.
//!
//! Its resources besides the flow are [`crate::source`] (what it reads) and [`crate::dataset::target`] (where it
//! writes).
//! - [`definition`]: the flow, as Flow Service's `POST /flows` defines it; [`schedule`]: when it loads.
//! - [`shape`]: how a table's columns become a dataset's, and a record a row.
//! - [`outbound`]: replacements, And/Or filters and deletes, for flows that send records out to the marketing side.
//! - [`feed`]: the change feed, page by page, with per-page checkpoints, schema drift and resyncs.
//! - [`read_ahead`]: a full load's partitions, each read a page ahead of the job.
//! - [`job`]: the job on the pipeline runtime, and the dataset sink.
//! - [`explore`]: what `GET /connections/{id}/explore` answers.

pub mod definition;
pub mod explore;
pub mod feed;
pub mod job;
pub mod outbound;
pub mod read_ahead;
pub mod schedule;
pub mod shape;

pub use definition::{IngestionDefinition, JOB};
pub use job::{IngestionFlow, IngestionRunner};
