//! The local control plane of `scripts/cluster/` as tests see it: nodes Ready, a Deployment
//! Available on the fake nodes, server and kubectl at the version built.
#![cfg(feature = "cluster-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use adpipe_testkit::cluster::Cluster;
use adpipe_testkit::unique;

#[test]
fn nodes_are_ready_and_a_deployment_becomes_available() {
    let cluster = Cluster::shared();
    let ready = cluster.kubectl(&[
        "get",
        "nodes",
        "-o",
        r#"jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
    ]);
    assert_eq!(ready.lines().collect::<Vec<_>>(), ["True", "True"]);

    let version = cluster.kubectl(&["version", "-o", "json"]);
    assert_eq!(
        version.matches(r#""gitVersion": "v1.37.2""#).count(),
        2,
        "{version}"
    );

    let ns = unique("cluster-test");
    cluster.kubectl(&["create", "namespace", &ns]);
    cluster.kubectl(&[
        "-n",
        &ns,
        "create",
        "deployment",
        "web",
        "--image=fake",
        "--replicas=3",
    ]);
    cluster.kubectl(&[
        "-n",
        &ns,
        "rollout",
        "status",
        "deployment/web",
        "--timeout=60s",
    ]);
    let available = cluster.kubectl(&[
        "-n",
        &ns,
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.status.availableReplicas}",
    ]);
    assert_eq!(available, "3");

    let missing = cluster.kubectl_output(&["-n", &ns, "get", "deployment", "absent"]);
    assert!(!missing.status.success());

    cluster.kubectl(&["delete", "namespace", &ns, "--wait=true", "--timeout=60s"]);
}

#[test]
fn helm_installs_a_chart_that_becomes_ready() {
    let cluster = Cluster::shared();
    let dir = std::env::temp_dir().join(unique("adpipe-chart"));
    std::fs::create_dir_all(&dir).unwrap();
    let chart = dir.join("demo");
    cluster.helm(&["create", chart.to_str().unwrap()]);

    let ns = unique("helm-test");
    cluster.helm(&[
        "install",
        "demo",
        chart.to_str().unwrap(),
        "--namespace",
        &ns,
        "--create-namespace",
        "--wait",
        "--timeout=90s",
    ]);
    let status = cluster.helm(&["status", "demo", "--namespace", &ns, "-o", "json"]);
    assert!(status.contains(r#""status":"deployed""#), "{status}");

    cluster.helm(&["uninstall", "demo", "--namespace", &ns, "--wait"]);
    cluster.kubectl(&["delete", "namespace", &ns, "--wait=true", "--timeout=60s"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
