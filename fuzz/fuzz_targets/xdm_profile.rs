//! `POST /collection/{inletId}` and `/collection/batch/{inletId}`: bytes from the internet, checked as text by
//! the inlet, stored as they came, and read into an XDM profile by the activation job.
#![no_main]

use dynsync::activation::profile::{CONTACT_NAMESPACE, MalformedProfile, Paths, Profile};
use libfuzzer_sys::fuzz_target;
use serde_json::Value as Json;

fuzz_target!(init: dynsync_fuzz::report_stack_overflows(), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let checked = Profile::check(text);
    // The API accepts with `check` and stores the text; the job reads it with `from_message`: they must agree.
    let Ok(message) = serde_json::from_str::<Json>(text) else {
        assert!(matches!(checked, Err(MalformedProfile::NotJson(_))), "text that is not JSON was {checked:?}");
        return;
    };
    let read = Profile::from_message(message.clone());
    assert_eq!(checked.is_ok(), read.is_ok(), "check and from_message disagree: {checked:?} / {read:?}");
    if let (Err(a), Err(b)) = (&checked, &read) {
        assert_eq!(a, b);
        let _ = a.to_string();
    }
    let Ok(profile) = read else { return };

    // The job reads only what its flow names: the same answers for those paths as the whole profile gives.
    let named = ["person.name.firstName", "person", "a", "a.b"];
    let paths = Paths::new(named, ["aud-1", "a"]);
    let pruned = Profile::read(text, &paths).expect("what the whole reading takes, the pruned one takes");
    for path in named.iter().chain(&["identityMap"]) {
        assert_eq!(pruned.value(path), profile.value(path), "{path}");
    }
    assert_eq!(pruned.identity(CONTACT_NAMESPACE), profile.identity(CONTACT_NAMESPACE));
    let listed: Vec<_> = profile.memberships().filter(|(a, _)| *a == "aud-1" || *a == "a").collect();
    assert_eq!(pruned.memberships().collect::<Vec<_>>(), listed);

    // A wrapped message's entity, posted bare, is the same profile when it has an identityMap.
    if let Some(entity) = message.get("body").and_then(|b| b.get("xdmEntity"))
        && entity.get("identityMap").is_some()
        && entity.get("body").is_none()
    {
        assert_eq!(Profile::from_message(entity.clone()).as_ref(), Ok(&profile));
    }

    // Identities: the one returned is one of the namespace's ids.
    for namespace in [CONTACT_NAMESPACE, "contactid", "email", "ECID", ""] {
        if let Some(id) = profile.identity(namespace) {
            let map = profile.value("identityMap").and_then(Json::as_object).expect("an identity has a map");
            let ids = map.iter().find(|(n, _)| n.eq_ignore_ascii_case(namespace)).expect("its namespace").1;
            assert!(ids.as_array().unwrap().iter().any(|i| i["id"].as_str() == Some(id)));
        }
    }

    // Values at every dotted path the entity has, and at paths it does not.
    let entity = message.get("body").and_then(|b| b.get("xdmEntity")).unwrap_or(&message);
    let mut paths = Vec::new();
    collect_paths(entity, String::new(), 0, &mut paths);
    for path in &paths {
        // A key with a dot in it is not reachable by a dotted path; every other path finds its value.
        if !path.1 {
            assert_eq!(profile.value(&path.0), Some(path.2), "{}", path.0);
        }
    }
    for path in ["", ".", "..", "person.name.firstName", "segmentMembership.ups", "a..b"] {
        let _ = profile.value(path);
    }

    // Memberships: each listed audience is under segmentMembership.ups with that status.
    let ups = profile.value("segmentMembership.ups").and_then(Json::as_object);
    for (audience, status) in profile.memberships() {
        let listed = ups.and_then(|u| u.get(audience)).and_then(|m| m["status"].as_str()).expect("listed");
        assert!(listed.eq_ignore_ascii_case(&status.to_string()), "{audience}: {listed} read as {status}");
    }
});

/// Dotted paths to the entity's values: (path, whether a key on the way has a dot, the value).
fn collect_paths<'j>(value: &'j Json, prefix: String, depth: usize, out: &mut Vec<(String, bool, &'j Json)>) {
    collect(value, prefix, false, depth, out);
}

fn collect<'j>(value: &'j Json, prefix: String, dotted: bool, depth: usize, out: &mut Vec<(String, bool, &'j Json)>) {
    if depth > 8 || out.len() > 64 {
        return;
    }
    if let Json::Object(map) = value {
        for (key, child) in map {
            let path = if depth == 0 { key.clone() } else { format!("{prefix}.{key}") };
            let dotted = dotted || key.contains('.');
            out.push((path.clone(), dotted, child));
            collect(child, path, dotted, depth + 1, out);
        }
    }
}
