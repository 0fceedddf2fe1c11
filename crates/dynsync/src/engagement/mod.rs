//! Engagement sync: email events from the services that send marketing mail, onto the Dynamics timeline of the
//! contact they concern, and the opt-outs they carry onto the contact's consent fields.
//!
//! - [`event`] and [`formats`]: one typed event, read from SendGrid's, Mailgun's, Amazon SES's or dynsync's own
//!   bodies, with the services' signatures checked (pure: no HTTP, no store).
//! - [`definition`]: an email events flow as its user writes it, checked against the environment.
//! - [`install`]: the Email event activity table the job writes, created the way a solution would.
//! - [`job`] and [`sink`]: the flow on the pipeline runtime — logged events upserted as activities regarding
//!   their contact, follow-up tasks, opt-out columns.
//! - [`journeys`]: Customer Insights – Journeys' consent rows, written beside the opt-out columns where the
//!   environment has the app.
//!
//! Records going out to the marketing side are an ingestion flow's (see [`crate::ingestion::outbound`]).

pub mod definition;
pub mod event;
pub mod formats;
pub mod install;
pub mod job;
pub mod journeys;
pub mod sink;
