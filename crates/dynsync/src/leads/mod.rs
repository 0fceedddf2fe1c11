//! Lead intake: Azure Marketplace / AppSource leads, as Partner Center POSTs them to an HTTPS endpoint, turned
//! into values for the Dynamics `lead` table. Pure: no HTTP, no store, no clock.
//!
//! The contract:
//! - [`PartnerCenterLead`] reads any body Partner Center has been seen to send (either casing, fields missing,
//!   extra fields); only a body that is not a JSON object is refused while reading.
//! - [`PartnerCenterLead::validate`] returns a [`Lead`], or [`LeadProblems`] naming every problem at once, with the
//!   field and what to do. A lead with no email, no phone and no name is refused: a blank lead is never written.
//! - [`LeadSource`] takes `Source-Action|publisher.offer` apart; the test lead (`MSFT_TEST`) is recognised, not
//!   refused, so that Partner Center's Validate button can be followed end to end.
//! - [`Country`] turns the free-text country into one name and an ISO 3166-1 code; unknown text is kept as given.
//! - [`lead_record`] maps a lead onto [`LeadColumns`] (standard columns by default), cutting texts to the column
//!   lengths with a note for each cut, never an error.
//! - [`DedupKey`] says "the same person for the same offer", so that the steps of one customer make one lead.
//!
//! Why: Microsoft's own lead writer publishes no field mapping, and leaves de-duplication and country cleanup to
//! the publisher; this module is where dynsync decides all of that, in one place that can be tested without
//! Dynamics.

pub mod columns;
pub mod country;
pub mod dedup;
pub mod intake;
pub mod job;
pub mod notices;
pub mod notify;
pub mod partner_center;
pub mod sink;

pub use columns::{ChoiceColumn, CutNote, LEAD_SOURCE_WEB, LeadColumns, LeadRecord, TextColumn, lead_record, subject};
pub use country::{COUNTRIES, Country};
pub use dedup::{BadDedupKey, Contact, DedupKey, LeadKey};
pub use partner_center::{
    Email, Lead, LeadAction, LeadProblem, LeadProblems, LeadSource, PartnerCenterLead, Phone, Posted, PostedDetails,
    TEST_MARKER, UserDetails,
};
pub use sink::{LEAD_ID_NAMESPACE, LeadSink, LeadStep, LeadWrite, NoticeQueue};
