//! System query options (`$select`, `$filter`, `$orderby`, `$top`, `$count`, `$skiptoken`), the `fetchXml` and
//! `sql` options that replace them, `Prefer` preferences, and the XML paging cookie Dataverse puts in `$skiptoken`
//! and in `@Microsoft.Dynamics.CRM.fetchxmlpagingcookie`.
//!
//! A query option the emulator does not implement is refused by name, never ignored: ignoring one answers a
//! different query than the one asked, which a client cannot tell from a right answer.

use super::filter::{self, Expr};
use crate::error::{ApiError, ApiResult};
use crate::schema::{Attribute, AttributeKind, DateFormat};
use crate::value::{Value, parse_date, parse_date_time, parse_guid};
use axum::http::HeaderMap;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use std::collections::HashMap;
use uuid::Uuid;

/// What URLs keep unencoded in query values, as Dataverse writes them in `@odata.nextLink`.
pub const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b',')
    .remove(b'$')
    .remove(b'=')
    .remove(b'/');

pub fn encode_query_value(text: &str) -> String {
    utf8_percent_encode(text, QUERY_VALUE).to_string()
}

/// What a query option's name cannot keep unencoded: `=` too, which would end the name.
const QUERY_NAME: &AsciiSet = &QUERY_VALUE.add(b'=');

/// `name=value`, each encoded so that the pair reads back as itself.
pub fn encode_query_option(name: &str, value: &str) -> String {
    format!("{}={}", utf8_percent_encode(name, QUERY_NAME), encode_query_value(value))
}

fn decode(text: &str) -> String {
    percent_decode_str(&text.replace('+', " ")).decode_utf8_lossy().into_owned()
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderBy {
    pub property: String,
    pub descending: bool,
}

#[derive(Debug, Default)]
pub struct QueryOptions {
    pub select: Option<Vec<String>>,
    pub filter: Option<Expr>,
    pub orderby: Vec<OrderBy>,
    pub top: Option<usize>,
    pub count: bool,
    pub skiptoken: Option<String>,
    pub expand: Option<String>,
    pub deltatoken: Option<String>,
    /// `fetchXml=`: a FetchXML query, answered instead of the system query options (see `fetchxml`).
    pub fetch_xml: Option<String>,
    /// `savedQuery=`: the id of a system view whose FetchXML answers the query (see `api::records`).
    pub saved_query: Option<String>,
    /// `sql=`: a SQL `SELECT`, read into the system query options above (see `sql`).
    pub sql: Option<String>,
    /// The query string less `$skiptoken`, to build the next page's link from.
    pub without_skiptoken: Vec<(String, String)>,
}

impl QueryOptions {
    pub fn parse(raw: Option<&str>) -> ApiResult<QueryOptions> {
        let mut pairs = Vec::new();
        for piece in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
            pairs.push((decode(k), decode(v)));
        }
        let aliases: HashMap<String, String> =
            pairs.iter().filter(|(k, _)| k.starts_with('@')).map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut options = QueryOptions::default();
        for (key, value) in &pairs {
            if key != "$skiptoken" {
                options.without_skiptoken.push((key.clone(), value.clone()));
            }
            match key.as_str() {
                "$select" => {
                    options.select =
                        Some(value.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
                }
                "$filter" => options.filter = Some(filter::parse(value, &aliases)?),
                "$orderby" => options.orderby = parse_orderby(value)?,
                "$top" => {
                    let top = value
                        .parse::<usize>()
                        .map_err(|_| ApiError::bad_query(format!("Invalid value '{value}' for $top query option found. The $top query option requires a non-negative integer value.")))?;
                    options.top = Some(top);
                }
                "$count" => {
                    options.count = match value.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(ApiError::bad_query(format!("'{value}' is not a valid count option.")));
                        }
                    }
                }
                "$skiptoken" => options.skiptoken = Some(value.clone()),
                "$expand" => options.expand = Some(value.clone()),
                "$deltatoken" => options.deltatoken = Some(value.clone()),
                "fetchXml" => options.fetch_xml = Some(value.clone()),
                "sql" => options.sql = Some(value.clone()),
                "savedQuery" => options.saved_query = Some(value.clone()),
                "$skip" | "$search" | "$format" => {
                    return Err(ApiError::bad_query(format!("The query parameter {key} is not supported")));
                }
                other if other.starts_with('$') => {
                    return Err(ApiError::bad_query(format!("The query parameter {other} is not supported")));
                }
                // Parameter aliases, read by `$filter`.
                other if other.starts_with('@') => {}
                "userQuery" => {
                    return Err(ApiError::bad_query(
                        "The query parameter userQuery is not supported by the emulator: it keeps no personal views \
                         (userquery). Run a system view with savedQuery=<savedqueryid>, or send the view's FetchXML \
                         with fetchXml=.",
                    ));
                }
                other => {
                    return Err(ApiError::bad_query(format!(
                        "The query parameter {other} is not supported: the emulator answers $select, $filter, \
                         $orderby, $top, $count, $expand, $skiptoken, $deltatoken, fetchXml, savedQuery, sql and \
                         @parameter aliases."
                    )));
                }
            }
        }
        options.check_exclusive(&pairs)?;
        Ok(options)
    }

    /// `fetchXml`, `savedQuery` and `sql` are whole queries: none goes with another, nor with a system query
    /// option (except the `$skiptoken` of a `sql` or `savedQuery` query's own next link).
    fn check_exclusive(&self, pairs: &[(String, String)]) -> ApiResult<()> {
        let given: Vec<&str> = [
            self.fetch_xml.as_ref().map(|_| "fetchXml"),
            self.saved_query.as_ref().map(|_| "savedQuery"),
            self.sql.as_ref().map(|_| "sql"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let name = match given.as_slice() {
            [] => return Ok(()),
            [one] => *one,
            [first, second, ..] => {
                return Err(ApiError::bad_query(format!("{first} and {second} are two queries: send one of them.")));
            }
        };
        let allowed = |key: &str| {
            key == name || key.starts_with('@') || (matches!(name, "sql" | "savedQuery") && key == "$skiptoken")
        };
        match pairs.iter().find(|(key, _)| !allowed(key.as_str())) {
            Some((key, _)) => Err(ApiError::bad_query(format!(
                "The query parameter {key} cannot be combined with {name}: write it inside the {name} query instead."
            ))),
            None => Ok(()),
        }
    }

    /// The query string of the next page, carrying the paging cookie.
    pub fn next_query(&self, skiptoken: &str) -> String {
        let mut parts: Vec<String> = self.without_skiptoken.iter().map(|(k, v)| encode_query_option(k, v)).collect();
        parts.push(format!("$skiptoken={}", encode_query_value(skiptoken)));
        parts.join("&")
    }
}

fn parse_orderby(text: &str) -> ApiResult<Vec<OrderBy>> {
    text.split(',')
        .map(|part| {
            let mut words = part.split_whitespace();
            let property =
                words.next().ok_or_else(|| ApiError::bad_query(format!("'{text}' is not a valid $orderby.")))?;
            let descending = match words.next() {
                None | Some("asc") => false,
                Some("desc") => true,
                Some(other) => {
                    return Err(ApiError::bad_query(format!("Syntax error: '{other}' in $orderby; use asc or desc.")));
                }
            };
            Ok(OrderBy { property: property.to_string(), descending })
        })
        .collect()
}

// ------------------------------------------------------------------------------------------- Prefer

/// The preferences of a request's `Prefer` headers.
#[derive(Debug, Default, Clone)]
pub struct Prefer {
    pub return_representation: bool,
    pub max_page_size: Option<String>,
    pub annotations: Option<String>,
    pub track_changes: bool,
    pub continue_on_error: bool,
}

impl Prefer {
    pub fn from_headers(headers: &HeaderMap) -> Prefer {
        let mut prefer = Prefer::default();
        for header in headers.get_all("prefer") {
            let Ok(text) = header.to_str() else { continue };
            for item in split_preferences(text) {
                let (name, value) =
                    item.split_once('=').map(|(n, v)| (n.trim(), v.trim())).unwrap_or((item.trim(), ""));
                match name.to_ascii_lowercase().as_str() {
                    "return" => prefer.return_representation = value == "representation",
                    "odata.maxpagesize" => prefer.max_page_size = Some(value.to_string()),
                    "odata.include-annotations" => prefer.annotations = Some(value.trim_matches('"').to_string()),
                    "odata.track-changes" => prefer.track_changes = true,
                    "odata.continue-on-error" => prefer.continue_on_error = true,
                    _ => {}
                }
            }
        }
        prefer
    }

    /// Whether an annotation term was asked for: `*`, an exact name, or a `prefix*` pattern.
    pub fn includes(&self, term: &str) -> bool {
        let Some(patterns) = &self.annotations else {
            return false;
        };
        patterns.split(',').map(str::trim).any(|p| match p.strip_suffix('*') {
            Some(prefix) => term.starts_with(prefix),
            None => p == term,
        })
    }
}

/// Splits a `Prefer` value at commas outside double quotes.
fn split_preferences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

// ------------------------------------------------------------------------------------- paging cookie

/// Where the next page starts: the last row's sort values and its primary key.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    pub page: u32,
    pub sort_values: Vec<(String, Option<String>)>,
    pub last_id: Uuid,
    pub first_id: Uuid,
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}

fn xml_unescape(text: &str) -> String {
    text.replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// The characters Dataverse escapes inside the nested `pagingcookie` attribute.
const COOKIE: &AsciiSet = &percent_encoding::CONTROLS
    .add(b'<')
    .add(b'>')
    .add(b'"')
    .add(b'=')
    .add(b'/')
    .add(b'%')
    .add(b' ')
    .add(b'&')
    .add(b'{')
    .add(b'}');

fn braced(id: Uuid) -> String {
    format!("{{{}}}", id.to_string().to_uppercase())
}

fn attribute_of(element: &str, name: &str) -> Option<String> {
    let needle = format!("{name}=\"");
    let start = element.find(&needle)? + needle.len();
    let end = element[start..].find('"')? + start;
    Some(xml_unescape(&element[start..end]))
}

impl Cursor {
    /// `<cookie page="1"><lastname last="…" /><contactid last="{…}" first="{…}" /></cookie>`: one element per sort
    /// column and one for the primary key, GUIDs upper case in braces. FetchXML's `paging-cookie` is this text.
    pub fn inner_cookie(&self, primary_id: &str) -> String {
        let mut inner = format!("<cookie page=\"{}\">", self.page);
        for (column, value) in &self.sort_values {
            match value {
                Some(v) => inner.push_str(&format!("<{column} last=\"{}\" />", xml_escape(v))),
                None => inner.push_str(&format!("<{column} />")),
            }
        }
        inner.push_str(&format!(
            "<{primary_id} last=\"{}\" first=\"{}\" /></cookie>",
            braced(self.last_id),
            braced(self.first_id)
        ));
        inner
    }

    /// `<cookie pagenumber="2" pagingcookie="…" istracking="False" />`, with the inner cookie URL-encoded.
    pub fn to_skiptoken(&self, primary_id: &str) -> String {
        self.outer_cookie(&encode_cookie(&self.inner_cookie(primary_id)))
    }

    /// `@Microsoft.Dynamics.CRM.fetchxmlpagingcookie`: the same outer cookie, with the inner one URL-encoded twice
    /// as Dataverse writes it there (clients decode it twice before they put it in `paging-cookie`).
    pub fn to_fetch_cookie(&self, primary_id: &str) -> String {
        self.outer_cookie(&encode_cookie(&encode_cookie(&self.inner_cookie(primary_id))))
    }

    fn outer_cookie(&self, encoded_inner: &str) -> String {
        format!(
            "<cookie pagenumber=\"{}\" pagingcookie=\"{}\" istracking=\"False\" />",
            self.page + 1,
            xml_escape(encoded_inner)
        )
    }

    pub fn from_skiptoken(token: &str, primary_id: &str, sort_columns: &[String]) -> ApiResult<Cursor> {
        let (page_number, inner) = Cursor::skiptoken_parts(token)?;
        Cursor::from_inner_cookie(&inner, page_number.saturating_sub(1), primary_id, sort_columns)
            .ok_or_else(invalid_skiptoken)
    }

    /// The page number a [`Cursor::to_skiptoken`] asks for, and its inner cookie (FetchXML's `paging-cookie`).
    pub fn skiptoken_parts(token: &str) -> ApiResult<(u32, String)> {
        let outer = token.trim();
        let page_number: u32 =
            attribute_of(outer, "pagenumber").and_then(|p| p.parse().ok()).ok_or_else(invalid_skiptoken)?;
        let inner_encoded = attribute_of(outer, "pagingcookie").ok_or_else(invalid_skiptoken)?;
        Ok((page_number, percent_decode_str(&inner_encoded).decode_utf8_lossy().into_owned()))
    }

    /// Reads an [`Cursor::inner_cookie`] back; `None` when it is not one for these sort columns.
    pub fn from_inner_cookie(inner: &str, page: u32, primary_id: &str, sort_columns: &[String]) -> Option<Cursor> {
        let element = |name: &str| -> Option<String> {
            let start = inner.find(&format!("<{name} "))?;
            let end = inner[start..].find("/>")? + start;
            Some(inner[start..end].to_string())
        };
        let mut sort_values = Vec::new();
        for column in sort_columns {
            let el = element(column)?;
            sort_values.push((column.clone(), attribute_of(&el, "last")));
        }
        let id_element = element(primary_id)?;
        let guid = |name: &str| {
            attribute_of(&id_element, name).map(|s| s.trim_matches(['{', '}']).to_string()).and_then(|s| parse_guid(&s))
        };
        Some(Cursor { page, sort_values, last_id: guid("last")?, first_id: guid("first")? })
    }
}

fn invalid_skiptoken() -> ApiError {
    ApiError::bad_query(
        "The $skiptoken is not a paging cookie this service issued; follow @odata.nextLink as it was returned.",
    )
}

fn encode_cookie(text: &str) -> String {
    utf8_percent_encode(text, COOKIE).to_string().to_lowercase_escapes()
}

trait LowercaseEscapes {
    fn to_lowercase_escapes(self) -> String;
}

impl LowercaseEscapes for String {
    /// Dataverse writes the nested escapes in lower case (`%3ccookie`).
    fn to_lowercase_escapes(self) -> String {
        let mut out = String::with_capacity(self.len());
        let mut chars = self.chars();
        while let Some(c) = chars.next() {
            out.push(c);
            if c == '%' {
                out.extend(chars.by_ref().take(2).map(|h| h.to_ascii_lowercase()));
            }
        }
        out
    }
}

/// Reads a sort value back from its cookie text, typed by its column.
pub fn value_from_cookie(attribute: &Attribute, text: &str) -> Option<Value> {
    Some(match &attribute.kind {
        AttributeKind::String { .. }
        | AttributeKind::Memo { .. }
        | AttributeKind::EntityName { .. }
        | AttributeKind::MultiSelectPicklist { .. } => Value::Text(text.to_string()),
        AttributeKind::Integer { .. }
        | AttributeKind::BigInt
        | AttributeKind::Picklist { .. }
        | AttributeKind::State { .. }
        | AttributeKind::Status { .. } => Value::Int(text.parse().ok()?),
        AttributeKind::Decimal { .. } | AttributeKind::Double { .. } | AttributeKind::Money { .. } => {
            Value::Number(text.parse().ok()?)
        }
        AttributeKind::Boolean { .. } => Value::Bool(text.parse().ok()?),
        AttributeKind::Uniqueidentifier | AttributeKind::Lookup { .. } => Value::Guid(parse_guid(text)?),
        AttributeKind::DateTime { format: DateFormat::DateOnly, .. } => Value::Date(parse_date(text)?),
        AttributeKind::DateTime { .. } => Value::DateTime(parse_date_time(text)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_cookie_round_trips() {
        let cursor = Cursor {
            page: 1,
            sort_values: vec![("lastname".into(), Some("O'Neil & \"Sons\"".into())), ("firstname".into(), None)],
            last_id: Uuid::new_v4(),
            first_id: Uuid::new_v4(),
        };
        let token = cursor.to_skiptoken("contactid");
        assert!(token.starts_with("<cookie pagenumber=\"2\" pagingcookie=\"%3ccookie%20page%3d%221%22%3e"), "{token}");
        assert!(token.ends_with("istracking=\"False\" />"));
        let back = Cursor::from_skiptoken(&token, "contactid", &["lastname".into(), "firstname".into()]).unwrap();
        assert_eq!(back, cursor);
        let fetch = cursor.to_fetch_cookie("contactid");
        assert!(
            fetch.starts_with("<cookie pagenumber=\"2\" pagingcookie=\"%253ccookie%2520page%253d%25221%2522%253e"),
            "{fetch}"
        );
        let inner = cursor.inner_cookie("contactid");
        let back = Cursor::from_inner_cookie(&inner, 1, "contactid", &["lastname".into(), "firstname".into()]);
        assert_eq!(back, Some(cursor));
    }

    #[test]
    fn a_query_option_whose_name_holds_an_escaped_equals_sign_keeps_it_in_the_next_link() {
        // Found by fuzz/run (emulator_query): the name was written with a bare '=', which then ended it.
        let options = QueryOptions::parse(Some("$select=lastname&@a%3Db=c")).unwrap();
        let next = QueryOptions::parse(Some(&options.next_query("<cookie />"))).unwrap();
        assert_eq!(next.without_skiptoken, options.without_skiptoken);
        assert_eq!(options.without_skiptoken[1], ("@a=b".to_string(), "c".to_string()));
    }

    #[test]
    fn skip_and_search_are_rejected() {
        assert_eq!(
            QueryOptions::parse(Some("$skip=10")).unwrap_err().message,
            "The query parameter $skip is not supported"
        );
        assert!(QueryOptions::parse(Some("$search=x")).is_err());
        assert!(QueryOptions::parse(Some("$select=a,b&$top=3&$count=true&@p1='x'")).is_ok());
    }

    #[test]
    fn preferences_are_read_from_all_headers() {
        let mut headers = HeaderMap::new();
        headers.append(
            "prefer",
            "odata.include-annotations=\"OData.Community.Display.V1.FormattedValue,Microsoft.Dynamics.CRM.*\""
                .parse()
                .unwrap(),
        );
        headers.append("prefer", "odata.maxpagesize=10, return=representation".parse().unwrap());
        let p = Prefer::from_headers(&headers);
        assert!(p.return_representation);
        assert_eq!(p.max_page_size.as_deref(), Some("10"));
        assert!(p.includes("OData.Community.Display.V1.FormattedValue"));
        assert!(p.includes("Microsoft.Dynamics.CRM.lookuplogicalname"));
        assert!(!p.includes("Microsoft.PowerApps.CDS.HelpLink"));
    }
}
