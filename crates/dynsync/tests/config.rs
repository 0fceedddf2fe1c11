//! `dynsync serve --config <file>` as an operator runs it, on the real binary: it serves where the file says and
//! keeps its data where the file says; a flag wins over its variable, which wins over the file; the file's log level
//! applies unless RUST_LOG is set; and a wrong file or wrong values stop the start with a message that names what is
//! wrong and where. Each process runs without the DYNSYNC_* variables and RUST_LOG of the test's own environment, so
//! that a developer's shell cannot change the outcome.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The variables that would change how `dynsync serve` starts.
const VARIABLES: [&str; 11] = [
    "DYNSYNC_LISTEN",
    "DYNSYNC_DATA_DIR",
    "DYNSYNC_DATABASE_URL",
    "DYNSYNC_LOG_RETENTION",
    "DYNSYNC_LEASE_HEARTBEAT",
    "DYNSYNC_LEASE_TTL",
    "DYNSYNC_BUDGET_INTERVAL",
    "DYNSYNC_LOG_LEVEL",
    "DYNSYNC_SECRET_KEY",
    "DYNSYNC_API_TOKENS",
    "RUST_LOG",
];

/// How long a start may take on a busy machine.
const START_DEADLINE: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("dynsync.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A `dynsync serve` process; its stderr goes to a file, read at any time without the pipe ever filling. Killed
/// when dropped, so that a failing test leaves no process behind.
struct Serve {
    child: Child,
    stderr: PathBuf,
}

impl Serve {
    /// Starts `dynsync serve` with `args` and `env` in `dir`, where relative paths and its stderr go.
    fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Serve {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let stderr = dir.join(format!("stderr-{}.log", STARTED.fetch_add(1, Ordering::Relaxed)));
        let mut command = Command::new(env!("CARGO_BIN_EXE_dynsync"));
        command.arg("serve").args(args).current_dir(dir);
        for variable in VARIABLES {
            command.env_remove(variable);
        }
        command.envs(env.iter().copied());
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("dynsync starts");
        Serve { child, stderr }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until `GET /healthz` on `port` answers 200 and the start is over (it says where it serves), failing
    /// with what the process printed if it exits or the deadline passes first.
    async fn wait_until_healthy(&mut self, port: u16) {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        let url = format!("http://127.0.0.1:{port}/healthz");
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("dynsync serve exited ({status}) instead of serving on {port}:\n{}", self.stderr());
            }
            let healthy = matches!(http.get(&url).send().await, Ok(r) if r.status() == reqwest::StatusCode::OK);
            if healthy && self.stderr().contains("dynsync serves its API at") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{url} did not answer 200 within {START_DEADLINE:?}:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for a process that should refuse to start to exit, failing if it is still running at the deadline.
    async fn wait_for_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "dynsync serve is still running; it should have refused to start:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_config_file_says_where_dynsync_serve_listens_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let data_dir = dir.path().join("data");
    let config = write_config(
        dir.path(),
        &format!("listen = \"127.0.0.1:{port}\"\ndata_dir = {:?}\n", data_dir.display().to_string()),
    );

    let mut serve = Serve::start(dir.path(), &["--config", config.to_str().unwrap()], &[]);
    serve.wait_until_healthy(port).await;

    assert!(data_dir.join("api-tokens").is_file(), "the first start makes its token in the file's data_dir");
    assert!(serve.stderr().contains(&format!("http://127.0.0.1:{port}/")), "{}", serve.stderr());
}

#[tokio::test]
async fn a_flag_wins_over_its_variable_which_wins_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (file_port, env_port, flag_port) = (free_port(), free_port(), free_port());
    let config = write_config(dir.path(), &format!("listen = \"127.0.0.1:{file_port}\"\n"));
    let config = config.to_str().unwrap();
    let data = |name: &str| dir.path().join(name).display().to_string();
    let env_listen = format!("127.0.0.1:{env_port}");

    let flag_listen = format!("127.0.0.1:{flag_port}");
    let (flag_data, env_data) = (data("flag"), data("env"));
    let mut with_flag = Serve::start(
        dir.path(),
        &["--config", config, "--listen", &flag_listen, "--data-dir", &flag_data],
        &[("DYNSYNC_LISTEN", &env_listen)],
    );
    with_flag.wait_until_healthy(flag_port).await;
    drop(with_flag);

    let mut with_variable = Serve::start(
        dir.path(),
        &["--config", config],
        &[("DYNSYNC_LISTEN", &env_listen), ("DYNSYNC_DATA_DIR", &env_data)],
    );
    with_variable.wait_until_healthy(env_port).await;
    assert!(Path::new(&env_data).join("api-tokens").is_file(), "DYNSYNC_DATA_DIR was used");
}

#[tokio::test]
async fn the_files_log_level_applies_unless_rust_log_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let info_line = "dynsync listening";
    let start = |name: &str, env: &[(&str, &str)]| {
        let port = free_port();
        let data_dir = dir.path().join(name).display().to_string();
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!("listen = \"127.0.0.1:{port}\"\ndata_dir = {data_dir:?}\nlog_level = \"warn\"\n"),
        )
        .unwrap();
        (Serve::start(dir.path(), &["--config", config.to_str().unwrap()], env), port)
    };

    let (mut quiet, port) = start("quiet", &[]);
    quiet.wait_until_healthy(port).await;
    assert!(!quiet.stderr().contains(info_line), "log_level = \"warn\" leaves out info lines:\n{}", quiet.stderr());

    let (mut loud, port) = start("loud", &[("RUST_LOG", "info")]);
    loud.wait_until_healthy(port).await;
    assert!(loud.stderr().contains(info_line), "RUST_LOG wins over the file:\n{}", loud.stderr());
}

#[tokio::test]
async fn an_unknown_key_in_the_file_stops_the_start_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), &format!("listen = \"127.0.0.1:{port}\"\nlisten_adress = \"0.0.0.0:80\"\n"));

    let mut serve = Serve::start(dir.path(), &["--config", config.to_str().unwrap()], &[]);
    let status = serve.wait_for_exit().await;

    let stderr = serve.stderr();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("listen_adress"), "the key is named:\n{stderr}");
    assert!(stderr.contains(&config.display().to_string()), "the file is named:\n{stderr}");
    assert!(stderr.contains("line 2"), "the line is named:\n{stderr}");
}

#[tokio::test]
async fn wrong_values_stop_the_start_listing_every_problem_and_where_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[lease]\nheartbeat = \"20s\"\n");

    let mut serve = Serve::start(
        dir.path(),
        &["--config", config.to_str().unwrap(), "--lease-ttl", "1m", "--budget-interval", "5s"],
        &[("DYNSYNC_LOG_RETENTION", "1w")],
    );
    let status = serve.wait_for_exit().await;

    let stderr = serve.stderr();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("4 problems in the settings"), "{stderr}");
    assert!(stderr.contains("DYNSYNC_LOG_RETENTION=1w is not a duration"), "{stderr}");
    assert!(
        stderr.contains(&format!("[lease] heartbeat = \"20s\" in {} is longer than 10s", config.display())),
        "{stderr}"
    );
    assert!(stderr.contains("--lease-ttl 1m is longer than 30s"), "{stderr}");
    assert!(stderr.contains("--budget-interval 5s is out of range"), "{stderr}");
}

#[tokio::test]
async fn a_missing_config_file_stops_the_start_naming_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.toml");

    let mut serve = Serve::start(dir.path(), &["--config", missing.to_str().unwrap()], &[]);
    let status = serve.wait_for_exit().await;

    let stderr = serve.stderr();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains(&format!("the config file {} does not exist", missing.display())), "{stderr}");
}
