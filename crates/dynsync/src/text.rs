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
