//! What is wrong with a flow's definition, found when it is saved, for every job: each problem names the field,
//! what is wrong and what to do, and, for a column that does not exist, the closest ones that do. Every problem
//! is reported at once, so that one save shows all of them.

use dataverse::TableDefinition;
use serde::Serialize;
use std::fmt;

/// One thing wrong with a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// Where in the flow: `mappings[2].target`, `columns.offer`.
    pub field: String,
    pub message: String,
    /// The existing columns closest to a missing one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub closest: Vec<String>,
}

impl Problem {
    /// A problem with no closest columns to offer.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem { field: field.into(), message: message.into(), closest: Vec::new() }
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

/// Up to three columns of `table` whose names are closest to `name`.
pub fn closest_columns(name: &str, table: &TableDefinition) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
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
