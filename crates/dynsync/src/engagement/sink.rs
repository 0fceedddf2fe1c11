//! Writing email events onto the Dynamics timeline of the contact each concerns.
//!
//! For a batch of events (each a different [`EventKey`]; the runtime folds twins):
//! 1. find each event's contact: the one it names (`dynsync_contact_id`, passed along by the sender), else the
//!    oldest active contact whose `emailaddress1` is the recipient (Dynamics compares addresses without case),
//!    asked for hundreds of addresses a query. An address no contact has is refused with `unknown-address`: the
//!    event is kept with the flow's failed records, and a replay once the contact exists writes it;
//! 2. upsert one Email event activity per event, regarding the contact, under an `activityid` derived from the
//!    event key (UUID v5), so a replay or a service's retry updates the same row instead of adding one;
//! 3. when the flow asks for it, upsert a follow-up task for a click or a hard bounce, its id derived the same way;
//! 4. set the flow's opt-out columns on the contacts of unsubscribes, spam complaints and hard bounces, and clear
//!    them on a resubscribe, by one rule: of one contact's events in the batch the newest decides (on a tie, the
//!    opt-out), and it is applied only if it also beats the change the contact's consent stands on in the
//!    store's consent ledger — an older change arriving late does not undo a newer one. A change made in Dynamics
//!    (the opt-out column no longer what the ledger last applied) is recorded first, as Dynamics' side's, at the
//!    contact's `modifiedon`, so an older event does not undo a person's change either. Every consent event is
//!    recorded in the ledger once the contact's update is answered, applied or not;
//! 5. where the environment has Customer Insights – Journeys, write each applied change as the address's
//!    Commercial consent row too ([`super::journeys`]).
//!
//! Every step is idempotent, so what waiting can fix is sent again whole. A refused sign-in pauses the batch; any
//! other refusal fails the events it concerns alone.

use super::definition::{EventsDefinition, FollowUp};
use super::event::{EmailEvent, EventKey, EventKind};
use super::install::EngagementTables;
use super::journeys::{ConsentRow, JourneysConsent};
use crate::ids::FlowId;
use crate::pipeline::sink::{is_retryable, write_all};
use crate::pipeline::{Paused, Refusal, Sink, StepError, Taken};
use crate::store::{ConsentChange, ConsentSide, StandingConsent, Store, StoreError};
use crate::text::clip;
use chrono::{DateTime, SecondsFormat, Utc};
use dataverse::{Backoff, BulkOperation, BulkOptions, Client, Filter, Order, Query, Record, Table};
use futures::TryStreamExt;
use serde::Deserialize;
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use uuid::Uuid;

/// The namespace an event's activity id is derived in, from its key.
pub const ACTIVITY_ID_NAMESPACE: Uuid = Uuid::from_u128(0x2b8e_61d4_0f3a_4c97_a5e1_7d20_c4f9_e8a3);
/// The namespace an event's follow-up task id is derived in, from its key.
pub const TASK_ID_NAMESPACE: Uuid = Uuid::from_u128(0x9c47_e0b2_35d8_4f61_8b0a_12e6_f7c3_5d94);

/// How many addresses one contact query asks for at most, and how long its filter may grow: a query costs
/// Dynamics the same base time for one address or hundreds, and its URL, encoded, stays well under the 32 KB
/// Dataverse takes.
const ADDRESSES_PER_QUERY: usize = 1000;
const FILTER_CHARS: usize = 16_000;
/// How many contacts one query by id asks for: each id adds about 55 characters to the filter.
const IDS_PER_QUERY: usize = 250;
/// Contact queries in flight at once.
const QUERIES_IN_FLIGHT: usize = 4;
/// The most records one bulk request carries.
const MOST_PER_REQUEST: usize = 1000;

/// The timeline of an environment's contacts, as an email events flow writes it.
pub struct TimelineSink {
    client: Client,
    /// The consent ledger, and the flow whose decisions it records.
    store: Store,
    flow: FlowId,
    tables: EngagementTables,
    activity: Table,
    opt_out_columns: Vec<String>,
    follow_up: FollowUp,
    /// Journeys' consent table, where the environment has it.
    journeys: Option<JourneysConsent>,
}

/// A contact found by address.
#[derive(Deserialize)]
struct ContactByEmail {
    contactid: Uuid,
    emailaddress1: Option<String>,
}

impl TimelineSink {
    /// Bulk options for `records` in full rounds of the requests the client sends at once now.
    fn chunked(&self, records: usize) -> BulkOptions {
        in_rounds(records, self.client.parallelism())
    }

    /// The sink of a flow, once the environment's Email event table is there as the job writes it.
    pub async fn resolve(
        client: Client,
        store: Store,
        flow: FlowId,
        tables: EngagementTables,
        definition: &EventsDefinition,
    ) -> Result<TimelineSink, StepError> {
        let name = tables.activity_table();
        let table = client.table(&name).await.map_err(|error| StepError::Metadata { table: "Email event", error })?;
        let problems = tables.check(&table);
        if !problems.is_empty() {
            let listed: Vec<String> = problems.iter().map(|p| p.message.clone()).collect();
            return Err(StepError::Definition(listed.join("; ")));
        }
        let activity = Table {
            logical_name: table.logical_name.clone(),
            entity_set: table.entity_set_name.clone(),
            primary_id: table.primary_id.clone(),
        };
        let journeys = match definition.opt_out_columns.is_empty() {
            true => None,
            false => JourneysConsent::find(&client)
                .await
                .map_err(|error| StepError::Metadata { table: "msdynmkt_contactpointconsent4", error })?,
        };
        Ok(TimelineSink {
            client,
            store,
            flow,
            tables,
            activity,
            opt_out_columns: definition.opt_out_columns.clone(),
            follow_up: definition.follow_up,
            journeys,
        })
    }

    /// The activity of one event, regarding its contact.
    pub fn activity_record(&self, key: &EventKey, event: &EmailEvent, contact: Uuid) -> Record {
        let column = |name: &str| self.tables.column(name);
        let mut record = Record::new();
        let id = Uuid::new_v5(&ACTIVITY_ID_NAMESPACE, key.to_string().as_bytes());
        record.insert(self.activity.primary_id.clone(), Json::String(id.to_string()));
        record.insert("subject".into(), Json::String(subject(event)));
        let at = event.occurred_at.to_rfc3339_opts(SecondsFormat::Secs, true);
        record.insert("actualstart".into(), Json::String(at.clone()));
        record.insert("actualend".into(), Json::String(at));
        record.insert(
            format!("regardingobjectid_contact_{}@odata.bind", self.activity.logical_name),
            Json::String(format!("/contacts({contact})")),
        );
        record.insert(column("eventkey"), Json::String(key.to_string()));
        record.insert(column("eventtype"), Json::from(EngagementTables::event_type_value(event.kind)));
        record.insert(column("messageid"), Json::String(clip(event.message_id.as_str(), 399).into_owned()));
        record.insert(column("email"), Json::String(event.email.as_str().to_string()));
        record.insert(column("provider"), Json::String(event.provider.name().to_string()));
        let texts = [("campaign", &event.campaign, 399), ("url", &event.url, 3999), ("reason", &event.reason, 3999)];
        for (name, value, max) in texts {
            if let Some(value) = value {
                record.insert(column(name), Json::String(clip(value, max).into_owned()));
            }
        }
        record
    }

    /// The follow-up task an event makes, when the flow asks for one for its kind.
    pub fn task_record(&self, key: &EventKey, event: &EmailEvent, contact: Uuid) -> Option<Record> {
        let subject = match event.kind {
            EventKind::Clicked if self.follow_up.on_click => {
                format!("Follow up: {} clicked {}", event.email.as_str(), event.url.as_deref().unwrap_or("a link"))
            }
            EventKind::Bounced { hard: true } if self.follow_up.on_hard_bounce => {
                format!("Find a working email address: mail to {} bounced", event.email.as_str())
            }
            _ => return None,
        };
        let mut record = Record::new();
        let id = Uuid::new_v5(&TASK_ID_NAMESPACE, key.to_string().as_bytes());
        record.insert("activityid".into(), Json::String(id.to_string()));
        record.insert("subject".into(), Json::String(clip(&subject, 199).into_owned()));
        let mut description = format!("{} ({}) on {}", subject, event.provider.name(), event.occurred_at.to_rfc3339());
        if let Some(reason) = &event.reason {
            description.push_str(&format!("\n{reason}"));
        }
        record.insert("description".into(), Json::String(clip(&description, 1999).into_owned()));
        let due = event.occurred_at + chrono::Duration::days(1);
        record.insert("scheduledend".into(), Json::String(due.to_rfc3339_opts(SecondsFormat::Secs, true)));
        record
            .insert("regardingobjectid_contact_task@odata.bind".into(), Json::String(format!("/contacts({contact})")));
        Some(record)
    }

    /// The contact of each event: the one it names, else the oldest active one with its address.
    async fn contacts(&self, writes: &[(EventKey, EmailEvent)]) -> Result<Vec<Result<Uuid, Refusal>>, Paused> {
        let mut addresses: Vec<&str> =
            writes.iter().filter(|(_, e)| e.contact_id.is_none()).map(|(_, e)| e.email.as_str()).collect();
        addresses.sort_unstable();
        addresses.dedup();
        let mut found: HashMap<String, Uuid> = HashMap::new();
        let mut failed: Option<Refusal> = None;
        let mut answers = Vec::new();
        for group in query_chunks(&addresses).chunks(QUERIES_IN_FLIGHT) {
            answers.extend(futures::future::join_all(group.iter().map(|chunk| self.contacts_by_email(chunk))).await);
        }
        for answer in answers {
            match answer? {
                Ok(rows) => {
                    for row in rows {
                        if let Some(email) = row.emailaddress1 {
                            found.entry(email.trim().to_lowercase()).or_insert(row.contactid);
                        }
                    }
                }
                Err(refusal) => failed = Some(refusal),
            }
        }
        Ok(writes
            .iter()
            .map(|(_, event)| match (event.contact_id, found.get(event.email.as_str()), &failed) {
                (Some(id), _, _) => Ok(id),
                (None, Some(id), _) => Ok(*id),
                (None, None, Some(refusal)) => Err(refusal.clone()),
                (None, None, None) => Err(Refusal {
                    code: "unknown-address".into(),
                    message: format!(
                        "no active contact in Dynamics has the email address {} (emailaddress1): create the contact, \
                         or have the email service pass its contactid as dynsync_contact_id, then retry the flow's \
                         failed events (POST /flows/{{id}}/action?op=retry-failed)",
                        event.email.as_str()
                    ),
                }),
            })
            .collect())
    }

    /// The active contacts with these addresses, oldest first; what waiting can fix is asked again.
    async fn contacts_by_email(&self, addresses: &[&str]) -> Result<Result<Vec<ContactByEmail>, Refusal>, Paused> {
        let filter = Filter::any(addresses.iter().map(|a| Filter::eq("emailaddress1", *a)).collect())
            .expect("a chunk is not empty");
        let query = Query::new(&Table::contact())
            .select(&["contactid", "emailaddress1"])
            .filter(Filter::eq("statecode", 0).and(filter))
            .order_by("createdon", Order::Ascending);
        self.read_all(&query).await
    }

    /// Every row a query answers; what waiting can fix is asked again, a refused sign-in pauses.
    async fn read_all<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        query: &Query,
    ) -> Result<Result<Vec<T>, Refusal>, Paused> {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            match self.client.query_as::<T>(query).try_collect::<Vec<_>>().await {
                Ok(rows) => return Ok(Ok(rows)),
                Err(error) if error.is_sign_in_refused() => return Err(Paused { reason: error.to_string() }),
                Err(error) if is_retryable(&error) => tokio::time::sleep(backoff.next()).await,
                Err(error) => return Ok(Err(Refusal::from_error(&error))),
            }
        }
    }

    /// The event that decides each contact's consent among `events` (position in the batch, contact, event):
    /// the newest, and on a tie the opt-out. Contacts none of whose events changes consent are left out.
    fn deciding_events(events: &[(usize, Uuid, &EmailEvent)]) -> BTreeMap<Uuid, usize> {
        let mut deciding: BTreeMap<Uuid, usize> = BTreeMap::new();
        let mut standing: HashMap<Uuid, (DateTime<Utc>, bool)> = HashMap::new();
        for &(i, contact, event) in events {
            let Some(opted_out) = opted_out_by(event.kind) else { continue };
            let candidate = (event.occurred_at, opted_out);
            let wins = standing.get(&contact).is_none_or(|current| beats(candidate, *current));
            if wins {
                standing.insert(contact, candidate);
                deciding.insert(contact, i);
            }
        }
        deciding
    }

    /// Writes the consent the batch's events decide to their contacts, where they are newer than the change the
    /// contact's consent stands on, and records every consent event in the ledger, applied or not.
    async fn write_consent(
        &self,
        writes: &[(EventKey, EmailEvent)],
        written: &[(usize, Uuid)],
        results: &mut [Result<Taken, Refusal>],
    ) -> Result<(), Paused> {
        let events: Vec<(usize, Uuid, &EmailEvent)> = written.iter().map(|&(i, c)| (i, c, &writes[i].1)).collect();
        let deciding = Self::deciding_events(&events);
        let contacts: Vec<Uuid> = deciding.keys().copied().collect();
        let in_dynamics = self.consent_in_dynamics(&contacts).await?;
        let now = Utc::now();
        let mut ledger = Vec::new();
        let mut applying: Vec<(Uuid, usize)> = Vec::new();
        for (&contact, &i) in &deciding {
            let mut standing = patiently(|| self.store.standing_consent(contact)).await;
            let event = &writes[i].1;
            // Consent changed in Dynamics since dynsync last knew it: a change of Dynamics' side, as of the
            // contact's last modification (the latest it can have been made), which the event must beat too.
            if let Some(&(opted_out, modified)) = in_dynamics.get(&contact)
                && opted_out != standing.is_some_and(|s| s.opted_out)
            {
                ledger.push(self.dynamics_change(contact, event, opted_out, modified, now));
                standing = Some(StandingConsent { opted_out, occurred_at: modified });
            }
            let candidate = (event.occurred_at, opted_out_by(event.kind).expect("a deciding event changes consent"));
            if standing.is_none_or(|s| beats(candidate, (s.occurred_at, s.opted_out))) {
                applying.push((contact, i));
            }
        }
        let records: Vec<Record> = applying
            .iter()
            .map(|&(c, i)| self.consent_record(c, opted_out_by(writes[i].1.kind).expect("a consent event")))
            .collect();
        let outcomes =
            write_all(&self.client, BulkOperation::Update, &Table::contact(), &records, self.chunked(records.len()))
                .await?;
        let mut applied: HashMap<usize, bool> = HashMap::new();
        let mut refused: HashMap<Uuid, Refusal> = HashMap::new();
        for (&(contact, i), outcome) in applying.iter().zip(outcomes) {
            match outcome {
                Ok(()) => {
                    applied.insert(i, true);
                }
                Err(refusal) => {
                    refused.insert(contact, refusal);
                }
            }
        }
        let in_journeys: Vec<(Uuid, usize)> =
            applying.iter().copied().filter(|(_, i)| applied.contains_key(i)).collect();
        for (contact, refusal) in self.write_journeys_consent(writes, &in_journeys).await? {
            refused.entry(contact).or_insert(refusal);
        }
        for &(i, contact, event) in &events {
            let Some(opted_out) = opted_out_by(event.kind) else { continue };
            if let Some(refusal) = refused.get(&contact) {
                results[i] = Err(refusal.clone());
                continue;
            }
            ledger.push(ConsentChange {
                event_key: writes[i].0.to_string(),
                contact_id: contact,
                email: event.email.as_str().to_string(),
                opted_out,
                occurred_at: event.occurred_at,
                side: ConsentSide::Marketing,
                source: event.provider.name().to_string(),
                reason: match &event.reason {
                    Some(reason) => clip(&format!("{}: {reason}", event.kind.label()), 400).into_owned(),
                    None => event.kind.label().to_string(),
                },
                applied: applied.contains_key(&i),
                recorded_at: now,
            });
        }
        if !ledger.is_empty() {
            patiently(|| self.store.record_consent(self.flow, &ledger)).await;
        }
        Ok(())
    }

    /// Writes the consent of the applied changes as Journeys' rows, where the environment has the table; answers
    /// the contacts whose row was refused.
    async fn write_journeys_consent(
        &self,
        writes: &[(EventKey, EmailEvent)],
        applied: &[(Uuid, usize)],
    ) -> Result<Vec<(Uuid, Refusal)>, Paused> {
        let Some(journeys) = &self.journeys else { return Ok(Vec::new()) };
        if applied.is_empty() {
            return Ok(Vec::new());
        }
        let mut addresses: Vec<&str> = applied.iter().map(|&(_, i)| writes[i].1.email.as_str()).collect();
        addresses.sort_unstable();
        addresses.dedup();
        let mut existing: HashMap<String, Uuid> = HashMap::new();
        for chunk in query_chunks(&addresses) {
            match self.read_all::<ConsentRow>(&journeys.rows_of(chunk)).await? {
                Ok(rows) => existing.extend(rows.into_iter().filter_map(|r| {
                    Some((r.msdynmkt_contactpointvalue?.trim().to_lowercase(), r.msdynmkt_contactpointconsent4id))
                })),
                Err(refusal) => {
                    return Ok(applied.iter().map(|&(contact, _)| (contact, refusal.clone())).collect());
                }
            }
        }
        let records: Vec<Record> = applied
            .iter()
            .map(|&(_, i)| {
                let event = &writes[i].1;
                let address = event.email.as_str();
                let id = existing.get(address).copied().unwrap_or_else(|| journeys.new_id(address));
                journeys.record(id, event, opted_out_by(event.kind).expect("a consent event"))
            })
            .collect();
        let outcomes =
            write_all(&self.client, BulkOperation::Upsert, &journeys.table, &records, self.chunked(records.len()))
                .await?;
        Ok(applied
            .iter()
            .zip(outcomes)
            .filter_map(|(&(contact, _), outcome)| Some((contact, outcome.err()?)))
            .collect())
    }

    /// Each contact's consent as Dynamics holds it (the flow's first opt-out column), with when the contact was
    /// last modified.
    async fn consent_in_dynamics(&self, contacts: &[Uuid]) -> Result<HashMap<Uuid, (bool, DateTime<Utc>)>, Paused> {
        let Some(column) = self.opt_out_columns.first() else { return Ok(HashMap::new()) };
        let mut held = HashMap::new();
        for chunk in contacts.chunks(IDS_PER_QUERY) {
            let filter = Filter::any(chunk.iter().map(|id| Filter::eq("contactid", *id)).collect())
                .expect("a chunk is not empty");
            let query = Query::new(&Table::contact()).select(&["contactid", column, "modifiedon"]).filter(filter);
            // A contact that cannot be read is taken as Dynamics last said through this flow.
            let Ok(rows) = self.read_all::<Record>(&query).await? else { continue };
            for row in rows {
                let id = row.get("contactid").and_then(Json::as_str).and_then(|s| Uuid::parse_str(s).ok());
                let opted_out = row.get(column.as_str()).and_then(Json::as_bool);
                let modified = row
                    .get("modifiedon")
                    .and_then(Json::as_str)
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.with_timezone(&Utc));
                if let (Some(id), Some(opted_out), Some(modified)) = (id, opted_out, modified) {
                    held.insert(id, (opted_out, modified));
                }
            }
        }
        Ok(held)
    }

    /// The ledger's entry for a consent change found in Dynamics, keyed so that finding it again adds nothing.
    fn dynamics_change(
        &self,
        contact: Uuid,
        event: &EmailEvent,
        opted_out: bool,
        modified: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> ConsentChange {
        let column = self.opt_out_columns.first().map_or("", String::as_str);
        ConsentChange {
            event_key: format!("dynamics:{contact}:{}", modified.timestamp_millis()),
            contact_id: contact,
            email: event.email.as_str().to_string(),
            opted_out,
            occurred_at: modified,
            side: ConsentSide::Dynamics,
            source: "Dynamics 365".into(),
            reason: format!("{column} {} in Dynamics", if opted_out { "set" } else { "cleared" }),
            applied: true,
            recorded_at: now,
        }
    }

    fn consent_record(&self, contact: Uuid, opted_out: bool) -> Record {
        let mut record = Record::new();
        record.insert("contactid".into(), Json::String(contact.to_string()));
        for column in &self.opt_out_columns {
            record.insert(column.clone(), Json::Bool(opted_out));
        }
        record
    }
}

/// Bulk options that split `records` into a multiple of `slots` (the requests the client sends at once) requests
/// of equal size, at most [`MOST_PER_REQUEST`] each: with 4 slots 5,000 activities go as 8 requests of 625, two
/// full rounds, rather than 5 of 1,000, whose second round would keep one slot of four busy while the next batch
/// waits; with 6, as 6 of 834, one round.
fn in_rounds(records: usize, slots: usize) -> BulkOptions {
    let slots = slots.max(1);
    let requests = slots * records.div_ceil(slots * MOST_PER_REQUEST).max(1);
    BulkOptions { chunk_size: records.div_ceil(requests).max(1), ..BulkOptions::default() }
}

/// The addresses in groups of one contact query each: at most [`ADDRESSES_PER_QUERY`], and a filter of at most
/// about [`FILTER_CHARS`] characters.
fn query_chunks<'a>(addresses: &'a [&'a str]) -> Vec<&'a [&'a str]> {
    let mut chunks = Vec::new();
    let (mut start, mut chars) = (0, 0);
    for (i, address) in addresses.iter().enumerate() {
        let cost = address.len() + "emailaddress1 eq '' or ".len();
        if i > start && (i - start == ADDRESSES_PER_QUERY || chars + cost > FILTER_CHARS) {
            chunks.push(&addresses[start..i]);
            (start, chars) = (i, 0);
        }
        chars += cost;
    }
    if start < addresses.len() {
        chunks.push(&addresses[start..]);
    }
    chunks
}

/// Whether an event of this kind opts its contact out (`Some(true)`) or back in (`Some(false)`).
fn opted_out_by(kind: EventKind) -> Option<bool> {
    if kind.opts_out() {
        Some(true)
    } else if kind.opts_in() {
        Some(false)
    } else {
        None
    }
}

/// Whether a consent change `(when, opted out)` wins over another: the newer wins; at the same time, the opt-out.
fn beats(change: (DateTime<Utc>, bool), other: (DateTime<Utc>, bool)) -> bool {
    change.0 > other.0 || (change.0 == other.0 && change.1 && !other.1)
}

/// Runs a store call until it answers: the store being out for a while is no reason to lose a decision.
async fn patiently<T, F, Fut>(mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match call().await {
            Ok(value) => return value,
            Err(error) => {
                let wait = backoff.next();
                tracing::warn!(%error, wait_ms = wait.as_millis() as u64, "the consent ledger cannot be reached; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// The activity's subject, as the timeline shows it: what happened, and to which message.
fn subject(event: &EmailEvent) -> String {
    let about = event.subject.as_deref().or(event.campaign.as_deref()).unwrap_or(event.message_id.as_str());
    clip(&format!("{}: {about}", event.kind.label()), 399).into_owned()
}

/// Marks as refused the writes at `positions` whose record failed.
fn refuse(results: &mut [Result<Taken, Refusal>], positions: &[usize], outcomes: Vec<Result<(), Refusal>>) {
    for (&i, outcome) in positions.iter().zip(outcomes) {
        if let Err(refusal) = outcome
            && results[i].is_ok()
        {
            results[i] = Err(refusal);
        }
    }
}

impl Sink<EventKey, EmailEvent> for TimelineSink {
    async fn write(&self, writes: &[(EventKey, EmailEvent)]) -> Result<Vec<Result<Taken, Refusal>>, Paused> {
        let contacts = self.contacts(writes).await?;
        let mut results: Vec<Result<Taken, Refusal>> = Vec::with_capacity(writes.len());
        let (mut positions, mut records) = (Vec::new(), Vec::new());
        for (i, ((key, event), contact)) in writes.iter().zip(&contacts).enumerate() {
            match contact {
                Ok(contact) => {
                    positions.push(i);
                    records.push(self.activity_record(key, event, *contact));
                    results.push(Ok(Taken::Written));
                }
                Err(refusal) => results.push(Err(refusal.clone())),
            }
        }
        let outcomes =
            write_all(&self.client, BulkOperation::Upsert, &self.activity, &records, self.chunked(records.len()))
                .await?;
        refuse(&mut results, &positions, outcomes);

        // Tasks and consent follow the events whose activity is on the timeline.
        let written: Vec<(usize, Uuid)> = (0..writes.len())
            .filter(|&i| results[i].is_ok())
            .filter_map(|i| contacts[i].as_ref().ok().map(|c| (i, *c)))
            .collect();
        let (task_positions, tasks): (Vec<usize>, Vec<Record>) = written
            .iter()
            .filter_map(|&(i, contact)| self.task_record(&writes[i].0, &writes[i].1, contact).map(|r| (i, r)))
            .unzip();
        if !tasks.is_empty() {
            let task =
                Table { logical_name: "task".into(), entity_set: "tasks".into(), primary_id: "activityid".into() };
            let outcomes =
                write_all(&self.client, BulkOperation::Upsert, &task, &tasks, self.chunked(tasks.len())).await?;
            refuse(&mut results, &task_positions, outcomes);
        }

        if !self.opt_out_columns.is_empty() {
            self.write_consent(writes, &written, &mut results).await?;
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engagement::formats::Provider;

    fn event(kind: EventKind, at: &str) -> EmailEvent {
        serde_json::from_value(serde_json::json!({
            "provider": Provider::SendGrid, "messageId": "m-1", "kind": kind, "occurredAt": at,
            "email": "ana@contoso.com", "campaign": "Spring sale", "url": "https://contoso.com/sale",
        }))
        .unwrap()
    }

    async fn sink(follow_up: FollowUp) -> (TimelineSink, tempfile::TempDir) {
        let (store, dir) = crate::store::test_stores().await.remove(0);
        let environment = dataverse::Environment::from_url("http://127.0.0.1:1").unwrap();
        let credentials = dataverse::ClientCredentials {
            tenant_id: "t".into(),
            client_id: "c".into(),
            client_secret: dataverse::Secret::new("s".to_string()),
            authority: "http://127.0.0.1:1".into(),
        };
        let sink = TimelineSink {
            client: Client::new(environment, credentials),
            store,
            flow: FlowId::new(),
            tables: EngagementTables::new("new".parse().unwrap()),
            activity: Table {
                logical_name: "new_emailevent".into(),
                entity_set: "new_emailevents".into(),
                primary_id: "activityid".into(),
            },
            opt_out_columns: vec!["donotbulkemail".into(), "donotemail".into()],
            follow_up,
            journeys: None,
        };
        (sink, dir)
    }

    #[tokio::test]
    async fn an_event_s_activity_is_regarding_its_contact_under_an_id_its_key_gives() {
        let (sink, _dir) = sink(FollowUp::default()).await;
        let e = event(EventKind::Clicked, "2026-11-30T10:00:00Z");
        let contact = Uuid::new_v4();
        let record = sink.activity_record(&e.key(), &e, contact);
        let again = sink.activity_record(&e.key(), &e, contact);
        assert_eq!(record, again, "a replay writes the same row");
        assert_eq!(record["subject"], "Clicked: Spring sale");
        assert_eq!(record["regardingobjectid_contact_new_emailevent@odata.bind"], format!("/contacts({contact})"));
        assert_eq!(record["new_eventkey"], e.key().to_string());
        assert_eq!(record["new_url"], "https://contoso.com/sale");
        assert_eq!(record["actualend"], "2026-11-30T10:00:00Z");
        assert_eq!(record["new_eventtype"], EngagementTables::event_type_value(EventKind::Clicked));
        let consent = sink.consent_record(contact, true);
        assert_eq!((&consent["donotbulkemail"], &consent["donotemail"]), (&Json::Bool(true), &Json::Bool(true)));
    }

    #[tokio::test]
    async fn follow_up_tasks_are_made_only_for_the_events_the_flow_names() {
        let (none, _a) = sink(FollowUp::default()).await;
        let (both, _b) = sink(FollowUp { on_click: true, on_hard_bounce: true }).await;
        let click = event(EventKind::Clicked, "2026-11-30T10:00:00Z");
        let bounce = event(EventKind::Bounced { hard: true }, "2026-11-30T10:00:00Z");
        let soft = event(EventKind::Bounced { hard: false }, "2026-11-30T10:00:00Z");
        let contact = Uuid::new_v4();
        assert!(none.task_record(&click.key(), &click, contact).is_none());
        let task = both.task_record(&click.key(), &click, contact).unwrap();
        assert_eq!(task["scheduledend"], "2026-12-01T10:00:00Z");
        assert!(both.task_record(&bounce.key(), &bounce, contact).is_some());
        assert!(both.task_record(&soft.key(), &soft, contact).is_none());
    }

    #[test]
    fn of_one_contact_s_consent_events_the_newest_decides_and_an_opt_out_wins_a_tie() {
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let unsubscribed = event(EventKind::Unsubscribed, "2026-11-30T10:00:00Z");
        let resubscribed_later = event(EventKind::Resubscribed, "2026-11-30T11:00:00Z");
        let resubscribed_same_time = event(EventKind::Resubscribed, "2026-11-30T10:00:00Z");
        let opened = event(EventKind::Opened, "2026-11-30T12:00:00Z");
        let deciding = TimelineSink::deciding_events(&[
            (0, a, &unsubscribed),
            (1, a, &resubscribed_later),
            (2, b, &resubscribed_same_time),
            (3, b, &unsubscribed),
            (4, c, &opened),
        ]);
        assert_eq!(deciding.into_iter().collect::<Vec<_>>(), [(a, 1), (b, 3)]);
    }

    #[test]
    fn addresses_are_asked_for_in_queries_of_bounded_count_and_length() {
        let cost = |chunk: &[&str]| chunk.iter().map(|a| a.len() + "emailaddress1 eq '' or ".len()).sum::<usize>();
        let short: Vec<String> = (0..2500).map(|i| format!("p{i}@contoso.com")).collect();
        let long: Vec<String> = (0..300).map(|i| format!("{}{i}@contoso.com", "x".repeat(240))).collect();
        for addresses in [short, long] {
            let addresses: Vec<&str> = addresses.iter().map(String::as_str).collect();
            let chunks = query_chunks(&addresses);
            assert!(chunks.len() > 1);
            assert!(chunks.iter().all(|c| c.len() <= ADDRESSES_PER_QUERY && cost(c) <= FILTER_CHARS));
            assert_eq!(chunks.concat(), addresses, "every address once, in order");
        }
        assert_eq!(query_chunks(&["a@contoso.com"]).len(), 1);
        assert!(query_chunks(&[]).is_empty());
    }

    #[test]
    fn a_batch_is_written_in_full_rounds_of_equal_requests() {
        assert_eq!(in_rounds(5000, 4).chunk_size, 625);
        assert_eq!(in_rounds(4000, 4).chunk_size, 1000);
        assert_eq!(in_rounds(4001, 4).chunk_size, 501);
        assert_eq!(in_rounds(100, 4).chunk_size, 25);
        assert_eq!(in_rounds(1, 4).chunk_size, 1);
        assert_eq!(in_rounds(0, 4).chunk_size, 1);
        assert_eq!(in_rounds(5000, 6).chunk_size, 834, "six slots: one round");
        assert_eq!(in_rounds(5000, 0).chunk_size, 1000, "no slot known: one a round");
    }

    /// The conflict rule, case by case: a change against the one the contact stands on.
    #[test]
    fn the_conflict_rule_takes_the_newest_change_and_on_a_tie_the_opt_out() {
        let (t0, t1): (DateTime<Utc>, DateTime<Utc>) =
            ("2026-11-30T10:00:00Z".parse().unwrap(), "2026-11-30T11:00:00Z".parse().unwrap());
        let cases = [
            // (change, standing, wins)
            ((t1, true), (t0, false), true),
            ((t1, false), (t0, true), true),
            ((t1, true), (t0, true), true),
            ((t1, false), (t0, false), true),
            ((t0, true), (t1, false), false),
            ((t0, false), (t1, true), false),
            ((t0, true), (t1, true), false),
            ((t0, false), (t1, false), false),
            ((t0, true), (t0, false), true),
            ((t0, false), (t0, true), false),
            ((t0, true), (t0, true), false),
            ((t0, false), (t0, false), false),
        ];
        for (change, standing, wins) in cases {
            assert_eq!(beats(change, standing), wins, "{change:?} against {standing:?}");
        }
    }
}
