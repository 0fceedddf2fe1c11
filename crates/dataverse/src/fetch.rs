//! FetchXML queries (`GET {entity set}?fetchXml=…`), page by page. Dataverse pages FetchXML with a paging cookie:
//! the answer carries `@Microsoft.Dynamics.CRM.fetchxmlpagingcookie` while more rows follow, and the next page is
//! the same FetchXML with `page` one higher and `paging-cookie` set to the cookie's inner value (which Dataverse
//! sends URL-encoded twice). Each page's query is returned whole, so a reader that keeps it resumes there.

use crate::client::{Client, Request};
use crate::entity::{Record, Table};
use crate::error::Error;
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::Deserialize;

/// A page of a FetchXML query.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchPage {
    pub records: Vec<Record>,
    /// The FetchXML of the next page, when more rows follow.
    pub next: Option<String>,
}

#[derive(Deserialize)]
struct WireFetchPage {
    value: Vec<Record>,
    #[serde(rename = "@Microsoft.Dynamics.CRM.fetchxmlpagingcookie")]
    cookie: Option<String>,
    #[serde(rename = "@Microsoft.Dynamics.CRM.morerecords")]
    more: Option<bool>,
}

/// The annotations a page of FetchXML asks for: lookup targets ([`crate::changes::ANNOTATIONS`]) and the paging
/// cookie.
const FETCH_ANNOTATIONS: &str = "odata.include-annotations=\"Microsoft.Dynamics.CRM.lookuplogicalname,\
    Microsoft.Dynamics.CRM.fetchxmlpagingcookie,Microsoft.Dynamics.CRM.morerecords\"";

/// The path of a FetchXML query of `table`, relative to the Web API root.
pub fn fetch_path(table: &Table, fetch_xml: &str) -> String {
    format!("{}?fetchXml={}", table.entity_set, utf8_percent_encode(fetch_xml, NON_ALPHANUMERIC))
}

/// The FetchXML of the page after the one `cookie` (the `fetchxmlpagingcookie` annotation) ends.
pub fn next_page(fetch_xml: &str, cookie: &str) -> Result<String, String> {
    let outer = roxmltree::Document::parse(cookie).map_err(|e| format!("the paging cookie is not XML ({e})"))?;
    let outer = outer.root_element();
    let page = outer.attribute("pagenumber").ok_or("the paging cookie has no pagenumber")?;
    let encoded = outer.attribute("pagingcookie").ok_or("the paging cookie has no pagingcookie")?;
    let once = percent_decode_str(encoded).decode_utf8_lossy().into_owned();
    let inner = percent_decode_str(&once).decode_utf8_lossy().into_owned();
    let document = roxmltree::Document::parse(fetch_xml).map_err(|e| format!("the FetchXML is not XML ({e})"))?;
    let fetch = document.root_element();
    if !fetch.has_tag_name("fetch") {
        return Err("the FetchXML's root is not <fetch>".into());
    }
    // The opening tag again, with the page and the cookie; the rest of the document as it was.
    let mut tag = String::from("<fetch");
    for attribute in fetch.attributes().filter(|a| !matches!(a.name(), "page" | "paging-cookie")) {
        tag.push_str(&format!(" {}=\"{}\"", attribute.name(), escape(attribute.value())));
    }
    tag.push_str(&format!(" page=\"{}\" paging-cookie=\"{}\">", escape(page), escape(&inner)));
    let body_start = match fetch.first_child() {
        Some(child) => child.range().start,
        None => return Err("the FetchXML's <fetch> is empty".into()),
    };
    Ok(format!("{tag}{}", &fetch_xml[body_start..]))
}

/// `fetch_xml` asking also for `attributes` of its entity (those it names already are not repeated), `count` rows a
/// page: a view's query, read with the columns a reader needs besides those the view shows.
pub fn with_attributes(fetch_xml: &str, attributes: &[&str], count: u32) -> Result<String, String> {
    let document = roxmltree::Document::parse(fetch_xml).map_err(|e| format!("the FetchXML is not XML ({e})"))?;
    let fetch = document.root_element();
    let entity = fetch.children().find(|n| n.has_tag_name("entity")).ok_or("the FetchXML has no <entity>")?;
    let named: Vec<&str> =
        entity.children().filter(|n| n.has_tag_name("attribute")).filter_map(|n| n.attribute("name")).collect();
    let added: String = attributes
        .iter()
        .filter(|a| !named.iter().any(|n| n.eq_ignore_ascii_case(a)))
        .map(|a| format!("<attribute name=\"{}\"/>", escape(a)))
        .collect();
    // The entity's children start after its opening tag; an empty entity is written open.
    let (head, tail) = match entity.first_child() {
        Some(child) => (&fetch_xml[..child.range().start], &fetch_xml[child.range().start..]),
        None => {
            let range = entity.range();
            let open = fetch_xml[range.clone()].trim_end_matches('>').trim_end_matches('/').to_string();
            let rebuilt = format!("{}{open}>{added}</entity>{}", &fetch_xml[..range.start], &fetch_xml[range.end..]);
            return set_count(&rebuilt, count);
        }
    };
    set_count(&format!("{head}{added}{tail}"), count)
}

/// `fetch_xml` with `count` on its `<fetch>`.
fn set_count(fetch_xml: &str, count: u32) -> Result<String, String> {
    let document = roxmltree::Document::parse(fetch_xml).map_err(|e| format!("the FetchXML is not XML ({e})"))?;
    let fetch = document.root_element();
    let mut tag = String::from("<fetch");
    for attribute in fetch.attributes().filter(|a| !matches!(a.name(), "count" | "top")) {
        tag.push_str(&format!(" {}=\"{}\"", attribute.name(), escape(attribute.value())));
    }
    tag.push_str(&format!(" count=\"{count}\">"));
    let body_start = fetch.first_child().map(|c| c.range().start).ok_or("the FetchXML's <fetch> is empty")?;
    Ok(format!("{tag}{}", &fetch_xml[body_start..]))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

impl Client {
    /// One page of a FetchXML query of `table`, with lookup targets annotated.
    pub async fn fetch_page(&self, table: &Table, fetch_xml: &str) -> Result<FetchPage, Error> {
        let request = Request::get(fetch_path(table, fetch_xml)).header("Prefer", FETCH_ANNOTATIONS);
        let reply = self.execute(&request).await?;
        let page: WireFetchPage = reply.read_json()?;
        let next = match (page.more, page.cookie) {
            (Some(false), _) | (None, None) => None,
            (_, Some(cookie)) => Some(
                next_page(fetch_xml, &cookie)
                    .map_err(|detail| Error::UnexpectedBody { url: reply.url.clone(), detail })?,
            ),
            (Some(true), None) => {
                return Err(Error::UnexpectedBody {
                    url: reply.url.clone(),
                    detail: "more records follow, but the page has no paging cookie".into(),
                });
            }
        };
        Ok(FetchPage { records: page.value, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_carries_the_cookie_dataverse_sent_decoded_twice() {
        let fetch =
            r#"<fetch version="1.0" count="2"><entity name="contact"><attribute name="fullname"/></entity></fetch>"#;
        // As Dataverse sends it: the inner cookie URL-encoded twice, in an outer cookie.
        let cookie = r#"<cookie pagenumber="2" pagingcookie="%253ccookie%2520page%253d%25221%2522%253e%253ccontactid%2520last%253d%2522%257bA%257d%2522%2520%252f%253e%253c%252fcookie%253e" istracking="False" />"#;
        let next = next_page(fetch, cookie).unwrap();
        assert_eq!(
            next,
            r#"<fetch version="1.0" count="2" page="2" paging-cookie="&lt;cookie page=&quot;1&quot;&gt;&lt;contactid last=&quot;{A}&quot; /&gt;&lt;/cookie&gt;"><entity name="contact"><attribute name="fullname"/></entity></fetch>"#
        );
        // A later page replaces both.
        let again = next_page(&next, &cookie.replace("pagenumber=\"2\"", "pagenumber=\"3\"")).unwrap();
        assert_eq!(again.matches(" page=\"").count(), 1, "{again}");
        assert!(again.contains("page=\"3\""), "{again}");
    }

    #[test]
    fn a_views_query_asks_for_the_columns_a_reader_needs_a_page_at_a_time() {
        let view = r#"<fetch version="1.0" top="50"><entity name="contact"><attribute name="fullname"/><filter><condition attribute="statecode" operator="eq" value="0"/></filter></entity></fetch>"#;
        let read = with_attributes(view, &["fullname", "contactid", "versionnumber"], 5000).unwrap();
        assert_eq!(
            read,
            r#"<fetch version="1.0" count="5000"><entity name="contact"><attribute name="contactid"/><attribute name="versionnumber"/><attribute name="fullname"/><filter><condition attribute="statecode" operator="eq" value="0"/></filter></entity></fetch>"#
        );
        let empty = with_attributes(r#"<fetch><entity name="contact"/></fetch>"#, &["contactid"], 10).unwrap();
        assert_eq!(empty, r#"<fetch count="10"><entity name="contact"><attribute name="contactid"/></entity></fetch>"#);
    }

    #[test]
    fn a_cookie_that_is_not_one_says_so() {
        assert!(next_page("<fetch><entity name='contact'/></fetch>", "nope").unwrap_err().contains("not XML"));
        assert!(next_page("<fetch><entity name='contact'/></fetch>", "<cookie />").unwrap_err().contains("pagenumber"));
    }
}
