//! Writing leads to Dynamics so that the steps of one customer make one lead, with a note for each step.
//!
//! For each write, in order:
//! 1. find an open lead (`statecode eq 0`) of the same person (email, else phone) for the same offer (the offer
//!    column when [`LeadColumns::offer`] names one, else the offer text in `subject`) created within the sink's
//!    [`window`](LeadSink::window), the oldest first;
//! 2. none → create one, with a `leadid` derived from the note id of the first step (UUID v5), so that a write
//!    replayed after Dynamics created the lead but before dynsync recorded it finds that lead again (by step 1, or
//!    by the duplicate-key answer, which is taken as "already created" and followed by an update);
//! 3. found → update it with the values, which only ever hold parts the lead has: nothing is blanked;
//! 4. upsert one note (`annotation`) per step by the step's own `note_id` (a `PATCH` to an id creates or
//!    updates), so that a replay updates the note rather than adding a twin.
//!
//! When the intake matches accounts, a new lead's parent account is the oldest active account whose email or
//! website has the lead's email domain (never a free-mail domain). When the intake notifies, a new lead's
//! notification is held in the store before the lead is created and released once it is written (see
//! [`crate::store`]'s outbox): a lead is announced once, and only once it is in Dynamics.
//!
//! Every step is idempotent, so a write that fails for a reason waiting can fix is sent again whole, as long as
//! it takes. A refused sign-in pauses the batch; any other refusal fails that write alone. The writes of one
//! batch are of different people (the runtime folds one person's into one), so they go several at a time.

use super::columns::{CutNote, LeadColumns};
use super::dedup::LeadKey;
use super::notify::LeadNotice;
use super::partner_center::Lead;
use crate::ids::FlowId;
use crate::pipeline::sink::is_retryable;
use crate::pipeline::{Paused, Refusal, Sink, Taken};
use crate::store::{Store, StoreError};
use chrono::{DateTime, SecondsFormat, Utc};
use dataverse::{Backoff, Client, Error, ErrorKind, Filter, Order, Page, Query, Record, RecordId, Request, Table};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;
use uuid::Uuid;

/// The namespace the `leadid` of a new lead is derived in, from the note id of its first step.
pub const LEAD_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6d1f_4a8e_2c3b_5e07_9a41_d2c8_7b35_0f16);

/// One step of a customer (Contact me, Install, …), recorded as a note on the lead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeadStep {
    /// The action's label (`Contact me`), when the lead named one.
    pub action: Option<String>,
    /// The offer as a person reads it (`Contoso CRM`), when the lead named one.
    pub offer: Option<String>,
    /// When dynsync received the step, RFC 3339.
    pub received_at: String,
    /// The note's `annotationid`, chosen by the caller and stable across replays.
    pub note_id: Uuid,
    /// What the customer wrote, when anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What one accepted lead, or several folded ones of the same [`DedupKey`], writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeadWrite {
    /// The lead's column values: only the parts it has (see [`lead_record`](super::lead_record)).
    pub values: Map<String, Value>,
    /// The email the lead is found by, as written to the email column.
    pub email: Option<String>,
    /// The phone the lead is found by when there is no email, as written to the phone column.
    pub phone: Option<String>,
    /// The offer, as written to [`LeadColumns::offer`] (`publisher.offer`, else the offer title).
    pub offer: Option<String>,
    /// The steps to record as notes, oldest first.
    pub steps: Vec<LeadStep>,
    pub is_test: bool,
}

impl LeadWrite {
    /// The write of one lead received at `received_at`, its step recorded as the note `note_id`, and what was
    /// cut to fit the columns.
    pub fn for_lead(
        lead: &Lead,
        columns: &LeadColumns,
        note_id: Uuid,
        received_at: DateTime<Utc>,
    ) -> (LeadWrite, Vec<CutNote>) {
        let record = super::columns::lead_record(lead, columns);
        let text = |column: &str| record.values.get(column).and_then(Value::as_str).map(str::to_owned);
        let step = LeadStep {
            action: lead.action().map(|a| a.label().to_owned()),
            offer: lead.offer_title().map(str::to_owned).or_else(|| lead.offer()),
            received_at: received_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            note_id,
            detail: lead.description().map(str::trim).filter(|d| !d.is_empty()).map(str::to_owned),
        };
        let write = LeadWrite {
            email: text(&columns.email.name).or_else(|| lead.email().map(|e| e.as_str().to_owned())),
            phone: text(&columns.phone.name).or_else(|| lead.phone().map(|p| p.as_str().to_owned())),
            offer: lead.offer(),
            values: record.values,
            steps: vec![step],
            is_test: lead.is_test(),
        };
        (write, record.notes)
    }

    /// Folds a later write of the same key into this one: the later values win column by column (a part the
    /// later lead lacks keeps the earlier value), and its steps are added after these, once per note id.
    pub fn fold(&mut self, later: LeadWrite) {
        self.values.extend(later.values);
        self.email = later.email.or(self.email.take());
        self.phone = later.phone.or(self.phone.take());
        self.offer = later.offer.or(self.offer.take());
        for step in later.steps {
            if let Some(known) = self.steps.iter_mut().find(|s| s.note_id == step.note_id) {
                *known = step;
            } else {
                self.steps.push(step);
            }
        }
        self.is_test = self.is_test && later.is_test;
    }

    /// The `leadid` a new lead of this write gets: UUID v5 of the first step's note id, so that a replay names
    /// the same lead. A write without steps derives it from its values.
    pub fn lead_id(&self) -> RecordId {
        let id = match self.steps.first() {
            Some(step) => Uuid::new_v5(&LEAD_ID_NAMESPACE, step.note_id.as_bytes()),
            None => Uuid::new_v5(&LEAD_ID_NAMESPACE, serde_json::to_string(self).unwrap_or_default().as_bytes()),
        };
        RecordId(id)
    }
}

impl LeadStep {
    /// "Contact me — Contoso CRM" ("Test lead — …" for a test lead), as `subject` reads.
    pub fn subject(&self, is_test: bool) -> String {
        let mut parts: Vec<&str> = Vec::new();
        if is_test {
            parts.push("Test lead");
        }
        parts.extend(self.action.as_deref());
        parts.extend(self.offer.as_deref());
        if parts.is_empty() || parts == ["Test lead"] {
            parts.push("Marketplace lead");
        }
        parts.join(" — ")
    }

    /// What came in and when.
    pub fn note_text(&self, is_test: bool) -> String {
        let what = match (self.action.as_deref(), self.offer.as_deref()) {
            (Some(action), Some(offer)) => format!("{action} for {offer}"),
            (Some(action), None) => action.to_owned(),
            (None, Some(offer)) => format!("A lead for {offer}"),
            (None, None) => "A marketplace lead".to_owned(),
        };
        let mut text = format!("{what}, received {}.", self.received_at);
        if is_test {
            text.push_str(" This is Partner Center's test lead.");
        }
        if let Some(detail) = &self.detail {
            text.push_str("\n\n");
            text.push_str(detail);
        }
        text
    }
}

/// The Dynamics `lead` table, written so that one person for one offer makes one lead within a window.
#[derive(Clone)]
pub struct LeadSink {
    pub client: Client,
    pub columns: LeadColumns,
    /// How long after a lead was created a later step of the same person for the same offer still updates it.
    pub window: chrono::Duration,
    /// Whether a new lead's parent account is found by its email domain.
    pub match_accounts: bool,
    /// Where new leads are announced; `None` when the intake notifies no one.
    pub notices: Option<NoticeQueue>,
}

/// Where a new lead's notification waits to be sent: the flow's outbox.
#[derive(Clone)]
pub struct NoticeQueue {
    pub store: Store,
    pub flow: FlowId,
    /// The intake's name, as the notification shows it.
    pub intake: String,
    pub recipients: Vec<String>,
}

/// Writes of one batch sent at once.
const CONCURRENT_WRITES: usize = 8;

/// Domains anyone can have an address at: they say nothing of the lead's company.
const FREE_MAIL: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "msn.com",
    "yahoo.com",
    "icloud.com",
    "me.com",
    "aol.com",
    "proton.me",
    "protonmail.com",
    "gmx.com",
    "gmx.de",
    "web.de",
    "mail.com",
    "yandex.ru",
    "qq.com",
    "163.com",
];

/// Why one write did not go through: retried when waiting can fix it.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Dynamics(#[from] Error),
    #[error("the lead's notification cannot be held: {0}")]
    Store(#[from] StoreError),
}

type Step<T> = Result<T, WriteError>;

fn annotations() -> Table {
    Table::new("annotation", "annotations")
}

impl LeadSink {
    /// A sink with the standard lead columns and a 30-day window.
    pub fn new(client: Client) -> LeadSink {
        LeadSink {
            client,
            columns: LeadColumns::default(),
            window: chrono::Duration::days(30),
            match_accounts: false,
            notices: None,
        }
    }

    /// The query for the open lead a write updates, as of `now`; `None` when the write has no email or phone.
    pub fn find_query(&self, write: &LeadWrite, now: DateTime<Utc>) -> Option<Query> {
        let contact = match (nonempty(&write.email), nonempty(&write.phone)) {
            (Some(email), _) => Filter::eq(&self.columns.email.name, email),
            (None, Some(phone)) => Filter::eq(&self.columns.phone.name, phone),
            (None, None) => return None,
        };
        let table = Table::lead();
        let mut filter = contact;
        match (&self.columns.offer, nonempty(&write.offer)) {
            (Some(column), Some(offer)) => filter = filter.and(Filter::eq(&column.name, offer)),
            (Some(column), None) => filter = filter.and(Filter::is_null(&column.name)),
            (None, _) => {
                let shown = write.steps.iter().rev().find_map(|s| nonempty(&s.offer)).or(nonempty(&write.offer));
                if let Some(offer) = shown {
                    filter = filter.and(Filter::contains(&self.columns.subject.name, offer));
                }
            }
        }
        let filter = filter.and(Filter::ge("createdon", now - self.window)).and(Filter::eq("statecode", 0));
        Some(
            Query::new(&table)
                .select(&[&table.primary_id])
                .filter(filter)
                .order_by("createdon", Order::Ascending)
                .top(1),
        )
    }

    async fn find(&self, write: &LeadWrite) -> Step<Option<RecordId>> {
        let Some(query) = self.find_query(write, Utc::now()) else { return Ok(None) };
        self.first_id(&query, &Table::lead()).await
    }

    /// The id of the first row a query answers.
    async fn first_id(&self, query: &Query, table: &Table) -> Step<Option<RecordId>> {
        let page: Page = self.client.execute(&Request::get(query.path())).await?.read_json()?;
        Ok(page
            .value
            .first()
            .and_then(|row| row.get(&table.primary_id))
            .and_then(Value::as_str)
            .and_then(|id| id.parse().ok())
            .map(RecordId))
    }

    /// The lead's values, without a null or an empty text: a column is never blanked.
    fn values(write: &LeadWrite) -> Record {
        write
            .values
            .iter()
            .filter(|(_, v)| !v.is_null() && v.as_str().is_none_or(|s| !s.trim().is_empty()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The oldest active account whose email or website has the domain of the write's email.
    async fn account(&self, write: &LeadWrite) -> Step<Option<RecordId>> {
        let Some(domain) = email_domain(write.email.as_deref()) else { return Ok(None) };
        let table = Table::new("account", "accounts");
        let filter = Filter::eq("statecode", 0)
            .and(Filter::ends_with("emailaddress1", &format!("@{domain}")).or(Filter::contains("websiteurl", &domain)));
        let query = Query::new(&table)
            .select(&[&table.primary_id])
            .filter(filter)
            .order_by("createdon", Order::Ascending)
            .top(1);
        self.first_id(&query, &table).await
    }

    /// Steps 1 to 3: the id of the lead the write went to, and whether it was created or updated.
    async fn write_lead(&self, write: &LeadWrite) -> Step<(RecordId, Taken)> {
        let table = Table::lead();
        let values = Self::values(write);
        if let Some(id) = self.find(write).await? {
            self.client.update(&table, id, &values).await?;
            return Ok((id, Taken::Updated));
        }
        let id = write.lead_id();
        if let Some(queue) = &self.notices {
            let notice = self.notice(queue, write, id);
            let payload = serde_json::to_string(&notice).expect("a notice serializes");
            queue.store.hold_message(&id.to_string(), queue.flow, &payload).await?;
        }
        let mut record = values.clone();
        record.insert(table.primary_id.clone(), Value::String(id.to_string()));
        if self.match_accounts
            && let Some(account) = self.account(write).await?
        {
            record.insert("parentaccountid@odata.bind".into(), Value::String(format!("/accounts({account})")));
        }
        match self.client.create(&table, &record).await {
            Ok(_) => Ok((id, Taken::Created)),
            Err(error) if matches!(error.kind(), ErrorKind::Duplicate) => {
                // Created by an earlier attempt whose answer was lost.
                self.client.update(&table, id, &values).await?;
                Ok((id, Taken::Created))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// What a new lead's notification says.
    fn notice(&self, queue: &NoticeQueue, write: &LeadWrite, id: RecordId) -> LeadNotice {
        let text = |column: &str| write.values.get(column).and_then(Value::as_str).map(str::to_owned);
        let name = [text(&self.columns.first_name.name), text(&self.columns.last_name.name)]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        let step = write.steps.first();
        LeadNotice {
            intake: queue.intake.clone(),
            lead_id: id.0,
            lead_url: Some(format!(
                "{}/main.aspx?pagetype=entityrecord&etn=lead&id={id}",
                self.client.environment().url()
            )),
            name: Some(name).filter(|n| !n.is_empty()),
            email: write.email.clone(),
            phone: write.phone.clone(),
            company: text(&self.columns.company.name),
            title: text(&self.columns.job_title.name),
            country: text(&self.columns.country.name),
            offer: step.and_then(|s| s.offer.clone()).or_else(|| write.offer.clone()),
            action: step.and_then(|s| s.action.clone()),
            description: step.and_then(|s| s.detail.clone()),
            received_at: step.map(|s| s.received_at.clone()).unwrap_or_default(),
            is_test: write.is_test,
            recipients: queue.recipients.clone(),
        }
    }

    /// The whole write: the lead, then a note for each step, then the new lead's notification let go.
    async fn write_one(&self, write: &LeadWrite) -> Step<Taken> {
        let (lead, taken) = self.write_lead(write).await?;
        for step in &write.steps {
            let mut note = Record::new();
            note.insert("subject".into(), Value::String(step.subject(write.is_test)));
            note.insert("notetext".into(), Value::String(step.note_text(write.is_test)));
            note.insert("objectid_lead@odata.bind".into(), Value::String(format!("/leads({lead})")));
            self.client.upsert(&annotations(), RecordId(step.note_id), &note).await?;
        }
        if let Some(queue) = &self.notices {
            // Also after an update: a replay of a write whose lead was created before a crash releases it here.
            queue.store.release_message(&lead.to_string()).await?;
        }
        Ok(taken)
    }

    /// One write, sent again for as long as the reason it fails is one that waiting can fix.
    async fn write_until_answered(&self, key: &LeadKey, write: &LeadWrite) -> Result<Result<Taken, Refusal>, Paused> {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            let error = match self.write_one(write).await {
                Ok(taken) => return Ok(Ok(taken)),
                Err(WriteError::Dynamics(error)) if error.is_sign_in_refused() => {
                    return Err(Paused { reason: error.to_string() });
                }
                Err(WriteError::Dynamics(error)) if !is_retryable(&error) => {
                    return Ok(Err(Refusal::from_error(&error)));
                }
                Err(error) => error,
            };
            let wait = backoff.next();
            tracing::debug!(%key, %error, wait_ms = wait.as_millis() as u64, "the lead is not written yet; retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

/// The domain of an email, lower-cased; `None` for a free-mail domain or no email.
fn email_domain(email: Option<&str>) -> Option<String> {
    let domain = email?.rsplit_once('@')?.1.trim().to_ascii_lowercase();
    (domain.contains('.') && !FREE_MAIL.contains(&domain.as_str())).then_some(domain)
}

fn nonempty(text: &Option<String>) -> Option<&str> {
    text.as_deref().map(str::trim).filter(|t| !t.is_empty())
}

impl Sink<LeadKey, LeadWrite> for LeadSink {
    async fn write(&self, writes: &[(LeadKey, LeadWrite)]) -> Result<Vec<Result<Taken, Refusal>>, Paused> {
        let each: Vec<_> = writes.iter().map(|(key, write)| self.write_until_answered(key, write)).collect();
        futures::stream::iter(each).buffered(CONCURRENT_WRITES).collect::<Vec<_>>().await.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::emulator_client;
    use crate::leads::DedupKey;
    use dataverse_emulator::{CostModel, EmulatorConfig, RunningEmulator};

    async fn start() -> (RunningEmulator, LeadSink) {
        let emulator = EmulatorConfig { cost: CostModel::free(), ..Default::default() }.start().await.unwrap();
        let sink = LeadSink::new(emulator_client(&emulator));
        (emulator, sink)
    }

    fn write(email: &str, action_code: &str, offer: &str, note_id: Uuid) -> (LeadKey, LeadWrite) {
        let body = serde_json::json!({
            "UserDetails": {"FirstName": "Some", "LastName": "One", "Email": email, "Company": "Contoso"},
            "LeadSource": format!("AppSource-{action_code}|contoso.{}", offer.to_lowercase().replace(' ', "-")),
            "OfferTitle": offer,
        });
        let lead = Lead::from_json(body.to_string().as_bytes()).unwrap();
        let key = LeadKey::Person(DedupKey::for_lead(&lead).unwrap());
        (key, LeadWrite::for_lead(&lead, &LeadColumns::default(), note_id, Utc::now()).0)
    }

    async fn rows(sink: &LeadSink, path: &str) -> Vec<Record> {
        let page: Page = sink.client.execute(&Request::get(path)).await.unwrap().read_json().unwrap();
        page.value
    }

    async fn leads(sink: &LeadSink) -> Vec<Record> {
        rows(sink, "leads?$select=leadid,subject,emailaddress1,jobtitle").await
    }

    async fn notes(sink: &LeadSink, lead: &Value) -> Vec<Record> {
        let lead = lead.as_str().unwrap();
        rows(sink, &format!("annotations?$filter=_objectid_value%20eq%20{lead}&$select=subject,notetext")).await
    }

    fn all_written(answer: Result<Vec<Result<Taken, Refusal>>, Paused>, n: usize) {
        let answer = answer.unwrap();
        assert_eq!(answer.len(), n);
        assert!(answer.iter().all(Result::is_ok), "{answer:?}");
    }

    #[tokio::test]
    async fn a_new_person_makes_one_lead_with_one_note() {
        let (_emulator, sink) = start().await;
        let contact_me = write("someone@contoso.com", "PLT", "Contoso CRM", Uuid::new_v4());
        all_written(sink.write(std::slice::from_ref(&contact_me)).await, 1);

        let leads = leads(&sink).await;
        assert_eq!(leads.len(), 1, "{leads:?}");
        assert_eq!(leads[0]["leadid"], contact_me.1.lead_id().to_string(), "the id derived from the note id");
        assert_eq!(leads[0]["subject"], "Contact me — Contoso CRM");
        let notes = notes(&sink, &leads[0]["leadid"]).await;
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0]["subject"], "Contact me — Contoso CRM");
        let text = notes[0]["notetext"].as_str().unwrap();
        assert!(text.starts_with("Contact me for Contoso CRM, received "), "{text}");
        assert_eq!(notes[0]["annotationid"], contact_me.1.steps[0].note_id.to_string());
    }

    #[tokio::test]
    async fn the_same_person_and_offer_again_within_the_window_updates_that_lead_and_adds_a_second_note() {
        let (_emulator, sink) = start().await;
        all_written(sink.write(&[write("someone@contoso.com", "PLT", "Contoso CRM", Uuid::new_v4())]).await, 1);
        let install = write("Someone@Contoso.com", "INS", "Contoso CRM", Uuid::new_v4());
        all_written(sink.write(&[install]).await, 1);

        let leads = leads(&sink).await;
        assert_eq!(leads.len(), 1, "{leads:?}");
        assert_eq!(leads[0]["subject"], "Install — Contoso CRM", "the later step's values");
        let mut subjects: Vec<String> =
            notes(&sink, &leads[0]["leadid"]).await.iter().map(|n| n["subject"].as_str().unwrap().into()).collect();
        subjects.sort();
        assert_eq!(subjects, ["Contact me — Contoso CRM", "Install — Contoso CRM"]);
    }

    #[tokio::test]
    async fn a_lead_older_than_the_window_is_not_updated() {
        let (_emulator, mut sink) = start().await;
        all_written(sink.write(&[write("someone@contoso.com", "PLT", "Contoso CRM", Uuid::new_v4())]).await, 1);
        sink.window = chrono::Duration::seconds(-60);
        all_written(sink.write(&[write("someone@contoso.com", "INS", "Contoso CRM", Uuid::new_v4())]).await, 1);
        assert_eq!(leads(&sink).await.len(), 2);
    }

    #[tokio::test]
    async fn the_same_note_id_written_twice_leaves_one_note() {
        let (_emulator, sink) = start().await;
        let contact_me = write("someone@contoso.com", "PLT", "Contoso CRM", Uuid::new_v4());
        all_written(sink.write(std::slice::from_ref(&contact_me)).await, 1);
        all_written(sink.write(std::slice::from_ref(&contact_me)).await, 1);

        let leads = leads(&sink).await;
        assert_eq!(leads.len(), 1, "{leads:?}");
        assert_eq!(notes(&sink, &leads[0]["leadid"]).await.len(), 1);
    }

    #[tokio::test]
    async fn a_replay_after_the_lead_was_created_but_not_found_updates_it_rather_than_failing() {
        let (_emulator, mut sink) = start().await;
        let contact_me = write("someone@contoso.com", "PLT", "Contoso CRM", Uuid::new_v4());
        all_written(sink.write(std::slice::from_ref(&contact_me)).await, 1);
        // Outside the window the lead is not found: the create meets its own id and updates it instead.
        sink.window = chrono::Duration::seconds(-60);
        all_written(sink.write(std::slice::from_ref(&contact_me)).await, 1);
        let leads = leads(&sink).await;
        assert_eq!(leads.len(), 1, "{leads:?}");
        assert_eq!(notes(&sink, &leads[0]["leadid"]).await.len(), 1);
    }

    #[tokio::test]
    async fn a_different_offer_makes_a_second_lead() {
        let (_emulator, sink) = start().await;
        let crm = write("someone@contoso.com", "PLT", "Contoso CRM", Uuid::new_v4());
        let erp = write("someone@contoso.com", "PLT", "Contoso ERP", Uuid::new_v4());
        all_written(sink.write(&[crm]).await, 1);
        all_written(sink.write(&[erp]).await, 1);

        let leads = leads(&sink).await;
        let mut subjects: Vec<&str> = leads.iter().map(|l| l["subject"].as_str().unwrap()).collect();
        subjects.sort();
        assert_eq!(subjects, ["Contact me — Contoso CRM", "Contact me — Contoso ERP"]);
        for lead in &leads {
            assert_eq!(notes(&sink, &lead["leadid"]).await.len(), 1);
        }
    }

    #[tokio::test]
    async fn a_lead_dynamics_refuses_fails_alone_while_its_neighbour_is_written() {
        let (_emulator, sink) = start().await;
        let mut bad = write("bad@contoso.com", "PLT", "Contoso CRM", Uuid::new_v4());
        bad.1.values.insert("jobtitle".into(), Value::String("x".repeat(150)));
        let good = write("good@contoso.com", "PLT", "Contoso CRM", Uuid::new_v4());
        let answer = sink.write(&[bad, good]).await.unwrap();

        let refusal = answer[0].as_ref().unwrap_err();
        assert_eq!(refusal.code, "0x80044331", "{refusal:?}");
        assert!(refusal.message.contains("jobtitle"), "{refusal:?}");
        assert_eq!(answer[1], Ok(Taken::Created));
        let leads = leads(&sink).await;
        assert_eq!(leads.len(), 1, "{leads:?}");
        assert_eq!(leads[0]["emailaddress1"], "good@contoso.com");
        assert_eq!(notes(&sink, &leads[0]["leadid"]).await.len(), 1);
    }

    #[tokio::test]
    async fn a_refused_sign_in_pauses_the_batch_and_writes_nothing() {
        let (emulator, sink) = start().await;
        let mut credentials = crate::demo::emulator_credentials(&emulator);
        credentials.client_secret = dataverse::Secret::new("not the secret");
        sink.client.set_credentials(credentials);
        let answer = sink.write(&[write("someone@contoso.com", "PLT", "Contoso CRM", Uuid::new_v4())]).await;
        assert!(answer.is_err(), "{answer:?}");
        sink.client.set_credentials(crate::demo::emulator_credentials(&emulator));
        assert!(leads(&sink).await.is_empty());
    }

    #[tokio::test]
    async fn quotes_in_an_email_or_offer_are_doubled_in_the_filter() {
        let (_emulator, sink) = start().await;
        let (_, mut w) = write("o'brien@contoso.com", "PLT", "O'Neil CRM", Uuid::new_v4());
        w.steps[0].offer = Some("O'Neil CRM".into());
        let query = sink.find_query(&w, Utc::now()).unwrap();
        let path = query.path();
        assert!(path.contains("o''brien@contoso.com"), "{path}");
        assert!(path.contains("O''Neil"), "{path}");
        assert!(path.contains("$top=1") && path.contains("$select=leadid"), "{path}");
        // And the lead is found again by that filter.
        let key = LeadKey::Person(DedupKey::new(w.email.as_deref(), None, w.offer.as_deref()).unwrap());
        all_written(sink.write(&[(key.clone(), w.clone())]).await, 1);
        let mut again = w.clone();
        again.steps[0].note_id = Uuid::new_v4();
        all_written(sink.write(&[(key, again)]).await, 1);
        let leads = leads(&sink).await;
        assert_eq!(leads.len(), 1, "{leads:?}");
        assert_eq!(notes(&sink, &leads[0]["leadid"]).await.len(), 2);
    }

    #[test]
    fn a_fold_keeps_earlier_values_the_later_lacks_and_each_step_once() {
        let (_, mut earlier) = write("a@contoso.com", "PLT", "Contoso CRM", Uuid::new_v4());
        let (_, mut later) = write("a@contoso.com", "INS", "Contoso CRM", Uuid::new_v4());
        later.values.remove("companyname");
        let again = earlier.steps[0].clone();
        later.steps.push(again);
        let first_id = earlier.lead_id();
        earlier.fold(later);
        assert_eq!(earlier.values["companyname"], "Contoso");
        assert_eq!(earlier.values["subject"], "Install — Contoso CRM");
        assert_eq!(earlier.steps.len(), 2);
        assert_eq!(earlier.lead_id(), first_id, "the first step still names the lead");
        let json = serde_json::to_string(&earlier).unwrap();
        assert_eq!(serde_json::from_str::<LeadWrite>(&json).unwrap(), earlier);
    }
}
