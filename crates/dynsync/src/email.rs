//! The shape of an email address, checked once for every job that takes one: a lead's, an email event's
//! recipient. What is checked is what a mail server and Dynamics' email columns would refuse, not the whole of
//! RFC 5322: one `@`, something before it, a domain of dotted labels after it, no space or control character, at most
//! 254 characters.

/// The address, trimmed, when it has the shape of one; otherwise what is wrong with it.
pub fn check_address(text: &str) -> Result<&str, &'static str> {
    let text = text.trim();
    if text.is_empty() {
        return Err("it is blank");
    }
    if text.contains(char::is_whitespace) {
        return Err("it contains a space");
    }
    if text.contains(char::is_control) {
        return Err("it contains a control character");
    }
    let Some((local, domain)) = text.split_once('@') else { return Err("it has no '@'") };
    if domain.contains('@') {
        return Err("it has more than one '@'");
    }
    if local.is_empty() {
        return Err("nothing comes before the '@'");
    }
    if !domain.contains('.') {
        return Err("the part after the '@' is not a domain (it has no '.')");
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_alphanumeric() || c == '-')
    };
    if !domain.split('.').all(label_ok) {
        return Err("the domain after the '@' has an empty part or a character a domain cannot have");
    }
    if text.chars().count() > 254 {
        return Err("it is longer than the 254 characters an address can have");
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::check_address;

    #[test]
    fn an_address_is_checked_for_the_shape_a_mail_server_takes() {
        assert_eq!(check_address(" Ana@Contoso.com "), Ok("Ana@Contoso.com"));
        for (text, why) in [
            ("", "blank"),
            ("ana @contoso.com", "space"),
            ("an\u{1}a@contoso.com", "control character"),
            ("ana.contoso.com", "no '@'"),
            ("a@b@contoso.com", "more than one"),
            ("@contoso.com", "before the '@'"),
            ("ana@localhost", "not a domain"),
            ("ana@-contoso.com", "domain"),
        ] {
            assert!(check_address(text).unwrap_err().contains(why), "{text}");
        }
        assert!(check_address(&format!("{}@contoso.com", "a".repeat(250))).is_err());
    }
}
