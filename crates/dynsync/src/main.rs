//! The `dynsync` command line: the service (`serve`), and commands over its API for connections, targets and flows.

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use dataverse::{ClientCredentials, Environment, Region, Secret};
use dynsync::Service;
use dynsync::config::{self, ConfigFile, Layer};
use dynsync::connection::DestinationRequest;
use dynsync::declarative::{self, Declaration};
use dynsync::remote::Remote;
use dynsync::service::{DEFAULT_LOG_RETENTION, LeaseTimings};
use serde_json::{Value as Json, json};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "dynsync",
    version,
    about = "Connects customer data to Microsoft Dynamics 365.",
    long_about = "Connects customer data to Microsoft Dynamics 365.\n\n\
        Start the service with `dynsync serve`; it prints where its API token is. Then connect an environment \
        (`dynsync connections create`), name the destination (`dynsync targets create`) and define what goes onto \
        contacts (`dynsync apply -f flow.toml`). Every command except serve and check talks to the service at --url."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run audience activation end to end and check the result, on an embedded Dataverse emulator.
    ///
    /// Creates the audience columns on contact, seeds contacts, connects dynsync and sets up a target and a flow
    /// through its API, streams profile updates for three audiences (entries, exits and a few bad profiles), prints
    /// the flow's run, then reads every contact back and checks each field. Exits non-zero if anything is off.
    /// Give --dataverse-url and credentials to run it against a real environment instead.
    Demo(DemoArgs),
    /// Run the service: the REST API under /data/foundation/flowservice/.
    ///
    /// State lives in the data directory: the SQLite store (unless --database-url names a PostgreSQL), the key
    /// that encrypts stored secrets (secret.key, unless DYNSYNC_SECRET_KEY is set) and the API tokens (api-tokens,
    /// unless DYNSYNC_API_TOKENS is set). The first start creates the key and one token, and says where.
    ///
    /// Settings can also come from a TOML file (--config dynsync.toml, see the README, "Configuration"). A flag
    /// wins over its DYNSYNC_* variable, which wins over the file, which wins over the default. Secrets come from
    /// the environment only.
    Serve(ServeArgs),
    /// Check that dynsync can sign in to a Dynamics 365 environment and act in it.
    ///
    /// Give the environment as --environment-url, or as --organization and --region. Every flag can also come
    /// from its DYNSYNC_* environment variable, which keeps the secret out of your shell history.
    Check(CheckArgs),
    /// Dynamics 365 connections: an environment and the app registration that reaches it.
    #[command(subcommand)]
    Connections(ConnectionsCommand),
    /// Target connections: a destination's name and the customization prefix of its audience columns.
    #[command(subcommand)]
    Targets(TargetsCommand),
    /// Activation flows: audiences and attributes onto contact columns.
    #[command(subcommand)]
    Flows(FlowsCommand),
    /// API tokens with roles (manage, activate, view) and sandboxes; managed with one of the operator's tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Create or update a connection, a target and a flow from a TOML file (kept in git, without secrets).
    ///
    /// Resources are matched by name: missing ones are created, an existing flow is updated. The flow is validated
    /// against the contact table of the environment before it is saved. See the README for the file's format.
    Apply(ApplyArgs),
    /// The runs of the flows: one an hour, with the profiles received and how many were activated, excluded, failed.
    Runs(RunsArgs),
    /// Stream profiles from a file into a flow, one XDM message a line (NDJSON), for a backfill.
    Import(ImportArgs),
    /// Engagement sync: what it needs in a Dynamics environment.
    #[command(subcommand)]
    Engagement(EngagementCommand),
}

#[derive(Subcommand)]
enum EngagementCommand {
    /// Create the Email event activity table, its columns and its key in a Dynamics environment, the way a
    /// solution would; what is there already is left as it is, so running it again is safe.
    ///
    /// Give the environment and the app registration as for `dynsync check`, and the customization prefix of the
    /// target connection your email events flows will write through.
    Install(InstallArgs),
}

#[derive(Args)]
struct InstallArgs {
    #[command(flatten)]
    environment: CheckArgs,
    /// The customization prefix of your publisher (new for the default solution): the table is <prefix>_emailevent.
    #[arg(long, env = "DYNSYNC_PREFIX")]
    prefix: String,
}

#[derive(Args)]
struct RunsArgs {
    /// Only this flow's runs.
    #[arg(long)]
    flow: Option<String>,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(Args)]
struct ImportArgs {
    /// The NDJSON file: one streaming message (or XDM entity) a line.
    file: PathBuf,
    /// The flow whose inlet receives the profiles.
    #[arg(long)]
    flow: String,
    #[command(flatten)]
    remote: RemoteArgs,
}

/// The settings of `serve`. None has a clap default: a default could not be told from a value given, and the config
/// file goes between the two. The defaults live in `dynsync::config`; [`show_serve_defaults`] shows them in --help.
/// The values are text, checked all at once by `config::resolve`, which says where a wrong one came from.
#[derive(Args)]
struct ServeArgs {
    /// A TOML file of settings; flags and DYNSYNC_* variables win over it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "DYNSYNC_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// Directory for the store, the secret key and the API tokens.
    #[arg(long, env = "DYNSYNC_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A PostgreSQL URL (postgres://user@host/db) to keep the store there instead of SQLite.
    #[arg(long, env = "DYNSYNC_DATABASE_URL", hide_env_values = true, value_name = "URL")]
    database_url: Option<String>,
    /// How long acknowledged entries stay in a flow's inlet log: 30s, 15m, 12h, 7d.
    #[arg(long, env = "DYNSYNC_LOG_RETENTION", value_name = "DURATION")]
    log_retention: Option<String>,
    /// How often this process renews its leases on flows, at most 10s.
    #[arg(long, env = "DYNSYNC_LEASE_HEARTBEAT", value_name = "DURATION")]
    lease_heartbeat: Option<String>,
    /// After how long a lease not renewed is taken over by another process: twice the heartbeat to 30s.
    #[arg(long, env = "DYNSYNC_LEASE_TTL", value_name = "DURATION")]
    lease_ttl: Option<String>,
    /// How often this process tells the others on the store what it spent of each application user's budget under
    /// Dataverse's limits, and hears what they spent: 50ms to 2s.
    #[arg(long, env = "DYNSYNC_BUDGET_INTERVAL", value_name = "DURATION")]
    budget_interval: Option<String>,
    /// What to log: a level (error, warn, info, debug, trace) or directives like info,dynsync=debug; RUST_LOG wins.
    #[arg(long, env = "DYNSYNC_LOG_LEVEL", value_name = "FILTER")]
    log_level: Option<String>,
    /// Hosts connections may send credentials to besides Microsoft's clouds, separated by commas: host or
    /// host:port (an emulator at 127.0.0.1:4000, a proxy).
    #[arg(long, env = "DYNSYNC_ALLOWED_HOSTS", value_name = "HOSTS")]
    allowed_hosts: Option<String>,
}

impl ServeArgs {
    /// The flags and the DYNSYNC_* variables as two layers. clap reads both, a flag winning, and says which gave
    /// each value.
    fn layers(self, matches: &ArgMatches) -> (Layer, Layer) {
        let from_env = |id: &str| matches.value_source(id) == Some(ValueSource::EnvVariable);
        let (mut flags, mut env) = (Layer::default(), Layer::default());
        (flags.listen, env.listen) = split(self.listen, from_env("listen"));
        (flags.data_dir, env.data_dir) = split(self.data_dir, from_env("data_dir"));
        (flags.database_url, env.database_url) = split(self.database_url, from_env("database_url"));
        (flags.log_retention, env.log_retention) = split(self.log_retention, from_env("log_retention"));
        (flags.lease_heartbeat, env.lease_heartbeat) = split(self.lease_heartbeat, from_env("lease_heartbeat"));
        (flags.lease_ttl, env.lease_ttl) = split(self.lease_ttl, from_env("lease_ttl"));
        (flags.budget_interval, env.budget_interval) = split(self.budget_interval, from_env("budget_interval"));
        (flags.log_level, env.log_level) = split(self.log_level, from_env("log_level"));
        (flags.allowed_hosts, env.allowed_hosts) = split(self.allowed_hosts, from_env("allowed_hosts"));
        (flags, env)
    }
}

/// A value into the flags' layer or the environment's. An empty variable counts as unset, as DYNSYNC_SECRET_KEY
/// does: `DYNSYNC_DATABASE_URL=` in a compose file means no database URL, not a wrong one.
fn split<T: AsRef<std::ffi::OsStr>>(value: Option<T>, from_env: bool) -> (Option<T>, Option<T>) {
    match value {
        Some(v) if from_env && v.as_ref().is_empty() => (None, None),
        Some(v) if from_env => (None, Some(v)),
        flag => (flag, None),
    }
}

/// Appends each `serve` setting's default to its help, as clap would show a default of its own.
fn show_serve_defaults(command: clap::Command) -> clap::Command {
    let lease = LeaseTimings::default();
    let defaults = [
        ("listen", config::DEFAULT_LISTEN.to_string()),
        ("data_dir", config::DEFAULT_DATA_DIR.to_string()),
        ("log_retention", config::show_duration(DEFAULT_LOG_RETENTION)),
        ("lease_heartbeat", config::show_duration(lease.heartbeat)),
        ("lease_ttl", config::show_duration(lease.ttl)),
        ("budget_interval", config::show_duration(dynsync::pipeline::budgets::DEFAULT_INTERVAL)),
        ("log_level", config::DEFAULT_LOG_LEVEL.to_string()),
    ];
    command.mut_subcommand("serve", |serve| {
        defaults.into_iter().fold(serve, |serve, (id, default)| {
            serve.mut_arg(id, |arg| {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                arg.help(format!("{help} [default: {default}]"))
            })
        })
    })
}

#[derive(Args, Clone)]
struct RemoteArgs {
    /// Where dynsync serves.
    #[arg(long, env = "DYNSYNC_URL", default_value = "http://127.0.0.1:8686", global = true)]
    url: String,
    /// An API token; read from <data-dir>/api-tokens when left out.
    #[arg(long, env = "DYNSYNC_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// The sandbox to work in.
    #[arg(long, env = "DYNSYNC_SANDBOX", default_value = "prod", global = true)]
    sandbox: String,
    /// The service's data directory, to find the API token in.
    #[arg(long, env = "DYNSYNC_DATA_DIR", default_value = "dynsync-data", global = true)]
    data_dir: PathBuf,
}

impl RemoteArgs {
    fn remote(&self) -> anyhow::Result<Remote> {
        let token = match &self.token {
            Some(t) => t.clone(),
            None => {
                let path = self.data_dir.join(dynsync::service::TOKENS_FILE);
                let text = std::fs::read_to_string(&path).with_context(|| {
                    format!("no --token or DYNSYNC_TOKEN, and no token file at {}: give --token, or --data-dir of the service", path.display())
                })?;
                text.lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string)
                    .with_context(|| format!("{} has no token", path.display()))?
            }
        };
        Ok(Remote::new(&self.url, &token, &self.sandbox))
    }
}

#[derive(Subcommand)]
enum ConnectionsCommand {
    /// List the connections of the sandbox.
    List(RemoteOnly),
    /// Show one connection (never its secret).
    Get(ById),
    /// Create a Dynamics 365 destination connection; dynsync tests it before keeping it.
    ///
    /// The client secret comes from DYNSYNC_CLIENT_SECRET, so that it stays out of your shell history.
    Create(CreateConnectionArgs),
    /// Delete a connection that no target uses.
    Delete(ById),
}

#[derive(Args)]
struct RemoteOnly {
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(Args)]
struct ById {
    /// The resource's id.
    id: String,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(Args)]
struct CreateConnectionArgs {
    /// A name you will recognize.
    #[arg(long)]
    name: String,
    /// The directory (tenant) id of the app registration.
    #[arg(long, env = "DYNSYNC_TENANT_ID")]
    tenant_id: String,
    /// The application (client) id of the app registration.
    #[arg(long, env = "DYNSYNC_CLIENT_ID")]
    client_id: String,
    /// The environment URL (https://contoso.crm4.dynamics.com), or its organization name with --region.
    #[arg(long, env = "DYNSYNC_ENVIRONMENT_URL")]
    environment_url: String,
    /// The region (crm, crm3, crm4… or NAM, CAN, EUR…) when --environment-url is an organization name.
    #[arg(long, env = "DYNSYNC_REGION")]
    region: Option<String>,
    /// The sign-in authority, for a sovereign cloud or the emulator.
    #[arg(long, env = "DYNSYNC_AUTHORITY")]
    authority: Option<String>,
    /// Another app registration of the tenant to sign in as, with a budget of its own under Dataverse's limits:
    /// its client id and the environment variable that holds its secret, CLIENT_ID:VARIABLE. Repeat for more.
    #[arg(long = "additional-registration", value_name = "CLIENT_ID:VARIABLE")]
    additional_registrations: Vec<String>,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(Subcommand)]
enum TargetsCommand {
    /// List the target connections of the sandbox.
    List(RemoteOnly),
    /// Create a target connection over a destination connection.
    Create(CreateTargetArgs),
    /// Delete a target connection that no flow uses.
    Delete(ById),
}

#[derive(Args)]
struct CreateTargetArgs {
    #[arg(long)]
    name: String,
    /// The destination connection's id.
    #[arg(long)]
    connection: String,
    /// The customization prefix of your audience columns' publisher (new for the default solution).
    #[arg(long)]
    prefix: String,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(Subcommand)]
enum FlowsCommand {
    /// List the flows of the sandbox.
    List(RemoteOnly),
    /// Show one flow.
    Get(ById),
    /// Enable a flow (validated again first).
    Enable(ById),
    /// Disable a flow.
    Disable(ById),
    /// Delete a flow.
    Delete(ById),
    /// Send the writes that failed again, once their cause is fixed (a missing contact created, a column
    /// widened, a lead's refused value allowed).
    RetryFailed(ById),
    /// Send a test lead through a lead intake, as Partner Center's Validate does, and report each step.
    Validate(ById),
    /// Give a lead intake a new secret URL (the previous one keeps working a week).
    RotateSecret(ById),
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Make a token; it is printed once, and only its digest is kept.
    Create(CreateTokenArgs),
    /// List the tokens made, revoked ones too (never a token itself).
    List(RemoteOnly),
    /// Revoke a token: it stops working at once, in every process.
    Revoke(ById),
}

#[derive(Args)]
struct CreateTokenArgs {
    /// Who uses the token (ci, the marketing team).
    #[arg(long)]
    name: String,
    /// What it may do, separated by commas: manage (connections, targets, flows), activate (enable, disable,
    /// replay, send data), view (read; every role may).
    #[arg(long, value_delimiter = ',', required = true)]
    roles: Vec<String>,
    /// The sandboxes it acts in, separated by commas, or * for every sandbox.
    #[arg(long, value_delimiter = ',', required = true)]
    sandboxes: Vec<String>,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(Args)]
struct ApplyArgs {
    /// The TOML file.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    #[command(flatten)]
    remote: RemoteArgs,
}

/// The jobs with a demo.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum DemoJob {
    /// Audience activation onto contacts (the main job).
    Activation,
    /// Lead intake: marketplace leads into Dynamics leads, with a notification.
    Leads,
    /// Table ingestion: a Dynamics table loaded fully then incrementally into a Parquet dataset, read by DuckDB.
    Ingestion,
    /// Engagement sync: a day of SendGrid email events onto the contacts' timelines, with their opt-outs.
    Engagement,
}

#[derive(Args)]
struct DemoArgs {
    /// The job to demonstrate.
    #[arg(value_enum, default_value = "activation")]
    job: DemoJob,
    /// People who send leads, in `dynsync demo leads`, or receive the newsletter, in `dynsync demo engagement`.
    #[arg(long, default_value_t = 300)]
    people: usize,
    /// Contacts to seed and activate (or, in `dynsync demo ingestion`, to load).
    #[arg(long, default_value_t = 10_000)]
    contacts: usize,
    /// Seed of the generated audience memberships.
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// A real environment to run against instead of the embedded emulator (it creates columns and contacts there).
    #[arg(long, env = "DYNSYNC_DATAVERSE_URL", requires_all = ["tenant_id", "client_id", "client_secret"])]
    dataverse_url: Option<String>,
    /// The directory (tenant) id of the app registration, with --dataverse-url.
    #[arg(long, env = "DYNSYNC_TENANT_ID")]
    tenant_id: Option<String>,
    /// The application (client) id, with --dataverse-url.
    #[arg(long, env = "DYNSYNC_CLIENT_ID")]
    client_id: Option<String>,
    /// A client secret of the app registration, with --dataverse-url.
    #[arg(long, env = "DYNSYNC_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// The sign-in authority, with --dataverse-url.
    #[arg(long, env = "DYNSYNC_AUTHORITY", default_value = "https://login.microsoftonline.com")]
    authority: String,
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if let DemoJob::Leads = args.job {
        let passed = dynsync::demo::leads::run(args.people.max(1)).await?;
        return Ok(if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    if let DemoJob::Engagement = args.job {
        let passed = dynsync::demo::engagement::run(args.people.max(1)).await?;
        return Ok(if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    if let DemoJob::Ingestion = args.job {
        let passed = dynsync::demo::ingestion::run(args.contacts.max(1)).await?;
        return Ok(if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    let target = match args.dataverse_url {
        None => dynsync::demo::DemoTarget::Emulator,
        Some(environment_url) => dynsync::demo::DemoTarget::Dynamics {
            environment_url,
            tenant_id: args.tenant_id.unwrap_or_default(),
            client_id: args.client_id.unwrap_or_default(),
            client_secret: dataverse::Secret::new(args.client_secret.unwrap_or_default()),
            authority: args.authority,
        },
    };
    let options = dynsync::demo::DemoOptions { target, contacts: args.contacts.max(1), seed: args.seed };
    let passed = dynsync::demo::run(options).await?;
    Ok(if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
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

/// The environment and the credentials the flags of `check` name.
fn environment_of(args: CheckArgs) -> anyhow::Result<(Environment, ClientCredentials)> {
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
    Ok((environment, credentials))
}

async fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let (environment, credentials) = environment_of(args)?;
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

async fn install_engagement(args: InstallArgs) -> anyhow::Result<ExitCode> {
    let prefix: dynsync::target::CustomizationPrefix = args.prefix.parse()?;
    let (environment, credentials) = environment_of(args.environment)?;
    let client = dataverse::Client::new(environment.clone(), credentials);
    let tables = dynsync::engagement::install::EngagementTables::new(prefix);
    let report = dynsync::engagement::install::install(&client, &tables)
        .await
        .with_context(|| format!("installing the Email event table in {environment}"))?;
    for created in &report.created {
        println!("created {created}");
    }
    println!(
        "{environment} has the Email event table {} ({} created, {} already there)",
        tables.activity_table(),
        report.created.len(),
        report.present.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// Resolves the settings, then starts the log at the level they give (RUST_LOG, when set, still wins), then serves.
async fn serve(mut args: ServeArgs, matches: &ArgMatches) -> anyhow::Result<ExitCode> {
    let file = args.config.take().map(|path| ConfigFile::load(&path)).transpose()?;
    let (flags, env) = args.layers(matches);
    let settings = config::resolve(&flags, &env, file.as_ref())?;
    init_tracing(&settings.log_level);
    if let Some(file) = &file {
        tracing::info!(file = %file.path.display(), "settings read");
    }
    let mut config = settings.service;
    config.secret_key = std::env::var("DYNSYNC_SECRET_KEY").ok().filter(|k| !k.is_empty());
    config.api_tokens = std::env::var("DYNSYNC_API_TOKENS")
        .map(|t| t.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    if let Some(smtp) = &mut config.smtp {
        smtp.password = std::env::var("DYNSYNC_SMTP_PASSWORD").ok().filter(|p| !p.is_empty()).map(Secret::new);
    }
    let service = Service::start(config).await?;
    eprintln!("dynsync serves its API at {}", service.api());
    stop_signal().await;
    eprintln!("dynsync: stopping; requests in flight finish first");
    service.stop().await;
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C, or SIGTERM as service managers and containers send it.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).expect("a SIGTERM handler installs");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

fn print(value: &Json) {
    println!("{}", serde_json::to_string_pretty(value).expect("JSON prints"));
}

fn print_list(items: &[Json], columns: &[&str]) {
    if items.is_empty() {
        println!("(none)");
    }
    for item in items {
        let fields: Vec<String> = columns
            .iter()
            .map(|c| c.split('.').fold(item, |v, k| &v[k]))
            .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
            .collect();
        println!("{}", fields.join("  "));
    }
}

async fn connections(command: ConnectionsCommand) -> anyhow::Result<ExitCode> {
    match command {
        ConnectionsCommand::List(a) => {
            print_list(&a.remote.remote()?.items("connections").await?, &["id", "status", "name"])
        }
        ConnectionsCommand::Get(a) => print(&a.remote.remote()?.items(&format!("connections/{}", a.id)).await?[0]),
        ConnectionsCommand::Delete(a) => {
            a.remote.remote()?.send(reqwest::Method::DELETE, &format!("connections/{}", a.id), None).await?;
            println!("connection {} deleted", a.id);
        }
        ConnectionsCommand::Create(a) => {
            let mut problems = Vec::new();
            let client_secret = std::env::var("DYNSYNC_CLIENT_SECRET").unwrap_or_else(|_| {
                problems.push("set DYNSYNC_CLIENT_SECRET to the client secret of the app registration".to_string());
                String::new()
            });
            let mut additional = Vec::new();
            for given in &a.additional_registrations {
                let Some((client_id, variable)) = given.split_once(':') else {
                    problems.push(format!(
                        "--additional-registration {given} is not CLIENT_ID:VARIABLE: give the registration's client \
                         id and the environment variable that holds its secret, like 1b2c…:DYNAMICS_SECOND_SECRET"
                    ));
                    continue;
                };
                match std::env::var(variable) {
                    Ok(secret) => additional.push((client_id.to_string(), Secret::new(secret))),
                    Err(_) => problems.push(format!(
                        "set {variable} to the client secret of app registration {client_id} \
                         (--additional-registration names the variable, never the secret)"
                    )),
                }
            }
            if !problems.is_empty() {
                anyhow::bail!("{}", problems.join("; "));
            }
            let request = DestinationRequest {
                name: a.name,
                description: String::new(),
                tenant_id: a.tenant_id,
                client_id: a.client_id,
                client_secret: Secret::new(client_secret),
                environment_url: a.environment_url,
                region: a.region,
                authority_host: a.authority,
                additional,
            };
            let created = a.remote.remote()?.post("connections", &request.body()).await?;
            println!("connected; connection {} created", created["id"].as_str().unwrap_or_default());
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn tokens(command: TokensCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokensCommand::List(a) => {
            let items = a.remote.remote()?.items("tokens").await?;
            let shown: Vec<Json> = items
                .into_iter()
                .map(|mut t| {
                    t["state"] = json!(if t["revokedAt"].is_null() { "active" } else { "revoked" });
                    t
                })
                .collect();
            print_list(&shown, &["id", "state", "name", "roles", "sandboxes"]);
        }
        TokensCommand::Revoke(a) => {
            a.remote.remote()?.send(reqwest::Method::DELETE, &format!("tokens/{}", a.id), None).await?;
            println!("token {} revoked", a.id);
        }
        TokensCommand::Create(a) => {
            let sandboxes = if a.sandboxes == ["*"] { json!("*") } else { json!(a.sandboxes) };
            let body = json!({"name": a.name, "roles": a.roles, "sandboxes": sandboxes});
            let made = a.remote.remote()?.post("tokens", &body).await?;
            eprintln!("token {} made; it is shown once, here:", made["id"].as_str().unwrap_or_default());
            println!("{}", made["token"].as_str().unwrap_or_default());
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn targets(command: TargetsCommand) -> anyhow::Result<ExitCode> {
    match command {
        TargetsCommand::List(a) => print_list(
            &a.remote.remote()?.items("targetConnections").await?,
            &["id", "params.customizationPrefix", "name"],
        ),
        TargetsCommand::Delete(a) => {
            a.remote.remote()?.send(reqwest::Method::DELETE, &format!("targetConnections/{}", a.id), None).await?;
            println!("target connection {} deleted", a.id);
        }
        TargetsCommand::Create(a) => {
            let body = json!({
                "name": a.name, "baseConnectionId": a.connection, "params": {"customizationPrefix": a.prefix},
            });
            let created = a.remote.remote()?.post("targetConnections", &body).await?;
            println!("target connection {} created", created["id"].as_str().unwrap_or_default());
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn flows(command: FlowsCommand) -> anyhow::Result<ExitCode> {
    match command {
        FlowsCommand::List(a) => print_list(&a.remote.remote()?.items("flows").await?, &["id", "state", "name"]),
        FlowsCommand::Get(a) => print(&a.remote.remote()?.items(&format!("flows/{}", a.id)).await?[0]),
        FlowsCommand::Enable(a) => {
            a.remote.remote()?.post(&format!("flows/{}/action?op=enable", a.id), &json!({})).await?;
            println!("flow {} enabled", a.id);
        }
        FlowsCommand::Disable(a) => {
            a.remote.remote()?.post(&format!("flows/{}/action?op=disable", a.id), &json!({})).await?;
            println!("flow {} disabled", a.id);
        }
        FlowsCommand::Delete(a) => {
            a.remote.remote()?.send(reqwest::Method::DELETE, &format!("flows/{}", a.id), None).await?;
            println!("flow {} deleted", a.id);
        }
        FlowsCommand::RetryFailed(a) => {
            let summary =
                a.remote.remote()?.post(&format!("flows/{}/action?op=retry-failed", a.id), &json!({})).await?;
            let written = summary.get("written").or_else(|| summary.get("activated")).cloned().unwrap_or_default();
            println!(
                "replayed {} failed records: {written} written, {} still failing (see dynsync runs)",
                summary["retried"], summary["failed"]
            );
        }
        FlowsCommand::Validate(a) => {
            let report = a.remote.remote()?.post(&format!("flows/{}/action?op=validate", a.id), &json!({})).await?;
            for step in report["steps"].as_array().into_iter().flatten() {
                println!(
                    "{:<9} {:<7} {}",
                    step["step"].as_str().unwrap_or(""),
                    step["status"].as_str().unwrap_or(""),
                    step["detail"].as_str().unwrap_or("")
                );
            }
            let passed = report["status"] == "passed";
            println!("{}", if passed { "PASS" } else { "FAIL" });
            return Ok(if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        FlowsCommand::RotateSecret(a) => {
            let answer =
                a.remote.remote()?.post(&format!("flows/{}/action?op=rotate-secret", a.id), &json!({})).await?;
            println!("the intake's new URL (shown once): {}", answer["intakeUrl"].as_str().unwrap_or(""));
            println!("the previous URL works until {}", answer["previousValidUntil"].as_str().unwrap_or(""));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn runs(args: RunsArgs) -> anyhow::Result<ExitCode> {
    let remote = args.remote.remote()?;
    let path = match &args.flow {
        Some(flow) => format!("runs?property=flowId=={flow}"),
        None => "runs".to_string(),
    };
    let runs = remote.items(&path).await?;
    if runs.is_empty() {
        println!("(no runs yet)");
    } else {
        println!(
            "{:<36}  {:<20}  {:>9}  {:>9}  {:>8}  {:>6}  {:>6}",
            "flow", "hour", "received", "activated", "excluded", "failed", "rate"
        );
    }
    for run in &runs {
        let s = &run["metrics"]["recordSummary"];
        let hour = run["hour"].as_str().unwrap_or_default();
        println!(
            "{:<36}  {:<20}  {:>9}  {:>9}  {:>8}  {:>6}  {:>5.1}%",
            run["flowId"].as_str().unwrap_or_default(),
            hour.get(..16).unwrap_or(hour).replace('T', " "),
            s["inputRecordCount"],
            s["outputRecordCount"],
            s["skippedRecordCount"],
            s["failedRecordCount"],
            run["metrics"]["activationRate"].as_f64().unwrap_or(0.0) * 100.0
        );
        for o in run["outcomes"].as_array().into_iter().flatten() {
            println!(
                "    {} {} ×{}: {} (e.g. {})",
                o["outcome"].as_str().unwrap_or_default(),
                o["code"].as_str().unwrap_or_default(),
                o["count"],
                o["message"].as_str().unwrap_or_default(),
                o["samples"]
                    .as_array()
                    .map(|s| s.iter().filter_map(Json::as_str).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    use std::io::BufRead;
    let remote = args.remote.remote()?;
    let path = args.file.display().to_string();
    let file = std::fs::File::open(&args.file).with_context(|| format!("cannot open {path}"))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let progress = indicatif::ProgressBar::new(size).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}").expect("a valid template"),
    );
    let (mut accepted, mut refused, mut batch) = (0u64, 0u64, Vec::new());
    let mut lines = std::io::BufReader::new(file).lines().enumerate().peekable();
    while let Some((number, line)) = lines.next() {
        let line = line.with_context(|| format!("reading {path}"))?;
        progress.inc(line.len() as u64 + 1);
        if !line.trim().is_empty() {
            match serde_json::from_str::<Json>(&line) {
                Ok(message) => batch.push(message),
                Err(e) => {
                    refused += 1;
                    // Through the bar, so the line is not drawn over; printed even when the bar is hidden.
                    progress.suspend(|| eprintln!("{path}:{}: not JSON ({e}); skipped", number + 1));
                }
            }
        }
        if batch.len() == 1000 || (lines.peek().is_none() && !batch.is_empty()) {
            let receipt = remote.stream(&args.flow, &batch).await?;
            accepted += receipt["accepted"].as_u64().unwrap_or(0);
            for r in receipt["responses"].as_array().into_iter().flatten().filter(|r| r["status"] == 400) {
                refused += 1;
                progress.suspend(|| eprintln!("{}", r["message"].as_str().unwrap_or_default()));
            }
            batch.clear();
            progress.set_message(format!("{accepted} accepted, {refused} refused"));
        }
    }
    progress.finish();
    println!("{accepted} profiles accepted into flow {}, {refused} refused", args.flow);
    Ok(if refused == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn apply(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let path = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {path}"))?;
    let declaration = Declaration::parse(&path, &text)?;
    for line in declarative::apply(&args.remote.remote()?, &declaration).await? {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Logs to stderr at `default_level`, unless RUST_LOG says otherwise.
fn init_tracing(default_level: &str) {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_level.into()))
        .init();
}

#[tokio::main]
async fn main() -> ExitCode {
    // Parsed in two steps to keep the matches: they say whether a serve setting came from a flag or a variable.
    let matches = show_serve_defaults(Cli::command()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match &cli.command {
        // The service starts its log once its settings, which give the level, are resolved.
        Command::Serve(_) => {}
        // The demo prints its own story; the service's log would drown it.
        Command::Demo(_) => init_tracing("warn"),
        _ => init_tracing("info"),
    }
    let result = match cli.command {
        Command::Demo(args) => demo(args).await.context("dynsync demo"),
        Command::Serve(args) => {
            let matches = matches.subcommand_matches("serve").expect("the serve command's matches");
            serve(args, matches).await.context("dynsync serve")
        }
        Command::Check(args) => check(args).await.context("dynsync check"),
        Command::Connections(c) => connections(c).await,
        Command::Targets(c) => targets(c).await,
        Command::Tokens(c) => tokens(c).await,
        Command::Flows(c) => flows(c).await,
        Command::Apply(args) => apply(args).await,
        Command::Runs(args) => runs(args).await,
        Command::Import(args) => import(args).await,
        Command::Engagement(EngagementCommand::Install(args)) => {
            install_engagement(args).await.context("dynsync engagement install")
        }
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("dynsync: {error:#}");
            ExitCode::FAILURE
        }
    }
}
