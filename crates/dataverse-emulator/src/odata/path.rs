//! Resource paths: `contacts(<guid>)`, `contacts(emailaddress1='a@b.c')`,
//! `EntityDefinitions(LogicalName='contact')/Attributes`. Keys are parsed here because a path segment holds
//! both the name and its key.

use crate::error::{ApiError, ApiResult};
use percent_encoding::percent_decode_str;
use uuid::Uuid;

/// A key literal inside parentheses.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyValue {
    Text(String),
    Number(String),
    Guid(Uuid),
}

impl KeyValue {
    /// The text a key index compares against (strings fold case, as Dataverse's indexes do).
    pub fn key_text(&self) -> String {
        match self {
            KeyValue::Text(s) => s.to_lowercase(),
            KeyValue::Number(n) => n.clone(),
            KeyValue::Guid(g) => g.to_string(),
        }
    }

    /// The literal as it is written in a URL.
    pub fn to_url(&self) -> String {
        match self {
            KeyValue::Text(s) => format!("'{}'", s.replace('\'', "''")),
            KeyValue::Number(n) => n.clone(),
            KeyValue::Guid(g) => g.to_string(),
        }
    }
}

/// The key of a resource: a primary key GUID, or named values (an alternate key, or `LogicalName='x'`).
#[derive(Debug, Clone, PartialEq)]
pub enum Key {
    Id(Uuid),
    Named(Vec<(String, KeyValue)>),
}

impl Key {
    pub fn to_url(&self) -> String {
        match self {
            Key::Id(id) => id.to_string(),
            Key::Named(parts) => parts.iter().map(|(k, v)| format!("{k}={}", v.to_url())).collect::<Vec<_>>().join(","),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub name: String,
    pub key: Option<Key>,
    /// `WhoAmI()`: empty parentheses, as function calls may carry.
    pub empty_parens: bool,
}

/// Splits a path into segments at `/` outside quotes, then decodes each one.
pub fn parse_path(path: &str) -> ApiResult<Vec<Segment>> {
    let mut raw = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let decoded = percent_decode_str(path).decode_utf8_lossy();
    for c in decoded.chars() {
        match c {
            '\'' => {
                in_quotes = !in_quotes;
                current.push(c);
            }
            '/' if !in_quotes => raw.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    raw.push(current);
    raw.into_iter().filter(|s| !s.is_empty()).map(|s| parse_segment(&s)).collect()
}

fn parse_segment(segment: &str) -> ApiResult<Segment> {
    let Some(open) = segment.find('(') else {
        return Ok(Segment { name: segment.to_string(), key: None, empty_parens: false });
    };
    if !segment.ends_with(')') {
        return Err(ApiError::bad_query(format!(
            "Bad Request - Error in query syntax. The segment '{segment}' is not valid."
        )));
    }
    let name = segment[..open].to_string();
    let inner = &segment[open + 1..segment.len() - 1];
    if inner.trim().is_empty() {
        return Ok(Segment { name, key: None, empty_parens: true });
    }
    Ok(Segment { name, key: Some(parse_key(inner)?), empty_parens: false })
}

pub fn parse_key(inner: &str) -> ApiResult<Key> {
    if let Some(id) = crate::value::parse_guid(inner.trim()) {
        return Ok(Key::Id(id));
    }
    let unrecognized =
        || ApiError::bad_query(format!("Unrecognized 'Edm.String' literal '{inner}' at '1' in '({inner})'."));
    let mut parts = Vec::new();
    let chars: Vec<char> = inner.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        while i < chars.len() && chars[i] != '=' {
            i += 1;
        }
        if i == chars.len() {
            return Err(unrecognized());
        }
        let name: String = chars[start..i].iter().collect::<String>().trim().to_string();
        i += 1;
        let value = if chars.get(i) == Some(&'\'') {
            i += 1;
            let mut text = String::new();
            loop {
                match chars.get(i) {
                    None => {
                        return Err(ApiError::bad_query(format!(
                            "There is an unterminated literal at position {} in '{inner}'.",
                            chars.len()
                        )));
                    }
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        text.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(c) => {
                        text.push(*c);
                        i += 1;
                    }
                }
            }
            KeyValue::Text(text)
        } else {
            let start = i;
            while i < chars.len() && chars[i] != ',' {
                i += 1;
            }
            let literal: String = chars[start..i].iter().collect::<String>().trim().to_string();
            if let Some(id) = crate::value::parse_guid(&literal) {
                KeyValue::Guid(id)
            } else if literal.parse::<f64>().is_ok() {
                KeyValue::Number(literal)
            } else {
                return Err(unrecognized());
            }
        };
        if name.is_empty() {
            return Err(unrecognized());
        }
        parts.push((name, value));
        while chars.get(i) == Some(&' ') {
            i += 1;
        }
        if chars.get(i) == Some(&',') {
            i += 1;
        } else if i < chars.len() {
            return Err(unrecognized());
        }
    }
    Ok(Key::Named(parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_guid_and_alternate_keys() {
        let segs = parse_path("contacts(49b0be2e-d01c-ed11-b83e-000d3a572421)/firstname").unwrap();
        assert_eq!(segs.len(), 2);
        assert!(matches!(segs[0].key, Some(Key::Id(_))));
        let segs = parse_path("contacts(emailaddress1='o''neil/x@example.com',new_n=2)").unwrap();
        assert_eq!(
            segs[0].key,
            Some(Key::Named(vec![
                ("emailaddress1".into(), KeyValue::Text("o'neil/x@example.com".into())),
                ("new_n".into(), KeyValue::Number("2".into()))
            ]))
        );
        let segs = parse_path(
            "EntityDefinitions(LogicalName='contact')/Attributes/Microsoft.Dynamics.CRM.StringAttributeMetadata",
        )
        .unwrap();
        assert_eq!(segs.len(), 3);
        assert!(parse_path("WhoAmI()").unwrap()[0].empty_parens);
    }

    #[test]
    fn rejects_odata_v3_guid_literals() {
        let err = parse_path("contacts(guid'11a7b0a8-0000-0000-0000-000000000000')").unwrap_err();
        assert!(err.message.starts_with("Unrecognized 'Edm.String' literal"), "{}", err.message);
    }
}
