//! Test support shared by adpipe's crates, so every test finds real components the same way:
//!
//! * [`venv`] / [`python`] / [`run_python`]: the virtualenv `scripts/python-env.sh` builds,
//!   with DuckDB, pyarrow, aws-kinesis-agg and moto;
//! * [`Moto`]: a moto server (through `scripts/moto_server.py`, which brings moto's Kinesis
//!   resharding in line with AWS) on a free port, stopped when the test process ends;
//! * [`fault_proxy`]: throttling, partial `PutRecords` failures and S3 `503`s in front of moto;
//! * [`cluster`]: a real Kubernetes control plane (etcd, apiserver, controllers, scheduler, kwok
//!   fake nodes) started by `scripts/cluster/cluster.sh`, stopped when the test process ends.
//!
//! Only tests use this crate; a failure to set something up panics with what to do.

// Test support: a panic is a failed test, with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod cluster;
pub mod fault_proxy;

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_kinesis::config::{Credentials, Region};

/// How long moto may take to start answering (Python imports every service first).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the port is probed while moto starts.
const STARTUP_POLL: Duration = Duration::from_millis(100);
/// The region every test uses; moto accepts any.
pub const REGION: &str = "us-east-1";

/// The repository root, found at run time from the package whose tests are running (cargo
/// names it in `CARGO_MANIFEST_DIR`). Not from this crate's own build: clones at other paths
/// that share one target directory share that build too, and it would point at whichever
/// clone compiled it first.
pub fn repo() -> PathBuf {
    let tested = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    tested
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .map_or_else(|| tested.join(".."), Path::to_path_buf)
}

/// The test virtualenv: `$ADPIPE_VENV`, else `~/.cache/adpipe/venv`.
pub fn venv() -> PathBuf {
    std::env::var_os("ADPIPE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(&std::env::var_os("HOME").unwrap_or_default()).join(".cache/adpipe/venv")
        })
}

/// The virtualenv's Python; fails the test with what to do when it is missing.
pub fn python() -> PathBuf {
    let python = venv().join("bin/python");
    assert!(
        python.exists(),
        "no Python virtualenv at {}: run `bash scripts/python-env.sh` (or `make python-env`) first, or set ADPIPE_VENV",
        venv().display()
    );
    python
}

/// Runs a script of `tests/python/` in the virtualenv and returns its stdout; fails the test
/// with its stderr when it fails.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg(repo().join("tests/python").join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("failed to start python for {script}: {e}"));
    assert!(
        out.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A name no other test of this process uses, for streams, buckets and tables.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A running moto server.
///
/// Its stdin is a pipe this process holds: when the test process exits, however it exits,
/// the pipe closes and the server stops, so even the shared instance of [`moto`] (a
/// `static`, never dropped) leaves nothing running.
pub struct Moto {
    child: Child,
    _stdin: ChildStdin,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts a server of its own, e.g. for a test that must not share state.
    pub fn start() -> Moto {
        let python = python();
        let port = free_port();
        let log = std::env::temp_dir().join(format!("adpipe-moto-{port}.log"));
        let out = File::create(&log).unwrap();
        let mut child = Command::new(&python)
            .arg(repo().join("scripts/moto_server.py"))
            .args([
                "--exit-on-stdin-eof",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {}: {e}", python.display()));
        let stdin = child.stdin.take().unwrap();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "moto exited with {status} before answering:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "moto did not answer on port {port} within {STARTUP_TIMEOUT:?}; log: {}",
                log.display()
            );
            std::thread::sleep(STARTUP_POLL);
        }
        Moto {
            child,
            _stdin: stdin,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// SDK configuration for this server: its endpoint, [`REGION`] and test credentials.
    /// The endpoint is set on this loader only, never in the environment, so production
    /// code keeps resolving it from the SDK's standard chain.
    pub async fn sdk_config(&self) -> SdkConfig {
        sdk_config_for(&self.endpoint).await
    }

    /// The environment a child process (an adpipe binary) needs to reach this server
    /// through the SDK's standard chain.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        env_for(&self.endpoint)
    }
}

/// SDK configuration for any endpoint (moto, or a proxy in front of it).
pub async fn sdk_config_for(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .load()
        .await
}

/// The standard-chain environment for a child process talking to `endpoint`.
pub fn env_for(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_REGION", REGION.to_owned()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
    ]
}

/// The moto server of this test process, started on first use.
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(Moto::start)
}
