//! The settings of `dynsync serve` and where they come from: a command-line flag, else its `DYNSYNC_*` environment
//! variable, else the config file given with `--config`, else the default. The file keeps a deployment's settings
//! in git, the environment suits containers and service managers, and a flag overrides both for one run.
//!
//! [`resolve`] merges the three layers as plain values (the caller reads the flags and the environment), so that
//! the order can be tested without touching the process's environment. It checks every setting before it answers,
//! and its error lists every problem at once, each with where the value came from (the flag, the variable, or the
//! file and key), so that one start is enough to learn everything there is to fix.
//!
//! Secrets are not settings: the key for secrets at rest and the API tokens come from `DYNSYNC_SECRET_KEY` and
//! `DYNSYNC_API_TOKENS` only. A file that holds either, or a database URL with a password, is refused: a config
//! file is kept in git and read by more people than the service's environment.

use crate::hosts::AllowedHosts;
use crate::leads::notify::{SmtpSecurity, SmtpSettings};
use crate::service::{DEFAULT_LOG_RETENTION, LeaseTimings, ServiceConfig};
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8686";
pub const DEFAULT_DATA_DIR: &str = "dynsync-data";
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// A process renews its leases at least this often, so that its death is noticed soon.
pub const MAX_LEASE_HEARTBEAT: Duration = Duration::from_secs(10);
/// A dead process's flows are taken over within this long.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(30);
/// Processes that share an application user's budget publish their spending at least this often and at most
/// this often: what another process sends between two ticks is not seen until the next, and each client keeps 1%
/// of the limits in reserve for it (60 requests of 6,000 a window, three seconds of another process sending at the
/// whole rate); more often than 50ms is a write and a read of the store twenty times a second for nothing.
pub const BUDGET_INTERVAL_RANGE: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));
/// A hundred years, more than any inlet log is kept; without a bound, a retention of millennia would overflow the
/// date arithmetic of pruning and stop the process.
pub const MAX_LOG_RETENTION: Duration = Duration::from_secs(36_500 * 86_400);

/// The settings one layer gives, as written: [`resolve`] parses and checks them, so that it can say where a wrong
/// value came from. `None` leaves the setting to the layers below.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layer {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub log_retention: Option<String>,
    pub lease_heartbeat: Option<String>,
    pub lease_ttl: Option<String>,
    pub budget_interval: Option<String>,
    pub log_level: Option<String>,
    /// Comma-separated `host[:port]`s; the file's list is joined so.
    pub allowed_hosts: Option<String>,
}

/// A config file, read and parsed: its path, to name in errors, and the settings it gives.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub layer: Layer,
    /// The `[smtp]` section: the server lead intakes' notifications go through. Its password is given in
    /// `DYNSYNC_SMTP_PASSWORD`, never in the file.
    pub smtp: Option<SmtpSettings>,
}

/// The resolved settings of `dynsync serve`.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// Everything but the secrets, which the caller reads from the environment.
    pub service: ServiceConfig,
    /// A tracing `EnvFilter` directive; `RUST_LOG`, when set, wins over it.
    pub log_level: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the config file {} does not exist: give --config the path of an existing file", shown(.path))]
    Missing { path: PathBuf },
    #[error("cannot read the config file {}: {source}", shown(.path))]
    Unreadable { path: PathBuf, source: std::io::Error },
    /// The file is not TOML, has a key dynsync does not know, or holds a secret.
    #[error("{}", listing(&format!("the config file {}", .path.display()), true, .problems))]
    File { path: PathBuf, problems: Vec<String> },
    /// Values that are wrong, wherever they came from.
    #[error("{}", listing("the settings", false, .problems))]
    Invalid { problems: Vec<String> },
}

/// A path as given and, when it is relative, where that is: a config file is often looked for in the wrong place.
fn shown(path: &Path) -> String {
    match std::env::current_dir() {
        Ok(dir) if path.is_relative() => format!("{} ({})", path.display(), dir.join(path).display()),
        _ => path.display().to_string(),
    }
}

/// One problem on its own line, several as a list; `name_single` puts the subject before a lone problem too.
fn listing(subject: &str, name_single: bool, problems: &[String]) -> String {
    match problems {
        [one] if name_single => format!("{subject}: {one}"),
        [one] => one.clone(),
        many => {
            let items: Vec<String> = many.iter().map(|p| format!("  - {}", p.replace('\n', "\n    "))).collect();
            format!("{} problems in {subject}:\n{}", many.len(), items.join("\n"))
        }
    }
}

/// The file's shape. Unknown keys are refused, so that a misspelt key is not silently left at its default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    log_retention: Option<String>,
    log_level: Option<String>,
    allowed_hosts: Option<Vec<String>>,
    #[serde(default)]
    lease: FileLease,
    #[serde(default)]
    budget: FileBudget,
    smtp: Option<FileSmtp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSmtp {
    host: String,
    port: Option<u16>,
    #[serde(default)]
    security: SmtpSecurity,
    username: Option<String>,
    from: String,
}

impl FileSmtp {
    fn settings(self) -> SmtpSettings {
        let port = self.port.unwrap_or(match self.security {
            SmtpSecurity::None => 25,
            SmtpSecurity::StartTls => 587,
            SmtpSecurity::Tls => 465,
        });
        SmtpSettings {
            host: self.host,
            port,
            security: self.security,
            username: self.username,
            password: None,
            from: self.from,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLease {
    heartbeat: Option<String>,
    ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBudget {
    interval: Option<String>,
}

/// Keys a file must not have, and the environment variable that gives each instead.
const SECRETS: [(&str, &str); 2] = [("secret_key", "DYNSYNC_SECRET_KEY"), ("api_tokens", "DYNSYNC_API_TOKENS")];

impl ConfigFile {
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ConfigError::Missing { path: path.to_path_buf() },
            _ => ConfigError::Unreadable { path: path.to_path_buf(), source },
        })?;
        ConfigFile::parse(path, &text)
    }

    /// Parses a file's text; `path` is only named in errors.
    pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, ConfigError> {
        let refuse = |problems| ConfigError::File { path: path.to_path_buf(), problems };
        let toml_problem = |e: toml::de::Error| e.to_string().trim_end().to_string();
        let mut table: toml::Table = toml::from_str(text).map_err(|e| refuse(vec![toml_problem(e)]))?;
        let mut problems = Vec::new();
        for (key, variable) in SECRETS {
            if table.remove(key).is_some() {
                problems.push(format!(
                    "{key} is a secret, and secrets don't belong in a config file kept in git: remove it, and set \
                     {variable} in the service's environment instead"
                ));
            }
        }
        if let Some(smtp) = table.get_mut("smtp").and_then(toml::Value::as_table_mut)
            && smtp.remove("password").is_some()
        {
            problems.push(
                "smtp.password is a secret, and secrets don't belong in a config file kept in git: remove it, and set \
                 DYNSYNC_SMTP_PASSWORD in the service's environment instead"
                    .to_string(),
            );
        }
        // From the text when it can be, for errors with a line number; without the secrets when they were there,
        // so that the other keys are checked too and not reported as unknown.
        let settings = if problems.is_empty() {
            toml::from_str::<FileSettings>(text)
        } else {
            toml::Value::Table(table).try_into::<FileSettings>()
        };
        let settings = match settings {
            Ok(settings) => Some(settings),
            Err(e) => {
                problems.push(toml_problem(e));
                None
            }
        };
        if let Some(url) = settings.as_ref().and_then(|s| s.database_url.as_deref())
            && url::Url::parse(url).is_ok_and(|u| u.password().is_some())
        {
            problems.push(
                "database_url holds a password, and secrets don't belong in a config file kept in git: remove the \
                 password from the URL and give it in PGPASSWORD or ~/.pgpass, or give the whole URL in \
                 DYNSYNC_DATABASE_URL instead"
                    .to_string(),
            );
        }
        match settings {
            Some(s) if problems.is_empty() => Ok(ConfigFile {
                path: path.to_path_buf(),
                layer: Layer {
                    listen: s.listen,
                    data_dir: s.data_dir,
                    database_url: s.database_url,
                    log_retention: s.log_retention,
                    lease_heartbeat: s.lease.heartbeat,
                    lease_ttl: s.lease.ttl,
                    budget_interval: s.budget.interval,
                    log_level: s.log_level,
                    allowed_hosts: s.allowed_hosts.map(|hosts| hosts.join(",")),
                },
                smtp: s.smtp.map(FileSmtp::settings),
            }),
            _ => Err(refuse(problems)),
        }
    }
}

/// How one setting is spelt in each layer.
struct Spelling {
    flag: &'static str,
    env: &'static str,
    key: &'static str,
    /// Whether a wrong value may be repeated in an error: not a database URL, which may hold a password.
    echo: bool,
}

const LISTEN: Spelling = Spelling { flag: "--listen", env: "DYNSYNC_LISTEN", key: "listen", echo: true };
const DATA_DIR: Spelling = Spelling { flag: "--data-dir", env: "DYNSYNC_DATA_DIR", key: "data_dir", echo: true };
const DATABASE_URL: Spelling =
    Spelling { flag: "--database-url", env: "DYNSYNC_DATABASE_URL", key: "database_url", echo: false };
const LOG_RETENTION: Spelling =
    Spelling { flag: "--log-retention", env: "DYNSYNC_LOG_RETENTION", key: "log_retention", echo: true };
const LEASE_HEARTBEAT: Spelling =
    Spelling { flag: "--lease-heartbeat", env: "DYNSYNC_LEASE_HEARTBEAT", key: "[lease] heartbeat", echo: true };
const LEASE_TTL: Spelling = Spelling { flag: "--lease-ttl", env: "DYNSYNC_LEASE_TTL", key: "[lease] ttl", echo: true };
const BUDGET_INTERVAL: Spelling =
    Spelling { flag: "--budget-interval", env: "DYNSYNC_BUDGET_INTERVAL", key: "[budget] interval", echo: true };
const LOG_LEVEL: Spelling = Spelling { flag: "--log-level", env: "DYNSYNC_LOG_LEVEL", key: "log_level", echo: true };
const ALLOWED_HOSTS: Spelling =
    Spelling { flag: "--allowed-hosts", env: "DYNSYNC_ALLOWED_HOSTS", key: "allowed_hosts", echo: true };

#[derive(Clone, Copy)]
enum Origin<'a> {
    Flag,
    Env,
    File(&'a Path),
}

/// A value as given, and where: `--lease-ttl 40s`, `DYNSYNC_LEASE_TTL=40s`, `[lease] ttl = "40s" in dynsync.toml`.
struct Given<'a> {
    spelling: &'a Spelling,
    text: &'a str,
    origin: Origin<'a>,
}

impl fmt::Display for Given<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Spelling { flag, env, key, echo } = self.spelling;
        match (self.origin, echo) {
            (Origin::Flag, true) => write!(f, "{flag} {}", self.text),
            (Origin::Env, true) => write!(f, "{env}={}", self.text),
            (Origin::File(path), true) => write!(f, "{key} = {:?} in {}", self.text, path.display()),
            (Origin::Flag, false) => write!(f, "{flag}"),
            (Origin::Env, false) => write!(f, "{env}"),
            (Origin::File(path), false) => write!(f, "{key} in {}", path.display()),
        }
    }
}

/// A setting once resolved: its value (`None` when the given one was wrong, which a problem says) and where it came
/// from, for problems that involve two settings.
struct Resolved<T> {
    value: Option<T>,
    from: String,
}

struct Layers<'a> {
    flags: &'a Layer,
    env: &'a Layer,
    file: Option<&'a ConfigFile>,
}

impl<'a> Layers<'a> {
    /// The value of the first layer that gives one, and which layer that is.
    fn pick<T: ?Sized>(&self, get: impl Fn(&'a Layer) -> Option<&'a T>) -> Option<(&'a T, Origin<'a>)> {
        get(self.flags)
            .map(|v| (v, Origin::Flag))
            .or_else(|| get(self.env).map(|v| (v, Origin::Env)))
            .or_else(|| self.file.and_then(|f| get(&f.layer).map(|v| (v, Origin::File(&f.path)))))
    }

    /// Resolves one setting: the first layer's value parsed, else the default. `parse` says what is wrong as the
    /// rest of a sentence whose subject is the given value ("is not a duration…").
    fn resolve<T>(
        &self,
        spelling: &'a Spelling,
        get: impl Fn(&'a Layer) -> Option<&'a str>,
        default: (T, String),
        parse: impl FnOnce(&str) -> Result<T, String>,
        problems: &mut Vec<String>,
    ) -> Resolved<T> {
        let Some((text, origin)) = self.pick(get) else {
            let (value, shown) = default;
            return Resolved { value: Some(value), from: format!("the default {} ({shown})", spelling.key) };
        };
        let given = Given { spelling, text, origin };
        let parsed = if text.trim().is_empty() {
            Err("is empty: give a value, or leave the setting out for its default".to_string())
        } else {
            parse(text)
        };
        match parsed {
            Ok(value) => Resolved { value: Some(value), from: given.to_string() },
            Err(why) => {
                problems.push(format!("{given} {why}"));
                Resolved { value: None, from: given.to_string() }
            }
        }
    }
}

/// Merges the layers, a flag over the environment over the file over the default, and checks the result; the
/// error lists every problem.
pub fn resolve(flags: &Layer, env: &Layer, file: Option<&ConfigFile>) -> Result<ServeSettings, ConfigError> {
    let layers = Layers { flags, env, file };
    let lease = LeaseTimings::default();
    let mut problems = Vec::new();
    let listen = layers.resolve(
        &LISTEN,
        |l| l.listen.as_deref(),
        (DEFAULT_LISTEN.parse().expect("the default address parses"), DEFAULT_LISTEN.to_string()),
        parse_listen,
        &mut problems,
    );
    let data_dir = match layers.pick(|l| l.data_dir.as_deref()) {
        None => PathBuf::from(DEFAULT_DATA_DIR),
        Some((path, origin)) => {
            if path.as_os_str().is_empty() {
                let given = Given { spelling: &DATA_DIR, text: "", origin };
                problems.push(format!("{given} is empty: give a directory, or leave the setting out for its default"));
            }
            path.into()
        }
    };
    let database_url = layers.resolve(
        &DATABASE_URL,
        |l| l.database_url.as_deref(),
        (None, "SQLite in the data directory".to_string()),
        parse_database_url,
        &mut problems,
    );
    let log_retention = layers.resolve(
        &LOG_RETENTION,
        |l| l.log_retention.as_deref(),
        (DEFAULT_LOG_RETENTION, show_duration(DEFAULT_LOG_RETENTION)),
        parse_log_retention,
        &mut problems,
    );
    let heartbeat = layers.resolve(
        &LEASE_HEARTBEAT,
        |l| l.lease_heartbeat.as_deref(),
        (lease.heartbeat, show_duration(lease.heartbeat)),
        parse_heartbeat,
        &mut problems,
    );
    let ttl = layers.resolve(
        &LEASE_TTL,
        |l| l.lease_ttl.as_deref(),
        (lease.ttl, show_duration(lease.ttl)),
        parse_ttl,
        &mut problems,
    );
    let budget_interval = layers.resolve(
        &BUDGET_INTERVAL,
        |l| l.budget_interval.as_deref(),
        (crate::pipeline::budgets::DEFAULT_INTERVAL, show_duration(crate::pipeline::budgets::DEFAULT_INTERVAL)),
        parse_budget_interval,
        &mut problems,
    );
    let log_level = layers.resolve(
        &LOG_LEVEL,
        |l| l.log_level.as_deref(),
        (DEFAULT_LOG_LEVEL.to_string(), DEFAULT_LOG_LEVEL.to_string()),
        parse_log_level,
        &mut problems,
    );
    let allowed_hosts = layers.resolve(
        &ALLOWED_HOSTS,
        |l| l.allowed_hosts.as_deref(),
        (AllowedHosts::default(), "none: Microsoft's clouds only".to_string()),
        |text| text.parse::<AllowedHosts>().map_err(|e| format!("is wrong: {e}")),
        &mut problems,
    );
    if let (Some(h), Some(t)) = (heartbeat.value, ttl.value)
        && t < h * 2
    {
        problems.push(format!(
            "{} is less than twice {}: a lease must outlive two heartbeats, so that one late renewal does not hand \
             a live process's flows to another; give a ttl of at least {} or a shorter heartbeat",
            ttl.from,
            heartbeat.from,
            show_duration(h * 2)
        ));
    }
    let lease = heartbeat.value.zip(ttl.value).map(|(heartbeat, ttl)| LeaseTimings { heartbeat, ttl });
    match (listen.value, database_url.value, log_retention.value, lease, budget_interval.value, log_level.value) {
        (
            Some(listen),
            Some(database_url),
            Some(log_retention),
            Some(lease),
            Some(budget_interval),
            Some(log_level),
        ) if problems.is_empty() => {
            let mut service = ServiceConfig::new(data_dir);
            service.listen = listen;
            service.database_url = database_url;
            service.log_retention = log_retention;
            service.lease = lease;
            service.budget_interval = budget_interval;
            service.smtp = file.and_then(|f| f.smtp.clone());
            service.allowed_hosts = allowed_hosts.value.unwrap_or_default();
            Ok(ServeSettings { service, log_level })
        }
        _ => Err(ConfigError::Invalid { problems }),
    }
}

fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        "is not an address to listen on: write an IP address and a port, like 127.0.0.1:8686 (this machine only) \
         or 0.0.0.0:8686 (every interface)"
            .to_string()
    })
}

fn parse_database_url(text: &str) -> Result<Option<String>, String> {
    if ["postgres://", "postgresql://", "sqlite:"].iter().any(|scheme| text.starts_with(scheme)) {
        Ok(Some(text.to_string()))
    } else {
        Err("is not a PostgreSQL URL: write postgres://user@host/database, or leave it out to keep the store in \
             SQLite in the data directory"
            .to_string())
    }
}

fn parse_log_retention(text: &str) -> Result<Duration, String> {
    match parse_duration(text) {
        Ok(d) if d > MAX_LOG_RETENTION => Err(format!(
            "is longer than {}, a hundred years: give a shorter retention",
            show_duration(MAX_LOG_RETENTION)
        )),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("is {e}")),
    }
}

fn parse_heartbeat(text: &str) -> Result<Duration, String> {
    match parse_duration(text) {
        Ok(Duration::ZERO) => Err("is zero: a process renews its leases every heartbeat, so give a heartbeat longer \
                                   than 0s, and at most 10s"
            .to_string()),
        Ok(d) if d > MAX_LEASE_HEARTBEAT => Err(format!(
            "is longer than {}: a process renews its leases every heartbeat, and must do so at least every {} so \
             that its death is noticed soon; give {} or less",
            show_duration(MAX_LEASE_HEARTBEAT),
            show_duration(MAX_LEASE_HEARTBEAT),
            show_duration(MAX_LEASE_HEARTBEAT)
        )),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("is {e}")),
    }
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    match parse_duration(text) {
        Ok(d) if d > MAX_LEASE_TTL => Err(format!(
            "is longer than {}: a lease not renewed for the ttl is taken over, and a dead process's flows must be \
             taken over within {}; give {} or less",
            show_duration(MAX_LEASE_TTL),
            show_duration(MAX_LEASE_TTL),
            show_duration(MAX_LEASE_TTL)
        )),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("is {e}")),
    }
}

fn parse_budget_interval(text: &str) -> Result<Duration, String> {
    let (least, most) = BUDGET_INTERVAL_RANGE;
    match parse_duration(text) {
        Ok(d) if d < least || d > most => Err(format!(
            "is out of range: processes that write through one application user publish what they spent every \
             interval, so that each holds back for the others; give {} to {} (the longer, the more each may send \
             unseen)",
            show_duration(least),
            show_duration(most)
        )),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("is {e}")),
    }
}

fn parse_log_level(text: &str) -> Result<String, String> {
    use tracing_subscriber::filter::LevelFilter;
    let advice = "write a level (error, warn, info, debug, trace or off), or directives like info,dynsync=debug";
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(text) {
        return Err(format!("is not a log filter ({e}): {advice}"));
    }
    // A lone word is a valid directive, one that turns on every level of a module of that name: "warning" or
    // "verbose" would silence dynsync's own log without a word.
    for word in text.split(',').map(str::trim).filter(|d| !d.is_empty() && !d.contains(['=', '[', ':'])) {
        if word.parse::<LevelFilter>().is_err() {
            return Err(format!("names no level: \"{word}\" is not one; {advice}"));
        }
    }
    Ok(text.to_string())
}

/// A duration as the settings write it: a whole number and one unit, `ms`, `s`, `m`, `h` or `d` (`500ms`, `30s`,
/// `15m`, `12h`, `7d`). Nothing else, so that `1.5h`, `90 s` or `1h30m` are refused rather than read as something unintended.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let (digits, millis_per_unit) = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
        .into_iter()
        .find_map(|(unit, millis)| text.strip_suffix(unit).map(|digits| (digits, millis)))
        .ok_or(DurationError::NotADuration)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DurationError::NotADuration);
    }
    // Only digits are left, so a number that does not parse is one too large for a u64.
    let count: u64 = digits.parse().map_err(|_| DurationError::TooLong)?;
    count.checked_mul(millis_per_unit).map(Duration::from_millis).ok_or(DurationError::TooLong)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("not a duration: write a whole number and a unit (ms, s, m, h or d), like 500ms, 30s, 15m, 12h or 7d")]
    NotADuration,
    #[error("too long a duration to count in seconds")]
    TooLong,
}

/// A duration the way the settings write it, in the largest unit that is exact: `7d`, `15s`, `500ms`.
pub fn show_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 {
        return match d.subsec_nanos() % 1_000_000 {
            0 => format!("{}ms", d.as_millis()),
            _ => format!("{d:?}"),
        };
    }
    let unit =
        [(86_400, 'd'), (3600, 'h'), (60, 'm')].into_iter().find(|&(per, _)| secs != 0 && secs.is_multiple_of(per));
    match unit {
        Some((per, unit)) => format!("{}{unit}", secs / per),
        None => format!("{secs}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> ConfigFile {
        ConfigFile::parse(Path::new("dynsync.toml"), text).expect("the file parses")
    }

    fn file_problems(text: &str) -> Vec<String> {
        match ConfigFile::parse(Path::new("dynsync.toml"), text) {
            Err(ConfigError::File { path, problems }) => {
                assert_eq!(path, Path::new("dynsync.toml"));
                problems
            }
            other => panic!("expected the file to be refused, got {other:?}"),
        }
    }

    fn problems(flags: &Layer, env: &Layer, file: Option<&ConfigFile>) -> Vec<String> {
        match resolve(flags, env, file) {
            Err(ConfigError::Invalid { problems }) => problems,
            other => panic!("expected invalid settings, got {other:?}"),
        }
    }

    fn layer(value: &str) -> Layer {
        Layer {
            listen: Some(format!("127.0.0.1:{value}")),
            data_dir: Some(PathBuf::from(format!("dir-{value}"))),
            database_url: Some(format!("postgres://dynsync@host/db{value}")),
            log_retention: Some(format!("{value}h")),
            lease_heartbeat: Some(format!("{}s", value.parse::<u64>().unwrap() % 10 + 1)),
            lease_ttl: Some(format!("{}s", value.parse::<u64>().unwrap() % 10 + 20)),
            budget_interval: Some(format!("{}ms", value.parse::<u64>().unwrap() % 1000 + 100)),
            log_level: Some(format!("dynsync={}", ["error", "warn", "info", "debug"][value.len() % 4])),
            allowed_hosts: Some(format!("127.0.0.{}", value.len())),
        }
    }

    fn assert_from(settings: &ServeSettings, source: &Layer) {
        let s = &settings.service;
        assert_eq!(Some(s.listen.to_string()), source.listen);
        assert_eq!(Some(&s.data_dir), source.data_dir.as_ref());
        assert_eq!(Some(s.allowed_hosts.to_string()), source.allowed_hosts);
        assert_eq!(s.database_url, source.database_url);
        assert_eq!(Some(show_duration(s.log_retention)), source.log_retention);
        assert_eq!(Some(show_duration(s.lease.heartbeat)), source.lease_heartbeat);
        assert_eq!(Some(show_duration(s.lease.ttl)), source.lease_ttl);
        assert_eq!(Some(show_duration(s.budget_interval)), source.budget_interval);
        assert_eq!(Some(&settings.log_level), source.log_level.as_ref());
    }

    #[test]
    fn a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default() {
        let (flags, env) = (layer("1"), layer("22"));
        let in_file = ConfigFile { path: "dynsync.toml".into(), layer: layer("333"), smtp: None };
        let none = Layer::default();

        assert_from(&resolve(&flags, &env, Some(&in_file)).unwrap(), &flags);
        assert_from(&resolve(&none, &env, Some(&in_file)).unwrap(), &env);
        assert_from(&resolve(&none, &none, Some(&in_file)).unwrap(), &in_file.layer);

        let defaults = resolve(&none, &none, None).unwrap();
        assert_eq!(defaults.service.listen, "127.0.0.1:8686".parse().unwrap());
        assert_eq!(defaults.service.data_dir, Path::new("dynsync-data"));
        assert_eq!(defaults.service.database_url, None);
        assert_eq!(defaults.service.log_retention, DEFAULT_LOG_RETENTION);
        assert_eq!(defaults.service.lease, LeaseTimings::default());
        assert_eq!(defaults.service.budget_interval, crate::pipeline::budgets::DEFAULT_INTERVAL);
        assert_eq!(defaults.log_level, "info");
        assert_eq!(defaults.service.secret_key, None);
        assert!(defaults.service.api_tokens.is_empty());
    }

    #[test]
    fn each_setting_falls_through_to_the_next_layer_on_its_own() {
        let flags = Layer { listen: Some("127.0.0.1:1".into()), ..Layer::default() };
        let env = Layer { lease_ttl: Some("25s".into()), listen: Some("127.0.0.1:2".into()), ..Layer::default() };
        let in_file = file("log_retention = \"12h\"\n[lease]\nttl = \"18s\"\nheartbeat = \"9s\"\n");

        let settings = resolve(&flags, &env, Some(&in_file)).unwrap();
        assert_eq!(settings.service.listen.port(), 1);
        assert_eq!(
            settings.service.lease,
            LeaseTimings { heartbeat: Duration::from_secs(9), ttl: Duration::from_secs(25) }
        );
        assert_eq!(settings.service.log_retention, Duration::from_secs(12 * 3600));
        assert_eq!(settings.service.data_dir, Path::new("dynsync-data"));
        assert_eq!(settings.log_level, "info");
    }

    #[test]
    fn a_wrong_value_in_a_lower_layer_does_not_matter_when_a_higher_one_gives_the_setting() {
        let flags = Layer { log_retention: Some("1d".into()), ..Layer::default() };
        let in_file = file("log_retention = \"a week\"\n");
        let settings = resolve(&flags, &Layer::default(), Some(&in_file)).unwrap();
        assert_eq!(settings.service.log_retention, Duration::from_secs(86_400));
    }

    #[test]
    fn durations_are_a_whole_number_and_one_unit() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(15 * 60)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("007m"), Ok(Duration::from_secs(7 * 60)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn anything_else_is_not_a_duration() {
        for text in [
            "", "s", "7", "7 d", " 7d", "7d ", "7D", "7w", "1.5h", "-1s", "+1s", "1h30m", "100 ms", "1.5ms", "ms",
            "7é", "PT5S", "5sec",
        ] {
            assert_eq!(parse_duration(text), Err(DurationError::NotADuration), "{text:?}");
        }
        assert_eq!(parse_duration("99999999999999999999s"), Err(DurationError::TooLong));
        assert_eq!(parse_duration("999999999999999999d"), Err(DurationError::TooLong));
        assert!(
            DurationError::NotADuration.to_string().contains("500ms, 30s, 15m, 12h or 7d"),
            "the error shows how to write one"
        );
    }

    #[test]
    fn durations_show_as_they_are_written() {
        for text in ["30s", "15m", "12h", "7d", "0s", "90s", "25h", "500ms", "1500ms"] {
            assert_eq!(show_duration(parse_duration(text).unwrap()), text);
        }
        assert_eq!(show_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(show_duration(Duration::from_millis(2000)), "2s");
        assert_eq!(show_duration(Duration::from_micros(1500)), "1.5ms");
    }

    #[test]
    fn every_problem_is_reported_at_once_with_where_it_came_from() {
        let flags = Layer { listen: Some("localhost:8686".into()), ..Layer::default() };
        let env = Layer { log_retention: Some("a week".into()), log_level: Some("warning".into()), ..Layer::default() };
        let in_file = file("[lease]\nheartbeat = \"20s\"\nttl = \"1m\"\n");

        let problems = problems(&flags, &env, Some(&in_file));
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems[0].starts_with("--listen localhost:8686 is not an address"), "{}", problems[0]);
        assert!(problems[1].starts_with("DYNSYNC_LOG_RETENTION=a week is not a duration"), "{}", problems[1]);
        assert!(
            problems[2].starts_with("[lease] heartbeat = \"20s\" in dynsync.toml is longer than 10s"),
            "{}",
            problems[2]
        );
        assert!(problems[3].starts_with("[lease] ttl = \"1m\" in dynsync.toml is longer than 30s"), "{}", problems[3]);
        assert!(problems[4].starts_with("DYNSYNC_LOG_LEVEL=warning names no level"), "{}", problems[4]);

        let message = resolve(&flags, &env, Some(&in_file)).unwrap_err().to_string();
        assert!(message.starts_with("5 problems in the settings:\n  - --listen"), "{message}");
    }

    #[test]
    fn a_ttl_under_twice_the_heartbeat_is_refused_naming_both() {
        let flags = Layer { lease_heartbeat: Some("8s".into()), ..Layer::default() };
        let problems = problems(&flags, &Layer::default(), None);
        assert_eq!(
            problems,
            ["the default [lease] ttl (15s) is less than twice --lease-heartbeat 8s: a lease must outlive two \
                 heartbeats, so that one late renewal does not hand a live process's flows to another; give a ttl \
                 of at least 16s or a shorter heartbeat"]
        );

        let env = Layer { lease_ttl: Some("10s".into()), lease_heartbeat: Some("5s".into()), ..Layer::default() };
        assert!(resolve(&Layer::default(), &env, None).is_ok(), "exactly twice the heartbeat is enough");
        let env = Layer { lease_ttl: Some("30s".into()), lease_heartbeat: Some("10s".into()), ..Layer::default() };
        assert!(resolve(&Layer::default(), &env, None).is_ok(), "the limits themselves are allowed");
    }

    #[test]
    fn a_budget_interval_is_50ms_to_2s() {
        for text in ["50ms", "250ms", "1s", "2s", "2000ms"] {
            let flags = Layer { budget_interval: Some(text.into()), ..Layer::default() };
            let settings = resolve(&flags, &Layer::default(), None).unwrap();
            assert_eq!(settings.service.budget_interval, parse_duration(text).unwrap(), "{text}");
        }
        for text in ["0s", "49ms", "2001ms", "3s", "1m"] {
            let env = Layer { budget_interval: Some(text.into()), ..Layer::default() };
            let problems = problems(&Layer::default(), &env, None);
            assert_eq!(problems.len(), 1, "{problems:#?}");
            let expected = format!("DYNSYNC_BUDGET_INTERVAL={text} is out of range");
            assert!(problems[0].starts_with(&expected) && problems[0].contains("give 50ms to 2s"), "{}", problems[0]);
        }
        let in_file = file("[budget]\ninterval = \"half a second\"\n");
        let problems = problems(&Layer::default(), &Layer::default(), Some(&in_file));
        assert!(problems[0].starts_with("[budget] interval = \"half a second\" in dynsync.toml is not a duration"));
    }

    #[test]
    fn a_heartbeat_of_zero_is_refused() {
        let flags = Layer { lease_heartbeat: Some("0s".into()), ..Layer::default() };
        let problems = problems(&flags, &Layer::default(), None);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].starts_with("--lease-heartbeat 0s is zero"), "{}", problems[0]);
    }

    #[test]
    fn empty_values_and_wrong_database_urls_are_refused_without_showing_the_url() {
        let flags = Layer {
            database_url: Some("mysql://root:hunter2@db/dynsync".into()),
            log_level: Some(" ".into()),
            ..Layer::default()
        };
        let problems = problems(&flags, &Layer::default(), Some(&file("data_dir = \"\"\n")));
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0].starts_with("data_dir = \"\" in dynsync.toml is empty"), "{}", problems[0]);
        assert!(problems[1].starts_with("--database-url is not a PostgreSQL URL"), "{}", problems[1]);
        assert!(!problems[1].contains("hunter2"), "the URL may hold a password: {}", problems[1]);
        assert!(problems[2].starts_with("--log-level   is empty"), "{}", problems[2]);
    }

    #[test]
    fn log_levels_are_tracing_directives() {
        for level in ["info", "WARN", "off", "info,dynsync=debug", "dynsync::pipeline=trace", "warn,sqlx=error"] {
            assert_eq!(parse_log_level(level).as_deref(), Ok(level));
        }
        for level in ["verbose", "info,loud", "dynsync=loud"] {
            assert!(parse_log_level(level).is_err(), "{level}");
        }
    }

    #[test]
    fn an_unknown_key_is_refused_naming_the_key_and_the_file() {
        let problems = file_problems("listen = \"127.0.0.1:9000\"\nlisten_address = \"0.0.0.0:80\"\n");
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].contains("unknown field `listen_address`"), "{}", problems[0]);
        assert!(problems[0].contains("line 2"), "{}", problems[0]);

        let problems = file_problems("[lease]\nheartbeat = \"5s\"\ntimeout = \"15s\"\n");
        assert!(problems[0].contains("unknown field `timeout`"), "{}", problems[0]);

        let message = ConfigFile::parse(Path::new("conf/dynsync.toml"), "colour = \"blue\"\n").unwrap_err().to_string();
        assert!(message.starts_with("the config file conf/dynsync.toml: "), "{message}");
        assert!(message.contains("colour"), "{message}");
    }

    #[test]
    fn a_syntax_error_names_the_file_and_the_line() {
        let message = ConfigFile::parse(Path::new("dynsync.toml"), "listen = \"127.0.0.1:9000\"\n\nlog_level = info\n")
            .unwrap_err()
            .to_string();
        assert!(message.starts_with("the config file dynsync.toml: "), "{message}");
        assert!(message.contains("line 3"), "{message}");
    }

    #[test]
    fn a_value_of_the_wrong_type_names_the_key() {
        let problems = file_problems("log_retention = 7\n");
        assert!(problems[0].contains("line 1") && problems[0].contains("log_retention"), "{}", problems[0]);
    }

    #[test]
    fn secrets_in_the_file_are_refused_pointing_to_the_environment() {
        let problems = file_problems(
            "secret_key = \"c2VjcmV0\"\napi_tokens = [\"tok\"]\nlog_retention = \"7d\"\nlisten_address = \"x\"\n",
        );
        assert_eq!(problems.len(), 3, "both secrets, and the unknown key too: {problems:#?}");
        assert!(problems[0].starts_with("secret_key is a secret") && problems[0].contains("DYNSYNC_SECRET_KEY"));
        assert!(problems[1].starts_with("api_tokens is a secret") && problems[1].contains("DYNSYNC_API_TOKENS"));
        assert!(problems[2].contains("listen_address"), "{}", problems[2]);
        for problem in &problems {
            assert!(!problem.contains("c2VjcmV0") && !problem.contains("tok\""), "no secret repeated: {problem}");
        }
    }

    #[test]
    fn a_database_url_with_a_password_is_refused_in_the_file_only() {
        let problems = file_problems("database_url = \"postgres://dynsync:hunter2@db/dynsync\"\n");
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].starts_with("database_url holds a password"), "{}", problems[0]);
        assert!(problems[0].contains("DYNSYNC_DATABASE_URL") && !problems[0].contains("hunter2"));

        let env = Layer { database_url: Some("postgres://dynsync:hunter2@db/dynsync".into()), ..Layer::default() };
        let settings = resolve(&Layer::default(), &env, None).unwrap();
        assert_eq!(settings.service.database_url.as_deref(), Some("postgres://dynsync:hunter2@db/dynsync"));
        assert!(ConfigFile::parse(Path::new("f"), "database_url = \"postgres://dynsync@db/dynsync\"\n").is_ok());
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nowhere.toml");
        let error = ConfigFile::load(&path).unwrap_err();
        assert!(matches!(error, ConfigError::Missing { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            format!("the config file {} does not exist: give --config the path of an existing file", path.display())
        );

        let relative = ConfigFile::load(Path::new("no-such-dynsync.toml")).unwrap_err().to_string();
        let absolute = std::env::current_dir().unwrap().join("no-such-dynsync.toml");
        assert!(relative.contains(&format!("no-such-dynsync.toml ({})", absolute.display())), "{relative}");
    }

    #[test]
    fn an_empty_file_leaves_every_setting_to_the_other_layers() {
        assert_eq!(file("").layer, Layer::default());
        assert_eq!(file("# nothing set yet\n[lease]\n").layer, Layer::default());
    }

    #[test]
    fn the_readme_example_sets_every_key_and_is_valid() {
        let readme = include_str!("../../../README.md");
        let section = readme.split("\n## Configuration\n").nth(1).expect("the README has a Configuration section");
        let example = section
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("the Configuration section has a TOML example");
        let example = file(example);
        let layer = &example.layer;
        assert!(
            layer.listen.is_some()
                && layer.data_dir.is_some()
                && layer.database_url.is_some()
                && layer.log_retention.is_some()
                && layer.lease_heartbeat.is_some()
                && layer.lease_ttl.is_some()
                && layer.budget_interval.is_some()
                && layer.log_level.is_some(),
            "the example shows every key: {layer:?}"
        );
        resolve(&Layer::default(), &Layer::default(), Some(&example)).expect("the example's values are valid");
    }
}
