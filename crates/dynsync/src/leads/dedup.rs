//! "The same person for the same offer". Partner Center sends one customer several leads as they go from step to
//! step (Contact me, then Install), and Microsoft asks publishers to de-duplicate. The key is the email, lower-cased
//! and trimmed (the phone's digits when there is no email), and the offer (`publisher.offer`, else the offer
//! title). The action is deliberately not part of it: a later step updates the same lead. The key's text form
//! round-trips through `Display`/`FromStr`, for use as a pipeline key.

use super::partner_center::Lead;
use std::fmt;
use std::str::FromStr;

/// How the person is recognised.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Contact {
    /// Lower-cased, trimmed.
    Email(String),
    /// The digits alone.
    Phone(String),
}

/// The same person for the same offer. A lead known by its name alone has no key: it is never merged.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DedupKey {
    contact: Contact,
    /// Lower-cased, trimmed, inner spaces collapsed; `None` when the lead names no offer.
    offer: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not a lead dedup key: expected email:<address>|<offer> or phone:<digits>|<offer> (the offer may be \
     empty), as written by DedupKey's Display"
)]
pub struct BadDedupKey(pub String);

impl DedupKey {
    /// The key of a lead: its email, else its phone; `None` when it has neither.
    pub fn for_lead(lead: &Lead) -> Option<DedupKey> {
        DedupKey::new(lead.email().map(|e| e.as_str()), lead.phone().map(|p| p.as_str()), lead.offer().as_deref())
    }

    /// The key of an email (preferred) or a phone, and an offer; `None` when neither email nor phone has content.
    pub fn new(email: Option<&str>, phone: Option<&str>, offer: Option<&str>) -> Option<DedupKey> {
        let email = email.map(|e| e.trim().to_lowercase()).filter(|e| !e.is_empty());
        let phone = phone.map(|p| p.chars().filter(char::is_ascii_digit).collect::<String>()).filter(|p| !p.is_empty());
        let contact = email.map(Contact::Email).or(phone.map(Contact::Phone))?;
        let offer = offer.map(|o| o.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase());
        Some(DedupKey { contact, offer: offer.filter(|o| !o.is_empty()) })
    }

    pub fn contact(&self) -> &Contact {
        &self.contact
    }

    pub fn offer(&self) -> Option<&str> {
        self.offer.as_deref()
    }
}

/// `email:someone@contoso.com|bitnami.openedxcypress`; `%` and `|` inside a part are written `%25` and `%7C`.
impl fmt::Display for DedupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, value) = match &self.contact {
            Contact::Email(email) => ("email", email),
            Contact::Phone(digits) => ("phone", digits),
        };
        write!(f, "{kind}:{}|{}", escape(value), escape(self.offer.as_deref().unwrap_or("")))
    }
}

impl FromStr for DedupKey {
    type Err = BadDedupKey;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadDedupKey(text.to_owned());
        let (contact, offer) = text.split_once('|').ok_or_else(bad)?;
        if offer.contains('|') {
            return Err(bad());
        }
        let (offer, contact) = (unescape(offer).ok_or_else(bad)?, contact.split_once(':').ok_or_else(bad)?);
        let value = unescape(contact.1).ok_or_else(bad)?;
        let key = match contact.0 {
            "email" => DedupKey::new(Some(&value), None, Some(&offer)),
            "phone" if value.chars().all(|c| c.is_ascii_digit()) => DedupKey::new(None, Some(&value), Some(&offer)),
            _ => None,
        };
        key.ok_or_else(bad)
    }
}

/// What a lead's write is keyed by in its intake's pipeline: the person and the offer, so that their steps fold
/// into one write; a lead with neither email nor phone stands alone under its own id, never merged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LeadKey {
    Person(DedupKey),
    Alone(uuid::Uuid),
}

/// A person's key as [`DedupKey`] writes it; a lead alone as `lead:<id>`.
impl fmt::Display for LeadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeadKey::Person(key) => key.fmt(f),
            LeadKey::Alone(id) => write!(f, "lead:{id}"),
        }
    }
}

impl FromStr for LeadKey {
    type Err = BadDedupKey;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.strip_prefix("lead:") {
            Some(id) => id.parse().map(LeadKey::Alone).map_err(|_| BadDedupKey(text.to_owned())),
            None => text.parse().map(LeadKey::Person),
        }
    }
}

fn escape(part: &str) -> String {
    part.replace('%', "%25").replace('|', "%7C")
}

fn unescape(part: &str) -> Option<String> {
    let mut out = String::with_capacity(part.len());
    let mut rest = part;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3)?;
        out.push(match code.to_ascii_uppercase().as_str() {
            "25" => '%',
            "7C" => '|',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(json: &str) -> Option<DedupKey> {
        DedupKey::for_lead(&Lead::from_json(json.as_bytes()).unwrap())
    }

    #[test]
    fn the_same_email_for_the_same_offer_is_one_key_whatever_the_casing_and_spaces() {
        let contact_me = key(r#"{"UserDetails":{"Email":" Someone@Contoso.COM "},
            "LeadSource":"AppSource-PLT|Contoso.CRM-app"}"#);
        let install = key(r#"{"userDetails":{"email":"someone@contoso.com"},
            "LeadSource":"AppSource-INS|contoso.crm-app"}"#);
        assert!(contact_me.is_some());
        assert_eq!(contact_me, install);
        assert_eq!(contact_me.unwrap().to_string(), "email:someone@contoso.com|contoso.crm-app");
    }

    #[test]
    fn another_offer_or_another_email_is_another_key() {
        let a = key(r#"{"UserDetails":{"Email":"a@contoso.com"},"LeadSource":"AppSource-PLT|contoso.crm"}"#);
        let other_offer = key(r#"{"UserDetails":{"Email":"a@contoso.com"},"LeadSource":"AppSource-PLT|contoso.erp"}"#);
        let other_email = key(r#"{"UserDetails":{"Email":"b@contoso.com"},"LeadSource":"AppSource-PLT|contoso.crm"}"#);
        assert_ne!(a, other_offer);
        assert_ne!(a, other_email);
    }

    #[test]
    fn the_offer_title_stands_in_when_the_source_names_no_offer() {
        let a =
            key(r#"{"UserDetails":{"Email":"a@b.co"},"LeadSource":"AzureMarketplace","OfferTitle":"Test  Microsoft"}"#);
        assert_eq!(a.unwrap().offer(), Some("test microsoft"));
    }

    #[test]
    fn the_phone_digits_stand_in_when_there_is_no_email() {
        let a = key(r#"{"UserDetails":{"Phone":"+1 (617) 555-5555"},"OfferTitle":"Contoso"}"#).unwrap();
        let b = key(r#"{"UserDetails":{"Phone":16175555555},"OfferTitle":"contoso"}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.contact(), &Contact::Phone("16175555555".into()));
        assert_eq!(a.to_string(), "phone:16175555555|contoso");
    }

    #[test]
    fn a_lead_known_by_its_name_alone_has_no_key() {
        assert_eq!(key(r#"{"UserDetails":{"FirstName":"Some","LastName":"One"},"OfferTitle":"Contoso"}"#), None);
    }

    #[test]
    fn the_text_form_round_trips_even_with_separators_inside() {
        let keys = [
            DedupKey::new(Some("odd|name%@contoso.com"), None, Some("Offer | 100%")).unwrap(),
            DedupKey::new(None, Some("617 555"), None).unwrap(),
            DedupKey::new(Some("a@b.co"), Some("1"), Some("x.y")).unwrap(),
        ];
        for k in keys {
            let text = k.to_string();
            assert_eq!(text.parse::<DedupKey>(), Ok(k), "{text}");
        }
        assert_eq!("phone:617555|".parse::<DedupKey>().unwrap().offer(), None);
    }

    #[test]
    fn a_lead_key_round_trips_for_a_person_and_for_a_lead_alone() {
        let person = LeadKey::Person(DedupKey::new(Some("a@b.co"), None, Some("x")).unwrap());
        let alone = LeadKey::Alone(uuid::Uuid::new_v4());
        for key in [person, alone] {
            assert_eq!(key.to_string().parse::<LeadKey>(), Ok(key.clone()));
        }
        assert!("lead:not-a-uuid".parse::<LeadKey>().is_err());
    }

    #[test]
    fn text_that_is_not_a_key_is_refused_with_the_expected_form() {
        for text in ["", "someone@contoso.com", "fax:123|x", "phone:12a|x", "email:|x", "email:a|b|c", "email:a%zz|x"] {
            let err = text.parse::<DedupKey>().unwrap_err();
            assert!(err.to_string().contains("expected email:<address>|<offer>"), "{text}");
        }
    }
}
