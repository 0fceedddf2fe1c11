//! What is wrong with a flow's definition, found when it is saved, for every job: each problem names the field,
//! what is wrong and what to do, and, for a column that does not exist, the closest ones that do. Every problem
//! is reported at once, so that one save shows all of them.

use dataverse::TableDefinition;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One thing wrong with a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// Where in the flow: `mappings[2].target`, `columns.offer`.
    pub field: String,
    pub message: String,
    /// The existing columns closest to a missing one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub closest: Vec<String>,
}

/// The report of a refused definition: every problem (the `report` of the API's error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problems {
    pub problems: Vec<Problem>,
}

impl Problem {
    /// A problem with no closest columns to offer.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem { field: field.into(), message: message.into(), closest: Vec::new() }
    }

    /// A column `name` that `table` lacks: `message` (what is missing, where), then the closest columns that
    /// exist, or `otherwise` (what to do) when none is close.
    pub fn missing_column(
        field: impl Into<String>,
        name: &str,
        table: &TableDefinition,
        message: String,
        otherwise: &str,
    ) -> Problem {
        let closest = closest_columns(name, table);
        let message = match closest.is_empty() {
            true => format!("{message}. {otherwise}"),
            false => format!("{message}. Closest columns: {}", closest.join(", ")),
        };
        Problem { field: field.into(), message, closest }
    }
}

/// Everything wrong with a flow against the table it writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidationReport {
    pub flow: String,
    /// The table the flow was checked against (`contact`, `lead`).
    pub table: &'static str,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flow '{}' does not fit the {} table: ", self.flow, self.table)?;
        let messages: Vec<String> = self.problems.iter().map(|p| format!("{}: {}", p.field, p.message)).collect();
        f.write_str(&messages.join("; "))
    }
}

impl std::error::Error for ValidationReport {}

/// The longest name [`closest_columns`] looks for neighbours of, in characters. Dataverse's column names are a
/// few dozen characters; a longer name is no near miss of one, and is not worth a search.
pub const LONGEST_SEARCHED_NAME: usize = 100;

/// Up to three columns of `table` whose names are closest to `name`, closest first: within `name`'s length / 2
/// edits (at least 2) of the whole name, or of the name without its customization prefix (one edit more).
///
/// Its cost is bounded, since a flow may name hundreds of missing columns against a table of hundreds: a name
/// longer than [`LONGEST_SEARCHED_NAME`] is not searched, a column whose length alone puts it out of reach is
/// skipped, and each distance is computed within a band of the limit, given up as soon as it is passed.
pub fn closest_columns(name: &str, table: &TableDefinition) -> Vec<String> {
    let name: Vec<char> = name.chars().take(LONGEST_SEARCHED_NAME + 1).collect();
    if name.len() > LONGEST_SEARCHED_NAME {
        return Vec::new();
    }
    let limit = (name.len() / 2).max(2);
    let mut distance = BoundedDistance::default();
    let mut candidate: Vec<char> = Vec::new();
    // The best three so far: a column farther than the third of them cannot take its place.
    let mut scored: Vec<(usize, &str)> = Vec::new();
    for column in &table.columns {
        candidate.clear();
        candidate.extend(column.logical_name.chars());
        let bound = match scored.get(2) {
            Some((third, _)) => limit.min(*third),
            None => limit,
        };
        let whole = distance.within(&name, &candidate, bound);
        // Under the same prefix, the names differ as their rests do: the whole distance is the rests'.
        let (bare_name, bare_candidate) = (bare(&name), bare(&candidate));
        let same_prefix = name[..name.len() - bare_name.len()] == candidate[..candidate.len() - bare_candidate.len()];
        let suffix = match bound.checked_sub(1) {
            Some(b) if !same_prefix => distance.within(bare_name, bare_candidate, b).map(|d| d + 1),
            _ => None,
        };
        let Some(d) = whole.into_iter().chain(suffix).min() else { continue };
        scored.push((d, column.logical_name.as_str()));
        scored.sort();
        scored.truncate(3);
    }
    scored.into_iter().map(|(_, n)| n.to_string()).collect()
}

/// A name without its customization prefix: what follows the first `_`, or the whole name.
fn bare(name: &[char]) -> &[char] {
    match name.iter().position(|c| *c == '_') {
        Some(i) => &name[i + 1..],
        None => name,
    }
}

/// Edit distances that are only wanted when small, computed in one reused row.
#[derive(Default)]
struct BoundedDistance {
    row: Vec<usize>,
}

impl BoundedDistance {
    /// The edit distance between `a` and `b` if it is at most `limit`, or `None`: without computing anything
    /// when their lengths differ by more, and otherwise only within `limit` cells of the diagonal (a cell
    /// farther is more than `limit` edits away), stopping at the first row past the limit (no later row is
    /// less).
    fn within(&mut self, a: &[char], b: &[char], limit: usize) -> Option<usize> {
        if a.len().abs_diff(b.len()) > limit {
            return None;
        }
        // What the two share at either end costs no edit (`new_gold` and `new_golf` differ as `d` and `f` do).
        let start = a.iter().zip(b).take_while(|(x, y)| x == y).count();
        let (a, b) = (&a[start..], &b[start..]);
        let end = a.iter().rev().zip(b.iter().rev()).take_while(|(x, y)| x == y).count();
        let (a, b) = (&a[..a.len() - end], &b[..b.len() - end]);
        // Anything beyond the limit counts as just beyond it.
        let beyond = limit + 1;
        let row = &mut self.row;
        row.clear();
        row.extend((0..=b.len()).map(|j| j.min(beyond)));
        for (i, ca) in a.iter().enumerate().map(|(i, c)| (i + 1, c)) {
            let first = i.saturating_sub(limit).max(1);
            let last = (i + limit).min(b.len());
            // The previous row's cell left of the band, and this row's: the first column, or outside the band.
            let mut diagonal = row[first - 1];
            row[first - 1] = if first == 1 { i.min(beyond) } else { beyond };
            let mut least = row[first - 1];
            for j in first..=last {
                let above = row[j];
                let cost = usize::from(*ca != b[j - 1]);
                let cell = (diagonal + cost).min(above + 1).min(row[j - 1] + 1).min(beyond);
                diagonal = above;
                row[j] = cell;
                least = least.min(cell);
            }
            if last < b.len() {
                row[last + 1] = beyond;
            }
            if least > limit {
                return None;
            }
        }
        let d = row[b.len()];
        (d <= limit).then_some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataverse::{ColumnDefinition, ColumnType};

    /// The edit distance, computed in full: what the bounded one must agree with.
    fn edit_distance(a: &str, b: &str) -> usize {
        let a: Vec<char> = a.chars().collect();
        let b: Vec<char> = b.chars().collect();
        let mut previous: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.iter().enumerate() {
            let mut current = vec![i + 1];
            for (j, cb) in b.iter().enumerate() {
                let cost = usize::from(ca != cb);
                current.push((previous[j] + cost).min(previous[j + 1] + 1).min(current[j] + 1));
            }
            previous = current;
        }
        previous[b.len()]
    }

    fn table(names: &[&str]) -> TableDefinition {
        TableDefinition {
            logical_name: "contact".into(),
            entity_set_name: "contacts".into(),
            primary_id: "contactid".into(),
            primary_name: None,
            display_name: None,
            change_tracking: false,
            columns: names
                .iter()
                .map(|n| ColumnDefinition {
                    logical_name: n.to_string(),
                    schema_name: n.to_string(),
                    kind: ColumnType::String { max_length: Some(100) },
                    is_custom: n.contains('_'),
                    is_primary_id: false,
                    valid_for_create: true,
                    valid_for_update: true,
                    required_level: "None".into(),
                    display_name: None,
                    precision: None,
                    targets: Vec::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn the_bounded_distance_is_the_distance_when_within_the_limit_and_none_beyond() {
        // Short words of a small alphabet, so that many pairs are near each other.
        let mut seed = 0x2545_f491_u64;
        let mut word = |max: u64| -> String {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let length = (seed >> 33) % (max + 1);
            (0..length)
                .map(|k| {
                    let bits = seed.rotate_left(7 * k as u32 + 3);
                    ['a', 'b', 'c', '_', 'é'][(bits % 5) as usize]
                })
                .collect()
        };
        let mut distance = BoundedDistance::default();
        for _ in 0..5_000 {
            let (a, b) = (word(9), word(9));
            let full = edit_distance(&a, &b);
            let (ca, cb): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
            for limit in 0..=10 {
                let expected = (full <= limit).then_some(full);
                assert_eq!(distance.within(&ca, &cb, limit), expected, "{a:?} {b:?} within {limit}");
            }
        }
    }

    /// `closest_columns` as it was before its search was bounded: every distance in full.
    fn closest_columns_in_full(name: &str, table: &TableDefinition) -> Vec<String> {
        let bare = |n: &str| n.split_once('_').map(|(_, rest)| rest.to_string()).unwrap_or_else(|| n.to_string());
        let mut scored: Vec<(usize, &str)> = table
            .columns
            .iter()
            .map(|c| {
                let whole = edit_distance(name, &c.logical_name);
                let suffix = edit_distance(&bare(name), &bare(&c.logical_name));
                (whole.min(suffix + 1), c.logical_name.as_str())
            })
            .collect();
        scored.sort();
        let limit = (name.chars().count() / 2).max(2);
        scored.into_iter().filter(|(d, _)| *d <= limit).take(3).map(|(_, n)| n.to_string()).collect()
    }

    #[test]
    fn the_bounded_search_answers_as_the_full_one_did() {
        let mut seed = 0x9e37_79b9_u64;
        let mut word = || -> String {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let length = 1 + (seed >> 33) % 12;
            (0..length).map(|k| ['a', 'b', 'c', 'd', '_'][(seed.rotate_left(5 * k as u32 + 1) % 5) as usize]).collect()
        };
        for _ in 0..300 {
            let names: Vec<String> = (0..40).map(|_| word()).collect();
            let contact = table(&names.iter().map(String::as_str).collect::<Vec<_>>());
            for _ in 0..10 {
                let name = word();
                assert_eq!(closest_columns(&name, &contact), closest_columns_in_full(&name, &contact), "{name}");
            }
        }
    }

    #[test]
    fn closest_columns_name_near_misses_with_and_without_the_prefix() {
        let contact = table(&["firstname", "lastname", "fullname", "new_gold", "cr8a3_gold", "new_silver"]);
        assert_eq!(closest_columns("firstnme", &contact), ["firstname", "lastname"]);
        assert_eq!(closest_columns("new_gold", &contact), ["new_gold", "cr8a3_gold"]);
        assert_eq!(closest_columns("xyz_silver", &contact), ["new_silver"]);
        assert!(closest_columns("emailaddress1", &contact).is_empty());
    }

    #[test]
    fn a_name_of_ten_thousand_characters_has_no_closest_columns() {
        let names: Vec<String> = (0..300).map(|i| format!("new_attribute{i}")).collect();
        let contact = table(&names.iter().map(String::as_str).collect::<Vec<_>>());
        let long = "new_attribute".repeat(770);
        assert!(long.chars().count() > 10_000);
        assert!(closest_columns(&long, &contact).is_empty());
        // Just past the longest searched name, too.
        assert!(closest_columns(&"a".repeat(LONGEST_SEARCHED_NAME + 1), &contact).is_empty());
    }

    #[test]
    fn a_report_names_the_flow_and_the_table_it_was_checked_against() {
        let report = ValidationReport {
            flow: "Leads".into(),
            table: "lead",
            problems: vec![Problem::new("columns.offer", "missing")],
        };
        assert_eq!(report.to_string(), "flow 'Leads' does not fit the lead table: columns.offer: missing");
    }
}
