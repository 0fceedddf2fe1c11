//! Customer Insights – Journeys' consent, where the environment has the app: besides the contact's `donot*`
//! columns, an opt-out or a re-opt-in is written as the email address's `msdynmkt_contactpointconsent4` row for
//! the Commercial purpose (Opted Out or Opted In, with its source, reason and who asked), which is what Journeys
//! checks before it sends. Microsoft documents no alternate key on the table and asks writers to look the row up
//! by contact point and purpose, then update it or create it: so an existing row is updated under its own id, and
//! a new one gets an id derived from the address and the purpose, so that writing it again updates it.

use super::event::{EmailEvent, EventKind};
use dataverse::{Client, Filter, Query, Record, Table};
use futures::TryStreamExt;
use serde::Deserialize;
use serde_json::Value as Json;
use uuid::Uuid;

pub const CONSENT_TABLE: &str = "msdynmkt_contactpointconsent4";
/// The purpose an email's opt-out is for, in Journeys' default compliance profile.
pub const PURPOSE: &str = "Commercial";

/// `msdynmkt_contactpointtype`: Email.
const CHANNEL_EMAIL: i32 = 534_120_000;
/// `msdynmkt_contactpointconsenttype`: Purpose.
const CONSENT_FOR_PURPOSE: i32 = 534_120_000;
/// `msdynmkt_value`: Opted In, Opted Out.
const OPTED_IN: i32 = 534_120_001;
const OPTED_OUT: i32 = 534_120_002;
/// `msdynmkt_source`: Internal; Email - list-unsubscribe.
const SOURCE_INTERNAL: i32 = 534_120_000;
const SOURCE_UNSUBSCRIBE: i32 = 534_120_007;
/// `msdynmkt_logicalreason`: No reasons; Opt-out - One-click unsubscribe.
const NO_REASONS: i32 = 534_119_999;
const ONE_CLICK_UNSUBSCRIBE: i32 = 534_120_007;

/// The namespace a new consent row's id is derived in, from the address and the purpose.
const CONSENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x51c0_7e2a_9d84_4b3f_a6e0_c21d_58f9_7b42);

/// The environment's consent table and the purpose opt-outs are written for.
#[derive(Debug, Clone)]
pub struct JourneysConsent {
    pub table: Table,
    pub purpose: Uuid,
}

#[derive(Deserialize)]
struct PurposeRow {
    msdynmkt_purposeid: Uuid,
}

#[derive(Deserialize)]
pub struct ConsentRow {
    pub msdynmkt_contactpointconsent4id: Uuid,
    pub msdynmkt_contactpointvalue: Option<String>,
}

impl JourneysConsent {
    /// The consent table and the active Commercial purpose; `None` when the environment has not the app.
    pub async fn find(client: &Client) -> Result<Option<JourneysConsent>, dataverse::Error> {
        let table = match client.table(CONSENT_TABLE).await {
            Ok(table) => table,
            Err(e) if e.kind() == dataverse::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let purposes = Table::new("msdynmkt_purpose", "msdynmkt_purposes");
        let query = Query::new(&purposes)
            .select(&["msdynmkt_purposeid"])
            .filter(Filter::eq("msdynmkt_name", PURPOSE).and(Filter::eq("statecode", 0)))
            .top(1);
        let found: Vec<PurposeRow> = client.query_as::<PurposeRow>(&query).try_collect().await?;
        let Some(purpose) = found.into_iter().next() else {
            tracing::warn!(
                "the environment has Customer Insights – Journeys' consent table but no active {PURPOSE} purpose: \
                 consent is written on contacts only"
            );
            return Ok(None);
        };
        Ok(Some(JourneysConsent {
            table: Table {
                logical_name: table.logical_name.clone(),
                entity_set: table.entity_set_name.clone(),
                primary_id: table.primary_id.clone(),
            },
            purpose: purpose.msdynmkt_purposeid,
        }))
    }

    /// The query of the rows of these addresses for the purpose.
    pub fn rows_of(&self, addresses: &[&str]) -> Query {
        let addresses = Filter::any(addresses.iter().map(|a| Filter::eq("msdynmkt_contactpointvalue", *a)).collect())
            .expect("a chunk is not empty");
        Query::new(&self.table).select(&["msdynmkt_contactpointconsent4id", "msdynmkt_contactpointvalue"]).filter(
            Filter::eq("_msdynmkt_purposeid_value", self.purpose)
                .and(Filter::eq("msdynmkt_contactpointtype", CHANNEL_EMAIL))
                .and(addresses),
        )
    }

    /// The id a new row of an address gets.
    pub fn new_id(&self, address: &str) -> Uuid {
        Uuid::new_v5(&CONSENT_ID_NAMESPACE, format!("{}|{}", address, self.purpose).as_bytes())
    }

    /// The row an event's consent change writes, under `id`.
    pub fn record(&self, id: Uuid, event: &EmailEvent, opted_out: bool) -> Record {
        let (source, reason) = match event.kind {
            EventKind::Unsubscribed => (SOURCE_UNSUBSCRIBE, ONE_CLICK_UNSUBSCRIBE),
            _ => (SOURCE_INTERNAL, NO_REASONS),
        };
        let described = match &event.reason {
            Some(reason) => format!("{}: {reason}", event.kind.label()),
            None => event.kind.label().to_string(),
        };
        let mut record = Record::new();
        let mut set = |name: &str, value: Json| {
            record.insert(name.to_string(), value);
        };
        set("msdynmkt_contactpointconsent4id", Json::String(id.to_string()));
        set("msdynmkt_contactpointvalue", Json::String(event.email.as_str().to_string()));
        set("msdynmkt_contactpointtype", Json::from(CHANNEL_EMAIL));
        set("msdynmkt_contactpointconsenttype", Json::from(CONSENT_FOR_PURPOSE));
        set("msdynmkt_value", Json::from(if opted_out { OPTED_OUT } else { OPTED_IN }));
        set("msdynmkt_purposeId@odata.bind", Json::String(format!("/msdynmkt_purposes({})", self.purpose)));
        set("msdynmkt_source", Json::from(source));
        set("msdynmkt_logicalreason", Json::from(reason));
        set("msdynmkt_reason", Json::String(crate::text::clip(&described, 500).into_owned()));
        set("msdynmkt_modifiedonbehalf", Json::String(format!("dynsync ({})", event.provider.name())));
        record
    }
}
