//! Change tracking: a table's changes as a stream of upserts and deletes, ending with a token to resume from.
//!
//! The first read (no token) returns every row, then the token; each later read from a token returns what
//! changed since, then the next token. A token the environment no longer keeps changes for (7 days by
//! default) ends in [`Error::ChangeTokenExpired`]: the caller reads the table in full again.

use crate::client::{Client, Request};
use crate::entity::{Record, RecordId, Table};
use crate::error::{Error, ErrorKind};
use futures::{Stream, StreamExt, TryStreamExt, stream};
use serde_json::Value as Json;
use std::fmt;

/// Where to resume reading changes: the `@odata.deltaLink` of the last read. Store it with the data it
/// brought; it holds no secret.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct DeltaToken(pub String);

impl fmt::Debug for DeltaToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = self.0.split_once("$deltatoken=").map_or(self.0.as_str(), |(_, t)| t);
        write!(f, "DeltaToken({token})")
    }
}

/// One change to a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A row created or updated since the token (every row, on a first read).
    Upserted(Record),
    Deleted(RecordId),
    /// Every change up to here is read: resume from this token.
    Token(DeltaToken),
}

#[derive(serde::Deserialize)]
pub(crate) struct DeltaPage {
    value: Vec<Record>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink")]
    delta_link: Option<String>,
}

/// A row of a delta page: a deleted entity is `{"@odata.context": "…/$deletedEntity", "id": …}`.
fn change_of(record: Record, url: &str) -> Result<Change, Error> {
    let deleted = record.get("@odata.context").and_then(Json::as_str).is_some_and(|c| c.ends_with("$deletedEntity"));
    if !deleted {
        return Ok(Change::Upserted(record));
    }
    record
        .get("id")
        .and_then(|id| serde_json::from_value(id.clone()).ok())
        .map(Change::Deleted)
        .ok_or_else(|| Error::UnexpectedBody { url: url.to_string(), detail: "a deleted entity without an id".into() })
}

pub(crate) fn changes_of(page: DeltaPage, url: &str) -> Result<(Vec<Change>, Option<String>), Error> {
    let mut changes = page.value.into_iter().map(|r| change_of(r, url)).collect::<Result<Vec<_>, _>>()?;
    if let Some(delta) = page.delta_link {
        changes.push(Change::Token(DeltaToken(delta)));
    }
    Ok((changes, page.next_link))
}

/// Where a read of changes goes on: the first page of a table (all of its rows), a page of it after that, or a
/// delta token. Each is a link the environment gave, so a reader that keeps it can resume there after a restart:
/// a page read again from the same link answers the same rows, or newer versions of them.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ChangeLink(pub String);

impl fmt::Debug for ChangeLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChangeLink({})", self.0)
    }
}

impl ChangeLink {
    /// The first page of a whole read of the table: `select` names the columns (Dataverse allows no `$filter`,
    /// `$orderby` or `$top` here).
    pub fn initial(table: &Table, select: &[&str]) -> ChangeLink {
        match select {
            [] => ChangeLink(table.entity_set.clone()),
            columns => ChangeLink(format!("{}?$select={}", table.entity_set, columns.join(","))),
        }
    }
}

impl From<DeltaToken> for ChangeLink {
    fn from(token: DeltaToken) -> ChangeLink {
        ChangeLink(token.0)
    }
}

/// A page of changes, and where the read goes on.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangePage {
    pub changes: Vec<ChangePageItem>,
    pub next: PageNext,
}

/// A row of a page of changes.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangePageItem {
    Upserted(Record),
    Deleted(RecordId),
}

/// Where a read of changes goes on after a page.
#[derive(Debug, Clone, PartialEq)]
pub enum PageNext {
    /// More pages of this read follow, from this link.
    More(ChangeLink),
    /// The read is complete: later changes are read from this token.
    Done(DeltaToken),
}

/// The annotation a page of changes (or an annotated query) asks for: the table each lookup points into, which
/// its value alone does not say. Not formatted values: they were two-fifths of a page's bytes, for every column,
/// and a reader takes a choice's label from the column's options ([`Client::choice_options_of`]).
pub const ANNOTATIONS: &str = "odata.include-annotations=\"Microsoft.Dynamics.CRM.lookuplogicalname\"";

impl Client {
    /// One page of changes from `link`, with lookup targets annotated. A delta token the
    /// environment no longer keeps changes for is [`Error::ChangeTokenExpired`]: read the table whole again.
    pub async fn changes_page(&self, table: &Table, link: &ChangeLink, page_size: u32) -> Result<ChangePage, Error> {
        let request = Request::get(link.0.clone())
            .header("Prefer", format!("odata.track-changes, odata.maxpagesize={page_size}, {ANNOTATIONS}"));
        let reply = match self.execute(&request).await {
            Ok(reply) => reply,
            Err(Error::Api(api)) if api.kind == ErrorKind::ChangeTokenExpired => {
                return Err(Error::ChangeTokenExpired { entity_set: table.entity_set.clone(), api: Box::new(api) });
            }
            Err(e) => return Err(e),
        };
        let page: DeltaPage = reply.read_json()?;
        let (changes, next) = changes_of(page, &reply.url)?;
        let mut items = Vec::with_capacity(changes.len());
        let mut token = None;
        for change in changes {
            match change {
                Change::Upserted(record) => items.push(ChangePageItem::Upserted(record)),
                Change::Deleted(id) => items.push(ChangePageItem::Deleted(id)),
                Change::Token(t) => token = Some(t),
            }
        }
        let next = match (next, token) {
            (Some(link), _) => PageNext::More(ChangeLink(link)),
            (None, Some(token)) => PageNext::Done(token),
            (None, None) => {
                return Err(Error::UnexpectedBody {
                    url: reply.url.clone(),
                    detail: "a page of changes with neither @odata.nextLink nor @odata.deltaLink".into(),
                });
            }
        };
        Ok(ChangePage { changes: items, next })
    }

    /// The table's changes since `since` (or all of its rows, without one), then the token to resume from.
    /// `select` names the columns to read (Dataverse allows no `$filter`, `$orderby` or `$top` here).
    pub fn changes(
        &self,
        table: &Table,
        select: &[&str],
        since: Option<&DeltaToken>,
    ) -> impl Stream<Item = Result<Change, Error>> + Send + 'static {
        let first = match since {
            Some(token) => ChangeLink::from(token.clone()),
            None => ChangeLink::initial(table, select),
        };
        let (client, table) = (self.clone(), table.clone());
        stream::try_unfold(Some(first), move |link| {
            let (client, table) = (client.clone(), table.clone());
            async move {
                let Some(link) = link else { return Ok::<_, Error>(None) };
                let page = client.changes_page(&table, &link, 5000).await?;
                let mut changes: Vec<Change> = page
                    .changes
                    .into_iter()
                    .map(|item| match item {
                        ChangePageItem::Upserted(record) => Change::Upserted(record),
                        ChangePageItem::Deleted(id) => Change::Deleted(id),
                    })
                    .collect();
                let next = match page.next {
                    PageNext::More(link) => Some(link),
                    PageNext::Done(token) => {
                        changes.push(Change::Token(token));
                        None
                    }
                };
                Ok(Some((stream::iter(changes.into_iter().map(Ok)), next)))
            }
        })
        .try_flatten()
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_documented_delta_page_reads_as_changes() {
        let page: DeltaPage = serde_json::from_value(json!({
            "@odata.context": "https://x.crm.dynamics.com/api/data/v9.0/$metadata#accounts(name,telephone1)/$delta",
            "value": [
                {"@odata.etag": "W/\"915244\"", "name": "Monte Orton", "telephone1": "555-0110",
                 "accountid": "60c4e274-0d87-e711-80e5-00155db19e6d"},
                {"@odata.context": "https://x.crm.dynamics.com/api/data/v9.0/$metadata#accounts/$deletedEntity",
                 "id": "2e451703-c686-e711-80e5-00155db19e6d", "reason": "deleted"}
            ],
            "@odata.deltaLink": "https://x.crm.dynamics.com/api/data/v9.0/accounts?$select=name,telephone1&$deltatoken=919058%2108%2f22%2f2017%2008%3a21%3a20"
        }))
        .unwrap();
        let (changes, next) = changes_of(page, "accounts").unwrap();
        assert!(next.is_none());
        assert!(matches!(&changes[0], Change::Upserted(r) if r["name"] == "Monte Orton"));
        assert_eq!(changes[1], Change::Deleted(RecordId("2e451703-c686-e711-80e5-00155db19e6d".parse().unwrap())));
        let Change::Token(token) = &changes[2] else { panic!("{changes:?}") };
        assert_eq!(format!("{token:?}"), "DeltaToken(919058%2108%2f22%2f2017%2008%3a21%3a20)");
    }
}
