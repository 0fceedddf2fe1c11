//! Dataverse clients nobody here wrote, against the emulator, run the way their users run them:
//!
//! - DynamicsWebApi, from npm (tests/clients/dynamics-web-api/client.test.mjs): create, queries with paging,
//!   FetchXML, formatted values, update, upsert, delete, change tracking, metadata and errors — over plain
//!   HTTP, and again over HTTPS (`--tls`), where every link the emulator writes must say `https`. Needs
//!   Node.js 18+ and npm.
//! - Microsoft's Python Dataverse SDK, from PyPI (tests/clients/python-sdk/tour.py): signed in by
//!   azure-identity's `ClientSecretCredential` and MSAL with only the authority changed, over HTTPS — records,
//!   paging, bulk operations, upsert by alternate key, `$batch`, SQL and FetchXML, tables, columns, keys and
//!   relationships. Needs Python 3 with `venv`; the packages are installed into
//!   tests/clients/python-sdk/.venv on first run (CI installs them beforehand, `.ci/run`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn clients_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients").join(name)
}

fn found(tool: &str) -> bool {
    Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Runs `command` to its end or kills it at `limit`; its output, and whether it succeeded.
fn run_bounded(mut command: Command, limit: Duration, what: &str) -> (bool, String) {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| {
        panic!("{what} could not start: {e}");
    });
    // Read both pipes on threads, so that a chatty child never blocks on a full pipe.
    let (stdout, stderr) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("the child can be waited for") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} ran over {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = format!("{}\n{}", out.join().unwrap_or_default(), err.join().unwrap_or_default());
    (status.success(), output)
}

/// An emulator on HTTPS, started as its users start it; killed when dropped.
struct TlsEmulator {
    child: Child,
    announcement: String,
    certificate: PathBuf,
}

impl TlsEmulator {
    fn start(dir: &Path) -> TlsEmulator {
        let certificate = dir.join("emulator.pem");
        let mut child = Command::new(env!("CARGO_BIN_EXE_dataverse-emulator"))
            .args(["--listen", "127.0.0.1:0", "--free", "--tls"])
            .arg(&certificate)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the emulator starts");
        let mut announcement = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut announcement).expect("it announces itself");
        assert!(announcement.contains("\"https://127.0.0.1:"), "an HTTPS emulator: {announcement}");
        TlsEmulator { child, announcement, certificate }
    }
}

impl Drop for TlsEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dynamics_web_api(tls: Option<&TlsEmulator>) {
    for tool in ["node", "npm"] {
        assert!(
            found(tool),
            "this test runs DynamicsWebApi from npm and needs Node.js 18+ with npm: install them \
             (apt-get install nodejs npm, or from nodejs.org) and run the tests again"
        );
    }
    let dir = clients_dir("dynamics-web-api");
    {
        // The tests run at once, and two `npm ci` in one folder remove each other's files: one installs.
        static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
        if !dir.join("node_modules/dynamics-web-api").exists() {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .status()
                .expect("npm runs");
            assert!(status.success(), "npm ci failed in {}", dir.display());
        }
    }
    let mut node = Command::new("node");
    node.arg("--test").current_dir(&dir).env("DATAVERSE_EMULATOR_BIN", env!("CARGO_BIN_EXE_dataverse-emulator"));
    if let Some(tls) = tls {
        // Node trusts the emulator's certificate through this, as a user trusts a company's own CA.
        node.env("NODE_EXTRA_CA_CERTS", &tls.certificate)
            .env("DATAVERSE_EMULATOR_ANNOUNCEMENT", tls.announcement.trim());
    }
    let (ok, output) = run_bounded(node, Duration::from_secs(180), "the DynamicsWebApi test");
    let scheme = if tls.is_some() { "HTTPS" } else { "HTTP" };
    assert!(ok, "DynamicsWebApi against the emulator over {scheme} failed:\n{output}");
    println!("DynamicsWebApi over {scheme}:\n{output}");
}

#[test]
fn dynamics_web_api_gets_what_dynamics_would_answer() {
    dynamics_web_api(None);
}

#[test]
fn dynamics_web_api_over_tls_follows_https_links() {
    let dir = tempfile::tempdir().unwrap();
    let emulator = TlsEmulator::start(dir.path());
    dynamics_web_api(Some(&emulator));
}

/// The virtual environment with Microsoft's SDK, made on first use from the pinned requirements.
fn python_sdk_environment(dir: &Path) -> PathBuf {
    let python = dir.join(".venv/bin/python");
    let ready = |python: &Path| {
        Command::new(python)
            .args(["-c", "import PowerPlatform.Dataverse, azure.identity, msal"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready(&python) {
        return python;
    }
    assert!(
        found("python3"),
        "this test runs Microsoft's Python Dataverse SDK and needs Python 3.10+ with venv (apt-get install python3-venv)"
    );
    let venv = Command::new("python3").args(["-m", "venv", ".venv"]).current_dir(dir).status().expect("python3 runs");
    assert!(venv.success(), "python3 -m venv failed in {}: install python3-venv", dir.display());
    let pip = Command::new(dir.join(".venv/bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r", "requirements.txt"])
        .current_dir(dir)
        .status()
        .expect("pip runs");
    assert!(pip.success(), "pip install -r requirements.txt failed in {}", dir.display());
    assert!(ready(&python), "the SDK does not import after installing it in {}", python.display());
    python
}

#[test]
fn microsofts_python_sdk_works_unmodified_over_tls() {
    let dir = clients_dir("python-sdk");
    let python = python_sdk_environment(&dir);
    let mut tour = Command::new(python);
    tour.arg("tour.py").current_dir(&dir).env("DATAVERSE_EMULATOR_BIN", env!("CARGO_BIN_EXE_dataverse-emulator"));
    let (ok, output) = run_bounded(tour, Duration::from_secs(300), "the Python SDK tour");
    println!("{output}");
    assert!(ok, "Microsoft's Python Dataverse SDK against the emulator failed:\n{output}");
}
