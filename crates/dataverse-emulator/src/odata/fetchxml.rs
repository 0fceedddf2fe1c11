//! FetchXML (`GET /accounts?fetchXml=<fetch …>`): the query language of system views and of clients that page
//! with a paging cookie, such as Microsoft's Python SDK.
//!
//! Contract: `<fetch>` with `top`, `count`, `page`, `paging-cookie`, `returntotalrecordcount` (and the harmless
//! `no-lock`, `mapping`, `version`, `output-format`); one `<entity>` naming the entity set's table, with
//! `<attribute>`, `<all-attributes/>`, `<order>`, nested `<filter type='and|or'>` of `<condition>`s (eq, ne, gt, ge,
//! lt, le, like, not-like, begins-with, not-begin-with, ends-with, not-end-with, null, not-null, in, not-in, between,
//! not-between, and `valueof` column comparisons), and `<link-entity>` one level deep, inner or outer, whose columns
//! come back as `alias.column`. Anything else — aggregates, `distinct='true'`, other operators, `entityname`,
//! nested links — is refused by name: a query the emulator would answer differently from Dataverse must fail, not
//! return a plausible wrong page.
//!
//! Conditions become the `$filter` expression type ([`Expr`]) and are evaluated by its [`Predicate`]; ordering and
//! cookie paging are those of the OData query, and rows are written by the same code. The text is capped at
//! Dataverse's URL limit before it is parsed, filters may nest [`MAX_FILTER_DEPTH`] levels, and nothing here
//! recurses deeper than that, so no input panics or overflows the stack.

use super::filter::{CmpOp, Expr, Literal, MAX_FILTER_DEPTH, Operand, Predicate, balanced};
use super::paging::{MAX_PAGE, Order, page};
use super::query::{Cursor, Prefer};
use crate::error::{ApiError, ApiResult};
use crate::records::{Projection, Selection};
use crate::schema::{Attribute, AttributeKind, DateFormat, Table};
use crate::store::Data;
use crate::value::{Row, parse_date, parse_date_time, parse_guid};
use roxmltree::Node;
use serde_json::{Map, Value as Json, json};
use std::collections::HashMap;
use uuid::Uuid;

/// Dataverse's limit on a `GET` URL; the FetchXML it carries cannot be longer.
pub const MAX_FETCH_XML: usize = 32 * 1024;

/// The columns a `<entity>` or `<link-entity>` returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Columns {
    All,
    /// Logical names, in document order.
    Named(Vec<String>),
}

/// A `<filter>`, or one `<condition>` in it, before it is bound to a table.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Group { or: bool, children: Vec<Filter> },
    Condition(Condition),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub attribute: String,
    pub operator: String,
    /// `value='…'`, or the `<value>` children.
    pub values: Vec<String>,
    /// `valueof='column'`: compares with another column of the same row.
    pub value_of: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub name: String,
    pub from: String,
    pub to: String,
    pub alias: String,
    pub outer: bool,
    pub columns: Columns,
    pub filter: Option<Filter>,
}

/// A parsed `<fetch>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetch {
    pub top: Option<usize>,
    pub count: Option<usize>,
    pub page: Option<u32>,
    pub paging_cookie: Option<String>,
    pub total_count: bool,
    pub entity: String,
    pub columns: Columns,
    /// Logical name, descending.
    pub orders: Vec<(String, bool)>,
    pub filter: Option<Filter>,
    pub links: Vec<Link>,
}

const OPERATORS: &[&str] = &[
    "eq",
    "ne",
    "neq",
    "gt",
    "ge",
    "lt",
    "le",
    "like",
    "not-like",
    "begins-with",
    "not-begin-with",
    "ends-with",
    "not-end-with",
    "null",
    "not-null",
    "in",
    "not-in",
    "between",
    "not-between",
];

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_query(message)
}

/// Refuses an XML attribute the emulator does not read, so that nothing in the query is silently ignored.
fn known_attributes(node: Node<'_, '_>, known: &[&str]) -> ApiResult<()> {
    let element = node.tag_name().name();
    match node.attributes().find(|a| !known.contains(&a.name())) {
        Some(a) => Err(invalid(format!(
            "The attribute '{}' of <{element}> is not supported by the emulator; it reads {} there.",
            a.name(),
            known.join(", ")
        ))),
        None => Ok(()),
    }
}

fn required<'a>(node: Node<'a, '_>, name: &str) -> ApiResult<&'a str> {
    node.attribute(name)
        .ok_or_else(|| invalid(format!("The <{}> element needs a '{name}' attribute.", node.tag_name().name())))
}

fn flag(node: Node<'_, '_>, name: &str) -> ApiResult<bool> {
    match node.attribute(name).map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(invalid(format!("'{other}' is not a valid value for '{name}': use true or false."))),
    }
}

fn number(node: Node<'_, '_>, name: &str, max: usize) -> ApiResult<Option<usize>> {
    let Some(text) = node.attribute(name) else { return Ok(None) };
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
        _ => Err(invalid(format!("'{text}' is not a valid value for '{name}': use a whole number from 1 to {max}."))),
    }
}

fn elements<'a, 'i>(node: Node<'a, 'i>) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children().filter(Node::is_element)
}

/// Reads a FetchXML document; checks its structure, not its table and columns (see [`execute`]).
pub fn parse(text: &str) -> ApiResult<Fetch> {
    if text.len() > MAX_FETCH_XML {
        return Err(invalid(format!(
            "The fetchXml is {} bytes long; Dataverse's URL limit lets a query carry at most {MAX_FETCH_XML}: \
             select fewer columns or split the query.",
            text.len()
        )));
    }
    let document = roxmltree::Document::parse(text).map_err(|e| {
        invalid(format!(
            "The fetchXml is not well-formed XML: {e}. Close every element, quote every attribute value, and \
             URL-encode the whole document in the query string."
        ))
    })?;
    let fetch = document.root_element();
    if fetch.tag_name().name() != "fetch" {
        return Err(invalid(format!(
            "The fetchXml starts with <{}>; a FetchXML query is a <fetch> element.",
            fetch.tag_name().name()
        )));
    }
    known_attributes(
        fetch,
        &[
            "version",
            "count",
            "page",
            "paging-cookie",
            "returntotalrecordcount",
            "distinct",
            "no-lock",
            "mapping",
            "output-format",
            "top",
            "aggregate",
        ],
    )?;
    if flag(fetch, "aggregate")? {
        return Err(invalid("Aggregate FetchXML (aggregate='true') is not supported by the emulator."));
    }
    if flag(fetch, "distinct")? {
        return Err(invalid(
            "distinct='true' is not supported by the emulator; leave it out (rows of one table are distinct already).",
        ));
    }
    let top = number(fetch, "top", MAX_PAGE)?;
    let count = number(fetch, "count", MAX_PAGE)?;
    let page = number(fetch, "page", u32::MAX as usize)?.map(|p| p as u32);
    let paging_cookie = fetch.attribute("paging-cookie").map(str::to_string);
    if top.is_some() && (count.is_some() || page.is_some() || paging_cookie.is_some()) {
        return Err(invalid("The fetch top attribute can't be specified with the paging attributes page or count."));
    }
    let mut entities = elements(fetch);
    let entity = match (entities.next(), entities.next()) {
        (Some(e), None) if e.tag_name().name() == "entity" => e,
        (Some(e), None) => {
            return Err(invalid(format!(
                "<{}> is not supported in <fetch>; it holds one <entity>.",
                e.tag_name().name()
            )));
        }
        _ => return Err(invalid("A <fetch> holds exactly one <entity> element.")),
    };
    known_attributes(entity, &["name", "enableprefiltering"])?;
    let name = required(entity, "name")?.to_string();
    let mut parsed = Fetch {
        top,
        count,
        page,
        paging_cookie,
        total_count: flag(fetch, "returntotalrecordcount")?,
        entity: name,
        columns: Columns::Named(Vec::new()),
        orders: Vec::new(),
        filter: None,
        links: Vec::new(),
    };
    let mut filters = Vec::new();
    for child in elements(entity) {
        match child.tag_name().name() {
            "attribute" | "all-attributes" => add_column(&mut parsed.columns, child)?,
            "order" => {
                known_attributes(child, &["attribute", "descending"])?;
                parsed.orders.push((required(child, "attribute")?.to_string(), flag(child, "descending")?));
            }
            "filter" => filters.push(filter(child, 1)?),
            "link-entity" if parsed.links.len() >= MAX_LINKS => {
                return Err(invalid(format!(
                    "A fetch may link at most {MAX_LINKS} tables, as Dataverse allows; split the query."
                )));
            }
            "link-entity" => parsed.links.push(link(child, parsed.links.len())?),
            other => return Err(invalid(format!("<{other}> is not supported in <entity>."))),
        }
    }
    parsed.filter = all_of(filters);
    Ok(parsed)
}

/// Several filters side by side hold together.
fn all_of(mut filters: Vec<Filter>) -> Option<Filter> {
    match filters.len() {
        0 => None,
        1 => filters.pop(),
        _ => Some(Filter::Group { or: false, children: filters }),
    }
}

fn add_column(columns: &mut Columns, node: Node<'_, '_>) -> ApiResult<()> {
    if node.tag_name().name() == "all-attributes" {
        known_attributes(node, &[])?;
        *columns = Columns::All;
        return Ok(());
    }
    if node.attribute("aggregate").is_some() || node.attribute("groupby").is_some() {
        return Err(invalid("Aggregate attributes (aggregate, groupby) are not supported by the emulator."));
    }
    known_attributes(node, &["name"])?;
    let name = required(node, "name")?.to_string();
    if let Columns::Named(names) = columns
        && !names.contains(&name)
    {
        names.push(name);
    }
    Ok(())
}

fn link(node: Node<'_, '_>, index: usize) -> ApiResult<Link> {
    known_attributes(node, &["name", "from", "to", "alias", "link-type", "visible", "intersect"])?;
    let name = required(node, "name")?.to_string();
    let outer = match node.attribute("link-type").unwrap_or("inner") {
        "inner" => false,
        "outer" => true,
        other => {
            return Err(invalid(format!("link-type='{other}' is not supported by the emulator; use inner or outer.")));
        }
    };
    let mut parsed = Link {
        alias: node.attribute("alias").map_or_else(|| format!("{name}{}", index + 1), str::to_string),
        from: required(node, "from")?.to_string(),
        to: required(node, "to")?.to_string(),
        name,
        outer,
        columns: Columns::Named(Vec::new()),
        filter: None,
    };
    let mut filters = Vec::new();
    for child in elements(node) {
        match child.tag_name().name() {
            "attribute" | "all-attributes" => add_column(&mut parsed.columns, child)?,
            "filter" => filters.push(filter(child, 1)?),
            "link-entity" => {
                return Err(invalid(
                    "The emulator links entities one level deep: a <link-entity> inside a <link-entity> is not supported.",
                ));
            }
            "order" => {
                return Err(invalid(
                    "<order> inside <link-entity> is not supported by the emulator; order by columns of the fetched entity.",
                ));
            }
            other => return Err(invalid(format!("<{other}> is not supported in <link-entity>."))),
        }
    }
    parsed.filter = all_of(filters);
    Ok(parsed)
}

fn filter(node: Node<'_, '_>, depth: usize) -> ApiResult<Filter> {
    if depth > MAX_FILTER_DEPTH {
        return Err(invalid(format!(
            "The fetchXml nests <filter> more than {MAX_FILTER_DEPTH} levels deep: write it with fewer levels."
        )));
    }
    known_attributes(node, &["type", "hint", "isquickfindfields"])?;
    let or = match node.attribute("type").unwrap_or("and") {
        "and" => false,
        "or" => true,
        other => return Err(invalid(format!("<filter type='{other}'> is not a filter type; use and or or."))),
    };
    let mut children = Vec::new();
    for child in elements(node) {
        match child.tag_name().name() {
            "condition" => children.push(Filter::Condition(condition(child)?)),
            "filter" => children.push(filter(child, depth + 1)?),
            other => return Err(invalid(format!("<{other}> is not supported in <filter>."))),
        }
    }
    Ok(Filter::Group { or, children })
}

fn condition(node: Node<'_, '_>) -> ApiResult<Condition> {
    if node.attribute("entityname").is_some() {
        return Err(invalid(
            "Conditions on a linked entity (entityname) are not supported by the emulator; put the condition in the \
             <link-entity>'s own <filter>.",
        ));
    }
    known_attributes(node, &["attribute", "operator", "value", "valueof", "uiname", "uitype", "uihidden"])?;
    let attribute = required(node, "attribute")?.to_string();
    let operator = required(node, "operator")?.to_string();
    if !OPERATORS.contains(&operator.as_str()) {
        return Err(invalid(format!(
            "The condition operator '{operator}' is not supported by the emulator; it answers {}.",
            OPERATORS.join(", ")
        )));
    }
    let mut values: Vec<String> = node.attribute("value").map(str::to_string).into_iter().collect();
    for child in elements(node) {
        if child.tag_name().name() != "value" {
            return Err(invalid(format!("<{}> is not supported in <condition>.", child.tag_name().name())));
        }
        values.push(child.text().unwrap_or_default().to_string());
    }
    Ok(Condition { attribute, operator, values, value_of: node.attribute("valueof").map(str::to_string) })
}

// ---------------------------------------------------------------------------------------------- binding

/// Dataverse's error for a column a table does not have.
pub fn no_attribute(table: &Table, name: &str) -> ApiError {
    ApiError::no_attribute(&table.logical_name, name)
}

fn column<'t>(table: &'t Table, name: &str) -> ApiResult<&'t Attribute> {
    table.attribute(name).ok_or_else(|| no_attribute(table, name))
}

/// A condition value, given as text, read as the literal of its column's type.
pub(crate) fn typed_literal(attribute: &Attribute, text: &str) -> ApiResult<Literal> {
    let trimmed = text.trim();
    let literal = match &attribute.kind {
        AttributeKind::String { .. }
        | AttributeKind::Memo { .. }
        | AttributeKind::EntityName { .. }
        | AttributeKind::MultiSelectPicklist { .. } => Some(Literal::String(text.to_string())),
        AttributeKind::Integer { .. }
        | AttributeKind::BigInt
        | AttributeKind::Picklist { .. }
        | AttributeKind::State { .. }
        | AttributeKind::Status { .. } => trimmed.parse().ok().map(Literal::Int),
        AttributeKind::Decimal { .. } | AttributeKind::Double { .. } | AttributeKind::Money { .. } => {
            trimmed.parse::<f64>().ok().filter(|n| n.is_finite()).map(Literal::Number)
        }
        AttributeKind::Boolean { .. } => match trimmed.to_ascii_lowercase().as_str() {
            "1" | "true" => Some(Literal::Bool(true)),
            "0" | "false" => Some(Literal::Bool(false)),
            _ => None,
        },
        AttributeKind::Uniqueidentifier | AttributeKind::Lookup { .. } => {
            parse_guid(trimmed.trim_start_matches('{').trim_end_matches('}')).map(Literal::Guid)
        }
        AttributeKind::DateTime { format, .. } => match parse_date(trimmed) {
            Some(d) => Some(Literal::Date(d)),
            None => parse_date_time(trimmed).map(|d| {
                if *format == DateFormat::DateOnly { Literal::Date(d.date_naive()) } else { Literal::DateTime(d) }
            }),
        },
    };
    literal.ok_or_else(|| {
        invalid(format!(
            "The value '{text}' cannot be converted to the type of '{}' ({}).",
            attribute.logical_name,
            attribute.kind.edm_type()
        ))
    })
}

fn member(attribute: &Attribute) -> Operand {
    Operand::Member(vec![attribute.property_name()])
}

/// `[`, `%` and `_` stand for themselves in `begins-with` and `ends-with` values.
fn like_escape(text: &str) -> String {
    text.chars().map(|c| if matches!(c, '%' | '_' | '[') { format!("[{c}]") } else { c.to_string() }).collect()
}

/// Joins expressions as a balanced tree; `None` when there are none.
fn join(parts: Vec<(Expr, usize)>, or: bool) -> Option<(Expr, usize)> {
    if parts.is_empty() {
        return None;
    }
    Some(balanced(parts, if or { Expr::Or } else { Expr::And }))
}

fn condition_expr(c: &Condition, table: &Table) -> ApiResult<(Expr, usize)> {
    let attribute = column(table, &c.attribute)?;
    let op = c.operator.as_str();
    let compare = |cmp: CmpOp, text: &str| -> ApiResult<(Expr, usize)> {
        Ok((Expr::Compare(cmp, member(attribute), Operand::Literal(typed_literal(attribute, text)?)), 0))
    };
    let not_null = || Expr::Compare(CmpOp::Ne, member(attribute), Operand::Literal(Literal::Null));
    let count = |n: usize| -> ApiResult<()> {
        if c.values.len() == n {
            return Ok(());
        }
        Err(invalid(format!(
            "The condition operator '{op}' on '{}' takes {n} value{}, not {}.",
            c.attribute,
            if n == 1 { "" } else { "s" },
            c.values.len()
        )))
    };
    let comparison = match op {
        "eq" => Some(CmpOp::Eq),
        "ne" | "neq" => Some(CmpOp::Ne),
        "gt" => Some(CmpOp::Gt),
        "ge" => Some(CmpOp::Ge),
        "lt" => Some(CmpOp::Lt),
        "le" => Some(CmpOp::Le),
        _ => None,
    };
    if let Some(other) = &c.value_of {
        let Some(cmp) = comparison else {
            return Err(invalid(format!("valueof is not supported with the operator '{op}'.")));
        };
        let other = column(table, other)?;
        return Ok((Expr::Compare(cmp, member(attribute), member(other)), 0));
    }
    if let Some(cmp) = comparison {
        count(1)?;
        return compare(cmp, &c.values[0]);
    }
    let like = |pattern: String| Expr::Like(vec![attribute.property_name()], pattern);
    let not = |e: Expr| (Expr::And(Box::new(not_null()), Box::new(Expr::Not(Box::new(e)))), 2);
    Ok(match op {
        "null" | "not-null" => {
            count(0)?;
            let cmp = if op == "null" { CmpOp::Eq } else { CmpOp::Ne };
            (Expr::Compare(cmp, member(attribute), Operand::Literal(Literal::Null)), 0)
        }
        "like" | "not-like" | "begins-with" | "not-begin-with" | "ends-with" | "not-end-with" => {
            count(1)?;
            let value = &c.values[0];
            let pattern = match op {
                "like" | "not-like" => value.clone(),
                "begins-with" | "not-begin-with" => format!("{}%", like_escape(value)),
                _ => format!("%{}", like_escape(value)),
            };
            if op.starts_with("not-") { not(like(pattern)) } else { (like(pattern), 0) }
        }
        "in" | "not-in" => {
            if c.values.is_empty() {
                return Err(invalid(format!(
                    "The condition operator '{op}' on '{}' needs <value> elements.",
                    c.attribute
                )));
            }
            let cmp = if op == "in" { CmpOp::Eq } else { CmpOp::Ne };
            let parts = c.values.iter().map(|v| compare(cmp, v)).collect::<ApiResult<Vec<_>>>()?;
            join(parts, op == "in").expect("values were given")
        }
        "between" | "not-between" => {
            count(2)?;
            let (low, high) = if op == "between" { (CmpOp::Ge, CmpOp::Le) } else { (CmpOp::Lt, CmpOp::Gt) };
            let parts = vec![compare(low, &c.values[0])?, compare(high, &c.values[1])?];
            join(parts, op == "not-between").expect("two values")
        }
        other => return Err(invalid(format!("The condition operator '{other}' is not supported by the emulator."))),
    })
}

fn filter_expr(filter: &Filter, table: &Table) -> ApiResult<Option<(Expr, usize)>> {
    match filter {
        Filter::Condition(c) => condition_expr(c, table).map(Some),
        Filter::Group { or, children } => {
            let mut parts = Vec::new();
            for child in children {
                if let Some(part) = filter_expr(child, table)? {
                    parts.push(part);
                }
            }
            Ok(join(parts, *or))
        }
    }
}

/// A filter as a `$filter` expression over `table`'s columns, bound and ready to evaluate.
pub fn bind_filter(filter: Option<&Filter>, table: &Table) -> ApiResult<Option<Predicate>> {
    let Some(filter) = filter else { return Ok(None) };
    let Some((expr, depth)) = filter_expr(filter, table)? else { return Ok(None) };
    if depth > MAX_FILTER_DEPTH {
        return Err(invalid(format!(
            "The fetchXml's filters are more than {MAX_FILTER_DEPTH} levels deep once their conditions are joined: \
             write them with fewer levels or fewer values, or split the query."
        )));
    }
    Predicate::bind(&expr, table).map(Some)
}

fn selection_of(columns: &Columns, table: &Table) -> ApiResult<Selection> {
    match columns {
        Columns::All => Ok(Selection::All),
        Columns::Named(names) => Ok(Selection::Columns(
            names.iter().map(|n| column(table, n).map(|a| a.logical_name.clone())).collect::<ApiResult<_>>()?,
        )),
    }
}

// -------------------------------------------------------------------------------------------- execution

/// A `<link-entity>` bound to its table.
struct BoundLink<'d> {
    link: &'d Link,
    table: &'d Table,
    selection: Selection,
    /// The linked rows by the key text of their `from` column.
    by_key: HashMap<String, Vec<&'d Row>>,
}

/// A result row: the fetched entity's row and, for each link, the linked row (none for an unmatched outer link).
type Joined<'d> = (Uuid, &'d Row, Vec<Option<&'d Row>>);

/// Dataverse's limit on `<link-entity>` elements in one query.
const MAX_LINKS: usize = 15;

/// Each link's matches for one row of the fetched entity, in order (an unmatched outer link matches once, with
/// nothing); `None` when an inner link matches nothing, which leaves the row out.
fn link_matches<'d>(row: &Row, links: &[BoundLink<'d>]) -> Option<Vec<Vec<Option<&'d Row>>>> {
    links
        .iter()
        .map(|link| match row.get(link.link.to.as_str()).and_then(|v| link.by_key.get(&v.key_text())) {
            Some(found) => Some(found.iter().map(|other| Some(*other)).collect()),
            None if link.link.outer => Some(vec![None]),
            None => None,
        })
        .collect()
}

/// The joined rows of one fetched row — every combination of its links' matches, the last link varying fastest
/// — appended to `out` until it holds `limit`: a combination past the limit is never built, so a join of
/// large tables costs what the page needs, not the product of their sizes.
fn join_row<'d>(id: Uuid, row: &'d Row, matches: &[Vec<Option<&'d Row>>], limit: usize, out: &mut Vec<Joined<'d>>) {
    let mut position = vec![0usize; matches.len()];
    while out.len() < limit {
        out.push((id, row, matches.iter().zip(&position).map(|(m, &i)| m[i]).collect()));
        // The next combination, as an odometer turns; done when every wheel has come round.
        let mut wheel = matches.len();
        loop {
            if wheel == 0 {
                return;
            }
            wheel -= 1;
            position[wheel] += 1;
            if position[wheel] < matches[wheel].len() {
                break;
            }
            position[wheel] = 0;
        }
    }
}

/// The answer to a fetch over `table`.
pub struct Answer {
    pub body: Json,
    /// How many rows the body holds.
    pub returned: usize,
    /// Where the next page starts, when more rows follow this page.
    pub next: Option<Cursor>,
}

/// The answer to a fetch over `table`: the response body, how many rows it holds, and where the next page starts.
pub fn execute(data: &Data, table: &Table, fetch: &Fetch, prefer: &Prefer, base: &str) -> ApiResult<Answer> {
    if fetch.entity != table.logical_name {
        return Err(invalid(format!(
            "The fetchXml queries the entity '{}', but it was sent to the entity set '{}' of '{}': send it to that \
             entity's set, or name '{}' in <entity name=…>.",
            fetch.entity, table.entity_set_name, table.logical_name, table.logical_name
        )));
    }
    let selection = selection_of(&fetch.columns, table)?;
    let predicate = bind_filter(fetch.filter.as_ref(), table)?;
    let mut columns = Vec::new();
    for (name, descending) in &fetch.orders {
        columns.push((column(table, name)?.logical_name.clone(), *descending));
    }
    let order = Order { columns };
    let mut links = Vec::new();
    for link in &fetch.links {
        let linked = data.schema.table(&link.name).ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                crate::error::code::OBJECT_DOES_NOT_EXIST,
                format!(
                    "The entity with a name = '{}' with namemapping = 'Logical' was not found in the MetadataCache.",
                    link.name
                ),
            )
        })?;
        column(table, &link.to)?;
        let from = column(linked, &link.from)?.logical_name.clone();
        let predicate = bind_filter(link.filter.as_ref(), linked)?;
        let mut by_key: HashMap<String, Vec<&Row>> = HashMap::new();
        for row in data.rows(&linked.logical_name).values() {
            if predicate.as_ref().is_none_or(|p| p.matches(row))
                && let Some(value) = row.get(from.as_str())
            {
                by_key.entry(value.key_text()).or_default().push(row);
            }
        }
        links.push(BoundLink { link, table: linked, selection: selection_of(&link.columns, linked)?, by_key });
    }

    let rows = data.rows(&table.logical_name);
    let page_number = fetch.page.unwrap_or(1);
    let size = fetch.top.or(fetch.count).unwrap_or(MAX_PAGE);
    let offset = (page_number as usize - 1).saturating_mul(size);
    let all = rows.len();
    let (result, more, total): (Vec<Joined<'_>>, bool, usize) = if links.is_empty() {
        let sort_columns: Vec<String> = order.columns.iter().map(|(c, _)| c.clone()).collect();
        let cursor = match (&fetch.paging_cookie, page_number) {
            (Some(cookie), p) if p > 1 => {
                Some(Cursor::from_inner_cookie(cookie, p - 1, &table.primary_id, &sort_columns).ok_or_else(|| {
                    invalid(
                        "The paging-cookie is not one this service issued for this fetch's order: send the cookie of \
                         the previous page as @Microsoft.Dynamics.CRM.fetchxmlpagingcookie returned it.",
                    )
                })?)
            }
            _ => None,
        };
        let (found, more) = match &cursor {
            Some(c) => page(rows, table, predicate.as_ref(), &order, Some(c), size),
            None => {
                let (mut found, more) =
                    page(rows, table, predicate.as_ref(), &order, None, offset.saturating_add(size).min(all));
                (found.split_off(offset.min(found.len())), more)
            }
        };
        let total = if fetch.total_count {
            rows.values().filter(|r| predicate.as_ref().is_none_or(|p| p.matches(r))).count()
        } else {
            0
        };
        (found.into_iter().map(|(id, row)| (id, row, Vec::new())).collect(), more, total)
    } else {
        let (roots, _) = page(rows, table, predicate.as_ref(), &order, None, all);
        // Built up to one row past the page (to know whether more follow); counted, without building, up to
        // one past the most a count reports.
        let needed = offset.saturating_add(size).saturating_add(1);
        let (mut joined, mut total) = (Vec::new(), 0usize);
        for (id, row) in roots {
            let Some(matches) = link_matches(row, &links) else { continue };
            if fetch.total_count {
                let combinations = matches.iter().fold(1usize, |n, m| n.saturating_mul(m.len()));
                total = total.saturating_add(combinations).min(MAX_PAGE + 1);
            }
            if joined.len() < needed {
                join_row(id, row, &matches, needed, &mut joined);
            } else if !fetch.total_count {
                break;
            }
        }
        let mut rest: Vec<Joined<'_>> = joined.into_iter().skip(offset).collect();
        let more = rest.len() > size;
        rest.truncate(size);
        (rest, more, total)
    };
    let more = more && fetch.top.is_none();

    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        Json::String(format!("{base}/$metadata#{}{}", table.entity_set_name, selection.context_suffix(table))),
    );
    if prefer.includes("Microsoft.Dynamics.CRM.totalrecordcount") {
        let count = if fetch.total_count { total.min(MAX_PAGE) as i64 } else { -1 };
        body.insert("@Microsoft.Dynamics.CRM.totalrecordcount".into(), json!(count));
        body.insert("@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded".into(), json!(total > MAX_PAGE));
    }
    // The cookie comes whenever there are more rows, asked for or not (DynamicsWebApi's `fetchAll` pages on
    // its presence alone); asked for, it comes on the last page too.
    let cursor = match (result.first(), result.last()) {
        (Some(first), Some(last)) => Some(Cursor {
            page: page_number,
            sort_values: order
                .columns
                .iter()
                .map(|(c, _)| (c.clone(), last.1.get(c.as_str()).map(|v| v.to_text())))
                .collect(),
            last_id: last.0,
            first_id: first.0,
        }),
        _ => None,
    };
    if (more || prefer.includes("Microsoft.Dynamics.CRM.fetchxmlpagingcookie"))
        && let Some(cursor) = &cursor
    {
        body.insert(
            "@Microsoft.Dynamics.CRM.fetchxmlpagingcookie".into(),
            Json::String(cursor.to_fetch_cookie(&table.primary_id)),
        );
    }
    if prefer.includes("Microsoft.Dynamics.CRM.morerecords") {
        body.insert("@Microsoft.Dynamics.CRM.morerecords".into(), Json::Bool(more));
    }
    let projection = Projection::new(data, table, &selection, prefer);
    let link_projections: Vec<Projection> =
        links.iter().map(|link| Projection::new(data, link.table, &link.selection, prefer)).collect();
    let values: Vec<Json> = result
        .iter()
        .map(|(_, row, linked)| {
            let mut out = projection.map(row);
            for ((link, link_projection), other) in links.iter().zip(&link_projections).zip(linked) {
                if let Some(other) = other {
                    out.extend(link_json(link, link_projection, other));
                }
            }
            out.retain(|_, v| !v.is_null());
            Json::Object(out)
        })
        .collect();
    let returned = values.len();
    body.insert("value".into(), Json::Array(values));
    Ok(Answer { body: Json::Object(body), returned, next: cursor.filter(|_| more) })
}

/// A linked row's columns as `alias.column` (the logical name, lookups included), with their annotations.
fn link_json(link: &BoundLink<'_>, projection: &Projection<'_>, row: &Row) -> Map<String, Json> {
    let keeps_primary = match &link.selection {
        Selection::All => true,
        Selection::Columns(c) => c.contains(&link.table.primary_id),
    };
    let mut out = Map::new();
    for (key, value) in projection.map(row) {
        let (property, annotation) = match key.split_once('@') {
            Some((p, a)) => (p, Some(a)),
            None => (key.as_str(), None),
        };
        let Some(attribute) = link.table.attribute_by_property(property) else { continue };
        if attribute.logical_name == link.table.primary_id && !keeps_primary {
            continue;
        }
        let name = format!("{}.{}", link.link.alias, attribute.logical_name);
        out.insert(annotation.map_or_else(|| name.clone(), |a| format!("{name}@{a}")), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetch_is_read_with_its_paging_columns_orders_filters_and_links() {
        let fetch = parse(
            "<fetch count='3' page='2' paging-cookie='&lt;cookie page=\"1\"&gt;&lt;/cookie&gt;' no-lock='true' \
             returntotalrecordcount='true'><entity name='account'><attribute name='name'/><attribute name='name'/>\
             <order attribute='name' descending='true'/><filter type='or'><condition attribute='name' operator='in'>\
             <value>a</value><value>b</value></condition><filter><condition attribute='name' operator='null'/></filter>\
             </filter><link-entity name='contact' from='contactid' to='primarycontactid' link-type='outer'>\
             <all-attributes/></link-entity></entity></fetch>",
        )
        .unwrap();
        assert_eq!((fetch.count, fetch.page, fetch.total_count), (Some(3), Some(2), true));
        assert_eq!(fetch.paging_cookie.as_deref(), Some("<cookie page=\"1\"></cookie>"));
        assert_eq!(fetch.columns, Columns::Named(vec!["name".into()]));
        assert_eq!(fetch.orders, [("name".to_string(), true)]);
        assert_eq!(fetch.links[0].alias, "contact1");
        assert!(fetch.links[0].outer);
        assert_eq!(fetch.links[0].columns, Columns::All);
        let Some(Filter::Group { or: true, children }) = &fetch.filter else { panic!("{:?}", fetch.filter) };
        let Filter::Condition(c) = &children[0] else { panic!() };
        assert_eq!(c.values, ["a", "b"]);
    }

    #[test]
    fn what_the_emulator_does_not_answer_is_refused_by_name() {
        for (xml, named) in [
            ("<fetch distinct='true'><entity name='account'/></fetch>", "distinct"),
            ("<fetch aggregate='true'><entity name='account'/></fetch>", "Aggregate"),
            ("<fetch><entity name='account'><attribute name='name' aggregate='count'/></entity></fetch>", "Aggregate"),
            (
                "<fetch><entity name='account'><filter><condition attribute='createdon' operator='today'/></filter></entity></fetch>",
                "'today'",
            ),
            (
                "<fetch><entity name='account'><link-entity name='contact' from='a' to='b' link-type='exists'/></entity></fetch>",
                "exists",
            ),
            (
                "<fetch><entity name='account'><link-entity name='contact' from='a' to='b'><link-entity name='x' from='a' to='b'/></link-entity></entity></fetch>",
                "one level deep",
            ),
            (
                "<fetch><entity name='account'><filter><condition entityname='c' attribute='a' operator='eq' value='1'/></filter></entity></fetch>",
                "entityname",
            ),
            ("<fetch foo='1'><entity name='account'/></fetch>", "'foo'"),
            ("<fetch top='5' count='2'><entity name='account'/></fetch>", "top"),
            ("<fetch top='0'><entity name='account'/></fetch>", "top"),
            ("<fetch count='5001'><entity name='account'/></fetch>", "count"),
            ("<query/>", "<fetch>"),
            ("<fetch/>", "one <entity>"),
            ("<fetch><entity name='account'", "not well-formed"),
            ("", "not well-formed"),
            ("<!DOCTYPE x [<!ENTITY a 'b'>]><fetch/>", "not well-formed"),
        ] {
            let message = parse(xml).unwrap_err().message;
            assert!(message.contains(named), "{xml}: {message}");
        }
    }

    #[test]
    fn a_fetch_over_the_url_limit_is_refused_before_it_is_parsed() {
        let xml = format!("<fetch><entity name='account'>{}</entity></fetch>", "<attribute name='name'/>".repeat(2000));
        assert!(parse(&xml).unwrap_err().message.contains("at most 32768"));
    }

    #[test]
    fn deeply_nested_filters_are_refused_not_a_stack_overflow() {
        let depth = 1800;
        let xml = format!(
            "<fetch><entity name='account'>{}{}</entity></fetch>",
            "<filter>".repeat(depth),
            "</filter>".repeat(depth)
        );
        let outcome = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || parse(&xml).map(|_| ()).map_err(|e| e.message))
            .unwrap()
            .join()
            .unwrap();
        assert!(outcome.unwrap_err().contains("more than 100 levels"));
    }

    fn account() -> Table {
        crate::schema::builtin_tables().into_iter().find(|t| t.logical_name == "account").unwrap()
    }

    #[test]
    fn conditions_become_filter_expressions_typed_by_column() {
        let table = account();
        let condition = |operator: &str, values: &[&str]| Condition {
            attribute: "name".into(),
            operator: operator.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
            value_of: None,
        };
        let (expr, _) = condition_expr(&condition("begins-with", &["50%"]), &table).unwrap();
        assert_eq!(expr, Expr::Like(vec!["name".into()], "50[%]%".into()));
        let (expr, depth) = condition_expr(&condition("in", &["a", "b", "c", "d"]), &table).unwrap();
        assert!(matches!(expr, Expr::Or(..)));
        assert_eq!(depth, 2);
        assert!(condition_expr(&condition("between", &["a"]), &table).unwrap_err().message.contains("takes 2 values"));
        let mut bad = condition("eq", &["x"]);
        bad.attribute = "nosuchcolumn".into();
        assert_eq!(condition_expr(&bad, &table).unwrap_err().code, "0x80041103");
        let lookup = table.attributes.iter().find(|a| a.is_lookup()).unwrap();
        assert!(typed_literal(lookup, "{49B0BE2E-D01C-ED11-B83E-000D3A572421}").is_ok());
        assert!(typed_literal(lookup, "x").unwrap_err().message.contains("cannot be converted"));
    }
}
