//! Amazon SNS message signatures, checked as AWS documents them ("Verifying the signatures of Amazon SNS
//! messages"). Pure: no network and no clock but a `now` passed in; the caller brings the signing certificate,
//! fetched from AWS or pinned on the flow.
//!
//! The contract:
//! - [`Envelope::read`] reads an SNS message — a JSON object with `Type` — into the fields SNS signs and its
//!   signature. An object without `Type` is no envelope (`None`): it is an event sent by SNS "raw message delivery",
//!   which carries no signature, and the caller decides what lets it in.
//! - The string SNS signs ([`Envelope::string_to_sign`]) is each of these fields, in this byte order, as
//!   `Key\nValue\n`: for a `Notification`, Message, MessageId, Subject (only when the message has one), Timestamp,
//!   TopicArn, Type; for a `SubscriptionConfirmation` or an `UnsubscribeConfirmation`, Message, MessageId,
//!   SubscribeURL, Timestamp, Token, TopicArn, Type. Each must be there, as text. Another `Type` is refused: it
//!   cannot be checked.
//! - `Signature` is base64; `SignatureVersion` "1" is RSA PKCS#1 v1.5 with SHA-1, "2" with SHA-256. Any other
//!   version is refused, and so is a message without `Signature`, `SignatureVersion` or `SigningCertURL`.
//! - `SigningCertURL` must be an Amazon SNS certificate address ([`is_sns_certificate_address`]: https, host
//!   `sns.<region>.amazonaws.com` or `sns.<region>.amazonaws.com.cn`, the default port, a path ending `.pem`). It is
//!   checked when the message is read, before anything is fetched, so that a forged message can neither make
//!   dynsync call an address a stranger chose nor bring a certificate of the stranger's own.
//! - [`SigningCertificate::from_pem`] reads a certificate: one PEM X.509 certificate with an RSA key of at least
//!   2048 bits. [`Envelope::verify`] checks a message with one certificate, [`Envelope::verify_pinned`] with any of
//!   a flow's pinned ones.
//!
//! Why a certificate is trusted for where it comes from rather than for its chain: AWS's instructions are to check
//! that `SigningCertURL` is an SNS address and to fetch it over HTTPS, whose server certificate proves that the host
//! is AWS's; what it serves is then AWS's word, and a CA chain would prove nothing more. A pinned certificate is
//! the user's word instead, as a SendGrid verification key is.

use super::at;
use crate::text::{clip, describe};
use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::fmt;
use url::Url;
use x509_parser::public_key::PublicKey;

/// The smallest RSA key a signing certificate may have: Amazon SNS's are 2048 bits or more.
pub const MIN_KEY_BITS: usize = 2048;

/// The kinds of SNS message, each signed over its own fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Notification,
    SubscriptionConfirmation,
    UnsubscribeConfirmation,
}

impl MessageType {
    pub const ALL: [MessageType; 3] =
        [MessageType::Notification, MessageType::SubscriptionConfirmation, MessageType::UnsubscribeConfirmation];

    /// As SNS writes it in `Type`.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Notification => "Notification",
            MessageType::SubscriptionConfirmation => "SubscriptionConfirmation",
            MessageType::UnsubscribeConfirmation => "UnsubscribeConfirmation",
        }
    }

    /// The fields SNS signs, in the order it signs them; a notification's `Subject` only when it has one.
    fn signed_fields(self) -> &'static [&'static str] {
        match self {
            MessageType::Notification => &["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"],
            MessageType::SubscriptionConfirmation | MessageType::UnsubscribeConfirmation => {
                &["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
            }
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How SNS signed a message: its `SignatureVersion`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureVersion {
    /// "1": RSA PKCS#1 v1.5 with SHA-1, SNS's default.
    Sha1,
    /// "2": RSA PKCS#1 v1.5 with SHA-256.
    Sha256,
}

impl SignatureVersion {
    fn parse(text: &str) -> Option<SignatureVersion> {
        match text {
            "1" => Some(SignatureVersion::Sha1),
            "2" => Some(SignatureVersion::Sha256),
            _ => None,
        }
    }

    /// As SNS writes it in `SignatureVersion`.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureVersion::Sha1 => "1",
            SignatureVersion::Sha256 => "2",
        }
    }

    fn algorithm(self) -> &'static dyn VerificationAlgorithm {
        match self {
            SignatureVersion::Sha1 => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            SignatureVersion::Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        }
    }
}

/// An SNS message's signed fields, its signature, and where its signing certificate is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub message_type: MessageType,
    /// The fields SNS signed, in its order, with their values.
    signed: Vec<(&'static str, String)>,
    signature: Vec<u8>,
    pub version: SignatureVersion,
    /// An Amazon SNS certificate address, checked.
    pub certificate_url: Url,
}

impl Envelope {
    /// Reads the envelope of an SNS message; `None` for a body that has no `Type` (raw message delivery, or not
    /// SNS's at all: the format's parser says which).
    pub fn read(body: &Value) -> Result<Option<Envelope>, SnsError> {
        let Some(type_value) = at(body, &["Type"]) else { return Ok(None) };
        let message_type = MessageType::ALL
            .into_iter()
            .find(|t| type_value.as_str() == Some(t.as_str()))
            .ok_or_else(|| SnsError::UnknownType { given: describe(type_value) })?;
        let text = |field: &'static str| match at(body, &[field]) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(other) => Err(SnsError::NotText { field, found: describe(other) }),
        };
        let required = |field: &'static str| text(field)?.ok_or(SnsError::Missing { field, message_type });
        let signature = required("Signature")?;
        let version = required("SignatureVersion")?;
        let url = required("SigningCertURL")?;
        let version = SignatureVersion::parse(&version)
            .ok_or_else(|| SnsError::UnknownVersion { given: clip(&version, 40).into_owned() })?;
        let certificate_url = Url::parse(&url)
            .ok()
            .filter(is_sns_certificate_address)
            .ok_or_else(|| SnsError::NotSnsCertificateAddress { given: clip(&url, 200).into_owned() })?;
        let signature = BASE64.decode(&signature).map_err(|e| SnsError::MalformedSignature { why: e.to_string() })?;
        let mut signed = Vec::new();
        for &field in message_type.signed_fields() {
            match text(field)? {
                Some(value) => signed.push((field, value)),
                None if field == "Subject" => {}
                None => return Err(SnsError::Missing { field, message_type }),
            }
        }
        Ok(Some(Envelope { message_type, signed, signature, version, certificate_url }))
    }

    /// The text SNS signed: each signed field as `Key\nValue\n`, in SNS's order.
    pub fn string_to_sign(&self) -> String {
        let mut text = String::new();
        for (key, value) in &self.signed {
            for part in [key, "\n", value, "\n"] {
                text.push_str(part);
            }
        }
        text
    }

    /// Checks the signature with `certificate`'s key.
    pub fn verify(&self, certificate: &SigningCertificate) -> Result<(), SnsError> {
        UnparsedPublicKey::new(self.version.algorithm(), &certificate.key)
            .verify(self.string_to_sign().as_bytes(), &self.signature)
            .map_err(|_| SnsError::Mismatch { url: self.certificate_url.clone() })
    }

    /// Checks the signature with the key of any of `pinned`, the certificates a flow trusts instead of fetching.
    pub fn verify_pinned(&self, pinned: &[SigningCertificate]) -> Result<(), SnsError> {
        match pinned.iter().any(|certificate| self.verify(certificate).is_ok()) {
            true => Ok(()),
            false => Err(SnsError::MatchesNoPinned { count: pinned.len(), url: self.certificate_url.clone() }),
        }
    }
}

/// An SNS message that cannot be proved to be SNS's. It is refused, and nothing of it is kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnsError {
    #[error(
        "its `Type` is {given}, not a message Amazon SNS signs (Notification, SubscriptionConfirmation, \
         UnsubscribeConfirmation), so it cannot be checked and is refused; check that this inlet's address was given \
         to the topic's SNS subscription and to nothing else"
    )]
    UnknownType { given: String },
    #[error(
        "the Amazon SNS {message_type} has no `{field}`: SNS signs every message and gives it with every \
         {message_type}, so this one is not SNS's, or not whole; check that this inlet's address was given to the \
         topic's SNS subscription and to nothing else"
    )]
    Missing { field: &'static str, message_type: MessageType },
    #[error("its `{field}` is {found}, not text: Amazon SNS sends every field it signs as text, so this is not SNS's")]
    NotText { field: &'static str, found: String },
    #[error(
        "its `SignatureVersion` is '{given}', not one dynsync checks: Amazon SNS signs with version 1 (RSA with \
         SHA-1) or 2 (RSA with SHA-256); set the topic's SignatureVersion attribute to 1 or 2"
    )]
    UnknownVersion { given: String },
    #[error("its `Signature` is not base64 ({why}): Amazon SNS gives its signature in base64, so this is not SNS's")]
    MalformedSignature { why: String },
    #[error(
        "its `SigningCertURL` '{given}' is not an Amazon SNS certificate address \
         (https://sns.<region>.amazonaws.com/….pem): the certificate is not fetched, so that dynsync never visits an \
         address a stranger chose, and the message is refused"
    )]
    NotSnsCertificateAddress { given: String },
    #[error(
        "the Amazon SNS signature does not match this message and the certificate at {url}: the message was not \
         signed by SNS, or was changed on the way"
    )]
    Mismatch { url: Url },
    #[error(
        "the Amazon SNS signature matches none of the {count} certificates pinned on the flow (snsCertificates): the \
         message was not signed by SNS, or was changed on the way — or SNS signs with a new certificate now: if so, \
         pin the one at {url}, or remove snsCertificates to have dynsync fetch it"
    )]
    MatchesNoPinned { count: usize, url: Url },
}

/// `https://sns.<region>.amazonaws.com` (or `.amazonaws.com.cn`), on the default port, with no user or password.
pub fn is_sns_address(url: &Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let region = host
        .strip_prefix("sns.")
        .and_then(|rest| rest.strip_suffix(".amazonaws.com").or_else(|| rest.strip_suffix(".amazonaws.com.cn")));
    url.scheme() == "https"
        && url.port().is_none()
        && url.username().is_empty()
        && url.password().is_none()
        && region.is_some_and(is_region)
}

/// An address SNS serves its signing certificates at: an SNS address whose path ends `.pem`, with no query.
pub fn is_sns_certificate_address(url: &Url) -> bool {
    is_sns_address(url) && url.path().ends_with(".pem") && url.query().is_none() && url.fragment().is_none()
}

/// An AWS region's name — `us-west-2`, `cn-north-1`, `us-gov-west-1` — and not another AWS host that starts with
/// `sns.`, such as an S3 bucket named so (`sns.s3-us-west-2.amazonaws.com`).
fn is_region(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    let word = |part: &&str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase());
    let number = |part: &&str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1].iter().all(word)
        && parts.last().is_some_and(number)
}

/// The RSA key of an Amazon SNS signing certificate, with the certificate's dates.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningCertificate {
    /// The public key as PKCS#1 DER (`RSAPublicKey`).
    key: Vec<u8>,
    pub bits: usize,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

impl fmt::Debug for SigningCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningCertificate(RSA {} bits, {} to {})", self.bits, self.not_before, self.not_after)
    }
}

impl SigningCertificate {
    /// Reads one PEM X.509 certificate with an RSA key of at least [`MIN_KEY_BITS`].
    pub fn from_pem(text: &[u8]) -> Result<SigningCertificate, CertificateError> {
        let blocks = pem::parse_many(text).map_err(|e| CertificateError::NotPem { why: e.to_string() })?;
        let block = match blocks.as_slice() {
            [one] => one,
            [] => return Err(CertificateError::NotPem { why: "there is no -----BEGIN CERTIFICATE----- line".into() }),
            several => return Err(CertificateError::SeveralBlocks { count: several.len() }),
        };
        if block.tag() != "CERTIFICATE" {
            return Err(CertificateError::NotCertificate { label: clip(block.tag(), 40).into_owned() });
        }
        let (_, certificate) = x509_parser::parse_x509_certificate(block.contents())
            .map_err(|e| CertificateError::NotX509 { why: e.to_string() })?;
        let info = certificate.public_key();
        let modulus = match info.parsed() {
            Ok(PublicKey::RSA(rsa)) => rsa.modulus,
            Ok(PublicKey::EC(_)) => return Err(CertificateError::NotRsa { kind: "an elliptic-curve (EC)" }),
            Ok(PublicKey::DSA(_)) => return Err(CertificateError::NotRsa { kind: "a DSA" }),
            Ok(_) => return Err(CertificateError::NotRsa { kind: "another kind of" }),
            Err(e) => return Err(CertificateError::NotX509 { why: format!("its public key does not read: {e}") }),
        };
        let bits = rsa_bits(modulus);
        if bits < MIN_KEY_BITS {
            return Err(CertificateError::WeakKey { bits });
        }
        let validity = certificate.validity();
        let time = |seconds: i64| DateTime::from_timestamp(seconds, 0).unwrap_or(DateTime::<Utc>::MIN_UTC);
        Ok(SigningCertificate {
            key: info.subject_public_key.data.to_vec(),
            bits,
            not_before: time(validity.not_before.timestamp()),
            not_after: time(validity.not_after.timestamp()),
        })
    }

    /// Refuses a certificate used outside its dates.
    pub fn check_dates(&self, now: DateTime<Utc>) -> Result<(), CertificateError> {
        if now < self.not_before {
            return Err(CertificateError::NotYetValid { not_before: self.not_before });
        }
        if now > self.not_after {
            return Err(CertificateError::Expired { not_after: self.not_after });
        }
        Ok(())
    }
}

/// The size in bits of an RSA modulus given as big-endian bytes, leading zeros aside.
fn rsa_bits(modulus: &[u8]) -> usize {
    let significant = modulus.iter().position(|&b| b != 0).map_or(&[][..], |start| &modulus[start..]);
    significant.first().map_or(0, |&first| significant.len() * 8 - first.leading_zeros() as usize)
}

/// What a certificate is a signing certificate for, for messages.
const CERTIFICATE_FIX: &str = "a signing certificate is the text from -----BEGIN CERTIFICATE----- to -----END \
                                CERTIFICATE----- that an SNS message's SigningCertURL serves";

/// A text that is not an Amazon SNS signing certificate. The messages follow what the text is: a flow's
/// `snsCertificates[i]`, or the certificate at an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error("is not PEM text ({why}): {CERTIFICATE_FIX}")]
    NotPem { why: String },
    #[error("holds {count} PEM blocks, not one certificate: give each certificate on its own")]
    SeveralBlocks { count: usize },
    #[error("is a PEM '{label}', not a CERTIFICATE: {CERTIFICATE_FIX}")]
    NotCertificate { label: String },
    #[error("is not an X.509 certificate ({why}): {CERTIFICATE_FIX}")]
    NotX509 { why: String },
    #[error(
        "has {kind} key, not an RSA one: Amazon SNS signs with RSA, so this is not its certificate; {CERTIFICATE_FIX}"
    )]
    NotRsa { kind: &'static str },
    #[error(
        "has an RSA key of {bits} bits, fewer than the {MIN_KEY_BITS} Amazon SNS signs with, so this is not its \
         certificate; {CERTIFICATE_FIX}"
    )]
    WeakKey { bits: usize },
    #[error(
        "is valid only from {not_before}: Amazon SNS signs with a current certificate; if every message is refused \
         so, check this machine's clock"
    )]
    NotYetValid { not_before: DateTime<Utc> },
    #[error(
        "expired at {not_after}: Amazon SNS signs with a current certificate; if every message is refused so, check \
         this machine's clock"
    )]
    Expired { not_after: DateTime<Utc> },
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use chrono::TimeZone;
    use num_bigint::BigUint;
    use serde_json::json;
    use std::sync::LazyLock;

    /// An RSA key made for these tests, and a self-signed certificate of it.
    pub(crate) struct TestKey {
        pkcs8: Vec<u8>,
        pub(crate) certificate_pem: String,
    }

    /// RSA keys take a moment to make in a debug build: two per test binary.
    pub(crate) static KEY: LazyLock<TestKey> = LazyLock::new(TestKey::generate);
    static OTHER_KEY: LazyLock<TestKey> = LazyLock::new(TestKey::generate);

    impl TestKey {
        fn generate() -> TestKey {
            let key = signature::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
            let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&key).unwrap().as_ref().to_vec();
            let signer = rcgen::KeyPair::try_from(pkcs8.as_slice()).unwrap();
            let params = rcgen::CertificateParams::new(vec!["sns.us-west-2.amazonaws.com".to_string()]).unwrap();
            TestKey { certificate_pem: params.self_signed(&signer).unwrap().pem(), pkcs8 }
        }

        pub(crate) fn certificate(&self) -> SigningCertificate {
            SigningCertificate::from_pem(self.certificate_pem.as_bytes()).unwrap()
        }

        /// `text` signed as SNS signs with `version`. SHA-1 is made from the key's numbers, as aws-lc-rs signs
        /// with SHA-2 only: EMSA-PKCS1-v1_5 (RFC 8017, 9.2), then the RSA private operation.
        pub(crate) fn sign(&self, version: &str, text: &str) -> String {
            let signature = match version {
                "1" => {
                    const SHA1_DIGEST_INFO: [u8; 15] =
                        [0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14];
                    let (n, d) = rsa_numbers(&self.pkcs8);
                    let size = n.bits().div_ceil(8) as usize;
                    let digest =
                        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, text.as_bytes());
                    let t = [&SHA1_DIGEST_INFO[..], digest.as_ref()].concat();
                    let mut encoded = vec![0xff; size];
                    encoded[0] = 0;
                    encoded[1] = 1;
                    encoded[size - t.len() - 1] = 0;
                    encoded[size - t.len()..].copy_from_slice(&t);
                    let s = BigUint::from_bytes_be(&encoded).modpow(&d, &n).to_bytes_be();
                    [vec![0; size - s.len()], s].concat()
                }
                _ => {
                    let key = signature::RsaKeyPair::from_pkcs8(&self.pkcs8).unwrap();
                    let mut signature = vec![0; key.public_modulus_len()];
                    let rng = aws_lc_rs::rand::SystemRandom::new();
                    key.sign(&signature::RSA_PKCS1_SHA256, &rng, text.as_bytes(), &mut signature).unwrap();
                    signature
                }
            };
            BASE64.encode(signature)
        }
    }

    /// The modulus and private exponent of a PKCS#8 RSA key (RFC 5208 around RFC 8017's RSAPrivateKey).
    fn rsa_numbers(pkcs8: &[u8]) -> (BigUint, BigUint) {
        /// The first DER element of `input`: its content, and what follows it.
        fn element(input: &[u8]) -> (&[u8], &[u8]) {
            let (length, start) = match input[1] {
                short if short < 0x80 => (short as usize, 2),
                long => {
                    let count = (long & 0x7f) as usize;
                    (input[2..2 + count].iter().fold(0, |length, &b| length << 8 | b as usize), 2 + count)
                }
            };
            (&input[start..start + length], &input[start + length..])
        }
        let (info, _) = element(pkcs8);
        let (_version, rest) = element(info);
        let (_algorithm, rest) = element(rest);
        let (octets, _) = element(rest);
        let (key, _) = element(octets);
        let (_version, rest) = element(key);
        let (n, rest) = element(rest);
        let (_e, rest) = element(rest);
        let (d, _) = element(rest);
        (BigUint::from_bytes_be(n), BigUint::from_bytes_be(d))
    }

    const CERT_URL: &str =
        "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem";

    fn notification(subject: Option<&str>) -> Value {
        let mut message = json!({
            "Type": "Notification",
            "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
            "TopicArn": "arn:aws:sns:us-west-2:123456789012:MyTopic",
            "Message": "{\"eventType\":\"Open\"}",
            "Timestamp": "2012-05-02T00:54:06.655Z",
            "SignatureVersion": "1",
            "Signature": "",
            "SigningCertURL": CERT_URL,
            "UnsubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:us-west-2:123456789012:MyTopic:c9135db0"
        });
        if let Some(subject) = subject {
            message["Subject"] = json!(subject);
        }
        message
    }

    fn confirmation(message_type: &str) -> Value {
        json!({
            "Type": message_type,
            "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
            "Token": "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f3beb71854e285d6ad02428b09ceece29417f1f02d609c582afbacc99c583a916b9981dd2728f4ae6fdb82efd087cc3b7849e05798d2d2785c03b0879594eeac82c01f235d0e717736",
            "TopicArn": "arn:aws:sns:us-west-2:123456789012:MyTopic",
            "Message": "You have chosen to subscribe to the topic arn:aws:sns:us-west-2:123456789012:MyTopic.\nTo confirm the subscription, visit the SubscribeURL included in this message.",
            "SubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-west-2:123456789012:MyTopic&Token=2336412f37",
            "Timestamp": "2012-04-26T20:45:04.751Z",
            "SignatureVersion": "1",
            "Signature": "",
            "SigningCertURL": CERT_URL
        })
    }

    fn read(message: &Value) -> Result<Envelope, SnsError> {
        Envelope::read(message).map(|envelope| envelope.expect("an envelope"))
    }

    /// `message` signed by `key` with `version`, over `text` (the string to sign, written out by the test).
    fn signed(mut message: Value, key: &TestKey, version: &str, text: &str) -> Value {
        message["SignatureVersion"] = json!(version);
        message["Signature"] = json!(key.sign(version, text));
        message
    }

    #[test]
    fn a_notification_signs_its_subject_only_when_it_has_one() {
        let with = read(&notification(Some("Amazon SES Email Event Notification"))).unwrap();
        assert_eq!(
            with.string_to_sign(),
            "Message\n{\"eventType\":\"Open\"}\nMessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\n\
             Subject\nAmazon SES Email Event Notification\nTimestamp\n2012-05-02T00:54:06.655Z\n\
             TopicArn\narn:aws:sns:us-west-2:123456789012:MyTopic\nType\nNotification\n"
        );
        let without = read(&notification(None)).unwrap();
        assert_eq!(
            without.string_to_sign(),
            "Message\n{\"eventType\":\"Open\"}\nMessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\n\
             Timestamp\n2012-05-02T00:54:06.655Z\nTopicArn\narn:aws:sns:us-west-2:123456789012:MyTopic\n\
             Type\nNotification\n",
            "UnsubscribeURL and the signature fields are not signed"
        );
        let mut null_subject = notification(None);
        null_subject["Subject"] = Value::Null;
        assert_eq!(read(&null_subject).unwrap().string_to_sign(), without.string_to_sign());
    }

    #[test]
    fn both_confirmations_sign_their_subscribe_address_and_token() {
        for message_type in ["SubscriptionConfirmation", "UnsubscribeConfirmation"] {
            let envelope = read(&confirmation(message_type)).unwrap();
            assert_eq!(envelope.message_type.as_str(), message_type);
            assert_eq!(
                envelope.string_to_sign(),
                format!(
                    "Message\nYou have chosen to subscribe to the topic arn:aws:sns:us-west-2:123456789012:MyTopic.\n\
                     To confirm the subscription, visit the SubscribeURL included in this message.\n\
                     MessageId\n165545c9-2a5c-472c-8df2-7ff2be2b3b1b\n\
                     SubscribeURL\nhttps://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-west-2:123456789012:MyTopic&Token=2336412f37\n\
                     Timestamp\n2012-04-26T20:45:04.751Z\n\
                     Token\n2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f3beb71854e285d6ad02428b09ceece29417f1f02d609c582afbacc99c583a916b9981dd2728f4ae6fdb82efd087cc3b7849e05798d2d2785c03b0879594eeac82c01f235d0e717736\n\
                     TopicArn\narn:aws:sns:us-west-2:123456789012:MyTopic\nType\n{message_type}\n"
                )
            );
        }
    }

    #[test]
    fn signatures_of_version_1_and_2_verify_and_any_change_breaks_them() {
        let text = "Message\n{\"eventType\":\"Open\"}\nMessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\n\
                    Subject\nHello\nTimestamp\n2012-05-02T00:54:06.655Z\n\
                    TopicArn\narn:aws:sns:us-west-2:123456789012:MyTopic\nType\nNotification\n";
        let certificate = KEY.certificate();
        for (version, expected) in [("1", SignatureVersion::Sha1), ("2", SignatureVersion::Sha256)] {
            let message = signed(notification(Some("Hello")), &KEY, version, text);
            let envelope = read(&message).unwrap();
            assert_eq!(envelope.version, expected);
            assert_eq!(envelope.verify(&certificate), Ok(()), "version {version}");

            for (field, value) in [
                ("Message", json!("{\"eventType\":\"Click\"}")),
                ("MessageId", json!("another")),
                ("Subject", json!("Hello!")),
                ("Timestamp", json!("2012-05-02T00:54:06.656Z")),
                ("TopicArn", json!("arn:aws:sns:us-west-2:123456789012:Other")),
            ] {
                let mut tampered = message.clone();
                tampered[field] = value;
                let err = read(&tampered).unwrap().verify(&certificate).unwrap_err();
                assert!(matches!(err, SnsError::Mismatch { .. }), "{field}: {err}");
            }
            let mut no_subject = message.clone();
            no_subject.as_object_mut().unwrap().remove("Subject");
            assert!(read(&no_subject).unwrap().verify(&certificate).is_err(), "a subject left out is a change");
            let other = if version == "1" { "2" } else { "1" };
            let mut other_version = message.clone();
            other_version["SignatureVersion"] = json!(other);
            assert!(read(&other_version).unwrap().verify(&certificate).is_err(), "signed {version}, said {other}");
            assert!(envelope.verify(&OTHER_KEY.certificate()).is_err(), "another key");
        }
    }

    #[test]
    fn a_pinned_certificate_among_others_verifies_and_none_matching_names_the_address_to_pin() {
        let text = "Message\n{\"eventType\":\"Open\"}\nMessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\n\
                    Timestamp\n2012-05-02T00:54:06.655Z\nTopicArn\narn:aws:sns:us-west-2:123456789012:MyTopic\n\
                    Type\nNotification\n";
        let envelope = read(&signed(notification(None), &KEY, "2", text)).unwrap();
        assert_eq!(envelope.verify_pinned(&[OTHER_KEY.certificate(), KEY.certificate()]), Ok(()));
        let err = envelope.verify_pinned(&[OTHER_KEY.certificate()]).unwrap_err();
        assert!(matches!(err, SnsError::MatchesNoPinned { count: 1, .. }), "{err}");
        assert!(err.to_string().contains(&format!("pin the one at {CERT_URL}")), "{err}");
    }

    #[test]
    fn a_message_without_its_signature_or_with_an_unknown_version_is_refused_with_the_fix() {
        let without = |field: &str| {
            let mut message = confirmation("SubscriptionConfirmation");
            message.as_object_mut().unwrap().remove(field);
            read(&message).unwrap_err()
        };
        for field in ["Signature", "SignatureVersion", "SigningCertURL", "Token", "SubscribeURL", "Message"] {
            let err = without(field);
            assert!(matches!(err, SnsError::Missing { field: f, .. } if f == field), "{field}: {err}");
            assert!(err.to_string().contains(&format!("has no `{field}`")), "{err}");
        }
        let mut message = notification(None);
        message["SignatureVersion"] = json!("3");
        let err = read(&message).unwrap_err();
        assert_eq!(err, SnsError::UnknownVersion { given: "3".into() });
        assert!(err.to_string().contains("set the topic's SignatureVersion attribute to 1 or 2"), "{err}");
        message["SignatureVersion"] = json!(1);
        assert!(matches!(read(&message).unwrap_err(), SnsError::NotText { field: "SignatureVersion", .. }));
        let mut message = notification(None);
        message["Signature"] = json!("not base64!");
        assert!(matches!(read(&message).unwrap_err(), SnsError::MalformedSignature { .. }));
        let mut message = notification(None);
        message["Type"] = json!("Note");
        assert!(
            read(&message).unwrap_err().to_string().starts_with("its `Type` is a string (\"Note\"), not a message")
        );
    }

    #[test]
    fn a_body_without_type_is_no_envelope() {
        assert_eq!(Envelope::read(&json!({"eventType": "Open"})), Ok(None));
        assert_eq!(Envelope::read(&json!([1, 2])), Ok(None));
    }

    #[test]
    fn a_certificate_address_must_be_amazon_sns_s_own_and_end_in_pem() {
        for url in [
            "http://sns.us-west-2.amazonaws.com/SimpleNotificationService-1.pem",
            "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-1.crt",
            "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-1.pem?x=1",
            "https://sns.us-west-2.amazonaws.com:8443/SimpleNotificationService-1.pem",
            "https://user@sns.us-west-2.amazonaws.com/SimpleNotificationService-1.pem",
            "https://sns.us-west-2.amazonaws.com.evil.example/SimpleNotificationService-1.pem",
            "https://sns.s3-us-west-2.amazonaws.com/SimpleNotificationService-1.pem",
            "https://sns.s3.amazonaws.com/SimpleNotificationService-1.pem",
            "https://evil.example/sns.us-west-2.amazonaws.com/SimpleNotificationService-1.pem",
            "https://169.254.169.254/latest/meta-data/x.pem",
        ] {
            let mut message = notification(None);
            message["SigningCertURL"] = json!(url);
            let err = read(&message).unwrap_err();
            assert!(matches!(err, SnsError::NotSnsCertificateAddress { .. }), "{url}: {err}");
        }
        for url in [
            CERT_URL,
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-1.pem",
            "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-1.pem",
            "https://SNS.EU-WEST-1.AMAZONAWS.COM/SimpleNotificationService-1.pem",
        ] {
            assert!(is_sns_certificate_address(&Url::parse(url).unwrap()), "{url}");
        }
    }

    #[test]
    fn a_certificate_reads_only_as_one_pem_x509_certificate_with_an_rsa_key() {
        let certificate = KEY.certificate();
        assert_eq!(certificate.bits, 2048);
        assert_eq!(certificate.check_dates(Utc::now()), Ok(()));
        let expired = certificate.check_dates(Utc.with_ymd_and_hms(4097, 1, 1, 0, 0, 0).unwrap()).unwrap_err();
        assert!(matches!(expired, CertificateError::Expired { .. }), "{expired}");
        let early = certificate.check_dates(DateTime::from_timestamp(0, 0).unwrap()).unwrap_err();
        assert!(matches!(early, CertificateError::NotYetValid { .. }), "{early}");

        let reading = |text: &str| SigningCertificate::from_pem(text.as_bytes()).unwrap_err();
        assert!(matches!(reading("MIIB not a certificate"), CertificateError::NotPem { .. }));
        let two = format!("{}\n{}", KEY.certificate_pem, OTHER_KEY.certificate_pem);
        assert_eq!(reading(&two), CertificateError::SeveralBlocks { count: 2 });
        let key = pem::encode(&pem::Pem::new("PRIVATE KEY", KEY.pkcs8.clone()));
        assert_eq!(reading(&key), CertificateError::NotCertificate { label: "PRIVATE KEY".into() });
        let garbage = pem::encode(&pem::Pem::new("CERTIFICATE", b"not DER".to_vec()));
        assert!(matches!(reading(&garbage), CertificateError::NotX509 { .. }), "{}", reading(&garbage));
        let ec_key = rcgen::KeyPair::generate().unwrap();
        let ec = rcgen::CertificateParams::new(vec!["sns.example".to_string()]).unwrap().self_signed(&ec_key).unwrap();
        let err = reading(&ec.pem());
        assert!(matches!(err, CertificateError::NotRsa { .. }), "{err}");
        assert!(err.to_string().contains("-----BEGIN CERTIFICATE-----"), "the message says what to give: {err}");
        let one_line = KEY.certificate_pem.replace('\n', "");
        assert_eq!(SigningCertificate::from_pem(one_line.as_bytes()), Ok(certificate), "a PEM pasted on one line");
    }

    #[test]
    fn a_modulus_size_does_not_count_leading_zeros() {
        assert_eq!(rsa_bits(&[0, 0x80, 0]), 16);
        assert_eq!(rsa_bits(&[0x01, 0xff]), 9);
        assert_eq!(rsa_bits(&[0, 0]), 0);
    }
}
