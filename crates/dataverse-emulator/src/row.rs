//! One row of a table: its non-null column values, sorted by logical name, in one allocation.
//!
//! A query's answer walks thousands of rows and picks a few columns out of each; with the values side by side in
//! memory (rather than in the nodes of a map per row, scattered through the heap) that walk reads a row in a
//! line or two of cache instead of following a pointer per few columns. Rows are small — a few dozen columns —
//! so a lookup by name is a binary search and an insert a shift of a few entries.
//!
//! A row is written to the state file as a map of names to values, as it always was.

use crate::value::{Name, Value};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row(Vec<(Name, Value)>);

impl Row {
    pub fn new() -> Row {
        Row(Vec::new())
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| n.as_str().cmp(name))
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.find(name).ok().map(|at| &self.0[at].1)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    /// Sets a column's value; the value it replaces.
    pub fn insert(&mut self, name: Name, value: Value) -> Option<Value> {
        match self.find(&name) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at].1, value)),
            Err(at) => {
                self.0.insert(at, (name, value));
                None
            }
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<Value> {
        self.find(name).ok().map(|at| self.0.remove(at).1)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The columns and their values, by name.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&Name, &Value)> + ExactSizeIterator {
        self.into_iter()
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &Name> + ExactSizeIterator {
        self.0.iter().map(|(name, _)| name)
    }
}

/// The last value given for a name is kept, as a map's insert keeps it.
impl FromIterator<(Name, Value)> for Row {
    fn from_iter<I: IntoIterator<Item = (Name, Value)>>(entries: I) -> Row {
        let mut entries: Vec<(Name, Value)> = entries.into_iter().collect();
        entries.reverse();
        entries.sort_by(|(a, _), (b, _)| a.cmp(b));
        entries.dedup_by(|(later, _), (kept, _)| later == kept);
        Row(entries)
    }
}

impl<const N: usize> From<[(Name, Value); N]> for Row {
    fn from(entries: [(Name, Value); N]) -> Row {
        entries.into_iter().collect()
    }
}

impl<'r> IntoIterator for &'r Row {
    type Item = (&'r Name, &'r Value);
    type IntoIter = std::iter::Map<std::slice::Iter<'r, (Name, Value)>, fn(&'r (Name, Value)) -> (&'r Name, &'r Value)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(name, value)| (name, value))
    }
}

impl Serialize for Row {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Row {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Row, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = Row;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a row: a map of column names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Row, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry::<Name, Value>()? {
                    entries.push(entry);
                }
                Ok(entries.into_iter().collect())
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_keeps_its_columns_sorted_by_name_and_the_last_value_given_for_each() {
        let mut row = Row::from([
            ("lastname".into(), Value::Text("Smith".into())),
            ("firstname".into(), Value::Int(1)),
            ("lastname".into(), Value::Text("Jones".into())),
        ]);
        assert_eq!(row.keys().map(Name::as_str).collect::<Vec<_>>(), ["firstname", "lastname"]);
        assert_eq!(row.get("lastname"), Some(&Value::Text("Jones".into())));
        assert_eq!(row.insert("emailaddress1".into(), Value::Bool(true)), None);
        assert_eq!(row.insert("firstname".into(), Value::Int(2)), Some(Value::Int(1)));
        assert_eq!(row.keys().map(Name::as_str).collect::<Vec<_>>(), ["emailaddress1", "firstname", "lastname"]);
        assert_eq!(row.remove("emailaddress1"), Some(Value::Bool(true)));
        assert_eq!(row.remove("emailaddress1"), None);
        assert!(!row.contains_key("emailaddress1") && row.contains_key("firstname"));
        let text = serde_json::to_string(&row).unwrap();
        assert_eq!(text, r#"{"firstname":{"i":2},"lastname":{"s":"Jones"}}"#);
        assert_eq!(serde_json::from_str::<Row>(&text).unwrap(), row, "written and read back as a map");
    }
}
