//! A small, real SMTP server that keeps the mail it receives, so that `dynsync demo leads` and the tests can read
//! back a lead notification sent over SMTP, the way a customer's mail server would take it.
//!
//! The contract:
//! - [`Mailbox::start`] listens on 127.0.0.1, on a port the system chooses ([`Mailbox::port`]); dropping the
//!   [`Mailbox`] stops the listener and every connection it serves.
//! - It speaks enough of RFC 5321 for any ordinary client (lettre included): greeting `220`; `EHLO` (multi-line
//!   `250` with `8BITMIME`, `SMTPUTF8` and `SIZE 10485760`, never `STARTTLS` nor `AUTH`) and `HELO`; `MAIL FROM`,
//!   `RCPT TO`, `DATA` (ended by a lone `.`, dot-stuffing undone), `RSET`, `NOOP`, `QUIT` (`221`). Commands it knows
//!   of but does not offer get `502`, others `500`; commands out of order get `503`.
//! - It never buffers without bound: a line over 64 KB is refused with `500`, a message over 10 MB with `552`
//!   (the rest is read and thrown away, and the connection stays usable); at most [`MAX_KEPT`] messages are
//!   kept, the oldest dropped first, and at most 32 connections are served at once.
//! - [`ReceivedMail`] gives the envelope and the raw message, plus [`ReceivedMail::header`] (unfolded, encoded
//!   words decoded) and [`ReceivedMail::body`] (quoted-printable or base64 undone), because a client such as lettre
//!   chooses the encoding by content.
//!
//! Why: a test or a demo must show that the mail really left dynsync over SMTP, without a mail server to install.
//! It is not a mail server for production: it takes anything from anyone, and delivers nothing.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::collections::VecDeque;
use std::io;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

/// The largest message taken, in bytes, after dot-stuffing is undone.
pub const MAX_MESSAGE_BYTES: usize = 10 * 1024 * 1024;
/// The longest line taken, in bytes, with its line end.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// How many messages are kept; older ones are dropped first.
pub const MAX_KEPT: usize = 1000;
const MAX_RECIPIENTS: usize = 100;
const MAX_CONNECTIONS: usize = 32;
/// A client silent for this long is disconnected, as RFC 5321 section 4.5.3.2 allows.
const IDLE: Duration = Duration::from_secs(300);
const EHLO_REPLY: &str = "250-dynsync-mailbox greets you\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 10485760";

/// A running SMTP server on 127.0.0.1 and the mail it has received.
pub struct Mailbox {
    port: u16,
    shared: Arc<Shared>,
    listener: JoinHandle<()>,
}

/// One message as the server took it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMail {
    /// The envelope sender (`MAIL FROM`), empty for the null sender `<>`.
    pub from: String,
    /// The envelope recipients (`RCPT TO`), in order.
    pub to: Vec<String>,
    /// The message (headers, blank line, body) with dot-stuffing undone and lines ending in CRLF.
    pub data: String,
}

#[derive(Default)]
struct Shared {
    kept: Mutex<VecDeque<ReceivedMail>>,
    /// Every message taken since the start, kept or not.
    received: std::sync::atomic::AtomicU64,
    arrived: Notify,
}

impl Shared {
    fn keep(&self, mail: ReceivedMail) {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() >= MAX_KEPT {
            kept.pop_front();
        }
        kept.push_back(mail);
        self.received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        drop(kept);
        self.arrived.notify_waiters();
    }

    fn messages(&self) -> Vec<ReceivedMail> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }
}

impl Mailbox {
    /// Starts listening on 127.0.0.1, on a port the system chooses.
    pub async fn start() -> io::Result<Mailbox> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared::default());
        let listener = tokio::spawn(listen(listener, shared.clone()));
        Ok(Mailbox { port, shared, listener })
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many messages were taken since the start, the ones no longer kept included.
    pub fn received(&self) -> u64 {
        self.shared.received.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The messages kept so far, oldest first.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.shared.messages()
    }

    /// The messages kept, as soon as there are at least `count` of them, or whatever is there when `deadline` has
    /// passed.
    pub async fn wait_for(&self, count: usize, deadline: Duration) -> Vec<ReceivedMail> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            // Registered before looking, so that a message arriving in between still wakes this task.
            arrived.as_mut().enable();
            let messages = self.messages();
            if messages.len() >= count {
                return messages;
            }
            if tokio::time::timeout_at(until, arrived).await.is_err() {
                return self.messages();
            }
        }
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        // The connections live in the listener task's JoinSet, so they are stopped with it.
        self.listener.abort();
    }
}

async fn listen(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) if connections.len() < MAX_CONNECTIONS => {
                    connections.spawn(serve(stream, shared.clone()));
                }
                Ok((mut stream, _)) => {
                    let _ = stream.write_all(b"421 4.3.2 too many connections, try again later\r\n").await;
                }
                // Such as too many open files: the connection is lost, the listener goes on.
                Err(_) => tokio::task::yield_now().await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// What a command line asks for.
#[derive(Debug, PartialEq)]
enum Answer {
    Reply(&'static str),
    ReadData,
    Quit,
}

/// The state of one SMTP session: the transaction under way.
#[derive(Default)]
struct Session {
    from: Option<String>,
    to: Vec<String>,
}

impl Session {
    fn reset(&mut self) {
        self.from = None;
        self.to.clear();
    }

    fn answer(&mut self, line: &str) -> Answer {
        let (verb, argument) = line.split_once(' ').unwrap_or((line, ""));
        let argument = argument.trim();
        let reply = match verb.to_ascii_uppercase().as_str() {
            "EHLO" | "HELO" if argument.is_empty() => "501 5.5.4 give your name: EHLO <domain>",
            "EHLO" => {
                self.reset();
                EHLO_REPLY
            }
            "HELO" => {
                self.reset();
                "250 dynsync-mailbox"
            }
            "MAIL" if self.from.is_some() => "503 5.5.1 a transaction is under way: send RSET first",
            "MAIL" => match path(argument, "FROM:") {
                None => "501 5.5.4 syntax: MAIL FROM:<address>",
                Some((_, parameters)) if too_big(parameters) => "552 5.3.4 message too big: at most 10485760 bytes",
                Some((from, _)) => {
                    self.from = Some(from.to_owned());
                    "250 2.1.0 sender OK"
                }
            },
            "RCPT" if self.from.is_none() => "503 5.5.1 send MAIL FROM first",
            "RCPT" => match path(argument, "TO:") {
                None | Some(("", _)) => "501 5.5.4 syntax: RCPT TO:<address>",
                Some(_) if self.to.len() >= MAX_RECIPIENTS => "452 4.5.3 too many recipients: at most 100",
                Some((to, _)) => {
                    self.to.push(to.to_owned());
                    "250 2.1.5 recipient OK"
                }
            },
            "DATA" if !argument.is_empty() => "501 5.5.4 syntax: DATA, with nothing after it",
            "DATA" if self.to.is_empty() => "503 5.5.1 send RCPT TO first",
            "DATA" => return Answer::ReadData,
            "RSET" => {
                self.reset();
                "250 2.0.0 OK"
            }
            "NOOP" => "250 2.0.0 OK",
            "QUIT" => return Answer::Quit,
            "VRFY" | "EXPN" | "HELP" | "TURN" | "ETRN" | "BDAT" | "AUTH" | "STARTTLS" => {
                "502 5.5.1 command not implemented by this test server"
            }
            _ => "500 5.5.2 command not recognised",
        };
        Answer::Reply(reply)
    }
}

/// The address in `FROM:<address> PARAMETERS` (for `keyword` "FROM:"), and the parameters after it.
fn path<'a>(argument: &'a str, keyword: &str) -> Option<(&'a str, &'a str)> {
    let start = argument.get(..keyword.len()).filter(|k| k.eq_ignore_ascii_case(keyword))?;
    let rest = argument[start.len()..].trim_start().strip_prefix('<')?;
    let (address, parameters) = rest.split_once('>')?;
    Some((address, parameters.trim()))
}

fn too_big(parameters: &str) -> bool {
    parameters.split_ascii_whitespace().any(|parameter| {
        let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        name.eq_ignore_ascii_case("SIZE") && value.parse::<u64>().is_ok_and(|size| size > MAX_MESSAGE_BYTES as u64)
    })
}

async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    // A broken or idle connection just ends; the client sees it closed.
    let _ = converse(stream, &shared).await;
}

async fn converse(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    let mut session = Session::default();
    reply(&mut writer, "220 dynsync-mailbox ESMTP ready (a test server: mail is kept, never delivered)").await?;
    loop {
        let answer = match next_line(&mut reader, &mut line).await? {
            Line::Closed => return Ok(()),
            Line::TooLong => Answer::Reply("500 5.5.2 line too long: at most 65536 bytes"),
            Line::Complete => session.answer(String::from_utf8_lossy(without_line_end(&line)).trim()),
        };
        match answer {
            Answer::Reply(text) => reply(&mut writer, text).await?,
            Answer::Quit => return reply(&mut writer, "221 2.0.0 bye").await,
            Answer::ReadData => {
                reply(&mut writer, "354 send the message, end it with <CRLF>.<CRLF>").await?;
                let outcome = read_data(&mut reader, &mut line).await?;
                let from = session.from.take().unwrap_or_default();
                let to = std::mem::take(&mut session.to);
                match outcome {
                    Ok(data) => {
                        shared.keep(ReceivedMail { from, to, data });
                        reply(&mut writer, "250 2.0.0 message kept").await?;
                    }
                    Err(refusal) => reply(&mut writer, refusal).await?,
                }
            }
        }
    }
}

async fn reply(writer: &mut OwnedWriteHalf, text: &str) -> io::Result<()> {
    writer.write_all(format!("{text}\r\n").as_bytes()).await
}

/// Reads the message after `DATA` up to the lone `.`; past a limit, the rest is read and thrown away.
async fn read_data<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
) -> io::Result<Result<String, &'static str>> {
    let mut data = Vec::new();
    let mut refusal = None;
    loop {
        match next_line(reader, line).await? {
            Line::Closed => return Err(io::ErrorKind::UnexpectedEof.into()),
            Line::TooLong => {
                refusal.get_or_insert("500 5.5.2 a line of the message is over 65536 bytes: message refused");
            }
            Line::Complete => {
                let content = without_line_end(line);
                if content == b"." {
                    break;
                }
                let content = content.strip_prefix(b".").unwrap_or(content);
                if refusal.is_none() && data.len() + content.len() + 2 > MAX_MESSAGE_BYTES {
                    refusal = Some("552 5.3.4 message too big: at most 10485760 bytes");
                }
                if refusal.is_none() {
                    data.extend_from_slice(content);
                    data.extend_from_slice(b"\r\n");
                }
            }
        }
    }
    Ok(match refusal {
        Some(refusal) => Err(refusal),
        None => Ok(String::from_utf8_lossy(&data).into_owned()),
    })
}

enum Line {
    Complete,
    TooLong,
    Closed,
}

/// Reads one line, with its line end, into `line`. A longer line than [`MAX_LINE_BYTES`] is read to its end and
/// thrown away; a line cut by the end of the connection is dropped.
async fn next_line<R: AsyncBufRead + Unpin>(reader: &mut R, line: &mut Vec<u8>) -> io::Result<Line> {
    line.clear();
    let mut too_long = false;
    loop {
        let available = tokio::time::timeout(IDLE, reader.fill_buf()).await.map_err(|_| io::ErrorKind::TimedOut)??;
        if available.is_empty() {
            return Ok(Line::Closed);
        }
        let (used, ended) = match available.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (available.len(), false),
        };
        if too_long || line.len() + used > MAX_LINE_BYTES {
            too_long = true;
            line.clear();
        } else {
            line.extend_from_slice(&available[..used]);
        }
        reader.consume(used);
        if ended {
            return Ok(if too_long { Line::TooLong } else { Line::Complete });
        }
    }
}

fn without_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl ReceivedMail {
    /// The first header field called `name` (in any case), unfolded, with RFC 2047 encoded words (UTF-8, `B` or
    /// `Q`) decoded; `None` when there is none.
    pub fn header(&self, name: &str) -> Option<String> {
        let (head, _) = self.parts();
        let mut fields: Vec<String> = Vec::new();
        for line in head.lines() {
            match fields.last_mut() {
                Some(field) if line.starts_with([' ', '\t']) => field.push_str(line),
                _ => fields.push(line.to_owned()),
            }
        }
        fields.iter().find_map(|field| {
            let (field_name, value) = field.split_once(':')?;
            field_name.trim().eq_ignore_ascii_case(name).then(|| decode_words(value.trim()))
        })
    }

    /// The text after the blank line that ends the headers, with the `Content-Transfer-Encoding`
    /// (quoted-printable or base64) undone, read as UTF-8, lines ending in `\n`.
    pub fn body(&self) -> String {
        let (_, body) = self.parts();
        let encoding = self.header("Content-Transfer-Encoding").unwrap_or_default().to_ascii_lowercase();
        let bytes = match encoding.as_str() {
            "quoted-printable" => decode_quoted_printable(body.as_bytes()),
            "base64" => BASE64
                .decode(body.split_ascii_whitespace().collect::<String>())
                .unwrap_or_else(|_| body.as_bytes().to_vec()),
            _ => body.as_bytes().to_vec(),
        };
        String::from_utf8_lossy(&bytes).replace("\r\n", "\n")
    }

    /// The headers and the body, split at the first empty line.
    fn parts(&self) -> (&str, &str) {
        let mut at = 0;
        for line in self.data.split_inclusive('\n') {
            if line.trim_end_matches(['\r', '\n']).is_empty() {
                return (&self.data[..at], &self.data[at + line.len()..]);
            }
            at += line.len();
        }
        (&self.data, "")
    }
}

/// Decodes RFC 2047 encoded words; the blanks between two encoded words are dropped, as the RFC says.
fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut decoded = Vec::new();
    let mut blank = "";
    let mut rest = value;
    while !rest.is_empty() {
        let is_blank = rest.starts_with(char::is_whitespace);
        let end = rest.find(|c: char| c.is_whitespace() != is_blank).unwrap_or(rest.len());
        let (piece, after) = rest.split_at(end);
        rest = after;
        if is_blank {
            blank = piece;
            continue;
        }
        match decode_word(piece) {
            Some(bytes) => {
                if decoded.is_empty() {
                    out.push_str(blank);
                }
                decoded.extend(bytes);
            }
            None => {
                out.push_str(&String::from_utf8_lossy(&std::mem::take(&mut decoded)));
                out.push_str(blank);
                out.push_str(piece);
            }
        }
        blank = "";
    }
    out.push_str(&String::from_utf8_lossy(&decoded));
    out
}

/// The bytes of one `=?charset?B|Q?text?=` word in UTF-8 or US-ASCII; `None` for anything else.
fn decode_word(word: &str) -> Option<Vec<u8>> {
    let inner = word.strip_prefix("=?")?.strip_suffix("?=")?;
    let mut parts = inner.splitn(3, '?');
    let (charset, encoding, text) = (parts.next()?, parts.next()?, parts.next()?);
    let charset = charset.split('*').next().unwrap_or_default();
    if !charset.eq_ignore_ascii_case("utf-8") && !charset.eq_ignore_ascii_case("us-ascii") {
        return None;
    }
    match encoding {
        "B" | "b" => BASE64.decode(text).ok(),
        "Q" | "q" => Some(decode_quoted_printable(text.replace('_', " ").as_bytes())),
        _ => None,
    }
}

fn decode_quoted_printable(text: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(text.len());
    let mut at = 0;
    while at < text.len() {
        let rest = &text[at + 1..];
        if text[at] == b'=' {
            if rest.starts_with(b"\r\n") || rest.starts_with(b"\n") {
                at += if rest[0] == b'\r' { 3 } else { 2 };
                continue;
            }
            if let [high, low, ..] = rest
                && let (Some(high), Some(low)) = (hex(*high), hex(*low))
            {
                out.push((high << 4) | low);
                at += 3;
                continue;
            }
        }
        out.push(text[at]);
        at += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, BufReader};
    use tokio::net::tcp::OwnedReadHalf;

    const DEADLINE: Duration = Duration::from_secs(10);

    /// A raw SMTP client: writes lines, reads replies (all lines of a multi-line one).
    struct Client {
        reader: BufReader<OwnedReadHalf>,
        writer: OwnedWriteHalf,
    }

    impl Client {
        async fn connect(mailbox: &Mailbox) -> (Client, String) {
            let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, mailbox.port())).await.unwrap();
            let (reader, writer) = stream.into_split();
            let mut client = Client { reader: BufReader::new(reader), writer };
            let greeting = client.reply().await;
            (client, greeting)
        }

        async fn reply(&mut self) -> String {
            let mut reply = String::new();
            loop {
                let mut line = String::new();
                let read = tokio::time::timeout(DEADLINE, self.reader.read_line(&mut line)).await.unwrap().unwrap();
                assert!(read > 0, "the server closed the connection; reply so far: {reply:?}");
                reply.push_str(&line);
                if line.as_bytes().get(3) != Some(&b'-') {
                    return reply;
                }
            }
        }

        async fn send(&mut self, bytes: &[u8]) -> String {
            self.writer.write_all(bytes).await.unwrap();
            self.reply().await
        }
    }

    fn code(reply: &str) -> &str {
        &reply[..3]
    }

    #[tokio::test]
    async fn a_raw_client_gets_the_answers_of_rfc_5321() {
        let mailbox = Mailbox::start().await.unwrap();
        let (mut client, greeting) = Client::connect(&mailbox).await;
        assert_eq!(code(&greeting), "220");

        let ehlo = client.send(b"EHLO client.example\r\n").await;
        let lines: Vec<&str> = ehlo.lines().collect();
        assert!(lines[0].starts_with("250-dynsync-mailbox"), "{ehlo}");
        assert!(lines.contains(&"250-8BITMIME"), "{ehlo}");
        assert_eq!(lines.last(), Some(&"250 SIZE 10485760"), "{ehlo}");
        assert!(!ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"), "{ehlo}");

        assert_eq!(code(&client.send(b"DATA\r\n").await), "503");
        assert_eq!(code(&client.send(b"RCPT TO:<b@example.com>\r\n").await), "503");
        assert_eq!(code(&client.send(b"mail from:<a@example.com> BODY=8BITMIME\r\n").await), "250");
        assert_eq!(code(&client.send(b"MAIL FROM:<a@example.com>\r\n").await), "503");
        assert_eq!(code(&client.send(b"RCPT TO:<b@example.com>\r\n").await), "250");
        assert_eq!(code(&client.send(b"RCPT TO: <c@example.com>\r\n").await), "250");
        assert_eq!(code(&client.send(b"NOOP\r\n").await), "250");
        assert_eq!(code(&client.send(b"DATA\r\n").await), "354");
        assert_eq!(code(&client.send(b"Subject: hi\r\n\r\nhello\r\n.\r\n").await), "250");
        assert_eq!(code(&client.send(b"RSET\r\n").await), "250");
        assert_eq!(code(&client.send(b"STARTTLS\r\n").await), "502");
        assert_eq!(code(&client.send(b"FROB\r\n").await), "500");
        assert_eq!(code(&client.send(b"QUIT\r\n").await), "221");

        let mut rest = Vec::new();
        client.reader.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "the connection closes after QUIT");

        let mail = mailbox.wait_for(1, DEADLINE).await;
        assert_eq!(
            mail,
            [ReceivedMail {
                from: "a@example.com".into(),
                to: vec!["b@example.com".into(), "c@example.com".into()],
                data: "Subject: hi\r\n\r\nhello\r\n".into(),
            }]
        );
    }

    #[tokio::test]
    async fn dot_stuffing_is_undone_and_the_message_ends_at_a_lone_dot() {
        let mailbox = Mailbox::start().await.unwrap();
        let (mut client, _) = Client::connect(&mailbox).await;
        client.send(b"HELO client.example\r\n").await;
        client.send(b"MAIL FROM:<>\r\n").await;
        client.send(b"RCPT TO:<b@example.com>\r\n").await;
        client.send(b"DATA\r\n").await;
        let reply = client.send(b"Subject: dots\r\n\r\n..one dot\r\n... two\r\n.x\r\nend .\r\n.\r\n").await;
        assert_eq!(code(&reply), "250");

        let mail = &mailbox.wait_for(1, DEADLINE).await[0];
        assert_eq!(mail.from, "");
        assert_eq!(mail.body(), ".one dot\n.. two\nx\nend .\n");
    }

    #[tokio::test]
    async fn a_line_over_64_kb_is_refused_and_the_connection_stays_usable() {
        let mailbox = Mailbox::start().await.unwrap();
        let (mut client, _) = Client::connect(&mailbox).await;
        let mut long = vec![b'A'; 3 * MAX_LINE_BYTES];
        long.extend_from_slice(b"\r\n");
        assert_eq!(code(&client.send(&long).await), "500");
        assert_eq!(code(&client.send(b"NOOP\r\n").await), "250");

        // In a message too: the whole message is refused, the session goes on.
        client.send(b"EHLO client.example\r\n").await;
        client.send(b"MAIL FROM:<a@example.com>\r\n").await;
        client.send(b"RCPT TO:<b@example.com>\r\n").await;
        client.send(b"DATA\r\n").await;
        let mut message = b"Subject: long\r\n\r\n".to_vec();
        message.extend_from_slice(&long);
        message.extend_from_slice(b"short\r\n.\r\n");
        assert_eq!(code(&client.send(&message).await), "500");
        assert_eq!(code(&client.send(b"QUIT\r\n").await), "221");
        assert!(mailbox.messages().is_empty());
    }

    #[tokio::test]
    async fn a_message_over_10_mb_is_refused_with_552_and_not_kept() {
        let mailbox = Mailbox::start().await.unwrap();
        let (mut client, _) = Client::connect(&mailbox).await;
        client.send(b"EHLO client.example\r\n").await;
        assert_eq!(code(&client.send(b"MAIL FROM:<a@example.com> SIZE=20000000\r\n").await), "552");
        client.send(b"MAIL FROM:<a@example.com>\r\n").await;
        client.send(b"RCPT TO:<b@example.com>\r\n").await;
        client.send(b"DATA\r\n").await;
        let line = format!("{}\r\n", "x".repeat(60_000));
        let mut message = line.repeat(MAX_MESSAGE_BYTES / line.len() + 1).into_bytes();
        message.extend_from_slice(b".\r\n");
        assert_eq!(code(&client.send(&message).await), "552");
        assert_eq!(code(&client.send(b"NOOP\r\n").await), "250");
        assert!(mailbox.messages().is_empty());
    }

    #[tokio::test]
    async fn only_the_newest_1000_messages_are_kept() {
        let mailbox = Mailbox::start().await.unwrap();
        let (mut client, _) = Client::connect(&mailbox).await;
        client.send(b"EHLO client.example\r\n").await;
        for n in 0..=MAX_KEPT {
            client.send(b"MAIL FROM:<a@example.com>\r\n").await;
            client.send(b"RCPT TO:<b@example.com>\r\n").await;
            client.send(b"DATA\r\n").await;
            assert_eq!(code(&client.send(format!("Subject: {n}\r\n\r\n.\r\n").as_bytes()).await), "250");
        }
        let kept = mailbox.messages();
        assert_eq!(kept.len(), MAX_KEPT);
        assert_eq!(kept[0].header("subject").as_deref(), Some("1"));
        assert_eq!(kept[MAX_KEPT - 1].header("Subject").as_deref(), Some("1000"));
    }

    #[tokio::test]
    async fn waiting_for_mail_that_never_comes_returns_at_the_deadline() {
        let mailbox = Mailbox::start().await.unwrap();
        let started = std::time::Instant::now();
        assert!(mailbox.wait_for(1, Duration::from_millis(100)).await.is_empty());
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(100) && waited < Duration::from_secs(5), "{waited:?}");
    }

    #[tokio::test]
    async fn a_dropped_mailbox_stops_listening() {
        let mailbox = Mailbox::start().await.unwrap();
        let port = mailbox.port();
        drop(mailbox);
        let until = std::time::Instant::now() + DEADLINE;
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await.is_ok() {
            assert!(std::time::Instant::now() < until, "port {port} still takes connections");
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn headers_are_unfolded_and_decoded_and_bodies_decoded_as_their_encoding_says() {
        let mail = |headers: &str, body: &str| ReceivedMail {
            from: String::new(),
            to: Vec::new(),
            data: format!("{headers}\r\n\r\n{body}"),
        };
        let folded = mail("Subject: =?utf-8?b?WsO2w6s=?=\r\n =?utf-8?q?_M=C3=BCller?= and co\r\nX-Plain: a\r\n\tb", "");
        assert_eq!(folded.header("SUBJECT").as_deref(), Some("Zöë Müller and co"));
        assert_eq!(folded.header("x-plain").as_deref(), Some("a\tb"));
        assert_eq!(folded.header("To"), None);

        let quoted = mail("Content-Transfer-Encoding: quoted-printable", "Zo=C3=AB M=\r\n=C3=BCller =3D 1\r\n");
        assert_eq!(quoted.body(), "Zoë Müller = 1\n");
        let base64 = mail("Content-Transfer-Encoding: base64", "Wm/DqyBN\r\nw7xsbGVy\r\n");
        assert_eq!(base64.body(), "Zoë Müller");
        let plain = mail("Content-Transfer-Encoding: 7bit", "a=3D\r\nb\r\n");
        assert_eq!(plain.body(), "a=3D\nb\n");
    }
}
