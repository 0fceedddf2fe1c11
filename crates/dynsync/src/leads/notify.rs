//! Lead notifications: the email that tells people a new lead has come in, sent over the customer's own SMTP
//! server.
//!
//! Why: Partner Center emails the publisher's contacts on each new lead, and users keep reporting that those
//! emails never come. So dynsync sends its own, through the SMTP server the customer gives for the intake. The
//! caller retries a notification until the server takes it; this module says whether a failure is worth retrying.
//!
//! The contract:
//! - [`recipients`] reads addresses separated by `;` (or `,`), as Partner Center's contact email field takes them;
//!   every bad address is named at once, and no address at all is refused too.
//! - [`LeadNotice`] is what is known of one lead; [`LeadNotice::subject`] and [`LeadNotice::body`] make plain text
//!   of it, leaving out what is not known and marking Partner Center's test lead.
//! - [`Mailer`] sends a notice over SMTP ([`SmtpSettings`]: plain, STARTTLS or implicit TLS, optional login,
//!   30 s timeout): one message, all recipients in `To`. [`Mailer::send_text`] sends any plain-text message the
//!   same way: flow alerts go through it, over the same server.
//! - [`MailError::is_permanent`] is true when sending again cannot help (bad addresses or settings, a `5xx`
//!   answer), false when it may (the server unreachable or slow, a `4xx` answer). Every message says what is
//!   wrong, where, and what to do. The password never shows in `Debug` output nor in an error.

use crate::secrets::Secret;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// How long the SMTP server may take to answer, at any step.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain text, no TLS: only for a server on the same machine or network.
    None,
    /// STARTTLS, required (usually port 587).
    #[default]
    StartTls,
    /// Implicit TLS from the first byte (usually port 465).
    Tls,
}

/// The SMTP server an intake's notifications go through.
#[derive(Clone, Debug)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// The login; none when the server takes mail without one.
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The sender: `leads@example.com` or `Leads <leads@example.com>`.
    pub from: String,
}

impl SmtpSettings {
    /// A server on 127.0.0.1 that takes mail without TLS or sign-in: a local relay, the demo's own.
    pub fn local(port: u16, from: &str) -> SmtpSettings {
        SmtpSettings {
            host: "127.0.0.1".into(),
            port,
            security: SmtpSecurity::None,
            username: None,
            password: None,
            from: from.into(),
        }
    }
}

/// Addresses that could not be read: each bad one is named; none named means no address was given at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}; give email addresses separated by semicolons, as Partner Center's contact email field takes them", describe(.bad))]
pub struct BadRecipients {
    pub bad: Vec<String>,
}

fn describe(bad: &[String]) -> String {
    match bad {
        [] => "no email address to send lead notifications to".to_owned(),
        [one] => format!("`{one}` is not an email address"),
        many => {
            let names: Vec<String> = many.iter().map(|address| format!("`{address}`")).collect();
            format!("these are not email addresses: {}", names.join(", "))
        }
    }
}

/// Reads addresses separated by `;` or `,`; blanks around them and empty parts are ignored, repeats are dropped.
pub fn recipients(text: &str) -> Result<Vec<Address>, BadRecipients> {
    let mut good: Vec<Address> = Vec::new();
    let mut bad = Vec::new();
    for part in text.split([';', ',']).map(str::trim).filter(|part| !part.is_empty()) {
        match part.parse::<Address>() {
            Ok(address) if !good.contains(&address) => good.push(address),
            Ok(_) => {}
            Err(_) => bad.push(part.to_owned()),
        }
    }
    if bad.is_empty() && !good.is_empty() { Ok(good) } else { Err(BadRecipients { bad }) }
}

/// What the notification of one new lead says, and to whom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeadNotice {
    /// The intake's name.
    pub intake: String,
    pub lead_id: uuid::Uuid,
    /// A link to the lead in Dynamics.
    pub lead_url: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub company: Option<String>,
    pub title: Option<String>,
    pub country: Option<String>,
    pub offer: Option<String>,
    pub action: Option<String>,
    pub description: Option<String>,
    /// When the lead came in, RFC 3339.
    pub received_at: String,
    /// Partner Center's test lead, from its Validate button.
    pub is_test: bool,
    pub recipients: Vec<String>,
}

/// The text when there is some, trimmed.
fn known(part: &Option<String>) -> Option<&str> {
    part.as_deref().map(str::trim).filter(|text| !text.is_empty())
}

impl LeadNotice {
    /// "New lead: Jane Doe (Contoso) — Contact me for Contoso CRM"; "[Test] " first for the test lead. The person
    /// is named by name, else email, else phone; unknown parts are left out. Always one line.
    pub fn subject(&self) -> String {
        let mut subject = String::from(if self.is_test { "[Test] New lead" } else { "New lead" });
        let who = known(&self.name).or(known(&self.email)).or(known(&self.phone));
        match (who, known(&self.company)) {
            (Some(who), Some(company)) => subject += &format!(": {who} ({company})"),
            (Some(only), None) | (None, Some(only)) => subject += &format!(": {only}"),
            (None, None) => {}
        }
        match (known(&self.action), known(&self.offer)) {
            (Some(action), Some(offer)) => subject += &format!(" — {action} for {offer}"),
            (Some(only), None) | (None, Some(only)) => subject += &format!(" — {only}"),
            (None, None) => {}
        }
        subject.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// Plain text: each known part on its own labelled line, then when the lead came in, its id and link.
    pub fn body(&self) -> String {
        let mut body = format!("A new lead came in through the intake \"{}\".\n", self.intake.trim());
        if self.is_test {
            body += "This is Partner Center's test lead, sent by its Validate button: no customer is waiting.\n";
        }
        body += "\n";
        let parts = [
            ("Name", &self.name),
            ("Email", &self.email),
            ("Phone", &self.phone),
            ("Company", &self.company),
            ("Title", &self.title),
            ("Country", &self.country),
            ("Offer", &self.offer),
            ("Action", &self.action),
            ("Description", &self.description),
        ];
        for (label, part) in parts {
            if let Some(text) = known(part) {
                body += &format!("{label}: {text}\n");
            }
        }
        body += &format!("\nReceived: {}\nLead id: {}\n", self.received_at.trim(), self.lead_id);
        if let Some(url) = known(&self.lead_url) {
            body += &format!("Open in Dynamics: {url}\n");
        }
        body += "\ndynsync sends this email because Partner Center's own lead emails do not always arrive.\n";
        body
    }
}

/// Why a notification was not sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("no SMTP server is set for notifications: give one in the [smtp] settings (server and port)")]
    NoServer,
    #[error(
        "the notification sender `{from}` is not an email address ({reason}); give the [smtp] settings' From as leads@example.com or \"Leads <leads@example.com>\""
    )]
    BadFrom { from: String, reason: String },
    #[error("the notification has no good recipient: {0}")]
    BadRecipients(#[from] BadRecipients),
    #[error("the SMTP server {server} cannot be used: {source}; check the [smtp] server name")]
    BadServer { server: String, source: lettre::transport::smtp::Error },
    #[error("the notification could not be written as an email: {0}; check its sender and recipients")]
    BadMessage(#[source] lettre::error::Error),
    #[error(
        "the SMTP server {server} could not be reached: {source}; check the [smtp] server and port, and its security (STARTTLS on 587, TLS on 465)"
    )]
    Unreachable { server: String, source: lettre::transport::smtp::Error },
    #[error(
        "the SMTP server {server} and dynsync could not agree on how to send: {source}; check the [smtp] security, user name and password"
    )]
    Unsupported { server: String, source: lettre::transport::smtp::Error },
    #[error("the SMTP server {server} refused the notification: {source}; {}", refusal_hint(.source))]
    Refused { server: String, source: lettre::transport::smtp::Error },
}

fn refusal_hint(source: &lettre::transport::smtp::Error) -> &'static str {
    if source.is_permanent() {
        "check the [smtp] From address, the recipients, the user name and the password"
    } else {
        "the server asks to try again later, and the notification will be sent again"
    }
}

impl MailError {
    /// True when sending the same notification again cannot succeed: bad addresses or settings, or a `5xx`
    /// answer. False when it may: the server unreachable, too slow, or answering `4xx`.
    pub fn is_permanent(&self) -> bool {
        match self {
            MailError::Unreachable { .. } => false,
            MailError::Refused { source, .. } => source.is_permanent(),
            _ => true,
        }
    }

    fn from_smtp(server: &str, source: lettre::transport::smtp::Error) -> MailError {
        let server = server.to_owned();
        if source.is_permanent() || source.is_transient() {
            MailError::Refused { server, source }
        } else if source.is_client() {
            MailError::Unsupported { server, source }
        } else {
            MailError::Unreachable { server, source }
        }
    }
}

/// Sends lead notifications through one SMTP server.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// `host:port`, for messages.
    server: String,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailer").field("server", &self.server).field("from", &self.from.to_string()).finish()
    }
}

impl Mailer {
    /// Checks the settings and prepares the transport; nothing is sent and no connection is made yet.
    pub fn new(settings: &SmtpSettings) -> Result<Mailer, MailError> {
        let host = settings.host.trim();
        if host.is_empty() {
            return Err(MailError::NoServer);
        }
        let server = format!("{host}:{}", settings.port);
        let from = settings.from.trim();
        let from =
            from.parse::<Mailbox>().map_err(|e| MailError::BadFrom { from: from.into(), reason: e.to_string() })?;
        let bad_server = |source| MailError::BadServer { server: server.clone(), source };
        let builder = match settings.security {
            SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpSecurity::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host).map_err(bad_server)?,
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host).map_err(bad_server)?,
        };
        let mut builder = builder.port(settings.port).timeout(Some(SMTP_TIMEOUT));
        if let Some(username) = settings.username.as_deref().filter(|name| !name.is_empty()) {
            let password = settings.password.as_ref().map(|p| p.expose().to_owned()).unwrap_or_default();
            builder = builder.credentials(Credentials::new(username.to_owned(), password));
        }
        Ok(Mailer { transport: builder.build(), from, server })
    }

    /// Sends the notice as one plain-text message to all its recipients.
    pub async fn send(&self, notice: &LeadNotice) -> Result<(), MailError> {
        self.send_text(&notice.subject(), &notice.body(), &notice.recipients).await
    }

    /// Sends one plain-text message to all `to` at once (each entry read as [`recipients`] reads addresses): what
    /// any part of dynsync that emails people (lead notifications, flow alerts) sends through. The subject is made
    /// one line.
    pub async fn send_text(&self, subject: &str, body: &str, to: &[String]) -> Result<(), MailError> {
        let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut message = Message::builder().from(self.from.clone()).subject(subject).header(ContentType::TEXT_PLAIN);
        for address in recipients(&to.join(";"))? {
            message = message.to(Mailbox::new(None, address));
        }
        let message = message.body(body.to_owned()).map_err(MailError::BadMessage)?;
        self.transport.send(message).await.map_err(|source| MailError::from_smtp(&self.server, source))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::Mailbox as TestMailbox;

    fn notice() -> LeadNotice {
        LeadNotice {
            intake: "Marketplace leads".into(),
            lead_id: uuid::Uuid::from_u128(0x6f1e_2d3c_4b5a_6978_8796_a5b4_c3d2_e1f0),
            lead_url: Some("https://contoso.crm.dynamics.com/main.aspx?etn=lead&id=6f1e".into()),
            name: Some("Jane Doe".into()),
            email: Some("jane@contoso.com".into()),
            phone: Some("+1 617 555 5555".into()),
            company: Some("Contoso".into()),
            title: Some("CTO".into()),
            country: Some("United States".into()),
            offer: Some("Contoso CRM".into()),
            action: Some("Contact me".into()),
            description: Some("Wants a demo".into()),
            received_at: "2025-03-04T05:06:07Z".into(),
            is_test: false,
            recipients: vec!["sales@example.com".into(), "ops@example.com".into()],
        }
    }

    fn settings(port: u16) -> SmtpSettings {
        SmtpSettings::local(port, "Leads <leads@example.com>")
    }

    #[test]
    fn recipients_separated_by_semicolons_or_commas_with_blanks_are_all_read() {
        let read = recipients(" sales@example.com ; ;ops@example.com,  boss@example.com; ").unwrap();
        let read: Vec<String> = read.iter().map(ToString::to_string).collect();
        assert_eq!(read, ["sales@example.com", "ops@example.com", "boss@example.com"]);
    }

    #[test]
    fn every_bad_recipient_is_named_at_once() {
        let error = recipients("sales@example.com; not-an-address; ops@; @example.com").unwrap_err();
        assert_eq!(error.bad, ["not-an-address", "ops@", "@example.com"]);
        let message = error.to_string();
        for bad in ["`not-an-address`", "`ops@`", "`@example.com`", "separated by semicolons"] {
            assert!(message.contains(bad), "{message}");
        }
    }

    #[test]
    fn no_recipients_at_all_is_refused() {
        for text in ["", " ; , "] {
            let error = recipients(text).unwrap_err();
            assert!(error.bad.is_empty());
            assert!(error.to_string().starts_with("no email address"), "{error}");
        }
    }

    #[test]
    fn a_subject_names_the_person_the_company_the_action_and_the_offer() {
        assert_eq!(notice().subject(), "New lead: Jane Doe (Contoso) — Contact me for Contoso CRM");
        let sparse = LeadNotice { name: None, company: None, action: Some(" ".into()), ..notice() };
        assert_eq!(sparse.subject(), "New lead: jane@contoso.com — Contoso CRM");
        let test = LeadNotice { is_test: true, name: Some("Line\r\nBreak".into()), ..notice() };
        assert_eq!(test.subject(), "[Test] New lead: Line Break (Contoso) — Contact me for Contoso CRM");
    }

    #[test]
    fn the_body_has_every_known_part_on_its_own_line_and_leaves_missing_parts_out() {
        let body = notice().body();
        for line in [
            "Name: Jane Doe",
            "Email: jane@contoso.com",
            "Phone: +1 617 555 5555",
            "Company: Contoso",
            "Title: CTO",
            "Country: United States",
            "Offer: Contoso CRM",
            "Action: Contact me",
            "Description: Wants a demo",
            "Received: 2025-03-04T05:06:07Z",
            "Lead id: 6f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
            "Open in Dynamics: https://contoso.crm.dynamics.com/main.aspx?etn=lead&id=6f1e",
        ] {
            assert!(body.lines().any(|l| l == line), "no line {line:?} in:\n{body}");
        }
        assert!(body.contains("\"Marketplace leads\""), "{body}");
        assert!(!body.contains("test lead"), "{body}");

        let sparse = LeadNotice { phone: None, title: Some("".into()), lead_url: None, is_test: true, ..notice() };
        let body = sparse.body();
        assert!(body.contains("Partner Center's test lead"), "{body}");
        for absent in ["Phone", "Title", "Open in Dynamics", "None"] {
            assert!(!body.contains(absent), "{absent:?} in:\n{body}");
        }
    }

    #[test]
    fn security_is_written_in_lowercase_and_starttls_is_the_default() {
        assert_eq!(SmtpSecurity::default(), SmtpSecurity::StartTls);
        assert_eq!(serde_json::to_string(&SmtpSecurity::StartTls).unwrap(), r#""starttls""#);
        assert_eq!(serde_json::from_str::<SmtpSecurity>(r#""tls""#).unwrap(), SmtpSecurity::Tls);
        assert_eq!(serde_json::from_str::<SmtpSecurity>(r#""none""#).unwrap(), SmtpSecurity::None);
    }

    #[test]
    fn the_password_never_shows_in_debug_output() {
        let settings =
            SmtpSettings { username: Some("leads".into()), password: Some(Secret::new("hunter2")), ..settings(587) };
        assert!(!format!("{settings:?}").contains("hunter2"));
        let mailer = Mailer::new(&settings).unwrap();
        assert!(!format!("{mailer:?}").contains("hunter2"));
    }

    #[test]
    fn every_security_builds_a_mailer_without_connecting() {
        for security in [SmtpSecurity::None, SmtpSecurity::StartTls, SmtpSecurity::Tls] {
            let settings = SmtpSettings { host: "smtp.example.com".into(), security, ..settings(587) };
            let mailer = Mailer::new(&settings).unwrap();
            assert!(format!("{mailer:?}").contains("smtp.example.com:587"));
        }
    }

    #[test]
    fn a_bad_sender_or_no_server_is_refused_before_sending_and_is_permanent() {
        let error = Mailer::new(&SmtpSettings { from: "leads at example".into(), ..settings(25) }).unwrap_err();
        assert!(error.is_permanent());
        assert!(error.to_string().contains("`leads at example` is not an email address"), "{error}");
        let error = Mailer::new(&SmtpSettings { host: " ".into(), ..settings(25) }).unwrap_err();
        assert!(error.is_permanent());
    }

    #[tokio::test]
    async fn a_notice_sent_through_the_mailer_arrives_with_its_subject_and_every_part() {
        let mailbox = TestMailbox::start().await.unwrap();
        let mailer = Mailer::new(&settings(mailbox.port())).unwrap();
        let notice =
            LeadNotice { name: Some("Zoë Müller".into()), description: Some("Straße\nline two".into()), ..notice() };
        mailer.send(&notice).await.unwrap();

        let received = mailbox.wait_for(1, Duration::from_secs(10)).await;
        let [mail] = received.as_slice() else { panic!("expected one message, got {received:?}") };
        assert_eq!(mail.from, "leads@example.com");
        assert_eq!(mail.to, ["sales@example.com", "ops@example.com"]);
        assert_eq!(mail.header("From").as_deref(), Some("Leads <leads@example.com>"));
        assert_eq!(mail.header("To").as_deref(), Some("sales@example.com, ops@example.com"));
        assert_eq!(mail.header("Subject"), Some(notice.subject()));
        assert_eq!(notice.subject(), "New lead: Zoë Müller (Contoso) — Contact me for Contoso CRM");
        let body = mail.body();
        for part in
            ["Name: Zoë Müller", "Description: Straße\nline two", "Lead id: 6f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"]
        {
            assert!(body.contains(part), "no {part:?} in:\n{body}");
        }
    }

    #[tokio::test]
    async fn a_plain_text_message_arrives_on_one_line_of_subject_to_every_recipient() {
        let mailbox = TestMailbox::start().await.unwrap();
        let mailer = Mailer::new(&settings(mailbox.port())).unwrap();
        let to = ["ops@example.com".to_string(), "oncall@example.com; boss@example.com".to_string()];
        mailer.send_text("Flow alert:\r\n  2 failed", "Line one\nLine two\n", &to).await.unwrap();
        let received = mailbox.wait_for(1, Duration::from_secs(10)).await;
        let [mail] = received.as_slice() else { panic!("expected one message, got {received:?}") };
        assert_eq!(mail.to, ["ops@example.com", "oncall@example.com", "boss@example.com"]);
        assert_eq!(mail.header("Subject").as_deref(), Some("Flow alert: 2 failed"));
        assert!(mail.body().contains("Line one\nLine two"), "{}", mail.body());
        let error = mailer.send_text("s", "b", &["not-an-address".to_string()]).await.unwrap_err();
        assert!(error.is_permanent() && error.to_string().contains("`not-an-address`"), "{error}");
    }

    /// A server that answers `rcpt_reply` to RCPT TO, and agrees to everything else.
    async fn server_answering_rcpt_with(rcpt_reply: &'static str) -> u16 {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (reader, mut writer) = stream.into_split();
            let mut lines = tokio::io::BufReader::new(reader).lines();
            writer.write_all(b"220 scripted\r\n").await.unwrap();
            while let Ok(Some(line)) = lines.next_line().await {
                let reply = match line.to_ascii_uppercase().get(..4) {
                    Some("RCPT") => rcpt_reply,
                    Some("QUIT") => "221 bye",
                    _ => "250 OK",
                };
                if writer.write_all(format!("{reply}\r\n").as_bytes()).await.is_err() {
                    break;
                }
            }
        });
        port
    }

    #[tokio::test]
    async fn a_5xx_answer_is_permanent_and_a_4xx_answer_is_not() {
        for (answer, permanent) in [("550 5.1.1 no such user", true), ("451 4.3.0 try again later", false)] {
            let port = server_answering_rcpt_with(answer).await;
            let error = Mailer::new(&settings(port)).unwrap().send(&notice()).await.unwrap_err();
            assert_eq!(error.is_permanent(), permanent, "{error}");
            let message = error.to_string();
            let expected = format!("the SMTP server 127.0.0.1:{port} refused the notification: ");
            let (code, text) = answer.split_once(' ').unwrap();
            assert!(message.starts_with(&expected) && message.contains(&format!("({code}): {text}")), "{message}");
        }
    }

    #[tokio::test]
    async fn a_server_that_does_not_listen_gives_a_retryable_error_naming_host_and_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let error = Mailer::new(&settings(port)).unwrap().send(&notice()).await.unwrap_err();
        assert!(!error.is_permanent(), "{error:?}");
        let message = error.to_string();
        assert!(message.contains(&format!("the SMTP server 127.0.0.1:{port} could not be reached")), "{message}");
        assert!(message.contains("check the [smtp] server and port"), "{message}");
    }
}
