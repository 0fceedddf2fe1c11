//! What Microsoft's Partner Center posts for a marketplace lead, read tolerantly, and the validated [`Lead`] made of
//! it.
//!
//! The wire struct accepts what has been seen posted: `UserDetails` or `userDetails` (and the camel/snake spelling
//! of every field), fields missing or null ("not all the data is always available"), a phone posted as a number,
//! and unknown extra fields (ignored). A field of the wrong shape (an object where text belongs) is kept, not a
//! parse failure, so that [`PartnerCenterLead::validate`] can name it along with every other problem at once.

use super::country::Country;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::fmt;

use crate::text::describe;

/// A text field as posted: a string, or a number read as its digits (a phone posted as `16175555555`). Anything
/// else (`true`, an object, a list) is kept as its JSON, so that the problem can quote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posted {
    Text(String),
    NotText(Value),
}

impl From<&str> for Posted {
    fn from(text: &str) -> Self {
        Posted::Text(text.to_owned())
    }
}

impl<'de> Deserialize<'de> for Posted {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match Value::deserialize(deserializer)? {
            Value::String(text) => Posted::Text(text),
            Value::Number(number) => Posted::Text(number.to_string()),
            other => Posted::NotText(other),
        })
    }
}

impl Serialize for Posted {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Posted::Text(text) => serializer.serialize_str(text),
            Posted::NotText(value) => value.serialize(serializer),
        }
    }
}

/// The person, as posted under `UserDetails`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDetails {
    #[serde(rename = "FirstName", alias = "firstName", alias = "first_name", default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<Posted>,
    #[serde(rename = "LastName", alias = "lastName", alias = "last_name", default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<Posted>,
    #[serde(rename = "Email", alias = "email", default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Posted>,
    #[serde(rename = "Phone", alias = "phone", default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<Posted>,
    #[serde(rename = "Country", alias = "country", default, skip_serializing_if = "Option::is_none")]
    pub country: Option<Posted>,
    #[serde(rename = "Company", alias = "company", default, skip_serializing_if = "Option::is_none")]
    pub company: Option<Posted>,
    #[serde(rename = "Title", alias = "title", default, skip_serializing_if = "Option::is_none")]
    pub title: Option<Posted>,
}

/// `UserDetails` as posted: normally an object; anything else is kept so that the problem can quote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostedDetails {
    Details(Box<UserDetails>),
    NotObject(Value),
}

impl<'de> Deserialize<'de> for PostedDetails {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            value @ Value::Object(_) => UserDetails::deserialize(value)
                .map(|d| PostedDetails::Details(Box::new(d)))
                .map_err(serde::de::Error::custom),
            other => Ok(PostedDetails::NotObject(other)),
        }
    }
}

impl Serialize for PostedDetails {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            PostedDetails::Details(details) => details.serialize(serializer),
            PostedDetails::NotObject(value) => value.serialize(serializer),
        }
    }
}

/// A lead as Partner Center posts it to an HTTPS endpoint. Every field is optional; unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerCenterLead {
    #[serde(rename = "UserDetails", alias = "userDetails", alias = "user_details", default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_details: Option<PostedDetails>,
    /// `Source-Action|publisher.offer`, or a bare source with the action in `ActionCode`.
    #[serde(rename = "LeadSource", alias = "leadSource", alias = "lead_source", default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lead_source: Option<Posted>,
    #[serde(rename = "ActionCode", alias = "actionCode", alias = "action_code", default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_code: Option<Posted>,
    #[serde(rename = "OfferTitle", alias = "offerTitle", alias = "offer_title", default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offer_title: Option<Posted>,
    #[serde(rename = "Description", alias = "description", default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Posted>,
}

/// The marker of Partner Center's test lead (sent by "Validate" and on "Publish").
pub const TEST_MARKER: &str = "MSFT_TEST";

impl PartnerCenterLead {
    /// Reads a posted body. Only a body that is not a JSON object is refused here; everything else is for
    /// [`validate`](Self::validate).
    pub fn from_json(body: &[u8]) -> Result<PartnerCenterLead, LeadProblems> {
        let refuse = |message: String| LeadProblems { problems: vec![LeadProblem::new("body", message)] };
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            refuse(format!(
                "is not JSON ({e}): Partner Center posts a JSON object such as {{\"UserDetails\": {{…}}, \"LeadSource\": …}}; \
                 check what sent this body"
            ))
        })?;
        if !value.is_object() {
            return Err(refuse(format!(
                "is {}, not a JSON object: Partner Center posts an object such as {{\"UserDetails\": {{…}}, \"LeadSource\": …}}",
                describe(&value)
            )));
        }
        serde_json::from_value(value).map_err(|e| {
            refuse(format!("cannot be read as a lead ({e}): send each field once, in one spelling (Email or email)"))
        })
    }

    /// The details, when `UserDetails` is an object.
    pub fn details(&self) -> Option<&UserDetails> {
        match &self.user_details {
            Some(PostedDetails::Details(details)) => Some(details.as_ref()),
            _ => None,
        }
    }

    /// `LeadSource` parsed, with `ActionCode` as the action when the source names none.
    pub fn source(&self) -> Option<LeadSource> {
        LeadSource::parse(text(&self.lead_source)?, text(&self.action_code))
    }

    /// Whether this is Partner Center's test lead: a field carries `MSFT_TEST`.
    pub fn is_test(&self) -> bool {
        let mut fields = vec![&self.lead_source, &self.action_code, &self.offer_title, &self.description];
        if let Some(d) = self.details() {
            fields.extend([&d.first_name, &d.last_name, &d.email, &d.phone, &d.country, &d.company, &d.title]);
        }
        fields.into_iter().filter_map(text).any(|t| t.to_ascii_uppercase().contains(TEST_MARKER))
    }

    /// Checks the lead and returns it validated, or every problem found. A lead is written only when it has an
    /// email, a phone or a name: a blank lead is refused, never written.
    pub fn validate(&self) -> Result<Lead, LeadProblems> {
        let mut problems = Vec::new();
        let empty = UserDetails::default();
        let details = match &self.user_details {
            Some(PostedDetails::Details(details)) => details.as_ref(),
            Some(PostedDetails::NotObject(value)) => {
                problems.push(LeadProblem::new(
                    "UserDetails",
                    format!(
                        "is {}, not an object: the person's details come as {{\"FirstName\": …, \"Email\": …}}",
                        describe(value)
                    ),
                ));
                &empty
            }
            None => &empty,
        };
        let mut read = |field: &str, posted: &Option<Posted>| read_text(field, posted, &mut problems);
        let first_name = read("UserDetails.FirstName", &details.first_name);
        let last_name = read("UserDetails.LastName", &details.last_name);
        let email_text = read("UserDetails.Email", &details.email);
        let phone_text = read("UserDetails.Phone", &details.phone);
        let country = read("UserDetails.Country", &details.country).and_then(|c| Country::from_text(&c));
        let company = read("UserDetails.Company", &details.company);
        let title = read("UserDetails.Title", &details.title);
        let lead_source = read("LeadSource", &self.lead_source);
        let action_code = read("ActionCode", &self.action_code);
        let offer_title = read("OfferTitle", &self.offer_title);
        let description = read("Description", &self.description);

        let email = email_text.as_deref().and_then(|text| match Email::parse(text) {
            Ok(email) => Some(email),
            Err(why) => {
                problems.push(LeadProblem::new(
                    "UserDetails.Email",
                    format!(
                        "'{text}' is not an email address: {why}; the lead is refused rather than written with a wrong \
                         address: correct the address in the body and send it again"
                    ),
                ));
                None
            }
        });
        let phone = phone_text.as_deref().and_then(|text| match Phone::parse(text) {
            Ok(phone) => Some(phone),
            Err(why) => {
                problems.push(LeadProblem::new(
                    "UserDetails.Phone",
                    format!(
                        "'{text}' is not a phone number: {why}; correct it in the body, or leave the phone out, and \
                         send it again"
                    ),
                ));
                None
            }
        });
        if [&first_name, &last_name, &email_text, &phone_text].iter().all(|f| f.is_none()) {
            let nothing =
                if self.user_details.is_none() { "there is no UserDetails" } else { "they are all missing or blank" };
            problems.push(LeadProblem::new(
                "UserDetails",
                format!(
                    "the lead has no email, no phone and no name (UserDetails.Email, .Phone, .FirstName, .LastName: \
                     {nothing}): a lead nobody can contact is refused, not written; look at the body as posted, and \
                     use Partner Center's Validate button to check that its test lead arrives whole"
                ),
            ));
        }
        if !problems.is_empty() {
            return Err(LeadProblems { problems });
        }
        let action = action_code.as_deref().and_then(LeadAction::from_code);
        let source = lead_source.as_deref().and_then(|s| LeadSource::parse(s, action_code.as_deref()));
        Ok(Lead {
            action: source.as_ref().and_then(|s| s.action.clone()).or(action),
            first_name,
            last_name,
            email,
            phone,
            country,
            company,
            title,
            source,
            offer_title,
            description,
            test: self.is_test(),
        })
    }
}

/// A posted text, trimmed; blank is absent.
fn text(posted: &Option<Posted>) -> Option<&str> {
    match posted {
        Some(Posted::Text(t)) if !t.trim().is_empty() => Some(t.trim()),
        _ => None,
    }
}

fn read_text(field: &str, posted: &Option<Posted>, problems: &mut Vec<LeadProblem>) -> Option<String> {
    if let Some(Posted::NotText(value)) = posted {
        problems.push(LeadProblem::new(
            field,
            format!("is {}, not text: send it as a string, or leave it out", describe(value)),
        ));
    }
    text(posted).map(str::to_owned)
}

/// What the lead's customer did, from the action part of `LeadSource` or from `ActionCode`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LeadAction {
    /// `INS`: the customer chose to get or install the offer.
    Install,
    /// `PLT`: partner-led trial, the "Contact me" button.
    PartnerLedTrial,
    /// `DNC`: do not contact; Microsoft shares the lead as a courtesy (the customer was cross-listed).
    DoNotContact,
    /// `Create`: the offer was created (bought) in the Azure portal.
    Create,
    /// `StartTestDrive`: the customer started a test drive.
    StartTestDrive,
    /// Any other action, as posted.
    Other(String),
}

impl LeadAction {
    /// Reads an action code, in any case; `None` when blank.
    pub fn from_code(code: &str) -> Option<LeadAction> {
        let code = code.trim();
        let known = [
            ("INS", LeadAction::Install),
            ("PLT", LeadAction::PartnerLedTrial),
            ("DNC", LeadAction::DoNotContact),
            ("Create", LeadAction::Create),
            ("StartTestDrive", LeadAction::StartTestDrive),
        ];
        if code.is_empty() {
            return None;
        }
        Some(
            known
                .into_iter()
                .find(|(c, _)| c.eq_ignore_ascii_case(code))
                .map_or_else(|| LeadAction::Other(code.to_owned()), |(_, action)| action),
        )
    }

    /// The code as Partner Center writes it: `INS`, `PLT`, `DNC`, `Create`, `StartTestDrive`.
    pub fn code(&self) -> &str {
        match self {
            LeadAction::Install => "INS",
            LeadAction::PartnerLedTrial => "PLT",
            LeadAction::DoNotContact => "DNC",
            LeadAction::Create => "Create",
            LeadAction::StartTestDrive => "StartTestDrive",
            LeadAction::Other(code) => code,
        }
    }

    /// What a salesperson calls it: "Contact me", "Install", "Test drive".
    pub fn label(&self) -> &str {
        match self {
            LeadAction::Install => "Install",
            LeadAction::PartnerLedTrial => "Contact me",
            LeadAction::DoNotContact => "Do not contact",
            LeadAction::Create => "Create",
            LeadAction::StartTestDrive => "Test drive",
            LeadAction::Other(code) => code,
        }
    }
}

impl fmt::Display for LeadAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for LeadAction {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

/// `LeadSource` taken apart: `AzureMarketplace-INS|bitnami.openedxcypress` is source `AzureMarketplace`, action
/// Install, publisher `bitnami`, offer `openedxcypress`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct LeadSource {
    /// `AzureMarketplace`, `AzurePortal`, `AppSource`, `SPZA`, `TestDrive`, or as posted.
    pub source: String,
    pub action: Option<LeadAction>,
    pub publisher: Option<String>,
    /// The offer id; the whole text after `|` when it is not `publisher.offer` (the test lead's offer name).
    pub offer: Option<String>,
}

impl LeadSource {
    /// Parses `Source-Action|publisher.offer` (each part after the source optional); `action_code` is the action
    /// when the text names none. `None` when the text is blank.
    pub fn parse(text: &str, action_code: Option<&str>) -> Option<LeadSource> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        let (head, offer_part) = match text.split_once('|') {
            Some((head, offer)) => (head.trim(), Some(offer.trim()).filter(|o| !o.is_empty())),
            None => (text, None),
        };
        let (source, action) = match head.split_once('-') {
            Some((source, action)) => (source.trim(), LeadAction::from_code(action)),
            None => (head, None),
        };
        let action = action.or_else(|| action_code.and_then(LeadAction::from_code));
        let (publisher, offer) = match offer_part.map(|o| (o, o.split_once('.'))) {
            Some((_, Some((publisher, offer))))
                if !publisher.is_empty() && !offer.is_empty() && !publisher.contains(char::is_whitespace) =>
            {
                (Some(publisher.to_owned()), Some(offer.to_owned()))
            }
            Some((whole, _)) => (None, Some(whole.to_owned())),
            None => (None, None),
        };
        Some(LeadSource { source: source.to_owned(), action, publisher, offer })
    }

    /// The offer as `publisher.offer`, or the offer alone when there is no publisher.
    pub fn offer_id(&self) -> Option<String> {
        match (&self.publisher, &self.offer) {
            (Some(publisher), Some(offer)) => Some(format!("{publisher}.{offer}")),
            (None, Some(offer)) => Some(offer.clone()),
            _ => None,
        }
    }
}

impl fmt::Display for LeadSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)?;
        if let Some(action) = &self.action {
            write!(f, "-{action}")?;
        }
        if let Some(offer) = self.offer_id() {
            write!(f, "|{offer}")?;
        }
        Ok(())
    }
}

/// An email address that has the shape of one: one `@`, a local part, a domain with a dot, no spaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    /// Checks the shape; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Email, &'static str> {
        crate::email::check_address(text).map(|text| Email(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Lower-cased, for comparing: `Someone@Contoso.com` and `someone@contoso.com` are one person.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A phone number as given (kept for writing), known to hold digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Phone(String);

impl Phone {
    pub fn parse(text: &str) -> Result<Phone, &'static str> {
        let text = text.trim();
        if !text.chars().any(|c| c.is_ascii_digit()) {
            return Err("it has no digit");
        }
        Ok(Phone(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits alone, for comparing: `+1 (617) 555-5555` and `16175555555` are one number.
    pub fn digits(&self) -> String {
        self.0.chars().filter(char::is_ascii_digit).collect()
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated lead: it has an email, a phone or a name; every text is trimmed and never blank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Lead {
    first_name: Option<String>,
    last_name: Option<String>,
    email: Option<Email>,
    phone: Option<Phone>,
    country: Option<Country>,
    company: Option<String>,
    title: Option<String>,
    source: Option<LeadSource>,
    action: Option<LeadAction>,
    offer_title: Option<String>,
    description: Option<String>,
    test: bool,
}

impl Lead {
    /// Reads and validates a posted body in one step.
    pub fn from_json(body: &[u8]) -> Result<Lead, LeadProblems> {
        PartnerCenterLead::from_json(body)?.validate()
    }

    pub fn first_name(&self) -> Option<&str> {
        self.first_name.as_deref()
    }
    pub fn last_name(&self) -> Option<&str> {
        self.last_name.as_deref()
    }
    pub fn email(&self) -> Option<&Email> {
        self.email.as_ref()
    }
    pub fn phone(&self) -> Option<&Phone> {
        self.phone.as_ref()
    }
    pub fn country(&self) -> Option<&Country> {
        self.country.as_ref()
    }
    pub fn company(&self) -> Option<&str> {
        self.company.as_deref()
    }
    pub fn title(&self) -> Option<&str> {
        self.title.as_deref()
    }
    pub fn source(&self) -> Option<&LeadSource> {
        self.source.as_ref()
    }
    /// The action from `LeadSource`, else from `ActionCode`.
    pub fn action(&self) -> Option<&LeadAction> {
        self.action.as_ref()
    }
    pub fn offer_title(&self) -> Option<&str> {
        self.offer_title.as_deref()
    }
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }
    /// Partner Center's test lead (`MSFT_TEST`).
    pub fn is_test(&self) -> bool {
        self.test
    }
    /// The offer: `publisher.offer` from `LeadSource`, else `OfferTitle`.
    pub fn offer(&self) -> Option<String> {
        self.source.as_ref().and_then(LeadSource::offer_id).or_else(|| self.offer_title.clone())
    }
}

/// One thing wrong with a posted lead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeadProblem {
    /// Where, as Partner Center names it: `UserDetails.Email`, `LeadSource`, `body`.
    pub field: String,
    pub message: String,
}

impl LeadProblem {
    fn new(field: &str, message: String) -> LeadProblem {
        LeadProblem { field: field.to_owned(), message }
    }
}

/// Everything wrong with a posted lead, found at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{}", listing(.problems))]
pub struct LeadProblems {
    pub problems: Vec<LeadProblem>,
}

impl LeadProblems {
    /// Whether a problem concerns this field.
    pub fn concerns(&self, field: &str) -> bool {
        self.problems.iter().any(|p| p.field == field)
    }
}

fn listing(problems: &[LeadProblem]) -> String {
    let items: Vec<String> = problems.iter().map(|p| format!("{}: {}", p.field, p.message)).collect();
    match items.as_slice() {
        [one] => format!("the lead is refused: {one}"),
        many => format!("the lead is refused, {} problems:\n{}", many.len(), many.join("\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCUMENTED: &str = r#"{"UserDetails":{"FirstName":"Some","LastName":"One","Email":"someone@contoso.com",
        "Phone":"16175555555","Country":"USA","Company":"Contoso","Title":"Esquire"},"LeadSource":"AzureMarketplace",
        "ActionCode":"INS","OfferTitle":"Test Microsoft","Description":"Test run through Power Automate"}"#;

    fn lead(json: &str) -> Lead {
        Lead::from_json(json.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn refused(json: &str) -> LeadProblems {
        Lead::from_json(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn the_documented_payload_is_read_whole() {
        let lead = lead(DOCUMENTED);
        assert_eq!(lead.first_name(), Some("Some"));
        assert_eq!(lead.last_name(), Some("One"));
        assert_eq!(lead.email().unwrap().as_str(), "someone@contoso.com");
        assert_eq!(lead.phone().unwrap().as_str(), "16175555555");
        assert_eq!(lead.country(), Some(&Country { name: "United States".into(), iso2: Some("US".into()) }));
        assert_eq!(lead.company(), Some("Contoso"));
        assert_eq!(lead.title(), Some("Esquire"));
        assert_eq!(lead.offer_title(), Some("Test Microsoft"));
        assert_eq!(lead.description(), Some("Test run through Power Automate"));
        assert_eq!(lead.action(), Some(&LeadAction::Install));
        assert!(!lead.is_test());
    }

    #[test]
    fn lower_camel_casing_reads_the_same_as_pascal_casing() {
        let camel = r#"{"userDetails":{"firstName":"Some","lastName":"One","email":"someone@contoso.com",
            "phone":"16175555555","country":"USA","company":"Contoso","title":"Esquire"},"leadSource":"AzureMarketplace",
            "actionCode":"INS","offerTitle":"Test Microsoft","description":"Test run through Power Automate"}"#;
        assert_eq!(lead(camel), lead(DOCUMENTED));
    }

    #[test]
    fn missing_and_null_fields_are_absent_and_extra_fields_are_ignored() {
        let lead = lead(
            r#"{"UserDetails":{"Email":"someone@contoso.com","Phone":null,"Country":"  ","Fax":"1"},
               "LeadSource":"AzureMarketplace","Unexpected":{"a":1},"OfferId":"x"}"#,
        );
        assert_eq!(lead.email().unwrap().as_str(), "someone@contoso.com");
        assert_eq!((lead.phone(), lead.country(), lead.first_name(), lead.company()), (None, None, None, None));
        assert_eq!(lead.action(), None);
        assert_eq!(lead.offer(), None);
    }

    #[test]
    fn a_phone_posted_as_a_number_is_read_as_its_digits() {
        let lead = lead(r#"{"UserDetails":{"Phone":16175555555}}"#);
        assert_eq!(lead.phone().unwrap().as_str(), "16175555555");
    }

    #[test]
    fn a_bare_source_takes_its_action_from_the_action_code() {
        let source = lead(DOCUMENTED).source().cloned().unwrap();
        assert_eq!(
            source,
            LeadSource {
                source: "AzureMarketplace".into(),
                action: Some(LeadAction::Install),
                publisher: None,
                offer: None
            }
        );
    }

    #[test]
    fn source_action_and_offer_are_taken_apart() {
        let cases = [
            (
                "AzureMarketplace-INS|bitnami.openedxcypress",
                "AzureMarketplace",
                LeadAction::Install,
                "bitnami",
                "openedxcypress",
            ),
            ("AppSource-PLT|contoso.crm-app", "AppSource", LeadAction::PartnerLedTrial, "contoso", "crm-app"),
            ("SPZA-DNC|contoso.crm-app", "SPZA", LeadAction::DoNotContact, "contoso", "crm-app"),
            ("AzurePortal-Create|contoso.vm", "AzurePortal", LeadAction::Create, "contoso", "vm"),
            ("TestDrive-StartTestDrive|contoso.demo", "TestDrive", LeadAction::StartTestDrive, "contoso", "demo"),
        ];
        for (text, source, action, publisher, offer) in cases {
            let parsed = LeadSource::parse(text, None).unwrap();
            let expected = LeadSource {
                source: source.into(),
                action: Some(action),
                publisher: Some(publisher.into()),
                offer: Some(offer.into()),
            };
            assert_eq!(parsed, expected, "{text}");
            assert_eq!(parsed.to_string(), text);
        }
    }

    #[test]
    fn the_action_in_the_source_wins_over_the_action_code() {
        let lead =
            lead(r#"{"UserDetails":{"Email":"a@b.co"},"LeadSource":"AppSource-PLT|contoso.crm","ActionCode":"INS"}"#);
        assert_eq!(lead.action(), Some(&LeadAction::PartnerLedTrial));
        assert_eq!(lead.offer().as_deref(), Some("contoso.crm"));
    }

    #[test]
    fn an_unknown_action_is_kept_as_posted_and_known_ones_are_read_in_any_case() {
        let parsed = LeadSource::parse("AppSource-Uninstall|contoso.crm", None).unwrap();
        assert_eq!(parsed.action, Some(LeadAction::Other("Uninstall".into())));
        assert_eq!(LeadAction::from_code("plt"), Some(LeadAction::PartnerLedTrial));
        assert_eq!(LeadAction::from_code(" "), None);
        assert_eq!(LeadAction::PartnerLedTrial.label(), "Contact me");
    }

    #[test]
    fn an_offer_that_is_not_publisher_dot_offer_is_kept_whole() {
        let parsed = LeadSource::parse("AzureMarketplace-INS|Contoso Inc. CRM", None).unwrap();
        assert_eq!((parsed.publisher, parsed.offer.as_deref()), (None, Some("Contoso Inc. CRM")));
    }

    #[test]
    fn the_test_lead_is_recognised_and_accepted() {
        let test = r#"{"userDetails":{"firstName":"MSFT_TEST_636573304831318844","lastName":"MSFT_TEST_636573304831318844",
            "email":"MSFT_TEST_636573304831318844@test.com","phone":"1234567890","country":"US",
            "company":"MSFT_TEST_636573304831318844","title":"MSFT_TEST_636573304831318844"},
            "LeadSource":"MSFT_TEST_636573304831318844-MSFT_TEST_636573304831318844|Contoso Test",
            "ActionCode":"INS","OfferTitle":"Contoso Test","Description":"MSFT_TEST_636573304831318844"}"#;
        let posted = PartnerCenterLead::from_json(test.as_bytes()).unwrap();
        assert!(posted.is_test());
        let lead = posted.validate().unwrap();
        assert!(lead.is_test());
        assert_eq!(lead.email().unwrap().as_str(), "MSFT_TEST_636573304831318844@test.com");
        assert_eq!(lead.country().unwrap().iso2.as_deref(), Some("US"));
        let source = lead.source().unwrap();
        assert_eq!(source.source, "MSFT_TEST_636573304831318844");
        assert_eq!(source.action, Some(LeadAction::Other("MSFT_TEST_636573304831318844".into())));
        assert_eq!((source.publisher.as_deref(), source.offer.as_deref()), (None, Some("Contoso Test")));
    }

    #[test]
    fn a_blank_lead_is_refused_with_every_problem_listed() {
        let problems = refused(
            r#"{"UserDetails":{"FirstName":" ","Email":"","Title":{"x":1}},"LeadSource":"AzureMarketplace",
               "OfferTitle":["a"]}"#,
        );
        let fields: Vec<&str> = problems.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["UserDetails.Title", "OfferTitle", "UserDetails"]);
        let text = problems.to_string();
        assert!(text.starts_with("the lead is refused, 3 problems:"), "{text}");
        assert!(text.contains("UserDetails.Title: is an object ({\"x\":1}), not text"), "{text}");
        assert!(text.contains("no email, no phone and no name"), "{text}");
    }

    #[test]
    fn a_lead_without_user_details_is_refused() {
        let problems = refused(r#"{"LeadSource":"AzureMarketplace","ActionCode":"INS","OfferTitle":"Contoso"}"#);
        assert_eq!(problems.problems.len(), 1);
        assert!(problems.problems[0].message.contains("there is no UserDetails"));
    }

    #[test]
    fn a_phone_posted_as_a_huge_number_is_the_same_lead_when_the_job_reads_it_back() {
        // Found by fuzz/run (partner_center_lead): the intake validates the body, the job reads the stored JSON
        // text again; a number past u64 is a float, which must parse back to the value it was written from.
        let body = br#"{"UserDetails":{"Email":"a@b.co","Phone":1440000000000000000000000000000000000000000000000000000000000000000000000000007173733807308158961}}"#;
        let accepted = Lead::from_json(body).unwrap();
        let stored = serde_json::from_slice::<Value>(body).unwrap().to_string();
        assert_eq!(Lead::from_json(stored.as_bytes()).unwrap(), accepted, "stored as {stored}");
    }

    #[test]
    fn a_bad_email_is_refused_saying_what_is_wrong_and_a_bad_phone_with_it() {
        let problems =
            refused(r#"{"UserDetails":{"FirstName":"Some","Email":"someone(at)contoso.com","Phone":"n/a"}}"#);
        assert_eq!(problems.problems.len(), 2);
        assert!(problems.concerns("UserDetails.Email") && problems.concerns("UserDetails.Phone"));
        assert!(
            problems.problems[0].message.contains("'someone(at)contoso.com' is not an email address: it has no '@'")
        );
        assert!(problems.problems[1].message.contains("'n/a' is not a phone number: it has no digit"));
    }

    #[test]
    fn email_shapes_are_checked() {
        assert!(Email::parse(" someone@contoso.com ").is_ok());
        assert!(Email::parse("first.last+tag@sub.contoso.co.uk").is_ok());
        for bad in
            ["someone", "@contoso.com", "a@contoso", "a@b@contoso.com", "a b@contoso.com", "a@contoso..com", "a@-x.com"]
        {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_body_that_is_not_an_object_is_refused_naming_the_body() {
        for body in [r#"["UserDetails"]"#, r#""lead""#, "null", "{not json", ""] {
            let problems = PartnerCenterLead::from_json(body.as_bytes()).unwrap_err();
            assert_eq!(problems.problems.len(), 1, "{body}");
            assert_eq!(problems.problems[0].field, "body");
        }
        let problems = PartnerCenterLead::from_json(b"[1]").unwrap_err();
        assert!(problems.to_string().contains("is a list ([1]), not a JSON object"), "{problems}");
    }

    #[test]
    fn user_details_that_are_not_an_object_are_a_problem() {
        let problems = refused(r#"{"UserDetails":"someone@contoso.com"}"#);
        assert!(problems.concerns("UserDetails"));
        assert!(problems.problems[0].message.starts_with("is a string (\"someone@contoso.com\"), not an object"));
    }

    #[test]
    fn a_field_given_twice_in_two_spellings_is_refused_rather_than_guessed() {
        let problems = PartnerCenterLead::from_json(br#"{"LeadSource":"a","leadSource":"b"}"#).unwrap_err();
        assert!(problems.to_string().contains("duplicate field"), "{problems}");
    }
}
