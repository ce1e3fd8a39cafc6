//! A real Kubernetes control plane for integration tests: etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and kwok (fake nodes on which pods turn Running),
//! as plain processes on 127.0.0.1.
//!
//! [`Cluster::shared`] first runs `scripts/cluster/build.sh` (instant once the binaries are in
//! the cache; the first build compiles them from the Go module proxy, 15-30 min, and says so on
//! stderr), then `scripts/cluster/cluster.sh serve` with a state directory of this process.
//! That script starts the cluster, closes its stdout once the cluster is ready, and then
//! waits for its stdin, a pipe this process holds, to close: however the test process ends
//! (success, panic, `SIGKILL`), the pipe closes and the script stops every component and
//! removes the state directory.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::OnceLock;

use crate::repo;

/// How many lines of the start-up log a failure shows.
const LOG_TAIL_LINES: usize = 40;

/// A running control plane, alive until the test process exits.
pub struct Cluster {
    _serve: Child,
    _stdin: ChildStdin,
    state: PathBuf,
    kubeconfig: PathBuf,
    bin_dir: PathBuf,
}

impl Cluster {
    /// The cluster of this test process, started on first use (40-90 s on 2 cores). Tests
    /// share it, so each should work in a namespace of its own (see [`crate::unique`]).
    pub fn shared() -> &'static Cluster {
        static CLUSTER: OnceLock<Cluster> = OnceLock::new();
        CLUSTER.get_or_init(Cluster::start)
    }

    fn start() -> Cluster {
        let scripts = repo().join("scripts/cluster");
        let build = Command::new("bash")
            .arg(scripts.join("build.sh"))
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("failed to run scripts/cluster/build.sh: {e}"));
        assert!(
            build.status.success(),
            "scripts/cluster/build.sh failed (its output is above)"
        );
        let bin_dir = PathBuf::from(String::from_utf8_lossy(&build.stdout).trim());

        let state = std::env::temp_dir().join(format!("adpipe-cluster-{}", std::process::id()));
        let mut serve = Command::new("bash")
            .arg(scripts.join("cluster.sh"))
            .arg("serve")
            .arg(&state)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("failed to run scripts/cluster/cluster.sh: {e}"));
        let stdin = serve.stdin.take().unwrap();
        let mut env = String::new();
        serve
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut env)
            .unwrap();
        if !env.contains("export KUBECONFIG=") {
            let log = state.with_extension("log");
            let text = fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            panic!(
                "the local Kubernetes cluster did not start; the end of {}:\n{}",
                log.display(),
                lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
            );
        }
        Cluster {
            _serve: serve,
            _stdin: stdin,
            kubeconfig: state.join("admin.kubeconfig"),
            state,
            bin_dir,
        }
    }

    /// The admin kubeconfig (client certificate in `system:masters`), for kube-rs:
    /// `Kubeconfig::read_from(cluster.kubeconfig())`.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Where `kubectl`, `helm` and the control-plane binaries of the matching version are.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The environment a child process (an adpipe binary) needs to reach this cluster
    /// through kube-rs' standard configuration chain.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![("KUBECONFIG", self.kubeconfig.to_string_lossy().into_owned())]
    }

    /// Runs `kubectl` on this cluster and returns its stdout; fails the test with its stderr
    /// when it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        succeeded("kubectl", args, self.kubectl_output(args))
    }

    /// Runs `kubectl` on this cluster and returns its output whatever its exit status, for
    /// the commands that are expected to fail (a refused object, a missing one).
    pub fn kubectl_output(&self, args: &[&str]) -> Output {
        self.kubectl_command(args)
            .output()
            .unwrap_or_else(|e| panic!("failed to run kubectl: {e}"))
    }

    /// `kubectl apply -f -` of `yaml`; returns kubectl's stdout, fails the test when the
    /// server refuses anything.
    pub fn apply(&self, yaml: &str) -> String {
        let args = ["apply", "-f", "-"];
        let mut child = self
            .kubectl_command(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("failed to run kubectl: {e}"));
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        succeeded("kubectl", &args, child.wait_with_output().unwrap())
    }

    /// Runs `helm` on this cluster (with its cache and config kept in the cluster's state
    /// directory) and returns its stdout; fails the test with its stderr when it fails.
    pub fn helm(&self, args: &[&str]) -> String {
        let helm_home = self.state.join("helm");
        let output = Command::new(self.bin_dir.join("helm"))
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", helm_home.join("cache"))
            .env("HELM_CONFIG_HOME", helm_home.join("config"))
            .env("HELM_DATA_HOME", helm_home.join("data"))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("failed to run helm: {e}"));
        succeeded("helm", args, output)
    }

    fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.bin_dir.join("kubectl"));
        command.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        command
    }
}

/// The stdout of a command that must have succeeded.
fn succeeded(program: &str, args: &[&str], output: Output) -> String {
    assert!(
        output.status.success(),
        "{program} {} failed ({}):\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
