//! One page of a table's rows, as every query answers them — OData's `$orderby`/`$skiptoken`, FetchXML's
//! `order`/`paging-cookie`, a view's: the order resolved to columns (the primary key breaking ties, so pages are
//! stable while rows are added between them) and the position after the last row of the previous page.
//! It lives with the query languages rather than with any one handler, since they all page alike.
//!
//! A query that asks only for a range of `versionnumber` — as a client reading a table in partitions does — or
//! orders by it is answered through the table's version index, as SQL Server would seek an index rather than
//! scan: the rows are the same, found without reading the others.

use super::filter::{CmpOp, Predicate};
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
        self.columns.iter().map(|(c, _)| row.get(c.as_str())).collect()
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
    if let Some(found) = by_version(rows, predicate, order, cursor, limit) {
        return found;
    }
    let mut out: Vec<(Uuid, &Row)>;
    if order.columns.is_empty() {
        let start = cursor.map_or(Bound::Unbounded, |c| Bound::Excluded(c.last_id));
        out = rows
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
            None => rows.iter().filter(|(_, r)| matches(r)).map(key).collect(),
            Some(c) => {
                let last: Vec<Option<Value>> = c
                    .sort_values
                    .iter()
                    .map(|(column, text)| {
                        text.as_ref().and_then(|t| table.attribute(column).and_then(|a| value_from_cookie(a, t)))
                    })
                    .collect();
                let last_refs: Vec<Option<&Value>> = last.iter().map(Option::as_ref).collect();
                rows.iter()
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

const VERSION: &str = "versionnumber";

/// A page answered through the version index, when the query allows: its filter is only comparisons of
/// `versionnumber` with whole numbers (or none), and it is in the table's own order (by id) or by
/// `versionnumber` alone. `None` when the query needs a scan.
fn by_version<'d>(
    rows: &'d TableRows,
    predicate: Option<&Predicate>,
    order: &Order,
    cursor: Option<&Cursor>,
    limit: usize,
) -> Option<(Vec<(Uuid, &'d Row)>, bool)> {
    if !rows.all_versioned() {
        return None;
    }
    let range = match predicate {
        None => (Bound::Unbounded, Bound::Unbounded),
        Some(p) => version_range(p)?,
    };
    let row = |id: &Uuid| rows.get(id).map(|r| (*id, r));
    let mut out: Vec<(Uuid, &Row)> = match order.columns.as_slice() {
        // Every row has a version, unique to it: the index's order is the query's.
        [(column, descending)] if column == VERSION => {
            let range = match cursor {
                None => range,
                Some(c) => {
                    let last = c.sort_values.first().and_then(|(_, v)| v.as_deref()?.parse::<i64>().ok())?;
                    match descending {
                        false => (intersect_lower(range.0, Bound::Excluded(last)), range.1),
                        true => (range.0, intersect_upper(range.1, Bound::Excluded(last))),
                    }
                }
            };
            if empty(range) {
                return Some((Vec::new(), false));
            }
            let found = rows.versions(range).map(|(_, id, r)| (id, r));
            match descending {
                false => found.take(limit + 1).collect(),
                true => found.rev().take(limit + 1).collect(),
            }
        }
        // Only a range of versions: the ids in it, the first `limit + 1` of them after the cursor in id order.
        [] if predicate.is_some() => {
            if empty(range) {
                return Some((Vec::new(), false));
            }
            let after = cursor.map(|c| c.last_id);
            let mut ids: Vec<Uuid> =
                rows.versions(range).map(|(_, id, _)| id).filter(|id| after.is_none_or(|a| *id > a)).collect();
            if ids.len() > limit + 1 {
                ids.select_nth_unstable(limit);
                ids.truncate(limit + 1);
            }
            ids.sort_unstable();
            ids.iter().filter_map(row).collect()
        }
        _ => return None,
    };
    let more = out.len() > limit;
    out.truncate(limit);
    Some((out, more))
}

/// The versions a filter allows, when it is nothing but comparisons of `versionnumber` with whole numbers joined
/// by `and`; `None` otherwise.
fn version_range(predicate: &Predicate) -> Option<(Bound<i64>, Bound<i64>)> {
    match predicate {
        Predicate::And(a, b) => {
            let (a, b) = (version_range(a)?, version_range(b)?);
            Some((intersect_lower(a.0, b.0), intersect_upper(a.1, b.1)))
        }
        Predicate::Compare(column, op, Some(Value::Int(v))) if column == VERSION => Some(match op {
            CmpOp::Eq => (Bound::Included(*v), Bound::Included(*v)),
            CmpOp::Gt => (Bound::Excluded(*v), Bound::Unbounded),
            CmpOp::Ge => (Bound::Included(*v), Bound::Unbounded),
            CmpOp::Lt => (Bound::Unbounded, Bound::Excluded(*v)),
            CmpOp::Le => (Bound::Unbounded, Bound::Included(*v)),
            CmpOp::Ne => return None,
        }),
        _ => None,
    }
}

/// The tighter of two lower bounds.
fn intersect_lower(a: Bound<i64>, b: Bound<i64>) -> Bound<i64> {
    tighter(a, b, |x, y| x > y)
}

/// The tighter of two upper bounds.
fn intersect_upper(a: Bound<i64>, b: Bound<i64>) -> Bound<i64> {
    tighter(a, b, |x, y| x < y)
}

/// The tighter of two bounds on one side of a range, `inward(x, y)` saying whether `x` is further into the range.
fn tighter(a: Bound<i64>, b: Bound<i64>, inward: fn(i64, i64) -> bool) -> Bound<i64> {
    match (a, b) {
        (Bound::Unbounded, x) | (x, Bound::Unbounded) => x,
        (Bound::Included(x), Bound::Included(y)) | (Bound::Excluded(x), Bound::Excluded(y)) => {
            if inward(x, y) {
                a
            } else {
                b
            }
        }
        (Bound::Included(i), Bound::Excluded(e)) | (Bound::Excluded(e), Bound::Included(i)) => {
            if inward(i, e) {
                Bound::Included(i)
            } else {
                Bound::Excluded(e)
            }
        }
    }
}

/// Whether a range holds no version (`BTreeMap::range` panics on one whose start is past its end).
fn empty((lower, upper): (Bound<i64>, Bound<i64>)) -> bool {
    let low = match lower {
        Bound::Included(v) => Some(v),
        Bound::Excluded(v) => v.checked_add(1),
        Bound::Unbounded => Some(i64::MIN),
    };
    let high = match upper {
        Bound::Included(v) => Some(v),
        Bound::Excluded(v) => v.checked_sub(1),
        Bound::Unbounded => Some(i64::MAX),
    };
    match (low, high) {
        (Some(low), Some(high)) => low > high,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A contact table of `n` rows, their versions in another order than their ids.
    fn contacts(n: i64) -> (Table, TableRows) {
        let table = crate::schema::builtin_tables().into_iter().find(|t| t.logical_name == "contact").unwrap();
        let mut rows = TableRows::default();
        for i in 0..n {
            let id = Uuid::from_u128(((i * 7919) % n) as u128 + 1);
            let row =
                Row::from([(VERSION.into(), Value::Int(1000 + i)), ("firstname".into(), Value::Text(format!("c{i}")))]);
            rows.put(&table, id, row);
        }
        (table, rows)
    }

    /// Every page of a query, following the cursor as a next link would.
    fn all_pages(rows: &TableRows, table: &Table, predicate: Option<&Predicate>, order: &Order) -> Vec<Vec<Uuid>> {
        let mut pages = Vec::new();
        let mut cursor: Option<Cursor> = None;
        loop {
            let (page_rows, more) = page(rows, table, predicate, order, cursor.as_ref(), 7);
            pages.push(page_rows.iter().map(|(id, _)| *id).collect());
            if !more {
                return pages;
            }
            let (last_id, last) = *page_rows.last().unwrap();
            cursor = Some(Cursor {
                page: pages.len() as u32 + 1,
                sort_values: order
                    .columns
                    .iter()
                    .map(|(c, _)| (c.clone(), last.get(c.as_str()).map(Value::to_text)))
                    .collect(),
                last_id,
                first_id: page_rows[0].0,
            });
        }
    }

    #[test]
    fn a_range_of_versions_or_an_order_by_version_pages_through_the_index_as_a_scan_would() {
        let (table, rows) = contacts(100);
        let compare = |column: &str, op, v| Predicate::Compare(column.to_string(), op, Some(Value::Int(v)));
        let and = |a, b| Predicate::And(Box::new(a), Box::new(b));
        let filters = [
            None,
            Some(compare(VERSION, CmpOp::Ge, 1020)),
            Some(and(compare(VERSION, CmpOp::Ge, 1020), compare(VERSION, CmpOp::Lt, 1061))),
            Some(and(compare(VERSION, CmpOp::Gt, 1020), compare(VERSION, CmpOp::Le, 1061))),
            Some(compare(VERSION, CmpOp::Eq, 1042)),
            Some(and(compare(VERSION, CmpOp::Ge, 1070), compare(VERSION, CmpOp::Lt, 1030))),
            // Both kinds of bound on one side: the tighter holds.
            Some(and(
                and(compare(VERSION, CmpOp::Ge, 1030), compare(VERSION, CmpOp::Gt, 1030)),
                and(compare(VERSION, CmpOp::Le, 1050), compare(VERSION, CmpOp::Lt, 1050)),
            )),
            Some(and(compare(VERSION, CmpOp::Gt, 1029), compare(VERSION, CmpOp::Ge, 1031))),
        ];
        let orders = [vec![], vec![(VERSION.to_string(), false)], vec![(VERSION.to_string(), true)]];
        for filter in &filters {
            for columns in &orders {
                let order = Order { columns: columns.clone() };
                // The same filter with a term the index cannot answer: read by a scan.
                let scanned = filter.clone().map(|f| and(f, Predicate::Const(true)));
                let through_index = all_pages(&rows, &table, filter.as_ref(), &order);
                if filter.is_some() || !columns.is_empty() {
                    assert!(by_version(&rows, filter.as_ref(), &order, None, 7).is_some(), "{filter:?} {columns:?}");
                }
                let by_scan = match &scanned {
                    Some(s) => all_pages(&rows, &table, Some(s), &order),
                    None => all_pages(&rows, &table, Some(&Predicate::Const(true)), &order),
                };
                assert_eq!(through_index, by_scan, "{filter:?} ordered by {columns:?}");
            }
        }
        assert_eq!(all_pages(&rows, &table, None, &Order { columns: vec![] }).concat().len(), 100);
    }

    #[test]
    fn a_filter_on_another_column_or_not_equal_is_answered_by_a_scan() {
        let compare = |column: &str, op, v| Predicate::Compare(column.to_string(), op, Some(Value::Int(v)));
        assert!(version_range(&compare("numberofchildren", CmpOp::Ge, 1)).is_none());
        assert!(version_range(&compare(VERSION, CmpOp::Ne, 1)).is_none());
        let or = Predicate::Or(Box::new(compare(VERSION, CmpOp::Lt, 1)), Box::new(compare(VERSION, CmpOp::Gt, 9)));
        assert!(version_range(&or).is_none());
    }
}
