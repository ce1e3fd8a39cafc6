//! Shared helpers of the end-to-end tests: run the real `adpipe` binary on free ports in a
//! temporary directory, talk to it as a partner would, and read the lake it writes.

// Each test binary uses a different subset of these helpers, and a panic is a failed test.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use adpipe_core::auth::sign;

pub mod aws;

/// The contract's Parquet columns (and stream keys), in order, copied from the design brief.
pub const COLUMNS: [&str; 24] = [
    "event_id",
    "partner",
    "event_type",
    "event_time",
    "received_at",
    "ad_session_id",
    "campaign_id",
    "placement_id",
    "creative_id",
    "publisher_id",
    "page_url",
    "user_agent",
    "ip",
    "country",
    "region",
    "city",
    "device_type",
    "os",
    "browser",
    "in_view_ms",
    "price_micros",
    "currency",
    "consent",
    "attributes",
];

/// The example pipelines' demo secrets.
pub const ACME_SECRET: &str = "demo-acme-video-secret";
pub const PIXEL_SECRET: &str = "demo-pixelco-secret";
pub const META_SECRET: &str = "demo-metaco-app-secret";

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

use adpipe_testkit::free_port;

/// A running adpipe binary, its output appended to `{dir}/{name}.log`.
pub struct Process {
    pub child: Child,
    pub dir: PathBuf,
    program: PathBuf,
    name: String,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    ready_url: Option<String>,
}

impl Process {
    /// Starts `program` and, when `ready_url` is given, waits until it answers `200` there.
    pub fn start(
        program: &Path,
        name: &str,
        args: Vec<String>,
        env: Vec<(&'static str, String)>,
        dir: &Path,
        ready_url: Option<String>,
    ) -> Process {
        let mut process = Process {
            child: spawn(program, name, &args, &env, dir),
            dir: dir.to_owned(),
            program: program.to_owned(),
            name: name.to_owned(),
            args,
            env,
            ready_url,
        };
        process.wait_ready();
        process
    }

    /// Starts the same command again after a crash or a stop.
    pub fn restart(&mut self) {
        self.child = spawn(&self.program, &self.name, &self.args, &self.env, &self.dir);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let Some(url) = self.ready_url.clone() else {
            return;
        };
        let client = reqwest::blocking::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited early with {status}:\n{}", self.name, self.log());
            }
            if client.get(&url).send().is_ok_and(|r| r.status() == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} did not become ready at {url}:\n{}",
            self.name,
            self.log()
        );
    }

    /// Sends SIGINT (Ctrl-C) and waits for the process to exit.
    pub fn interrupt(&mut self) -> ExitStatus {
        self.signal("-INT")
    }

    /// Sends SIGTERM (what Kubernetes sends) and waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("-TERM")
    }

    fn signal(&mut self, signal: &str) -> ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit after {signal}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no chance to flush or hand anything over.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Everything the process (all its runs) wrote.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.log", self.name))).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(
    program: &Path,
    name: &str,
    args: &[String],
    env: &[(&'static str, String)],
    dir: &Path,
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .unwrap();
    Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("failed to start {}: {e}", program.display()))
}

/// A running `adpipe local`.
pub struct Local {
    pub process: Process,
    pub base: String,
    pub metrics: String,
}

impl Local {
    /// Starts `adpipe local` on the example pipelines with its lake in `dir`.
    pub fn start(dir: &Path, extra: &[&str]) -> Local {
        let (port, metrics_port) = (free_port(), free_port());
        let mut args = vec![
            "local".to_owned(),
            "--pipelines".to_owned(),
            repo().join("examples/pipelines").display().to_string(),
            "--secrets-dir".to_owned(),
            repo().join("examples/secrets").display().to_string(),
            "--lake".to_owned(),
            dir.join("lake").display().to_string(),
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
            "--metrics-listen".to_owned(),
            format!("127.0.0.1:{metrics_port}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let base = format!("http://127.0.0.1:{port}");
        let program = Path::new(env!("CARGO_BIN_EXE_adpipe"));
        let process = Process::start(
            program,
            "adpipe",
            args,
            Vec::new(),
            dir,
            Some(format!("{base}/readyz")),
        );
        Local {
            process,
            base,
            metrics: format!("http://127.0.0.1:{metrics_port}"),
        }
    }

    /// The lake root (`--lake`).
    pub fn lake(&self) -> PathBuf {
        self.process.dir.join("lake")
    }
}

/// Polls `done` every `poll` until it holds, failing the test after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, poll: Duration, mut done: impl FnMut() -> bool) {
    assert!(
        poll_until(timeout, poll, &mut done),
        "timed out waiting for {what}"
    );
}

/// Polls `done` every `poll` until it holds or `timeout` passed; says whether it held.
pub fn poll_until(timeout: Duration, poll: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(poll);
    }
    true
}

/// POSTs one signed acme-video batch of events with these ids.
pub fn post_acme_batch(
    client: &reqwest::blocking::Client,
    base: &str,
    ids: &[String],
) -> reqwest::blocking::Response {
    let body: Vec<_> = ids.iter().map(|id| acme_event(id)).collect();
    post_signed(
        client,
        &format!("{base}/v1/acme-video/events"),
        "application/json",
        serde_json::to_vec(&body).unwrap(),
        ACME_SECRET,
    )
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// An acme-video event in the partner's own JSON.
pub fn acme_event(id: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "type": "imp", "ts": now_ms(), "session": format!("s-{id}"),
        "campaign": "c1", "placement": "p1", "creative": "cr1",
        "ua": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
        "ip": "203.0.113.77", "deal": "d-1"})
}

/// POSTs `body` signed with `secret` the way acme-video and metaco sign.
pub fn post_signed(
    client: &reqwest::blocking::Client,
    url: &str,
    content_type: &str,
    body: Vec<u8>,
    secret: &str,
) -> reqwest::blocking::Response {
    client
        .post(url)
        .header("content-type", content_type)
        .header(
            "x-hub-signature-256",
            format!("sha256={}", sign(secret.as_bytes(), &body)),
        )
        .body(body)
        .send()
        .expect("request failed")
}

/// A signed pixel URL for pixelco.
pub fn pixel_url(base: &str, query: &str) -> String {
    format!(
        "{base}/v1/pixelco/pixel.gif?{query}&sig={}",
        sign(PIXEL_SECRET.as_bytes(), query.as_bytes())
    )
}

/// Every Parquet file below `dir`.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(parquet_files(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    out.sort();
    out
}
