//! `dataverse-emulator`: runs a local Dataverse environment. Prints one JSON line on stdout with its URL and
//! credentials; logs go to stderr.

use anyhow::Context;

/// The same allocator as dynsync's (see its crate root): serving a page is many small allocations.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use dataverse_emulator::limits::parse_duration;
use dataverse_emulator::{AppRegistration, CostModel, EmulatorConfig, FaultPlan, FaultRule, Limits, Secret};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(
    name = "dataverse-emulator",
    version,
    about = "A local Microsoft Dataverse (Dynamics 365) environment: token endpoint, Web API, metadata and state.",
    after_help = "On start, prints one JSON line: {\"url\", \"web_api\", \"token_url\", \"tenant_id\", \"client_id\", \"client_secret\", \"applications\"}.\n\
                  Credentials left out are generated; with --state they are kept in the state file for the next start."
)]
struct Cli {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0", env = "DATAVERSE_EMULATOR_LISTEN")]
    listen: SocketAddr,
    /// SQLite file holding the environment's tables, rows and credentials. Without it, everything lives in memory.
    #[arg(long, env = "DATAVERSE_EMULATOR_STATE")]
    state: Option<PathBuf>,
    /// Directory (tenant) id clients request tokens from.
    #[arg(long)]
    tenant_id: Option<Uuid>,
    /// Application (client) id of the application user.
    #[arg(long)]
    client_id: Option<Uuid>,
    /// Client secret of the application user.
    #[arg(long, env = "DATAVERSE_EMULATOR_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// Another app registration, as CLIENT_ID:SECRET: it signs in as an application user of its own, with
    /// its own budget under the limits. Repeat for more.
    #[arg(long = "application", value_name = "CLIENT_ID:SECRET")]
    applications: Vec<String>,
    /// A user for the password grant, as NAME:PASSWORD. Repeat for more users.
    #[arg(long = "user", value_name = "NAME:PASSWORD")]
    users: Vec<String>,
    /// Lifetime of access tokens, in seconds.
    #[arg(long, default_value_t = 3599)]
    token_lifetime: u64,
    /// Web servers the environment runs on, each with its own limits per user and its own capacity. A client
    /// is pinned to one by the ARRAffinity cookie every answer sets; without it, requests go to each in turn.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    web_servers: u16,
    /// Requests each user may make per window (service protection limit).
    #[arg(long, default_value_t = 6000)]
    limit_requests: u32,
    /// The sliding window the request and execution-time limits are counted over (300s, 5m, …).
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    limit_window: Duration,
    /// Combined execution time each user may use per window.
    #[arg(long, default_value = "1200s", value_parser = parse_duration)]
    limit_exec_time: Duration,
    /// Requests each user may have in flight at once.
    #[arg(long, default_value_t = 52)]
    limit_concurrent: u32,
    /// The degree of parallelism recommended in x-ms-dop-hint.
    #[arg(long, default_value_t = 4)]
    dop_hint: u32,
    /// Requests the web server runs at full speed at once; beyond it, each takes (and counts) proportionally
    /// longer.
    #[arg(long, default_value_t = 8)]
    capacity: u32,
    /// Execution time every request costs (and takes to answer).
    #[arg(long, default_value = "115ms", value_parser = parse_duration)]
    cost_per_request: Duration,
    /// Execution time added per record a request writes.
    #[arg(long, default_value = "6ms", value_parser = parse_duration)]
    cost_per_record_written: Duration,
    /// Execution time added per record a request reads.
    #[arg(long, default_value = "100us", value_parser = parse_duration)]
    cost_per_record_read: Duration,
    /// No execution cost at all: every request answers as fast as this machine allows (limits still count).
    #[arg(long, conflicts_with_all = ["cost_per_request", "cost_per_record_written", "cost_per_record_read"])]
    free: bool,
    /// How long a change-tracking token stays valid (Dataverse keeps 7 days).
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    change_retention: Duration,
    /// Inject a fault, as FAULT:WHEN. FAULT is 500, 503, drop, slow=DURATION or token-outage; WHEN is rate=P,
    /// every=N, requests=A-B or after=DURATION,for=DURATION. Repeat for more; the first rule that hits wins.
    #[arg(long = "fault", value_name = "FAULT:WHEN")]
    faults: Vec<FaultRule>,
    /// Seed of the faults drawn by rate: the same seed faults the same request numbers.
    #[arg(long, default_value_t = 1)]
    fault_seed: u64,
    /// Add N generated custom tables (publisher-prefixed names, every column type, views, 3 rows each) to the
    /// built-in ones, for discovery at the scale of a real organization. The same N gives the same tables.
    #[arg(long, value_name = "N", default_value_t = 0, env = "DATAVERSE_EMULATOR_GENERATED_TABLES")]
    generated_tables: usize,
    /// Install Customer Insights – Journeys' consent tables (msdynmkt_contactpointconsent4, msdynmkt_purpose with the
    /// Commercial and Transactional purposes, msdynmkt_topic), as the app's solution does. With --state they stay.
    #[arg(long, env = "DATAVERSE_EMULATOR_WITH_JOURNEYS")]
    with_journeys: bool,
    /// Serve HTTPS with a self-signed certificate for localhost and 127.0.0.1, written as PEM to this path.
    #[arg(long, value_name = "CERT_PATH")]
    tls: Option<PathBuf>,
}

fn parse_user(text: &str) -> anyhow::Result<(String, Secret)> {
    let (name, password) = text
        .split_once(':')
        .filter(|(n, p)| !n.is_empty() && !p.is_empty())
        .with_context(|| "--user takes NAME:PASSWORD, for example --user ann@contoso.com:Passw0rd!".to_string())?;
    Ok((name.to_string(), Secret::new(password)))
}

fn parse_application(text: &str) -> anyhow::Result<AppRegistration> {
    let usage =
        "--application takes CLIENT_ID:SECRET, for example --application 6f1c1a52-4b55-4a8e-9f0e-2c3a5b7d9e01:S3cret";
    let (id, secret) = text.split_once(':').filter(|(_, s)| !s.is_empty()).with_context(|| usage.to_string())?;
    let client_id = id.parse().with_context(|| format!("'{id}' is not a GUID: {usage}"))?;
    Ok(AppRegistration { client_id, client_secret: Secret::new(secret) })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let cli = Cli::parse();
    if cli.token_lifetime == 0 {
        anyhow::bail!("--token-lifetime must be at least 1 second");
    }
    let config = EmulatorConfig {
        listen: cli.listen,
        state: cli.state,
        tenant_id: cli.tenant_id,
        client_id: cli.client_id,
        client_secret: cli.client_secret.map(Secret::new),
        users: cli.users.iter().map(|u| parse_user(u)).collect::<anyhow::Result<_>>()?,
        applications: cli.applications.iter().map(|a| parse_application(a)).collect::<anyhow::Result<_>>()?,
        web_servers: usize::from(cli.web_servers),
        token_lifetime: Duration::from_secs(cli.token_lifetime),
        limits: Limits {
            requests: cli.limit_requests,
            window: cli.limit_window,
            execution_time: cli.limit_exec_time,
            concurrent: cli.limit_concurrent,
            dop_hint: cli.dop_hint,
            capacity: cli.capacity,
        },
        cost: if cli.free {
            CostModel::free()
        } else {
            CostModel {
                per_request: cli.cost_per_request,
                per_record_written: cli.cost_per_record_written,
                per_record_read: cli.cost_per_record_read,
            }
        },
        faults: FaultPlan { seed: cli.fault_seed, rules: cli.faults },
        tls_certificate: cli.tls,
        change_retention: cli.change_retention,
        generated_tables: cli.generated_tables,
        journeys: cli.with_journeys,
    };
    let emulator = config.start().await?;
    // Listen for signals before announcing: a script may stop the emulator as soon as it has read the line.
    let stop = shutdown_signal()?;
    println!("{}", emulator.announcement());
    stop.await;
    tracing::info!("stopping");
    emulator.stop().await;
    Ok(())
}

/// Registers for SIGINT and SIGTERM now, and resolves when either arrives.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
