//! The operator on a real control plane (etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler, kwok; `scripts/cluster/`) with moto for Kinesis: what a platform team does
//! with `kubectl`, and what it should see.
//!
//! One cluster, one moto and one operator serve every test of this file; each test works in
//! a namespace of its own and checks only its own objects, so tests run side by side.

#![cfg(feature = "cluster-tests")]
// Test support: a panic is a failed test, with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use adpipe_testkit::cluster::Cluster;
use adpipe_testkit::{free_port, moto, repo, unique};
use serde_json::Value;

/// Long enough for kwok to run pods, the HPA to scale and moto to create a stream.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(500);
/// The steady-state observation window of the contract.
const STEADY_WINDOW: Duration = Duration::from_secs(30);

/// The operator binary under test, stopped when this test process ends however it ends: a
/// watchdog shell holds a pipe from this process and sends SIGTERM when it closes.
struct Operator {
    child: Child,
    _watchdog: (Child, ChildStdin),
    metrics: String,
    log: PathBuf,
}

impl Operator {
    fn start(identity: &str) -> Operator {
        let cluster = Cluster::shared();
        let port = free_port();
        let log = std::env::temp_dir().join(format!("adpipe-operator-{identity}-{port}.log"));
        let out = File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_adpipe-operator"))
            .args(["run", "--identity", identity])
            .args(["--leader-election-namespace", "default"])
            .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
            .args(["--receiver-image", "adpipe-receiver:test"])
            .args(["--deliverer-image", "adpipe-deliverer:test"])
            .args([
                "--workload-service-account-annotation",
                "eks.amazonaws.com/role-arn=arn:aws:iam::123456789012:role/adpipe-test",
            ])
            .envs(cluster.env())
            .envs(moto().env())
            .env("RUST_LOG", "info,kube=warn")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut watchdog = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "cat >/dev/null; kill -TERM {} 2>/dev/null",
                child.id()
            ))
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let pipe = watchdog.stdin.take().unwrap();
        Operator {
            _watchdog: (watchdog, pipe),
            child,
            metrics: format!("http://127.0.0.1:{port}/metrics"),
            log,
        }
    }

    /// Sends SIGTERM and waits: a graceful stop releases the leader lease.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// The sum of a metric's samples whose labels contain `label` (e.g. `kind="Deployment"`).
    fn metric(&self, name: &str, label: &str) -> Option<f64> {
        let text = reqwest::blocking::get(&self.metrics).ok()?.text().ok()?;
        Some(
            text.lines()
                .filter(|l| l.starts_with(name) && l.contains(label))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        )
    }
}

/// The shared operator, after the CRD is installed.
fn operator() -> &'static Mutex<Operator> {
    static OPERATOR: OnceLock<Mutex<Operator>> = OnceLock::new();
    OPERATOR.get_or_init(|| {
        let cluster = Cluster::shared();
        cluster.kubectl(&[
            "apply",
            "--server-side",
            "-f",
            repo()
                .join("crds/partnerpipelines.adpipe.io.yaml")
                .to_str()
                .unwrap(),
        ]);
        cluster.kubectl(&[
            "wait",
            "--for=condition=Established",
            "crd/partnerpipelines.adpipe.io",
            "--timeout=60s",
        ]);
        Mutex::new(Operator::start("operator-a"))
    })
}

fn kubectl(args: &[&str]) -> String {
    Cluster::shared().kubectl(args)
}

fn kubectl_json(args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    serde_json::from_str(&kubectl(&args)).unwrap()
}

/// Polls `check` until it gives a value; fails with `what` and the operator's log tail.
fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            let log = operator()
                .lock()
                .map(|o| std::fs::read_to_string(&o.log).unwrap_or_default())
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "timed out after {timeout:?} waiting for {what}; operator log (newest first):\n{}",
                tail.join("\n")
            );
        }
        std::thread::sleep(POLL);
    }
}

/// `kubectl apply --dry-run=server` of `yaml`: what the API server would say, nothing stored.
fn dry_run_apply(yaml: &str, args: &[&str]) -> Output {
    let cluster = Cluster::shared();
    let mut apply = Command::new(cluster.bin_dir().join("kubectl"))
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(["apply", "--dry-run=server", "-f", "-"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    apply.wait_with_output().unwrap()
}

fn namespace(prefix: &str) -> String {
    let namespace = unique(prefix);
    kubectl(&["create", "namespace", &namespace]);
    namespace
}

fn secret(namespace: &str, name: &str, key: &str, value: &str) {
    kubectl(&[
        "-n",
        namespace,
        "create",
        "secret",
        "generic",
        name,
        &format!("--from-literal={key}={value}"),
    ]);
}

/// The acme-video example moved to `namespace`, with `edit` applied to its spec.
fn acme_video(namespace: &str, name: &str, edit: impl FnOnce(&mut Value)) -> String {
    let text = std::fs::read_to_string(repo().join("examples/pipelines/acme-video.yaml")).unwrap();
    let mut doc: Value = serde_yaml_ng::from_str(&text).unwrap();
    doc["metadata"] = serde_json::json!({"name": name, "namespace": namespace});
    doc["spec"]["partner"] = Value::String(name.to_owned());
    doc["spec"]["stream"]["name"] = Value::String(unique("stream"));
    edit(&mut doc["spec"]);
    serde_yaml_ng::to_string(&doc).unwrap()
}

fn condition(pipeline: &Value, type_: &str) -> Option<(String, String)> {
    pipeline["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
}

/// Waits until the pipeline is `Ready=True` for its current generation; returns it.
fn wait_ready(namespace: &str, name: &str) -> Value {
    let deadline = Instant::now() + READY_TIMEOUT;
    let last = loop {
        let pp = kubectl_json(&["-n", namespace, "get", "pp", name]);
        let current = pp["status"]["observedGeneration"] == pp["metadata"]["generation"];
        let ready = condition(&pp, "Ready").is_some_and(|(status, _)| status == "True");
        if current && ready {
            return pp;
        }
        if Instant::now() > deadline {
            break pp["status"].clone();
        }
        std::thread::sleep(POLL);
    };
    panic!("{namespace}/{name} not Ready within {READY_TIMEOUT:?}; its status: {last:#}");
}

async fn kinesis() -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::new(&moto().sdk_config().await)
}

async fn open_shards(stream: &str) -> Option<i32> {
    let summary = kinesis()
        .await
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .ok()?;
    summary
        .stream_description_summary()
        .map(|s| s.open_shard_count())
}

/// When the operator last wrote each of the namespace's objects, per the API server's own
/// record (`managedFields` of the `adpipe-operator` manager).
fn operator_write_times(namespace: &str) -> BTreeMap<String, String> {
    let list = kubectl_json(&[
        "-n",
        namespace,
        "get",
        "deploy,svc,cm,sa,ingress,hpa,pdb,pp",
        "--show-managed-fields",
    ]);
    let mut times = BTreeMap::new();
    for item in list["items"].as_array().unwrap() {
        let key = format!("{}/{}", item["kind"], item["metadata"]["name"]);
        for field in item["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if field["manager"] == "adpipe-operator" {
                let sub = field["subresource"].as_str().unwrap_or("");
                times.insert(
                    format!("{key}{sub}"),
                    field["time"].as_str().unwrap_or_default().to_owned(),
                );
            }
        }
    }
    times
}

#[tokio::test(flavor = "multi_thread")]
async fn the_examples_become_ready_with_every_object_the_contract_names() {
    operator();
    // The examples name namespace `ads`; no other test uses it.
    kubectl(&["create", "namespace", "ads"]);
    for name in ["acme-video-auth", "pixelco-auth", "metaco-auth"] {
        let dir = repo().join("examples/secrets").join(name);
        kubectl(&[
            "-n",
            "ads",
            "create",
            "secret",
            "generic",
            name,
            &format!("--from-file={}", dir.display()),
        ]);
    }
    kubectl(&[
        "apply",
        "-f",
        repo().join("examples/pipelines").to_str().unwrap(),
    ]);

    for name in ["acme-video", "pixelco", "metaco"] {
        let pp = wait_ready("ads", name);
        assert_eq!(pp["metadata"]["finalizers"][0], "adpipe.io/stream");
        for type_ in ["StreamReady", "ReceiverAvailable", "DelivererAvailable"] {
            assert_eq!(
                condition(&pp, type_).map(|(status, _)| status).as_deref(),
                Some("True"),
                "{name}: {type_}"
            );
        }
        let uid = pp["metadata"]["uid"].as_str().unwrap().to_owned();
        let owned = [
            ("deploy", format!("{name}-receiver"), "receiver"),
            ("svc", format!("{name}-receiver"), "receiver"),
            ("hpa", format!("{name}-receiver"), "receiver"),
            ("pdb", format!("{name}-receiver"), "receiver"),
            ("deploy", format!("{name}-deliverer"), "deliverer"),
            ("cm", format!("{name}-pipeline"), ""),
            ("sa", name.to_owned(), ""),
        ];
        for (kind, object, component) in owned {
            let item = kubectl_json(&["-n", "ads", "get", kind, &object]);
            let labels = &item["metadata"]["labels"];
            assert_eq!(
                labels["app.kubernetes.io/name"], "adpipe",
                "{kind}/{object}"
            );
            assert_eq!(
                labels["app.kubernetes.io/instance"], name,
                "{kind}/{object}"
            );
            assert_eq!(labels["app.kubernetes.io/managed-by"], "adpipe-operator");
            if !component.is_empty() {
                assert_eq!(labels["app.kubernetes.io/component"], component);
            }
            assert_eq!(item["metadata"]["ownerReferences"][0]["uid"], uid.as_str());
        }
        let sa = kubectl_json(&["-n", "ads", "get", "sa", name]);
        assert_eq!(
            sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
            "arn:aws:iam::123456789012:role/adpipe-test"
        );
        let stream = pp["spec"]["stream"]["name"].as_str().unwrap();
        // metaco's stream is on-demand: Kinesis decides its shards.
        let shards = pp["spec"]["stream"]["shards"]
            .as_u64()
            .or(pp["status"]["stream"]["openShards"].as_u64())
            .unwrap() as usize;
        assert_eq!(
            open_shards(stream).await,
            Some(shards as i32),
            "{name}'s stream"
        );
        assert!(
            pp["status"]["stream"]["arn"]
                .as_str()
                .is_some_and(|arn| arn.ends_with(stream))
        );

        // Pods run through kwok: the receiver at the autoscaler's minimum, one deliverer
        // per open shard.
        let running = |component: &str, want: usize| {
            let selector = format!(
                "app.kubernetes.io/instance={name},app.kubernetes.io/component={component}"
            );
            eventually(
                &format!("{want} running {name} {component} pods"),
                READY_TIMEOUT,
                || {
                    let pods = kubectl_json(&["-n", "ads", "get", "pods", "-l", &selector]);
                    let running = pods["items"]
                        .as_array()?
                        .iter()
                        .filter(|p| p["status"]["phase"] == "Running")
                        .count();
                    (running == want).then_some(())
                },
            );
        };
        running("receiver", 2);
        running("deliverer", shards);
    }

    let ingress = kubectl_json(&["-n", "ads", "get", "ingress", "acme-video"]);
    assert_eq!(
        ingress["spec"]["rules"][0]["http"]["paths"][0]["path"],
        "/v1/acme-video"
    );
    let pp = wait_ready("ads", "acme-video");
    assert_eq!(
        pp["status"]["endpoint"],
        "https://events.example.com/v1/acme-video"
    );

    let table = eventually("2/2 receivers in kubectl get pp", READY_TIMEOUT, || {
        let table = kubectl(&["-n", "ads", "get", "pp"]);
        table
            .lines()
            .any(|l| l.starts_with("acme-video") && l.split_whitespace().nth(5) == Some("2/2"))
            .then_some(table)
    });
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "PARTNER",
            "FORMAT",
            "STREAM",
            "SHARDS",
            "RECEIVERS",
            "DELIVERERS",
            "READY",
            "AGE"
        ]
    );
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("acme-video"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..8],
        [
            "acme-video",
            "acme-video",
            "json",
            "ads-acme-video",
            "2",
            "2/2",
            "2/2",
            "True"
        ]
    );

    let events = kubectl(&[
        "-n",
        "ads",
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=acme-video,involvedObject.kind=PartnerPipeline",
    ]);
    assert!(events.contains("PipelineReady"), "{events}");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_specs_are_refused_by_the_api_server_naming_the_field() {
    operator();
    let namespace = namespace("invalid");
    type Edit = fn(&mut Value);
    let cases: [(&str, Edit, &str); 6] = [
        (
            "min above max",
            |spec| spec["receiver"]["replicas"] = serde_json::json!({"min": 5, "max": 2}),
            "spec.receiver.replicas",
        ),
        (
            "a partner that is not a DNS label",
            |spec| spec["partner"] = Value::String("Acme_Video".to_owned()),
            "spec.partner",
        ),
        (
            "an unknown format",
            |spec| spec["source"]["format"] = Value::String("xml".to_owned()),
            "spec.source.format",
        ),
        (
            "no event type mapping",
            |spec| {
                spec["source"]["mapping"]
                    .as_object_mut()
                    .unwrap()
                    .remove("eventType");
            },
            "spec.source.mapping",
        ),
        (
            "an unknown standard field",
            |spec| spec["source"]["mapping"]["colour"] = Value::String("/c".to_owned()),
            "spec.source.mapping",
        ),
        (
            "a deliverer count that is neither auto nor a number",
            |spec| spec["deliverer"]["replicas"] = Value::String("many".to_owned()),
            "spec.deliverer.replicas",
        ),
    ];
    for (case, edit, field) in cases {
        let yaml = acme_video(&namespace, "broken", edit);
        let offline = adpipe_core::validate::parse(&yaml)
            .map(|docs| adpipe_core::validate::validate(&docs[0]))
            .map_or_else(|errors| errors.len(), |errors| errors.len());
        assert!(offline > 0, "{case}: `adpipe validate` accepted it");
        let output = dry_run_apply(&yaml, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{case}: the API server accepted it"
        );
        assert!(
            stderr.contains(field),
            "{case}: `{field}` not named in: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn resharding_and_putting_back_what_was_deleted_or_edited() {
    operator();
    let namespace = namespace("reshard");
    secret(&namespace, "acme-video-auth", "secret", "s1");
    let yaml = acme_video(&namespace, "reshard", |_| {});
    Cluster::shared().apply(&yaml);
    let pp = wait_ready(&namespace, "reshard");
    let stream = pp["spec"]["stream"]["name"].as_str().unwrap().to_owned();

    kubectl(&[
        "-n",
        &namespace,
        "patch",
        "pp",
        "reshard",
        "--type=merge",
        "-p",
        r#"{"spec":{"stream":{"shards":4}}}"#,
    ]);
    let pp = wait_ready(&namespace, "reshard");
    assert_eq!(pp["status"]["stream"]["openShards"], 4);
    assert_eq!(open_shards(&stream).await, Some(4));
    let deliverer = kubectl_json(&["-n", &namespace, "get", "deploy", "reshard-deliverer"]);
    assert_eq!(deliverer["spec"]["replicas"], 4);

    let before = kubectl_json(&["-n", &namespace, "get", "deploy", "reshard-receiver"]);
    kubectl(&[
        "-n",
        &namespace,
        "delete",
        "deploy",
        "reshard-receiver",
        "--wait",
    ]);
    eventually("the receiver Deployment back", READY_TIMEOUT, || {
        let after = Cluster::shared().kubectl_output(&[
            "-n",
            &namespace,
            "get",
            "deploy",
            "reshard-receiver",
            "-o",
            "jsonpath={.metadata.uid}",
        ]);
        let uid = String::from_utf8_lossy(&after.stdout).into_owned();
        (after.status.success() && !uid.is_empty() && uid != before["metadata"]["uid"])
            .then_some(())
    });

    kubectl(&[
        "-n",
        &namespace,
        "set",
        "image",
        "deploy/reshard-deliverer",
        "deliverer=someone/else:latest",
    ]);
    eventually("the deliverer image put back", READY_TIMEOUT, || {
        let deploy = kubectl_json(&["-n", &namespace, "get", "deploy", "reshard-deliverer"]);
        (deploy["spec"]["template"]["spec"]["containers"][0]["image"] == "adpipe-deliverer:test")
            .then_some(())
    });

    // Rotating the partner secret rolls the receiver pods.
    let checksum = |deploy: &Value| {
        deploy["spec"]["template"]["metadata"]["annotations"]["adpipe.io/config-checksum"].clone()
    };
    let before = checksum(&kubectl_json(&[
        "-n",
        &namespace,
        "get",
        "deploy",
        "reshard-receiver",
    ]));
    kubectl(&["-n", &namespace, "delete", "secret", "acme-video-auth"]);
    eventually(
        "ReceiverAvailable=False for the missing secret",
        READY_TIMEOUT,
        || {
            let pp = kubectl_json(&["-n", &namespace, "get", "pp", "reshard"]);
            (condition(&pp, "ReceiverAvailable") == Some(("False".into(), "SecretNotFound".into())))
                .then_some(())
        },
    );
    secret(&namespace, "acme-video-auth", "secret", "s2");
    kubectl(&["-n", &namespace, "annotate", "pp", "reshard", "touch=1"]);
    wait_ready(&namespace, "reshard");
    let after = checksum(&kubectl_json(&[
        "-n",
        &namespace,
        "get",
        "deploy",
        "reshard-receiver",
    ]));
    assert_ne!(before, after);
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_pipeline_removes_its_children_and_honours_the_deletion_policy() {
    operator();
    let namespace = namespace("delete");
    secret(&namespace, "acme-video-auth", "secret", "s");
    let keep = acme_video(&namespace, "keep", |_| {});
    let drop = acme_video(&namespace, "drop", |spec| {
        spec["stream"]["deletionPolicy"] = Value::String("Delete".to_owned());
    });
    Cluster::shared().apply(&keep);
    Cluster::shared().apply(&drop);
    let kept = wait_ready(&namespace, "keep")["spec"]["stream"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let dropped = wait_ready(&namespace, "drop")["spec"]["stream"]["name"]
        .as_str()
        .unwrap()
        .to_owned();

    kubectl(&[
        "-n",
        &namespace,
        "delete",
        "pp",
        "keep",
        "drop",
        "--wait",
        "--timeout=60s",
    ]);
    eventually("the children garbage-collected", READY_TIMEOUT, || {
        let left = kubectl(&[
            "-n",
            &namespace,
            "get",
            "deploy,svc,cm,sa,ingress,hpa,pdb",
            "-l",
            "app.kubernetes.io/managed-by=adpipe-operator",
            "-o",
            "name",
        ]);
        left.trim().is_empty().then_some(())
    });
    assert_eq!(open_shards(&kept).await, Some(2), "Retain keeps the stream");
    let gone = kinesis()
        .await
        .describe_stream_summary()
        .stream_name(&dropped)
        .send()
        .await;
    assert!(
        gone.is_err(),
        "Delete removes the stream, but it is still there"
    );
}

#[test]
fn a_steady_pipeline_is_not_rewritten_nor_after_a_leader_change() {
    operator();
    let namespace = namespace("steady");
    secret(&namespace, "acme-video-auth", "secret", "s");
    Cluster::shared().apply(&acme_video(&namespace, "steady", |_| {}));
    wait_ready(&namespace, "steady");
    // The HPA raises the receiver to its minimum after Ready; let that settle first.
    eventually("2 ready receivers", READY_TIMEOUT, || {
        let pp = kubectl_json(&["-n", &namespace, "get", "pp", "steady"]);
        (pp["status"]["receiver"]["summary"] == "2/2").then_some(())
    });

    let settled = operator_write_times(&namespace);
    assert!(settled.len() >= 8, "{settled:?}");
    std::thread::sleep(STEADY_WINDOW);
    assert_eq!(
        operator_write_times(&namespace),
        settled,
        "rewritten at steady state"
    );

    // A standby takes over when the leader stops, reconciles everything again and writes
    // nothing.
    let standby = Operator::start("operator-b");
    let mut shared = operator().lock().unwrap();
    let leader = std::mem::replace(&mut *shared, standby);
    leader.stop();
    eventually("operator-b holding the lease", READY_TIMEOUT, || {
        let lease = kubectl_json(&["-n", "default", "get", "lease", "adpipe-operator"]);
        (lease["spec"]["holderIdentity"] == "operator-b").then_some(())
    });
    eventually("operator-b reconciling", READY_TIMEOUT, || {
        (shared.metric("adpipe_operator_reconciles_total", "success")? >= 1.0).then_some(())
    });
    drop(shared);
    std::thread::sleep(STEADY_WINDOW);
    assert_eq!(
        operator_write_times(&namespace),
        settled,
        "rewritten after a leader change"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chart_lints_and_its_objects_apply_to_the_control_plane() {
    operator();
    let cluster = Cluster::shared();
    let chart = repo().join("charts/adpipe");
    let chart = chart.to_str().unwrap();
    cluster.helm(&["lint", chart]);
    cluster.helm(&[
        "lint",
        chart,
        "--set",
        "metrics.serviceMonitor.enabled=true,metrics.podMonitor.enabled=true,prometheusRule.enabled=true",
    ]);
    let namespace = namespace("chart");
    let rendered = cluster.helm(&["template", "adpipe", chart, "--namespace", &namespace]);
    let output = dry_run_apply(&rendered, &["-n", &namespace]);
    assert!(
        output.status.success(),
        "the rendered chart does not apply: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let applied = String::from_utf8_lossy(&output.stdout);
    for kind in ["deployment.apps/", "clusterrole.rbac", "serviceaccount/"] {
        assert!(applied.contains(kind), "{kind} missing from: {applied}");
    }
}
