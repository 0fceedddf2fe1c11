//! `dataverse-emulator`: runs a local Dataverse environment. Prints one JSON line on stdout with its URL and
//! credentials; logs go to stderr.

use anyhow::Context;
use clap::Parser;
use dataverse_emulator::{EmulatorConfig, Secret};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(
    name = "dataverse-emulator",
    version,
    about = "A local Microsoft Dataverse (Dynamics 365) environment: token endpoint, Web API, metadata and state.",
    after_help = "On start, prints one JSON line: {\"url\", \"web_api\", \"token_url\", \"tenant_id\", \"client_id\", \"client_secret\"}.\n\
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
    /// A user for the password grant, as NAME:PASSWORD. Repeat for more users.
    #[arg(long = "user", value_name = "NAME:PASSWORD")]
    users: Vec<String>,
    /// Lifetime of access tokens, in seconds.
    #[arg(long, default_value_t = 3599)]
    token_lifetime: u64,
}

fn parse_user(text: &str) -> anyhow::Result<(String, Secret)> {
    let (name, password) = text
        .split_once(':')
        .filter(|(n, p)| !n.is_empty() && !p.is_empty())
        .with_context(|| "--user takes NAME:PASSWORD, for example --user ann@contoso.com:Passw0rd!".to_string())?;
    Ok((name.to_string(), Secret::new(password)))
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
        token_lifetime: Duration::from_secs(cli.token_lifetime),
    };
    let emulator = config.start().await?;
    println!("{}", emulator.announcement());
    shutdown_signal().await;
    tracing::info!("stopping");
    emulator.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
