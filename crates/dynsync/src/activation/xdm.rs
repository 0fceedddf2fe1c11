//! The types of the XDM profile fields people map most, so a flow can be checked before any profile arrives.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum XdmType {
    String,
    Integer,
    Number,
    Boolean,
    Date,
    DateTime,
}

impl fmt::Display for XdmType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdmType::String => "text",
            XdmType::Integer => "whole number",
            XdmType::Number => "number",
            XdmType::Boolean => "yes/no",
            XdmType::Date => "date",
            XdmType::DateTime => "date and time",
        })
    }
}

/// Fields of the XDM Individual Profile class and its common field groups.
const KNOWN: &[(&str, XdmType)] = &[
    ("person.name.firstName", XdmType::String),
    ("person.name.lastName", XdmType::String),
    ("person.name.middleName", XdmType::String),
    ("person.name.fullName", XdmType::String),
    ("person.name.courtesyTitle", XdmType::String),
    ("person.name.suffix", XdmType::String),
    ("person.birthDate", XdmType::Date),
    ("person.birthYear", XdmType::Integer),
    ("person.gender", XdmType::String),
    ("person.maritalStatus", XdmType::String),
    ("personalEmail.address", XdmType::String),
    ("workEmail.address", XdmType::String),
    ("mobilePhone.number", XdmType::String),
    ("homePhone.number", XdmType::String),
    ("workPhone.number", XdmType::String),
    ("homeAddress.street1", XdmType::String),
    ("homeAddress.street2", XdmType::String),
    ("homeAddress.city", XdmType::String),
    ("homeAddress.postalCode", XdmType::String),
    ("homeAddress.stateProvince", XdmType::String),
    ("homeAddress.country", XdmType::String),
    ("homeAddress.countryCode", XdmType::String),
    ("loyalty.points", XdmType::Number),
    ("loyalty.tier", XdmType::String),
    ("loyalty.joinDate", XdmType::DateTime),
    ("loyalty.loyaltyID", XdmType::String),
    ("consents.marketing.email.val", XdmType::String),
    ("consents.marketing.any.val", XdmType::String),
    ("optInOut._channels.email", XdmType::String),
    ("userAccount.createDate", XdmType::DateTime),
    ("userAccount.login", XdmType::String),
    ("_id", XdmType::String),
];

/// The type of a known XDM path.
pub fn known_type(path: &str) -> Option<XdmType> {
    KNOWN.iter().find(|(p, _)| p.eq_ignore_ascii_case(path.trim())).map(|(_, t)| *t)
}
