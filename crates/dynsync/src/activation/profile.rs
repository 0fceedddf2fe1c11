//! Profiles as they stream in: XDM messages in Adobe's streaming-ingestion shape, with the `contactId`
//! identity, profile attributes, and audience memberships under `segmentMembership.ups`.
//!
//! The inlet checks a message's text ([`Profile::check`]) without building it, and keeps the text as it came; the
//! job reads that text into a [`Profile`] ([`Profile::from_message`]). Both give the same verdict on every message
//! (the `xdm_profile` fuzz target holds them to it), so what the inlet accepted the job can read.

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value as Json};
use std::borrow::Cow;
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
    #[error("the message is not JSON: {0}")]
    NotJson(String),
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
    /// Checks that a streaming message's text is a profile: `{"header": …, "body": {"xdmEntity": {…}}}`, or a
    /// bare XDM entity (an object with an `identityMap`), as the raw-data form of streaming ingestion takes it.
    /// Nothing of the message is kept: its members are read past, and only the shape of `identityMap` is looked
    /// at. JSON nested deeper than the job can read (128 levels) is refused here, as the job would refuse it.
    pub fn check(text: &str) -> Result<(), MalformedProfile> {
        let mut reader = serde_json::Deserializer::from_str(text);
        let shape = reader.deserialize_any(MessageShape).map_err(|e| MalformedProfile::NotJson(e.to_string()))?;
        reader.end().map_err(|e| MalformedProfile::NotJson(e.to_string()))?;
        match shape {
            Shape::NotAnObject => Err(MalformedProfile::NotAnObject),
            Shape::Message { body: Some(Some(identity)), .. } | Shape::Message { body: None, bare: Some(identity) } => {
                identity.verdict()
            }
            Shape::Message { .. } => Err(MalformedProfile::NoEntity),
        }
    }

    /// Reads a streaming message (see [`Profile::check`]), keeping its entity without copying it.
    pub fn from_message(message: Json) -> Result<Profile, MalformedProfile> {
        let Json::Object(mut object) = message else { return Err(MalformedProfile::NotAnObject) };
        let entity = match object.remove("body") {
            None if object.contains_key("identityMap") => object,
            Some(Json::Object(mut body)) => match body.remove("xdmEntity") {
                Some(Json::Object(entity)) => entity,
                _ => return Err(MalformedProfile::NoEntity),
            },
            _ => return Err(MalformedProfile::NoEntity),
        };
        Profile::from_entity(entity)
    }

    /// Reads a message's text as [`Profile::from_message`] reads it, keeping of the entity only what `paths`
    /// names: the rest is read past, never built. The profile answers the same for every path it names.
    pub fn read(text: &str, paths: &Paths) -> Result<Profile, MalformedProfile> {
        let mut reader = serde_json::Deserializer::from_str(text);
        let read = de::DeserializeSeed::deserialize(PrunedMessage(paths), &mut reader)
            .map_err(|e| MalformedProfile::NotJson(e.to_string()))?;
        reader.end().map_err(|e| MalformedProfile::NotJson(e.to_string()))?;
        match read {
            None => Err(MalformedProfile::NotAnObject),
            Some((Some(body), _)) => match body {
                Some(entity) => Profile::from_entity(entity),
                None => Err(MalformedProfile::NoEntity),
            },
            Some((None, bare)) if bare.contains_key("identityMap") => Profile::from_entity(bare),
            Some((None, _)) => Err(MalformedProfile::NoEntity),
        }
    }

    /// The profile of an entity whose `identityMap`, if it has one, maps namespaces to lists of ids.
    fn from_entity(entity: Map<String, Json>) -> Result<Profile, MalformedProfile> {
        if let Some(map) = entity.get("identityMap") {
            let map = map.as_object().ok_or_else(|| MalformedProfile::BadIdentityMap(NOT_AN_OBJECT.into()))?;
            for (namespace, ids) in map {
                let valid =
                    ids.as_array().is_some_and(|ids| ids.iter().all(|i| i.get("id").is_some_and(Json::is_string)));
                if !valid {
                    return Err(MalformedProfile::BadIdentityMap(not_a_list(namespace)));
                }
            }
        }
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

const NOT_AN_OBJECT: &str = "it is not an object";

fn not_a_list(namespace: &str) -> String {
    format!("identityMap.{namespace} is not a list of {{\"id\": \"…\"}}")
}

/// What [`Profile::check`] learns of a message. A member given twice counts as JSON reads it: the last one.
enum Shape {
    NotAnObject,
    Message {
        /// `body`: `Some(None)` when it is not an object with an `xdmEntity` object; else the entity's identities.
        body: Option<Option<Identities>>,
        /// The message's own `identityMap`, which makes it a bare entity when it has no `body`.
        bare: Option<Identities>,
    },
}

/// An entity's `identityMap`: absent, not an object, or each namespace (in order of first appearance) and
/// whether its value is a list of `{"id": "…"}`.
#[derive(Default)]
enum Identities {
    #[default]
    Absent,
    NotAnObject,
    Namespaces(Vec<(String, bool)>),
}

impl Identities {
    fn verdict(self) -> Result<(), MalformedProfile> {
        match self {
            Identities::Absent => Ok(()),
            Identities::NotAnObject => Err(MalformedProfile::BadIdentityMap(NOT_AN_OBJECT.into())),
            Identities::Namespaces(namespaces) => match namespaces.into_iter().find(|(_, valid)| !valid) {
                Some((namespace, _)) => Err(MalformedProfile::BadIdentityMap(not_a_list(&namespace))),
                None => Ok(()),
            },
        }
    }
}

/// Runs a visitor that answers for any JSON value: the value's shape for objects, `other` for the rest.
macro_rules! any_value {
    ($visitor:ty, $value:ty, $other:expr) => {
        impl<'de> de::DeserializeSeed<'de> for $visitor {
            type Value = $value;
            fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<$value, D::Error> {
                deserializer.deserialize_any(self)
            }
        }
        impl $visitor {
            fn other<E>(self) -> Result<$value, E> {
                Ok($other)
            }
        }
    };
}

/// Visits of numbers, booleans and null that answer `other()`.
macro_rules! numbers {
    () => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            self.other()
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            self.other()
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            self.other()
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            self.other()
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            self.other()
        }
    };
}

/// Every visit but the object's one answers `other()`: scalars, and lists read past.
macro_rules! not_an_object {
    () => {
        numbers!();
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            self.other()
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            SkipVisitor.visit_seq(seq)?;
            self.other()
        }
    };
}

/// Reads a value past, as `IgnoredAny` does, but through `deserialize_any`, so that JSON's nesting limit and its
/// rules for text apply as they do when the job reads the message.
struct Skip;

impl<'de> de::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Skip, D::Error> {
        deserializer.deserialize_any(SkipVisitor).map(|()| Skip)
    }
}

struct SkipVisitor;

impl SkipVisitor {
    fn other<E>(self) -> Result<(), E> {
        Ok(())
    }
}

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    numbers!();
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Keys are read as text, not passed over, so that an escape JSON text may not hold is refused as the
        // job's reading refuses it.
        while map.next_key::<Key>()?.is_some() {
            map.next_value::<Skip>()?;
        }
        Ok(())
    }
}

/// A map key, borrowed unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }
            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_string())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The last value an object gives for its member `name`, read through `seed`; the other members are read past.
fn last_member<'de, A, S>(mut map: A, name: &str, seed: impl Fn() -> S) -> Result<Option<S::Value>, A::Error>
where
    A: MapAccess<'de>,
    S: de::DeserializeSeed<'de>,
{
    let mut last = None;
    while let Some(Key(key)) = map.next_key()? {
        if key == name {
            last = Some(map.next_value_seed(seed())?);
        } else {
            map.next_value::<Skip>()?;
        }
    }
    Ok(last)
}

/// A whole message.
struct MessageShape;
any_value!(MessageShape, Shape, Shape::NotAnObject);

impl<'de> Visitor<'de> for MessageShape {
    type Value = Shape;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an XDM message")
    }
    not_an_object!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let (mut body, mut bare) = (None, None);
        while let Some(Key(key)) = map.next_key()? {
            match key.as_ref() {
                "body" => body = Some(map.next_value_seed(BodyShape)?),
                "identityMap" => bare = Some(map.next_value_seed(IdentityShape)?),
                _ => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(Shape::Message { body, bare })
    }
}

/// A message's `body`: the identities of its `xdmEntity` when that is an object.
struct BodyShape;
any_value!(BodyShape, Option<Identities>, None);

impl<'de> Visitor<'de> for BodyShape {
    type Value = Option<Identities>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a message body")
    }
    not_an_object!();
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Ok(last_member(map, "xdmEntity", || EntityShape)?.flatten())
    }
}

/// An `xdmEntity`: its identities when it is an object.
struct EntityShape;
any_value!(EntityShape, Option<Identities>, None);

impl<'de> Visitor<'de> for EntityShape {
    type Value = Option<Identities>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an XDM entity")
    }
    not_an_object!();
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Ok(Some(last_member(map, "identityMap", || IdentityShape)?.unwrap_or_default()))
    }
}

/// An `identityMap`: each namespace and whether it lists ids.
struct IdentityShape;
any_value!(IdentityShape, Identities, Identities::NotAnObject);

impl<'de> Visitor<'de> for IdentityShape {
    type Value = Identities;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an identity map")
    }
    not_an_object!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Identities, A::Error> {
        let mut namespaces: Vec<(String, bool)> = Vec::new();
        while let Some(Key(key)) = map.next_key()? {
            let valid = map.next_value_seed(IdsShape)?;
            match namespaces.iter_mut().find(|(namespace, _)| *namespace == key) {
                Some(kept) => kept.1 = valid,
                None => namespaces.push((key.into_owned(), valid)),
            }
        }
        Ok(Identities::Namespaces(namespaces))
    }
}

/// A namespace's value: whether it is a list of objects whose `id` is text.
struct IdsShape;
any_value!(IdsShape, bool, false);

impl<'de> Visitor<'de> for IdsShape {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of ids")
    }
    numbers!();
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        self.other()
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        SkipVisitor.visit_map(map)?;
        self.other()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut valid = true;
        while let Some(id) = seq.next_element_seed(IdShape)? {
            valid &= id;
        }
        Ok(valid)
    }
}

/// One item of a namespace's list: whether it is an object whose `id` (the last given) is text.
struct IdShape;
any_value!(IdShape, bool, false);

impl<'de> Visitor<'de> for IdShape {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an id")
    }
    not_an_object!();
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        Ok(last_member(map, "id", || IsText)?.unwrap_or(false))
    }
}

/// Whether a value is text.
struct IsText;
any_value!(IsText, bool, false);

impl<'de> Visitor<'de> for IsText {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an id")
    }
    numbers!();
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
        SkipVisitor.visit_seq(seq)?;
        self.other()
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        SkipVisitor.visit_map(map)?;
        self.other()
    }
}

/// The parts of a profile a flow reads, as a tree of member names: its identities (`identityMap`), what its
/// mappings name, and its memberships of the flow's audiences. [`Profile::read`] builds only these.
#[derive(Debug, Clone, Default)]
pub struct Paths {
    members: std::collections::HashMap<String, Paths>,
    /// The whole value here is read.
    whole: bool,
}

impl Paths {
    /// The identities, the dotted paths given, and each audience's membership.
    pub fn new<'a>(dotted: impl IntoIterator<Item = &'a str>, audiences: impl IntoIterator<Item = &'a str>) -> Paths {
        let mut paths = Paths::default();
        paths.insert(["identityMap"]);
        for path in dotted {
            paths.insert(path.split('.'));
        }
        for audience in audiences {
            paths.insert(["segmentMembership", "ups", audience]);
        }
        paths
    }

    fn insert<'a>(&mut self, parts: impl IntoIterator<Item = &'a str>) {
        let mut node = self;
        for part in parts {
            node = node.members.entry(part.to_string()).or_default();
        }
        node.whole = true;
    }
}

/// A value, kept whole where the paths say so, else as an object of the members they name; `None` for what is
/// not kept (a value the paths go through that is not an object).
struct Pruned<'p>(&'p Paths);

impl<'de> de::DeserializeSeed<'de> for Pruned<'_> {
    type Value = Option<Json>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<Json>, D::Error> {
        if self.0.whole {
            return de::Deserialize::deserialize(deserializer).map(Some);
        }
        deserializer.deserialize_any(self)
    }
}

impl Pruned<'_> {
    fn other<E>(self) -> Result<Option<Json>, E> {
        Ok(None)
    }

    /// Reads the value of member `key` into `kept` when the paths name it (the last given wins, in the place of
    /// the first), and past it when they do not.
    fn keep<'de, A: MapAccess<'de>>(
        &self,
        map: &mut A,
        key: Cow<'_, str>,
        kept: &mut Map<String, Json>,
    ) -> Result<(), A::Error> {
        let Some(paths) = self.0.members.get(key.as_ref()) else {
            return map.next_value::<Skip>().map(|Skip| ());
        };
        match map.next_value_seed(Pruned(paths))? {
            Some(value) => kept.insert(key.into_owned(), value),
            None => kept.remove(key.as_ref()),
        };
        Ok(())
    }
}

impl<'de> Visitor<'de> for Pruned<'_> {
    type Value = Option<Json>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a profile's value")
    }
    not_an_object!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Json>, A::Error> {
        let mut kept = Map::new();
        while let Some(Key(key)) = map.next_key()? {
            self.keep(&mut map, key, &mut kept)?;
        }
        Ok(Some(Json::Object(kept)))
    }
}

/// A whole message: `None` when it is not an object; else its `body`'s entity (`Some(None)` when the body holds
/// no entity object) and the message itself read as a bare entity.
struct PrunedMessage<'p>(&'p Paths);
type MessageRead = Option<(Option<Option<Map<String, Json>>>, Map<String, Json>)>;

any_value!(PrunedMessage<'_>, MessageRead, None);

impl<'de> Visitor<'de> for PrunedMessage<'_> {
    type Value = MessageRead;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an XDM message")
    }
    not_an_object!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MessageRead, A::Error> {
        let (mut body, mut bare) = (None, Map::new());
        let as_bare = Pruned(self.0);
        while let Some(Key(key)) = map.next_key()? {
            if key == "body" {
                // The body's entity, if it has one; as a bare entity's member, the body would make it no profile.
                let entity = map.next_value_seed(PrunedBody(self.0))?;
                body = Some(entity);
                continue;
            }
            as_bare.keep(&mut map, key, &mut bare)?;
        }
        Ok(Some((body, bare)))
    }
}

/// A message's `body`: its `xdmEntity`, kept as the paths say, when that is an object.
struct PrunedBody<'p>(&'p Paths);

any_value!(PrunedBody<'_>, Option<Map<String, Json>>, None);

impl<'de> Visitor<'de> for PrunedBody<'_> {
    type Value = Option<Map<String, Json>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a message body")
    }
    not_an_object!();
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let entity = last_member(map, "xdmEntity", || Pruned(self.0))?.flatten();
        Ok(match entity {
            Some(Json::Object(kept)) => Some(kept),
            _ => None,
        })
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
    fn a_profile_read_for_a_flow_answers_as_the_whole_profile_for_what_the_flow_names() {
        let paths = Paths::new(["person.name.firstName", "person.age", "loyalty"], ["aud-1", "aud-9"]);
        let texts = [
            message().to_string(),
            r#"{"identityMap": {"contactId": [{"id": "c"}]}, "person": {"name": {"firstName": "A"}, "age": 3},
                "loyalty": {"tier": "gold"}, "other": [1, {"a": 2}],
                "segmentMembership": {"ups": {"aud-1": {"status": "exited"}, "aud-2": {"status": "realized"}}}}"#
                .to_string(),
            r#"{"identityMap": {}, "person": {"name": {"firstName": "A"}}, "person": 5}"#.to_string(),
            r#"{"identityMap": {}, "person": 5, "person": {"age": 7}}"#.to_string(),
            r#"{"identityMap": {}, "loyalty": 1, "loyalty": null}"#.to_string(),
            r#"{"body": {"xdmEntity": {"identityMap": {}, "loyalty": [1]}}, "person": {"age": 1}}"#.to_string(),
        ];
        for text in &texts {
            let full = Profile::from_message(serde_json::from_str(text).unwrap()).unwrap();
            let pruned = Profile::read(text, &paths).unwrap();
            for path in ["person.name.firstName", "person.age", "loyalty", "identityMap"] {
                assert_eq!(pruned.value(path), full.value(path), "{path} in {text}");
            }
            assert_eq!(pruned.identity(CONTACT_NAMESPACE), full.identity(CONTACT_NAMESPACE));
            let wanted = |m: &(&str, MembershipStatus)| m.0 == "aud-1" || m.0 == "aud-9";
            let (p, f): (Vec<_>, Vec<_>) =
                (pruned.memberships().collect(), full.memberships().filter(wanted).collect());
            assert_eq!(p, f, "{text}");
            // What the flow does not name is not kept.
            assert_eq!(pruned.value("other"), None);
        }
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

    /// The verdict of reading a message's text into a profile, as the job does.
    fn read(text: &str) -> Result<(), MalformedProfile> {
        let message: Json = serde_json::from_str(text).map_err(|e| MalformedProfile::NotJson(e.to_string()))?;
        Profile::from_message(message).map(|_| ())
    }

    #[test]
    fn the_inlet_s_check_of_a_message_s_text_agrees_with_the_job_s_reading() {
        let deep = format!("{{\"identityMap\": {{}}, \"x\": {}1{}}}", "[".repeat(200), "]".repeat(200));
        let cases = [
            message().to_string(),
            r#"{"identityMap": {"contactId": [{"id": "a"}]}, "person": {"name": "Ann"}}"#.into(),
            r#"{"body": {"xdmEntity": {"identityMap": {"email": [{"id": 1}]}}}}"#.into(),
            r#"{"body": {"xdmEntity": {"identityMap": {"email": [{"id": "a", "id": 2}]}}}}"#.into(),
            r#"{"body": {"xdmEntity": {"identityMap": {"email": [{"id": 2, "id": "a"}]}}}}"#.into(),
            r#"{"body": {"xdmEntity": {"identityMap": {"a": [], "b": "x", "a": 3}}}}"#.into(),
            r#"{"body": {"xdmEntity": {"identityMap": [1]}}}"#.into(),
            r#"{"body": {"xdmEntity": 1, "xdmEntity": {}}}"#.into(),
            r#"{"body": {"xdmEntity": {}, "xdmEntity": []}}"#.into(),
            r#"{"body": 1, "identityMap": {}}"#.into(),
            r#"{"identityMap": null}"#.into(),
            r#"{"header": {}}"#.into(),
            r#"{"id\u0065ntityMap": {"c\"x": [{"\u0069d": "e"}, {}]}}"#.into(),
            r#"{"identityMap": {}, "x": {"\ud800": 1}}"#.into(),
            r#"{"identityMap": {}, "x": ["\udc00"]}"#.into(),
            "[1, 2]".into(),
            "\"text\"".into(),
            "{\"body\": ".into(),
            "{} {}".into(),
            deep,
        ];
        for text in &cases {
            let (checked, read) = (Profile::check(text), read(text));
            match (&checked, &read) {
                (Err(MalformedProfile::NotJson(_)), Err(MalformedProfile::NotJson(_))) => {}
                _ => assert_eq!(checked, read, "{text}"),
            }
        }
        assert_eq!(Profile::check(&cases[0]), Ok(()));
        // The job's reading of only what a flow names agrees too.
        let paths = Paths::new(["person.name.firstName", "x"], ["aud-1"]);
        for text in &cases {
            match (Profile::read(text, &paths), read(text)) {
                (Err(MalformedProfile::NotJson(_)), Err(MalformedProfile::NotJson(_))) => {}
                (pruned, full) => assert_eq!(pruned.map(|_| ()), full, "{text}"),
            }
        }
        assert!(
            matches!(Profile::check(&cases[2]), Err(MalformedProfile::BadIdentityMap(m)) if m.contains("identityMap.email"))
        );
    }
}
