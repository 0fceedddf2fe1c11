//! `POST /leads/{flow}`: a Partner Center lead from the internet, read, validated, stored as JSON and read again
//! by the lead job.
#![no_main]

use dynsync::leads::partner_center::{Email, Lead, LeadSource, PartnerCenterLead, Phone};
use libfuzzer_sys::fuzz_target;
use serde_json::Value as Json;

fn trimmed_and_not_blank(field: &str, text: Option<&str>) {
    if let Some(t) = text {
        assert!(!t.is_empty() && t.trim() == t, "{field} is blank or untrimmed: {t:?}");
    }
}

fuzz_target!(init: dynsync_fuzz::report_stack_overflows(), |data: &[u8]| {
    let posted = PartnerCenterLead::from_json(data);
    let lead = Lead::from_json(data);
    match (&posted, &lead) {
        (Ok(p), _) => assert_eq!(p.validate(), lead, "Lead::from_json is from_json then validate"),
        (Err(a), Err(b)) => assert_eq!(a, b),
        (Err(_), Ok(_)) => panic!("a lead validated from a body that does not read"),
    }
    if let Err(problems) = &lead {
        assert!(!problems.problems.is_empty(), "a refusal names at least one problem");
        assert!(problems.problems.iter().all(|p| !p.field.is_empty() && !p.message.is_empty()));
        let _ = problems.to_string();
    }
    let Ok(posted) = posted else { return };
    let _ = (posted.details(), posted.is_test(), posted.source());

    // The wire struct serializes to what it reads back.
    let written = serde_json::to_vec(&posted).expect("a posted lead serializes");
    assert_eq!(PartnerCenterLead::from_json(&written).as_ref(), Ok(&posted), "{}", String::from_utf8_lossy(&written));

    let Ok(lead) = lead else { return };
    // The intake stores the body as a JSON value; the job reads `value.to_string()` again: the same lead.
    let stored: Json = serde_json::from_slice(data).expect("a lead's body is JSON");
    assert_eq!(Lead::from_json(stored.to_string().as_bytes()).as_ref(), Ok(&lead), "the stored lead reads otherwise");

    // A validated lead: someone to contact, every text trimmed and never blank, parsed values stable.
    assert!(
        lead.email().is_some() || lead.phone().is_some() || lead.first_name().is_some() || lead.last_name().is_some()
    );
    for (field, text) in [
        ("first name", lead.first_name()),
        ("last name", lead.last_name()),
        ("company", lead.company()),
        ("title", lead.title()),
        ("offer title", lead.offer_title()),
        ("description", lead.description()),
        ("email", lead.email().map(Email::as_str)),
        ("phone", lead.phone().map(Phone::as_str)),
    ] {
        trimmed_and_not_blank(field, text);
    }
    if let Some(email) = lead.email() {
        assert_eq!(Email::parse(email.as_str()).as_ref(), Ok(email));
        let _ = email.normalized();
    }
    if let Some(phone) = lead.phone() {
        assert_eq!(Phone::parse(phone.as_str()).as_ref(), Ok(phone));
        assert!(!phone.digits().is_empty());
    }
    if let Some(country) = lead.country() {
        assert!(!country.name.is_empty());
    }
    if let Some(action) = lead.action() {
        let _ = (action.code(), action.label());
    }
    let _ = (lead.offer(), lead.is_test(), serde_json::to_string(&lead).expect("a lead serializes"));

    // `LeadSource` as written reads back as itself (`Source-Action|publisher.offer`); one that names nothing (`-`)
    // writes as blank, which is no source.
    if let Some(Json::String(text)) = stored.get("LeadSource").or(stored.get("leadSource")).or(stored.get("lead_source"))
        && let Some(source) = LeadSource::parse(text, None)
    {
        let written = source.to_string();
        let expected = Some(&source).filter(|_| !written.is_empty());
        assert_eq!(LeadSource::parse(&written, None).as_ref(), expected, "{text:?} written as {written:?}");
    }
});
