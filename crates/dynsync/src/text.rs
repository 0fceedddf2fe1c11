//! Text from outside shown back: cut to a length an answer, a log line or a stored run can afford, so that a
//! megabyte-long identity or reason never travels further than the request that carried it.

use std::borrow::Cow;

/// At most `max` characters of `text`, marked with `…` when cut.
pub fn clip(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => Cow::Borrowed(text),
        Some((end, _)) => Cow::Owned(format!("{}…", &text[..end])),
    }
}

/// What a JSON value is, quoted briefly, for a message: `a number (42)`, `a list ([1,2,…)`.
pub fn describe(value: &serde_json::Value) -> String {
    use serde_json::Value;
    let kind = match value {
        Value::Null => return "null".into(),
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    format!("{kind} ({})", clip(&value.to_string(), 57))
}

#[cfg(test)]
mod tests {
    use super::clip;

    #[test]
    fn a_short_text_is_kept_and_a_long_one_is_cut_on_a_character_boundary() {
        assert_eq!(clip("contact-1", 128), "contact-1");
        assert_eq!(clip("ééééé", 3), "ééé…");
        assert_eq!(clip(&"x".repeat(2_000_000), 128).chars().count(), 129);
    }
}
