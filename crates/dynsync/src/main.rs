//! The `dynsync` command line.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use dataverse::{ClientCredentials, Environment, Region, Secret};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "dynsync", version, about = "Connects customer data to Microsoft Dynamics 365.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check that dynsync can sign in to a Dynamics 365 environment and act in it.
    ///
    /// Give the environment as --environment-url, or as --organization and --region. Every flag can also come
    /// from its DYNSYNC_* environment variable, which keeps the secret out of your shell history.
    Check(CheckArgs),
}

#[derive(Args)]
struct CheckArgs {
    /// The environment URL, for example https://contoso.crm4.dynamics.com.
    #[arg(long, env = "DYNSYNC_ENVIRONMENT_URL", conflicts_with_all = ["organization", "region"])]
    environment_url: Option<String>,
    /// The organization name in the environment URL (contoso in contoso.crm4.dynamics.com).
    #[arg(long, env = "DYNSYNC_ORGANIZATION", requires = "region")]
    organization: Option<String>,
    /// The region: a code (NAM, EUR, GBR, FRA, CAN, APJ, JPN, GCC, …) or a host label (crm4).
    #[arg(long, env = "DYNSYNC_REGION", requires = "organization")]
    region: Option<String>,
    /// The directory (tenant) id of the app registration.
    #[arg(long, env = "DYNSYNC_TENANT_ID")]
    tenant_id: String,
    /// The application (client) id of the app registration.
    #[arg(long, env = "DYNSYNC_CLIENT_ID")]
    client_id: String,
    /// A client secret of the app registration (its value, not its id).
    #[arg(long, env = "DYNSYNC_CLIENT_SECRET", hide_env_values = true)]
    client_secret: String,
    /// The sign-in authority; defaults to the region's cloud (https://login.microsoftonline.com for most).
    #[arg(long, env = "DYNSYNC_AUTHORITY")]
    authority: Option<String>,
}

async fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let environment = match (&args.environment_url, &args.organization, &args.region) {
        (Some(url), _, _) => Environment::from_url(url)?,
        (None, Some(org), Some(region)) => Environment::from_organization(org, region.parse::<Region>()?)?,
        _ => anyhow::bail!("give the environment as --environment-url, or as --organization and --region"),
    };
    let authority = args
        .authority
        .or_else(|| environment.region().map(|r| r.authority().to_string()))
        .unwrap_or_else(|| Region::NorthAmerica.authority().to_string());
    let credentials = ClientCredentials {
        tenant_id: args.tenant_id,
        client_id: args.client_id,
        client_secret: Secret::new(args.client_secret),
        authority,
    };
    match dynsync::connection::check(environment.clone(), credentials).await {
        Ok(me) => {
            println!("connected to {environment} as user {} (organization {})", me.user_id, me.organization_id);
            Ok(ExitCode::SUCCESS)
        }
        Err(problem) => {
            eprintln!("cannot connect to {environment}: {problem}");
            Ok(ExitCode::FAILURE)
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    match Cli::parse().command {
        Command::Check(args) => check(args).await.context("dynsync check"),
    }
}
