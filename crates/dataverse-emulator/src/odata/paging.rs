//! One page of a table's rows, as every query answers them — OData's `$orderby`/`$skiptoken`, FetchXML's
//! `order`/`paging-cookie`, a view's: the order resolved to columns (the primary key breaking ties, so pages are
//! stable while rows are added between them) and the position after the last row of the previous page.
//! It lives with the query languages rather than with any one handler, since they all page alike.

use super::filter::Predicate;
use super::query::{Cursor, QueryOptions, value_from_cookie};
use crate::error::{ApiError, ApiResult};
use crate::schema::Table;
use crate::store::TableRows;
use crate::value::{Row, Value};
use std::cmp::Ordering;
use std::ops::Bound;
use uuid::Uuid;

/// Dataverse's page size limit, and the most `@odata.count` reports.
pub const MAX_PAGE: usize = 5000;

/// `$orderby` resolved to columns, always ending with the primary key so that paging is stable.
pub(crate) struct Order {
    pub(crate) columns: Vec<(String, bool)>,
}

impl Order {
    pub(crate) fn parse(table: &Table, options: &QueryOptions) -> ApiResult<Order> {
        let mut columns = Vec::new();
        for o in &options.orderby {
            let attribute = table
                .attribute_by_property(&o.property)
                .ok_or_else(|| ApiError::unknown_query_property(&o.property, &table.logical_name))?;
            columns.push((attribute.logical_name.clone(), o.descending));
        }
        Ok(Order { columns })
    }

    fn compare_values(&self, a: &[Option<&Value>], b: &[Option<&Value>]) -> Ordering {
        for ((x, y), (_, descending)) in a.iter().zip(b).zip(&self.columns) {
            let ordering = match (x, y) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Less,
                (Some(_), None) => Ordering::Greater,
                (Some(x), Some(y)) => x.compare(y).unwrap_or(Ordering::Equal),
            };
            let ordering = if *descending { ordering.reverse() } else { ordering };
            if ordering != Ordering::Equal {
                return ordering;
            }
        }
        Ordering::Equal
    }

    fn values<'r>(&self, row: &'r Row) -> Vec<Option<&'r Value>> {
        self.columns.iter().map(|(c, _)| row.get(c)).collect()
    }
}

/// A row with its sort values, read once for ordering.
type Keyed<'d> = (Vec<Option<&'d Value>>, Uuid, &'d Row);

/// One page of matching rows after `cursor`, and whether more follow.
pub(crate) fn page<'d>(
    rows: &'d TableRows,
    table: &Table,
    predicate: Option<&Predicate>,
    order: &Order,
    cursor: Option<&Cursor>,
    limit: usize,
) -> (Vec<(Uuid, &'d Row)>, bool) {
    let matches = |row: &Row| predicate.is_none_or(|p| p.matches(row));
    let mut out: Vec<(Uuid, &Row)>;
    if order.columns.is_empty() {
        let start = cursor.map_or(Bound::Unbounded, |c| Bound::Excluded(c.last_id));
        out = rows
            .rows
            .range((start, Bound::Unbounded))
            .filter(|(_, r)| matches(r))
            .take(limit + 1)
            .map(|(id, r)| (*id, r))
            .collect();
    } else {
        // Each row's sort values are read once rather than at every comparison; the primary key breaks ties, so
        // the order is total and the page is the same whichever way it is picked out.
        let key = |(id, r): (&Uuid, &'d Row)| (order.values(r), *id, r);
        let compare = |(a, ia, _): &Keyed<'d>, (b, ib, _): &Keyed<'d>| order.compare_values(a, b).then(ia.cmp(ib));
        let mut after: Vec<Keyed<'d>> = match cursor {
            None => rows.rows.iter().filter(|(_, r)| matches(r)).map(key).collect(),
            Some(c) => {
                let last: Vec<Option<Value>> = c
                    .sort_values
                    .iter()
                    .map(|(column, text)| {
                        text.as_ref().and_then(|t| table.attribute(column).and_then(|a| value_from_cookie(a, t)))
                    })
                    .collect();
                let last_refs: Vec<Option<&Value>> = last.iter().map(Option::as_ref).collect();
                rows.rows
                    .iter()
                    .filter(|(_, r)| matches(r))
                    .map(key)
                    .filter(|(values, id, _)| {
                        order.compare_values(values, &last_refs).then(id.cmp(&c.last_id)) == Ordering::Greater
                    })
                    .collect()
            }
        };
        // Only the first `limit + 1` rows are sorted: the page and the one that tells whether more follow.
        if after.len() > limit + 1 {
            after.select_nth_unstable_by(limit, compare);
            after.truncate(limit + 1);
        }
        after.sort_unstable_by(compare);
        out = after.into_iter().map(|(_, id, r)| (id, r)).collect();
    }
    let more = out.len() > limit;
    out.truncate(limit);
    (out, more)
}
