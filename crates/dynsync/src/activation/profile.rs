//! Profiles as they stream in: XDM messages in Adobe's streaming-ingestion shape, with the `contactId`
//! identity, profile attributes, and audience memberships under `segmentMembership.ups`.

use serde_json::{Map, Value as Json};
use std::fmt;

/// The identity namespace that names the Dynamics contact a profile belongs to.
pub const CONTACT_NAMESPACE: &str = "contactId";

/// A profile's XDM entity: the part of a streaming message that holds the profile itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    entity: Map<String, Json>,
}

/// Why a message is not a profile: said to the sender, with the message's index in its batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedProfile {
    #[error("the message is not a JSON object; send {{\"header\": …, \"body\": {{\"xdmEntity\": {{…}}}}}}")]
    NotAnObject,
    #[error("the message has no body.xdmEntity object; put the profile's fields under body.xdmEntity")]
    NoEntity,
    #[error("identityMap must map namespaces to lists of {{\"id\": …}}; {0}")]
    BadIdentityMap(String),
}

/// An audience membership status, as Adobe's segmentation writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipStatus {
    Realized,
    Existing,
    Exited,
}

impl MembershipStatus {
    fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "realized" => Some(Self::Realized),
            "existing" => Some(Self::Existing),
            "exited" => Some(Self::Exited),
            _ => None,
        }
    }
}

/// The entity of a message: `body.xdmEntity`, or the message itself when it is a bare entity.
fn entity_of(message: &Json) -> Result<&Map<String, Json>, MalformedProfile> {
    let object = message.as_object().ok_or(MalformedProfile::NotAnObject)?;
    match object.get("body") {
        Some(body) => body.get("xdmEntity").and_then(Json::as_object).ok_or(MalformedProfile::NoEntity),
        None if object.contains_key("identityMap") => Ok(object),
        None => Err(MalformedProfile::NoEntity),
    }
}

impl fmt::Display for MembershipStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Realized => "realized",
            Self::Existing => "existing",
            Self::Exited => "exited",
        })
    }
}

impl Profile {
    /// Checks that a streaming message is a profile: `{"header": …, "body": {"xdmEntity": {…}}}`, or a bare XDM
    /// entity (an object with an `identityMap`), as the raw-data form of streaming ingestion takes it.
    pub fn validate(message: &Json) -> Result<(), MalformedProfile> {
        let entity = entity_of(message)?;
        if let Some(map) = entity.get("identityMap") {
            let map = map.as_object().ok_or_else(|| MalformedProfile::BadIdentityMap("it is not an object".into()))?;
            for (namespace, ids) in map {
                let valid =
                    ids.as_array().is_some_and(|ids| ids.iter().all(|i| i.get("id").is_some_and(Json::is_string)));
                if !valid {
                    return Err(MalformedProfile::BadIdentityMap(format!(
                        "identityMap.{namespace} is not a list of {{\"id\": \"…\"}}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Reads a streaming message (see [`Profile::validate`]), keeping its entity without copying it.
    pub fn from_message(message: Json) -> Result<Profile, MalformedProfile> {
        Self::validate(&message)?;
        let Json::Object(mut object) = message else { return Err(MalformedProfile::NotAnObject) };
        let entity = match object.remove("body") {
            None => object,
            Some(Json::Object(mut body)) => match body.remove("xdmEntity") {
                Some(Json::Object(entity)) => entity,
                _ => return Err(MalformedProfile::NoEntity),
            },
            Some(_) => return Err(MalformedProfile::NoEntity),
        };
        Ok(Profile { entity })
    }

    /// The profile's id in a namespace: the primary one when there are several.
    pub fn identity(&self, namespace: &str) -> Option<&str> {
        let map = self.entity.get("identityMap")?.as_object()?;
        let ids = map.iter().find(|(n, _)| n.eq_ignore_ascii_case(namespace))?.1.as_array()?;
        let primary = ids.iter().find(|i| i.get("primary").and_then(Json::as_bool) == Some(true));
        primary.or(ids.first())?.get("id")?.as_str()
    }

    /// The value at a dotted XDM path (`person.name.firstName`), if the profile has one.
    pub fn value(&self, path: &str) -> Option<&Json> {
        let mut parts = path.split('.');
        let mut current = self.entity.get(parts.next()?)?;
        for part in parts {
            current = current.as_object()?.get(part)?;
        }
        Some(current)
    }

    /// The audiences the profile's `segmentMembership.ups` lists, with their status.
    pub fn memberships(&self) -> impl Iterator<Item = (&str, MembershipStatus)> {
        self.value("segmentMembership.ups").and_then(Json::as_object).into_iter().flatten().filter_map(
            |(audience, membership)| {
                let status = membership.get("status").and_then(Json::as_str).and_then(MembershipStatus::parse)?;
                Some((audience.as_str(), status))
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message() -> Json {
        json!({
            "header": {"schemaRef": {"id": "https://ns.adobe.com/acme/schemas/profile", "contentType": "application/vnd.adobe.xed-full+json;version=1"}},
            "body": {"xdmEntity": {
                "identityMap": {
                    "email": [{"id": "ann@example.com"}],
                    "contactId": [{"id": "other"}, {"id": "2b6c2f6e-0000-4000-8000-000000000001", "primary": true}]
                },
                "person": {"name": {"firstName": "Ann", "lastName": null}},
                "segmentMembership": {"ups": {
                    "aud-1": {"status": "realized", "lastQualificationTime": "2026-11-20T10:00:00Z"},
                    "aud-2": {"status": "exited"},
                    "aud-3": {"status": "unknown"}
                }}
            }}
        })
    }

    #[test]
    fn reads_the_streaming_message_shape() {
        let profile = Profile::from_message(message()).unwrap();
        assert_eq!(profile.identity(CONTACT_NAMESPACE), Some("2b6c2f6e-0000-4000-8000-000000000001"));
        assert_eq!(profile.identity("ECID"), None);
        assert_eq!(profile.value("person.name.firstName"), Some(&json!("Ann")));
        assert_eq!(profile.value("person.name.lastName"), Some(&Json::Null));
        assert_eq!(profile.value("person.birthDate"), None);
        let memberships: Vec<_> = profile.memberships().collect();
        assert_eq!(memberships, [("aud-1", MembershipStatus::Realized), ("aud-2", MembershipStatus::Exited)]);
    }

    #[test]
    fn a_bare_entity_is_a_profile_too() {
        let entity = message()["body"]["xdmEntity"].clone();
        assert_eq!(Profile::from_message(entity).unwrap(), Profile::from_message(message()).unwrap());
    }

    #[test]
    fn a_number_in_a_profile_is_the_same_when_the_job_reads_the_stored_message_back() {
        // Found by fuzz/run (xdm_profile): the API stores `message.to_string()` and the job parses it again; a
        // float parsed a bit off came back another bit off.
        let text =
            r#"{"identityMap": {"Id": [{"id": "00000002"}]}, "0ersohp": {"ups": {"aud-1": {"sttus":6.566663e66}}}}"#;
        let message: Json = serde_json::from_str(text).unwrap();
        let stored: Json = serde_json::from_str(&message.to_string()).unwrap();
        assert_eq!(Profile::from_message(stored).unwrap(), Profile::from_message(message).unwrap());
        let value: Json = serde_json::from_str("6.566663e66").unwrap();
        assert_eq!(value.as_f64(), Some(6.566663e66));
    }

    #[test]
    fn malformed_messages_say_what_to_send() {
        assert_eq!(Profile::from_message(json!([1])), Err(MalformedProfile::NotAnObject));
        assert_eq!(Profile::from_message(json!({"body": {}})), Err(MalformedProfile::NoEntity));
        let bad = json!({"identityMap": {"contactId": "abc"}});
        assert!(matches!(Profile::from_message(bad), Err(MalformedProfile::BadIdentityMap(_))));
    }
}
