//! Where each part of a lead goes on the Dynamics `lead` table. The defaults are the standard columns a Dynamics
//! admin expects (firstname, emailaddress1, address1_country, subject, leadsourcecode = Web, …); the parts the
//! standard table has no column for (source, action, publisher, offer, country code, test flag) go to custom
//! columns only when they are named. Text is trimmed and cut to the column's maximum length, and each cut is
//! reported as a note, never as an error: a lead is not refused for a long description.

use super::partner_center::Lead;
use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;

/// A text column and its maximum length, counted as Dataverse counts it (UTF-16 code units; an emoji is 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TextColumn {
    pub name: String,
    pub max_len: usize,
}

impl TextColumn {
    pub fn new(name: impl Into<String>, max_len: usize) -> TextColumn {
        TextColumn { name: name.into(), max_len }
    }
}

/// A choice (option set) column and the value to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChoiceColumn {
    pub name: String,
    pub value: i32,
}

/// The `leadsourcecode` value "Web" on the standard lead table.
pub const LEAD_SOURCE_WEB: i32 = 8;

/// The columns a lead is written to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeadColumns {
    pub first_name: TextColumn,
    pub last_name: TextColumn,
    pub email: TextColumn,
    pub phone: TextColumn,
    pub company: TextColumn,
    pub job_title: TextColumn,
    /// The country's name (normalised when recognised, else as given).
    pub country: TextColumn,
    /// "Contact me — Contoso CRM": the action and the offer.
    pub subject: TextColumn,
    pub description: TextColumn,
    /// `leadsourcecode` = 8 (Web) by default; `None` writes no lead source.
    pub lead_source_code: Option<ChoiceColumn>,
    /// Custom text column for the source (`AzureMarketplace`).
    pub source: Option<TextColumn>,
    /// Custom text column for the action code (`PLT`, `INS`, …).
    pub action: Option<TextColumn>,
    /// Custom text column for the publisher id (`bitnami`).
    pub publisher: Option<TextColumn>,
    /// Custom text column for the offer: `publisher.offer`, else the offer title.
    pub offer: Option<TextColumn>,
    /// Custom text column for the ISO 3166-1 alpha-2 code (`US`).
    pub country_code: Option<TextColumn>,
    /// Custom Yes/No column set to whether the lead is Partner Center's test lead.
    pub test_flag: Option<String>,
}

impl Default for LeadColumns {
    fn default() -> Self {
        LeadColumns {
            first_name: TextColumn::new("firstname", 50),
            last_name: TextColumn::new("lastname", 50),
            email: TextColumn::new("emailaddress1", 100),
            phone: TextColumn::new("telephone1", 50),
            company: TextColumn::new("companyname", 100),
            job_title: TextColumn::new("jobtitle", 100),
            country: TextColumn::new("address1_country", 80),
            subject: TextColumn::new("subject", 300),
            description: TextColumn::new("description", 2000),
            lead_source_code: Some(ChoiceColumn { name: "leadsourcecode".into(), value: LEAD_SOURCE_WEB }),
            source: None,
            action: None,
            publisher: None,
            offer: None,
            country_code: None,
            test_flag: None,
        }
    }
}

/// A text cut to fit its column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CutNote {
    pub column: String,
    /// The length given, in the column's units.
    pub length: usize,
    pub max_len: usize,
}

impl fmt::Display for CutNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} was cut from {} to {} characters, the column's maximum length; widen the column in Dynamics to keep \
             more",
            self.column, self.length, self.max_len
        )
    }
}

/// The column values of a lead, and the notes on what was cut to fit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeadRecord {
    pub values: Map<String, Value>,
    pub notes: Vec<CutNote>,
}

/// The column values of a lead. A part the lead lacks is left out, not written as null, so that a repeat lead
/// never blanks what an earlier one wrote.
pub fn lead_record(lead: &Lead, columns: &LeadColumns) -> LeadRecord {
    let mut record = LeadRecord { values: Map::new(), notes: Vec::new() };
    let source = lead.source();
    let country = lead.country();
    let offer = lead.offer();
    let subject = subject(lead);
    let texts: [(Option<&TextColumn>, Option<&str>); 14] = [
        (Some(&columns.first_name), lead.first_name()),
        (Some(&columns.last_name), lead.last_name()),
        (Some(&columns.email), lead.email().map(|e| e.as_str())),
        (Some(&columns.phone), lead.phone().map(|p| p.as_str())),
        (Some(&columns.company), lead.company()),
        (Some(&columns.job_title), lead.title()),
        (Some(&columns.country), country.map(|c| c.name.as_str())),
        (Some(&columns.subject), Some(&subject)),
        (Some(&columns.description), lead.description()),
        (columns.source.as_ref(), source.map(|s| s.source.as_str()).filter(|s| !s.is_empty())),
        (columns.action.as_ref(), lead.action().map(|a| a.code())),
        (columns.publisher.as_ref(), source.and_then(|s| s.publisher.as_deref())),
        (columns.offer.as_ref(), offer.as_deref()),
        (columns.country_code.as_ref(), country.and_then(|c| c.iso2.as_deref())),
    ];
    for (column, text) in texts {
        if let (Some(column), Some(text)) = (column, text) {
            record.put_text(column, text);
        }
    }
    if let Some(choice) = &columns.lead_source_code {
        record.values.insert(choice.name.clone(), Value::from(choice.value));
    }
    if let Some(flag) = &columns.test_flag {
        record.values.insert(flag.clone(), Value::Bool(lead.is_test()));
    }
    record
}

impl LeadRecord {
    fn put_text(&mut self, column: &TextColumn, text: &str) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        let length = utf16_len(text);
        let value = if length > column.max_len {
            self.notes.push(CutNote { column: column.name.clone(), length, max_len: column.max_len });
            cut(text, column.max_len).trim_end()
        } else {
            text
        };
        self.values.insert(column.name.clone(), Value::from(value));
    }
}

/// The lead's topic: "Contact me — Contoso CRM"; the action or the offer alone when only one is known, and
/// "Marketplace lead" when neither is. A test lead's starts with "Test lead — ".
pub fn subject(lead: &Lead) -> String {
    let offer = lead.offer_title().map(str::to_owned).or_else(|| lead.offer());
    let mut parts: Vec<String> = Vec::new();
    if lead.is_test() {
        parts.push("Test lead".into());
    }
    parts.extend(lead.action().map(|a| a.label().to_owned()));
    parts.extend(offer);
    if parts.is_empty() || parts == ["Test lead"] {
        parts.push("Marketplace lead".into());
    }
    parts.join(" — ")
}

fn utf16_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

/// The longest start of `text` within `max_len` UTF-16 units, never splitting a character.
fn cut(text: &str, max_len: usize) -> &str {
    let mut used = 0;
    for (at, c) in text.char_indices() {
        used += c.len_utf16();
        if used > max_len {
            return &text[..at];
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(json: &str) -> Lead {
        Lead::from_json(json.as_bytes()).unwrap()
    }

    const CONTACT_ME: &str = r#"{"UserDetails":{"FirstName":" Some ","LastName":"One","Email":"someone@contoso.com",
        "Phone":"16175555555","Country":"USA","Company":"Contoso","Title":"Esquire"},
        "LeadSource":"AppSource-PLT|contoso.crm-app","OfferTitle":"Contoso CRM","Description":"Wants a demo"}"#;

    #[test]
    fn a_lead_goes_to_the_standard_lead_columns_by_default() {
        let record = lead_record(&lead(CONTACT_ME), &LeadColumns::default());
        let expected = serde_json::json!({
            "firstname": "Some", "lastname": "One", "emailaddress1": "someone@contoso.com",
            "telephone1": "16175555555", "companyname": "Contoso", "jobtitle": "Esquire",
            "address1_country": "United States", "subject": "Contact me — Contoso CRM",
            "description": "Wants a demo", "leadsourcecode": 8
        });
        assert_eq!(Value::Object(record.values), expected);
        assert!(record.notes.is_empty());
    }

    #[test]
    fn custom_columns_receive_source_action_publisher_offer_code_and_test_flag_when_named() {
        let columns = LeadColumns {
            source: Some(TextColumn::new("new_leadsource", 100)),
            action: Some(TextColumn::new("new_leadaction", 100)),
            publisher: Some(TextColumn::new("new_publisher", 100)),
            offer: Some(TextColumn::new("new_offer", 100)),
            country_code: Some(TextColumn::new("new_countrycode", 2)),
            test_flag: Some("new_istestlead".into()),
            lead_source_code: None,
            ..LeadColumns::default()
        };
        let values = lead_record(&lead(CONTACT_ME), &columns).values;
        assert_eq!(values["new_leadsource"], "AppSource");
        assert_eq!(values["new_leadaction"], "PLT");
        assert_eq!(values["new_publisher"], "contoso");
        assert_eq!(values["new_offer"], "contoso.crm-app");
        assert_eq!(values["new_countrycode"], "US");
        assert_eq!(values["new_istestlead"], false);
        assert!(!values.contains_key("leadsourcecode"));
    }

    #[test]
    fn missing_parts_are_left_out_rather_than_written_as_null() {
        let values = lead_record(&lead(r#"{"userDetails":{"email":"a@b.co"}}"#), &LeadColumns::default()).values;
        let names: Vec<&str> = values.keys().map(String::as_str).collect();
        assert_eq!(names, ["emailaddress1", "subject", "leadsourcecode"]);
        assert_eq!(values["subject"], "Marketplace lead");
    }

    #[test]
    fn long_texts_are_cut_to_the_column_length_and_each_cut_is_noted() {
        let long_name = "N".repeat(60);
        let description = "é".repeat(2100);
        let body = serde_json::json!({"UserDetails": {"FirstName": long_name, "Email": "a@b.co"},
            "Description": description});
        let record = lead_record(&lead(&body.to_string()), &LeadColumns::default());
        assert_eq!(record.values["firstname"], "N".repeat(50));
        assert_eq!(record.values["description"].as_str().unwrap().chars().count(), 2000);
        assert_eq!(
            record.notes,
            [
                CutNote { column: "firstname".into(), length: 60, max_len: 50 },
                CutNote { column: "description".into(), length: 2100, max_len: 2000 },
            ]
        );
        assert!(record.notes[0].to_string().starts_with("firstname was cut from 60 to 50 characters"));
    }

    #[test]
    fn a_cut_never_splits_a_character_that_takes_two_utf16_units() {
        assert_eq!(cut("ab😀c", 3), "ab");
        assert_eq!(cut("ab😀c", 4), "ab😀");
        assert_eq!(utf16_len("ab😀c"), 5);
    }

    #[test]
    fn the_subject_names_the_action_and_the_offer_and_marks_the_test_lead() {
        let install = lead(
            r#"{"UserDetails":{"Email":"a@b.co"},"LeadSource":"AzureMarketplace","ActionCode":"INS",
            "OfferTitle":"Test Microsoft"}"#,
        );
        assert_eq!(subject(&install), "Install — Test Microsoft");
        let no_title =
            lead(r#"{"UserDetails":{"Email":"a@b.co"},"LeadSource":"AzureMarketplace-INS|bitnami.openedxcypress"}"#);
        assert_eq!(subject(&no_title), "Install — bitnami.openedxcypress");
        let test = lead(
            r#"{"userDetails":{"email":"MSFT_TEST_1@test.com"},"LeadSource":"AzureMarketplace",
            "ActionCode":"INS","OfferTitle":"Contoso Test"}"#,
        );
        assert_eq!(subject(&test), "Test lead — Install — Contoso Test");
    }
}
