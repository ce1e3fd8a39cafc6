#!/usr/bin/env python3
"""The operator at scale (issue #5, part 5): N PartnerPipelines on the real control plane,
time from apply to Ready, the operator's memory and CPU, and its API writes at steady state.

    python bench/operator_bench.py --out FILE [--quick] [--pipelines N] [--no-build]

    cargo build --release -p adpipe-operator
    cluster.sh serve (own state dir) + kwok nodes for 4 pods per pipeline ── moto ── the CRD
    adpipe-operator run (release) ─▶ holds the leader lease
    namespaces + Secrets ─▶ ONE `kubectl apply -f` of N pipelines (timed)
    list the pipelines every 0.5 s ─▶ per pipeline: first reconciled, first Ready, Ready lost
    settle: no pipeline changed for 30 s
    W steady windows, each between two snapshots:
      (a) adpipe_operator_api_writes_total and _reconciles_total
      (b) the API server's apiserver_request_total, write verbs, by resource
      (c) resourceVersion and the adpipe-operator managedFields times of every pipeline and
          owned object; the operator's leader Lease watched, renewals counted
    operator VmHWM / VmRSS (/proc/PID/status), utime + stime (/proc/PID/stat)
    ─▶ FILE: {"part": "operator", "metrics": [...], "goals": [...], "notes": [...]}

Everything (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, moto, the
operator and this script) shares the machine's cores; nothing is pinned. The control plane
is `scripts/cluster/cluster.sh serve`: it stays up while this script holds its stdin and goes
down, removing its state, when the pipe closes, however this script ends.

NOTE: the file is not called `operator.py`: run from `bench/`, that name would shadow the
standard library's `operator` module (which `enum`, `collections` and so every script in
this directory import), breaking this script and `run.py`.

Only the standard library is used (the API is read over HTTPS with the kubeconfig's client
certificate, cheaper than a kubectl process per poll); moto runs in the test virtualenv.
"""

import argparse
import base64
import datetime
import json
import math
import os
import platform
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import harness

REPO = Path(__file__).resolve().parent.parent
HOME = Path.home()
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", HOME / ".cache/adpipe/target"))
VENV = Path(os.environ.get("ADPIPE_VENV", HOME / ".cache/adpipe/venv"))
OPERATOR_BIN = TARGET / "release" / "adpipe-operator"
CLUSTER_SH = REPO / "scripts" / "cluster" / "cluster.sh"
MOTO_SERVER = REPO / "scripts" / "moto_server.py"
CRD = REPO / "crds" / "partnerpipelines.adpipe.io.yaml"
EXAMPLE = REPO / "examples" / "pipelines" / "acme-video.yaml"

FULL = {"pipelines": 200, "namespaces": 4, "window_s": 120.0, "windows": 3,
        "ready_timeout_s": 1800.0}
QUICK = {"pipelines": 20, "namespaces": 2, "window_s": 30.0, "windows": 1,
         "ready_timeout_s": 600.0}

# How often the pipelines are listed while they turn Ready (the latencies' resolution).
POLL_S = 0.5
# How often the wait for Ready says how far it got.
PROGRESS_EVERY_S = 30.0
# Steady state starts once no pipeline has changed for this long.
SETTLE_QUIET_S = 30.0
# Give up settling after this long and measure anyway (the notes say so).
SETTLE_TIMEOUT_S = 600.0
# The operator must hold its lease within this long of starting.
LEADER_TIMEOUT_S = 60.0
# moto's first start imports a lot on a busy machine.
MOTO_START_TIMEOUT_S = 60.0

# What the operator is started with (operator/src/main.rs).
IDENTITY = "bench"
LEASE_NAMESPACE = "default"
LEASE_NAME = "adpipe-operator"
MANAGER = "adpipe-operator"
SECRET_NAME = "acme-video-auth"
SECRET_KEY = "secret"

# Pods per pipeline once settled: the receiver at its autoscaler minimum (acme-video: 2) and
# one deliverer per shard (2). The extra kwok nodes hold them with this much room to spare.
PODS_PER_PIPELINE = 4
CAPACITY_MARGIN = 1.25
# One extra fake node: as many pods as kubelet's default max, and CPU and memory enough for
# them at the operator's requests (250m CPU, 128-256 MiB each).
NODE_PODS = 250
NODE_CPU = "128"
NODE_MEMORY = "512Gi"

# The kinds the operator owns (design.md) and where the API serves them.
OWNED = {
    "Deployment": "/apis/apps/v1/deployments",
    "Service": "/api/v1/services",
    "ConfigMap": "/api/v1/configmaps",
    "ServiceAccount": "/api/v1/serviceaccounts",
    "Ingress": "/apis/networking.k8s.io/v1/ingresses",
    "HorizontalPodAutoscaler": "/apis/autoscaling/v2/horizontalpodautoscalers",
    "PodDisruptionBudget": "/apis/policy/v1/poddisruptionbudgets",
}
OWNED_SELECTOR = "app.kubernetes.io/managed-by=adpipe-operator"
PIPELINES = "/apis/adpipe.io/v1alpha1/partnerpipelines"
LEASE = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases"
# The same kinds as the API server's `resource` label.
OWNED_RESOURCES = {"partnerpipelines", "deployments", "services", "configmaps",
                   "serviceaccounts", "ingresses", "horizontalpodautoscalers",
                   "poddisruptionbudgets"}
WRITE_VERBS = {"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"}

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def log(message):
    print(f"operator bench: {message}", file=sys.stderr, flush=True)


# --- processes and the API ---------------------------------------------------------------


class ControlPlane:
    """Our own control plane: `cluster.sh serve STATE` keeps it up while we hold its stdin;
    closing the pipe brings it down and removes STATE (also when this script dies)."""

    COMPONENTS = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"]

    def __init__(self, state):
        self.state = Path(state)
        log(f"starting the control plane in {self.state}")
        self.proc = subprocess.Popen(
            ["bash", str(CLUSTER_SH), "serve", str(self.state)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        exports = dict(
            shlex.split(line)[1].split("=", 1)
            for line in self.proc.stdout.read().splitlines() if line.startswith("export ")
        )
        if "KUBECONFIG" not in exports:
            self.proc.stdin.close()
            self.proc.wait()
            tail = self.state.with_suffix(".log")
            raise RuntimeError(f"the control plane did not start (see {tail})")
        self.kubeconfig = exports["KUBECONFIG"]
        self.bin_dir = Path(exports["PATH"].split(":", 1)[0])

    def kubectl(self, *args, stdin=None):
        """kubectl's stdout; raises with its stderr when it fails."""
        done = subprocess.run([self.bin_dir / "kubectl", "--kubeconfig", self.kubeconfig,
                               *map(str, args)], input=stdin, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(map(str, args))} failed: {done.stderr}")
        return done.stdout

    def component_rss_mib(self):
        """RSS of each control-plane process, by the pidfiles cluster.sh keeps."""
        rss = {}
        for name in self.COMPONENTS:
            try:
                pid = int((self.state / f"{name}.pid").read_text())
                rss[name] = ProcStats.read(pid).rss_kib / 1024
            except (OSError, ValueError):
                continue
        return rss

    def close(self):
        log("stopping the control plane")
        self.proc.stdin.close()
        self.proc.wait()


class Kube:
    """The API server over HTTPS with the kubeconfig's admin client certificate."""

    def __init__(self, plane, scratch):
        config = json.loads(plane.kubectl("config", "view", "--raw", "--minify", "-o", "json"))
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        self.server = cluster["server"]
        ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
        self.context = ssl.create_default_context(cadata=ca)
        cert, key = scratch / "client.crt", scratch / "client.key"
        for path, data in ((cert, user["client-certificate-data"]),
                           (key, user["client-key-data"])):
            path.touch(mode=0o600)
            path.write_bytes(base64.b64decode(data))
        self.context.load_cert_chain(cert, key)

    def get(self, path, timeout=60.0):
        with urllib.request.urlopen(self.server + path, context=self.context,
                                    timeout=timeout) as response:
            return response.read()

    def json(self, path):
        return json.loads(self.get(path))

    def items(self, path, **query):
        return self.json(f"{path}?{urllib.parse.urlencode(query)}")["items"]

    def count_watch_events(self, path, seconds, **query):
        """Events of a watch on `path` that the server closes after `seconds`."""
        listed = self.json(f"{path}?{urllib.parse.urlencode(query)}")
        query |= {"watch": "true", "resourceVersion": listed["metadata"]["resourceVersion"],
                  "timeoutSeconds": int(seconds)}
        events = 0
        with urllib.request.urlopen(f"{self.server}{path}?{urllib.parse.urlencode(query)}",
                                    context=self.context, timeout=seconds + 30) as response:
            for line in response:
                if line.strip() and json.loads(line).get("type") != "BOOKMARK":
                    events += 1
        return events


@dataclass
class ProcStats:
    """Memory and CPU of one process from /proc."""

    rss_kib: int
    hwm_kib: int
    cpu_s: float

    @staticmethod
    def read(pid):
        status = Path(f"/proc/{pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        # utime and stime are fields 14 and 15; the command name (2) may hold spaces.
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return ProcStats(
            rss_kib=int(fields["VmRSS"].split()[0]),
            hwm_kib=int(fields["VmHWM"].split()[0]),
            cpu_s=(int(stat[11]) + int(stat[12])) / CLOCK_TICKS,
        )


def parse_metrics(text, wanted):
    """{(name, labels as a sorted tuple): value} of the samples whose name is in `wanted`."""
    samples = {}
    for line in text.splitlines():
        match = METRIC_LINE.match(line)
        if match and match.group(1) in wanted:
            labels = tuple(sorted(LABEL.findall(match.group(2) or "")))
            samples[(match.group(1), labels)] = float(match.group(3))
    return samples


def metric_sum(samples, name, **match):
    return sum(v for (n, labels), v in samples.items()
               if n == name and all((k, want) in labels for k, want in match.items()))


# --- setting up ----------------------------------------------------------------------------


def build():
    log("building adpipe-operator (release)")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "adpipe-operator"], cwd=REPO,
                   env=dict(os.environ, CARGO_TARGET_DIR=str(TARGET)), check=True)


def add_nodes(plane, pipelines):
    """Fake nodes enough for every pipeline's pods at their requests; kwok manages them."""
    count = math.ceil(pipelines * PODS_PER_PIPELINE * CAPACITY_MARGIN / NODE_PODS)
    capacity = {"cpu": NODE_CPU, "memory": NODE_MEMORY, "pods": str(NODE_PODS)}
    nodes = [{
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": f"bench-node-{i}",
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"kubernetes.io/hostname": f"bench-node-{i}", "kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64", "type": "kwok"},
        },
        "status": {"allocatable": capacity, "capacity": capacity},
    } for i in range(count)]
    plane.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                                                        "items": nodes}))
    plane.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=120s")
    return count


def start_moto(work):
    """moto from the test virtualenv on a free port; it exits when our pipe to it closes."""
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run(["bash", REPO / "scripts" / "python-env.sh"], check=True,
                       stdout=subprocess.DEVNULL)
    port = harness.free_port()
    moto = harness.Child("moto", [str(python), str(MOTO_SERVER), "--exit-on-stdin-eof",
                                  "-H", "127.0.0.1", "-p", str(port)],
                         work / "moto.log", stdin=subprocess.PIPE)
    harness.wait_listening(port, moto, MOTO_START_TIMEOUT_S)
    return moto, f"http://127.0.0.1:{port}"


def install_crd(plane):
    plane.kubectl("apply", "--server-side", "-f", CRD)
    plane.kubectl("wait", "--for=condition=Established",
                  "crd/partnerpipelines.adpipe.io", "--timeout=60s")


@dataclass
class Operator:
    """The operator process and where its metrics are."""

    child: harness.Child
    metrics_url: str

    @property
    def pid(self):
        return self.child.pid


def start_operator(plane, kube, moto_endpoint, work):
    """The release operator; returns once it holds the leader lease."""
    port = harness.free_port()
    env = dict(os.environ, KUBECONFIG=plane.kubeconfig, RUST_LOG="info,kube=warn",
               AWS_ENDPOINT_URL=moto_endpoint, AWS_REGION="us-east-1",
               AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    child = harness.Child("adpipe-operator", [
        str(OPERATOR_BIN), "run", "--identity", IDENTITY,
        "--leader-election-namespace", LEASE_NAMESPACE,
        "--metrics-listen", f"127.0.0.1:{port}",
    ], work / "operator.log", env=env)
    operator = Operator(child, f"http://127.0.0.1:{port}/metrics")
    harness.wait_answering(operator.metrics_url, child)
    deadline = time.monotonic() + LEADER_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            holder = kube.json(f"{LEASE}/{LEASE_NAME}")["spec"].get("holderIdentity")
        except OSError:
            holder = None
        if holder == IDENTITY:
            return operator
        if not child.alive():
            raise RuntimeError(f"the operator exited:\n{child.log_tail()}")
        time.sleep(0.2)
    raise RuntimeError(f"the operator did not take the lease in {LEADER_TIMEOUT_S:.0f} s")


def operator_metrics(operator):
    status, text = harness.http_get(operator.metrics_url)
    if status != 200:
        raise RuntimeError(f"the operator's /metrics answered {status}")
    return parse_metrics(text, {"adpipe_operator_api_writes_total",
                                "adpipe_operator_reconciles_total"})


def prerequisites(plane, namespaces):
    """The namespaces and each one's partner Secret, before the timed apply."""
    items = []
    for namespace in namespaces:
        items.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        items.append({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": SECRET_NAME, "namespace": namespace},
            "data": {SECRET_KEY: base64.b64encode(os.urandom(16).hex().encode()).decode()},
        })
    plane.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                                                        "items": items}))


def pipeline_manifests(plane, count, namespaces, path):
    """`count` copies of acme-video, spread over `namespaces`, each with its own name, partner
    and stream, as one multi-document file."""
    example = json.loads(plane.kubectl("create", "--dry-run=client", "-o", "json",
                                       "-f", EXAMPLE))
    documents = []
    for i in range(count):
        name = f"bench-{i:03d}"
        doc = json.loads(json.dumps(example))
        doc["metadata"] = {"name": name, "namespace": namespaces[i % len(namespaces)]}
        doc["spec"]["partner"] = name
        doc["spec"]["stream"]["name"] = f"ads-{name}"
        documents.append(json.dumps(doc))
    path.write_text("---\n" + "\n---\n".join(documents) + "\n")


# --- measuring -----------------------------------------------------------------------------


@dataclass
class Progress:
    """One pipeline on its way to Ready, in wall-clock seconds."""

    created: float
    reconciled: float | None = None
    ready: float | None = None
    ready_lost: int = 0
    is_ready: bool = False


def key(item):
    return f"{item['metadata']['namespace']}/{item['metadata']['name']}"


def observe(items, progress, now):
    """Updates each pipeline's progress from one listing."""
    for item in items:
        meta, status = item["metadata"], item.get("status") or {}
        entry = progress.get(key(item))
        if entry is None:
            created = datetime.datetime.fromisoformat(meta["creationTimestamp"]).timestamp()
            entry = progress[key(item)] = Progress(created=created)
        current = status.get("observedGeneration") == meta["generation"]
        ready = current and any(c["type"] == "Ready" and c["status"] == "True"
                                for c in status.get("conditions", []))
        if current and entry.reconciled is None:
            entry.reconciled = now
        if ready and entry.ready is None:
            entry.ready = now
        if entry.is_ready and not ready:
            entry.ready_lost += 1
        entry.is_ready = ready


def wait_ready(kube, expected, timeout):
    """Lists the pipelines every POLL_S until all `expected` are Ready at once; returns the
    progress and when that happened (None on timeout)."""
    progress = {}
    started = time.monotonic()
    next_report = started + PROGRESS_EVERY_S
    while time.monotonic() - started < timeout:
        tick = time.monotonic()
        observe(kube.items(PIPELINES), progress, time.time())
        ready = sum(p.is_ready for p in progress.values())
        if ready == expected:
            return progress, time.time()
        if tick >= next_report:
            log(f"{ready}/{expected} Ready after {tick - started:.0f} s")
            next_report += PROGRESS_EVERY_S
        time.sleep(max(0.0, POLL_S - (time.monotonic() - tick)))
    return progress, None


def settle(kube, progress):
    """Waits until no pipeline's resourceVersion changed for SETTLE_QUIET_S; returns the
    seconds it took and whether it settled."""
    started = last_change = time.monotonic()
    last = None
    while time.monotonic() - started < SETTLE_TIMEOUT_S:
        items = kube.items(PIPELINES)
        observe(items, progress, time.time())
        versions = {key(i): i["metadata"]["resourceVersion"] for i in items}
        if versions != last:
            last, last_change = versions, time.monotonic()
        elif time.monotonic() - last_change >= SETTLE_QUIET_S:
            return time.monotonic() - started, True
        time.sleep(POLL_S)
    return time.monotonic() - started, False


@dataclass
class Snapshot:
    """What the window's deltas are taken between."""

    at: float
    operator: dict
    apiserver: Counter
    objects: dict
    events: dict
    proc: ProcStats


def apiserver_writes(kube):
    """apiserver_request_total of the write verbs, by (resource, subresource)."""
    samples = parse_metrics(kube.get("/metrics").decode(), {"apiserver_request_total"})
    writes = Counter()
    for (_, labels), value in samples.items():
        labels = dict(labels)
        if labels.get("verb") in WRITE_VERBS:
            writes[(labels.get("resource", ""), labels.get("subresource", ""))] += value
    return writes


def operator_fields(item):
    """When adpipe-operator last wrote each part of the object, per the API server."""
    return tuple(sorted((f.get("subresource", ""), f.get("time", ""))
                        for f in item["metadata"].get("managedFields", [])
                        if f.get("manager") == MANAGER))


def objects(kube):
    """(resourceVersion, operator write times) of every pipeline and owned object."""
    found = {}
    listings = [("PartnerPipeline", PIPELINES, None)] + [
        (kind, path, OWNED_SELECTOR) for kind, path in OWNED.items()]
    for kind, path, selector in listings:
        query = {"labelSelector": selector} if selector else {}
        for item in kube.items(path, **query):
            found[(kind, key(item))] = (item["metadata"]["resourceVersion"],
                                        operator_fields(item))
    return found


def events(kube):
    """(resourceVersion, who reported it and why) of every Event: the API server's counts
    cannot say which client wrote them."""
    found = {}
    for item in kube.items("/api/v1/events"):
        reporter = item.get("reportingComponent") or item.get("source", {}).get("component")
        involved = item.get("involvedObject", {}).get("kind", "?")
        found[item["metadata"]["uid"]] = (item["metadata"]["resourceVersion"],
                                          f"{reporter or '?'} {item.get('reason')} ({involved})")
    return found


def snapshot(kube, operator):
    return Snapshot(at=time.monotonic(), operator=operator_metrics(operator),
                    apiserver=apiserver_writes(kube), objects=objects(kube),
                    events=events(kube), proc=ProcStats.read(operator.pid))


@dataclass
class Window:
    """One steady-state window's figures, per minute unless named otherwise."""

    minutes: float
    operator_writes: float
    operator_writes_by_kind: dict
    reconciles: float
    reconcile_errors: float
    owned_writes: float
    owned_writes_by_resource: dict
    status_writes: float
    status_writes_by_resource: dict
    event_writes: float
    event_writers: dict
    lease_writes: float
    other_writes: float
    other_writes_by_resource: dict
    own_lease_renewals: float | None
    objects: int
    changed: int
    changed_by_kind: dict
    rewritten: int
    rewritten_by_kind: dict
    cpu_ms: float
    rss_mib: float


def steady_window(kube, operator, seconds):
    """Measures one window: snapshot, wait while counting the leader lease's renewals,
    snapshot again."""
    before = snapshot(kube, operator)
    renewals = []
    watch = threading.Thread(target=lambda: renewals.append(kube.count_watch_events(
        LEASE, seconds, fieldSelector=f"metadata.name={LEASE_NAME}")))
    watch.start()
    time.sleep(max(0.0, seconds - (time.monotonic() - before.at)))
    watch.join()
    after = snapshot(kube, operator)
    minutes = (after.at - before.at) / 60

    def rate(value):
        return value / minutes

    def delta_by(prefix_filter):
        found = {}
        for (resource, sub), value in after.apiserver.items():
            moved = value - before.apiserver.get((resource, sub), 0)
            if moved and prefix_filter(resource, sub):
                found[f"{resource}/{sub}" if sub else resource] = rate(moved)
        return found

    def operator_delta(name, **match):
        return metric_sum(after.operator, name, **match) - metric_sum(before.operator, name,
                                                                      **match)

    by_kind = {}
    for name, labels in after.operator:
        kind = dict(labels).get("kind")
        if name == "adpipe_operator_api_writes_total" and kind:
            moved = operator_delta(name, kind=kind)
            if moved:
                by_kind[kind] = rate(moved)
    owned = delta_by(lambda r, s: r in OWNED_RESOURCES and (s == "" or r == "partnerpipelines"))
    status = delta_by(lambda r, s: r in OWNED_RESOURCES and s != "" and r != "partnerpipelines")
    leases = delta_by(lambda r, s: r == "leases")
    other = delta_by(lambda r, s: r not in OWNED_RESOURCES | {"events", "leases"})
    common = before.objects.keys() & after.objects.keys()
    changed = Counter(k[0] for k in common if before.objects[k][0] != after.objects[k][0])
    rewritten = Counter(k[0] for k in common if before.objects[k][1] != after.objects[k][1])
    appeared_or_gone = len(before.objects.keys() ^ after.objects.keys())
    event_writers = Counter(why for uid, (version, why) in after.events.items()
                            if before.events.get(uid, (None,))[0] != version)
    return Window(
        minutes=minutes,
        operator_writes=rate(operator_delta("adpipe_operator_api_writes_total")),
        operator_writes_by_kind=by_kind,
        reconciles=rate(operator_delta("adpipe_operator_reconciles_total")),
        reconcile_errors=rate(operator_delta("adpipe_operator_reconciles_total",
                                             result="error")),
        owned_writes=sum(owned.values()), owned_writes_by_resource=owned,
        status_writes=sum(status.values()), status_writes_by_resource=status,
        event_writes=sum(delta_by(lambda r, s: r == "events").values()),
        event_writers={why: rate(n) for why, n in event_writers.items()},
        lease_writes=sum(leases.values()),
        other_writes=sum(other.values()), other_writes_by_resource=other,
        own_lease_renewals=rate(renewals[0]) if renewals else None,
        objects=len(after.objects),
        changed=sum(changed.values()) + appeared_or_gone, changed_by_kind=dict(changed),
        rewritten=sum(rewritten.values()) + appeared_or_gone, rewritten_by_kind=dict(rewritten),
        cpu_ms=rate((after.proc.cpu_s - before.proc.cpu_s) * 1000),
        rss_mib=after.proc.rss_kib / 1024,
    )


# --- the part file -------------------------------------------------------------------------


def percentile(values, q):
    """Nearest-rank percentile: the smallest value with at least q % of them at or below."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def machine():
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), platform.processor())
    meminfo = Path("/proc/meminfo").read_text().split()
    memory_gib = int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20
    return f"{model}, {os.cpu_count()} cores, {memory_gib:.1f} GiB"


def part_file(run):
    """The part in the harness's format (bench/report.py)."""
    n = run["pipelines"]
    progress = run["progress"].values()
    t0 = run["apply_started"]
    to_ready = [p.ready - t0 for p in progress if p.ready is not None]
    created_to_ready = [p.ready - p.created for p in progress if p.ready is not None]
    to_reconciled = [p.reconciled - t0 for p in progress if p.reconciled is not None]
    windows = run["windows"]

    def m(group, name, unit, better, runs):
        return harness.metric(f"operator · {group}", name, unit, better, runs)

    ramp = f"apply → Ready, {n} pipelines"
    metrics = [
        m(ramp, "one kubectl apply of every pipeline", "s", "lower", [run["apply_s"]]),
        m(ramp, "apply → first reconciled (status written), p50", "s", "lower",
          [percentile(to_reconciled, 50)] if to_reconciled else []),
        m(ramp, "apply → first reconciled, p99", "s", "lower",
          [percentile(to_reconciled, 99)] if to_reconciled else []),
        m(ramp, "apply → Ready, p50", "s", "lower",
          [percentile(to_ready, 50)] if to_ready else []),
        m(ramp, "apply → Ready, p99", "s", "lower",
          [percentile(to_ready, 99)] if to_ready else []),
        m(ramp, "apply → Ready, max", "s", "lower", [max(to_ready)] if to_ready else []),
        m(ramp, "created (creationTimestamp) → Ready, p50", "s", "lower",
          [percentile(created_to_ready, 50)] if created_to_ready else []),
        m(ramp, "created → Ready, p99", "s", "lower",
          [percentile(created_to_ready, 99)] if created_to_ready else []),
        m(ramp, "apply → all Ready at once", "s", "lower",
          [run["all_ready"] - t0] if run["all_ready"] else []),
        m(ramp, "pipelines Ready", "", "higher", [len(to_ready)]),
        m(ramp, "pipelines that lost Ready again before steady state", "", "lower",
          [sum(p.ready_lost > 0 for p in progress)]),
        m(ramp, "operator API writes per pipeline, apply → settled", "writes", "lower",
          [run["ramp_writes"] / n]),
        m(ramp, "settling after all Ready (no pipeline changed for 30 s)", "s", "lower",
          [run["settle_s"]]),
    ]
    res = "operator memory and CPU"
    metrics += [
        m(res, "peak RSS (VmHWM), whole run", "MiB", "lower", [run["end"].hwm_kib / 1024]),
        m(res, "RSS at the end of each steady window", "MiB", "lower",
          [w.rss_mib for w in windows]),
        m(res, "CPU, whole run", "s", "lower", [run["end"].cpu_s]),
        m(res, "CPU, apply → all Ready", "s", "lower", [run["ramp_cpu_s"]]),
        m(res, "CPU at steady state", "ms/min", "lower", [w.cpu_ms for w in windows]),
    ]
    steady = f"steady state, {len(windows)} windows of {run['window_s']:.0f} s"
    metrics += [
        m(steady, "(a) operator API writes (adpipe_operator_api_writes_total)", "/min",
          "lower", [w.operator_writes for w in windows]),
        m(steady, "(b) API server writes to pipelines (incl. status) and owned objects",
          "/min", "lower", [w.owned_writes for w in windows]),
        m(steady, "(c) objects rewritten by adpipe-operator (managedFields)", "objects",
          "lower", [w.rewritten for w in windows]),
        m(steady, "(c) objects whose resourceVersion changed (any writer)", "objects",
          "lower", [w.changed for w in windows]),
        m(steady, "operator leader Lease renewals (watched)", "/min", "lower",
          [w.own_lease_renewals for w in windows]),
        m(steady, "API server Lease writes, all clients", "/min", "lower",
          [w.lease_writes for w in windows]),
        m(steady, "API server writes to owned objects' status (controllers)", "/min",
          "lower", [w.status_writes for w in windows]),
        m(steady, "API server Event writes, all clients", "/min", "lower",
          [w.event_writes for w in windows]),
        m(steady, "API server writes to anything else", "/min", "lower",
          [w.other_writes for w in windows]),
        m(steady, "reconciles (adpipe_operator_reconciles_total)", "/min", "lower",
          [w.reconciles for w in windows]),
        m(steady, "failed reconciles", "/min", "lower", [w.reconcile_errors for w in windows]),
    ]
    worst = {name: max((getattr(w, name) for w in windows), default=None)
             for name in ("operator_writes", "owned_writes", "rewritten")}
    goals = [{
        "goal": f"No API writes to pipelines and owned objects at steady state ({n} pipelines)",
        "target": "0 writes/min",
        "measured": f"worst window: (a) {worst['operator_writes']:.2f}/min by the operator's "
                    f"counter, (b) {worst['owned_writes']:.2f}/min by the API server, "
                    f"(c) {worst['rewritten']} of {windows[-1].objects} objects rewritten"
        if windows else "not measured",
        "met": bool(windows) and not any(worst.values()),
    }]
    return {"part": "operator", "metrics": metrics, "goals": goals, "notes": notes(run)}


def breakdown(windows, attribute):
    """The non-zero entries of a per-window dict, averaged over the windows, as text."""
    total = Counter()
    for w in windows:
        total.update(getattr(w, attribute))
    return ", ".join(f"{k} {v / len(windows):.3g}" for k, v in total.most_common()) or "none"


def notes(run):
    n, windows = run["pipelines"], run["windows"]
    text = [
        f"Machine: {run['machine']}; load average {run['load_start']:.1f} at start and "
        f"{run['load_end']:.1f} at the end. Everything shares these cores and is not pinned: "
        "etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, moto, the "
        "operator and this script (and other work on the machine), so the times are upper "
        "bounds.",
        f"{n} copies of examples/pipelines/acme-video.yaml (own name, partner and stream), in "
        f"{run['namespaces']} namespaces with their Secrets created beforehand, sent by one "
        f"`kubectl apply -f` of a {n}-document file. The operator is the release build, "
        f"started with `run --identity {IDENTITY}` against the control plane of "
        "scripts/cluster/ and moto; it held the leader lease before the apply.",
        "Ready means Ready=True for the current generation: the stream ACTIVE in moto and "
        f"every desired pod ready. kwok runs the pods; {run['extra_nodes']} fake nodes of "
        f"{NODE_PODS} pods were added for the {PODS_PER_PIPELINE} pods per pipeline (receiver "
        "at its autoscaler minimum, one deliverer per shard). kube-controller-manager's "
        "client rate limit (20 requests/s by default) paces the ReplicaSets and pods, so the "
        "tail of apply → Ready is mostly the control plane's, not the operator's.",
        f"Latencies are from the start of the apply to the first listing (every {POLL_S} s) "
        "that showed the pipeline Ready; 'created → Ready' starts at its creationTimestamp "
        "(whole seconds, so up to 1 s longer). 'Lost Ready' counts pipelines seen Ready and "
        "then not Ready before steady state (e.g. the autoscaler raising the receiver from 1 "
        "to 2 replicas after the first Ready).",
        f"Steady state began once all were Ready and no pipeline had changed for "
        f"{SETTLE_QUIET_S:.0f} s ({'settled' if run['settled'] else 'did NOT settle'} after "
        f"{run['settle_s']:.0f} s). Each window compares two snapshots: (a) the operator's "
        "own counter; (b) kube-apiserver's apiserver_request_total for POST/PUT/PATCH/APPLY/"
        "DELETE, by resource (the API server cannot tell clients apart, so status writes by "
        "controllers, Events and Leases are shown apart); (c) every pipeline's and owned "
        "object's resourceVersion and adpipe-operator managedFields time.",
        "The operator re-reconciles each Ready pipeline every 5 minutes (READY_RECHECK) and "
        "whenever an owned object changes; those reconciles only read.",
        f"Operator writes by kind, apply → settled: {run['ramp_writes_by_kind'] or 'none'}.",
        f"Steady-state writes/min, averaged over the windows: operator counter by kind: "
        f"{breakdown(windows, 'operator_writes_by_kind')}; API server, pipelines and owned "
        f"objects: {breakdown(windows, 'owned_writes_by_resource')}; owned objects' status: "
        f"{breakdown(windows, 'status_writes_by_resource')}; other: "
        f"{breakdown(windows, 'other_writes_by_resource')}. Objects changed by kind: "
        f"{breakdown(windows, 'changed_by_kind')}; rewritten by the operator: "
        f"{breakdown(windows, 'rewritten_by_kind')}. Events created or updated, by reporter, "
        f"reason and object (per minute): {breakdown(windows, 'event_writers')}.",
        "API server Lease writes include kwok's node heartbeats (one Lease per fake node) "
        "and kube-apiserver's identity Lease besides the operator's leader Lease, which is "
        "counted on its own through a watch.",
        "Control-plane RSS at the end: " + ", ".join(
            f"{name} {mib:.0f} MiB" for name, mib in run["plane_rss"].items()) + ".",
    ]
    if run["all_ready"] is None:
        ready = sum(p.ready is not None for p in run["progress"].values())
        text.insert(0, f"NOT ALL READY: {ready} of {n} pipelines were Ready within "
                       f"{run['ready_timeout_s']:.0f} s; see the operator log.")
    return text


# --- main ----------------------------------------------------------------------------------


def measure(plan, work):
    """Runs the whole measurement; returns what part_file needs."""
    n = plan["pipelines"]
    namespaces = [f"bench-{i}" for i in range(plan["namespaces"])]
    run = {"pipelines": n, "namespaces": len(namespaces), "window_s": plan["window_s"],
           "ready_timeout_s": plan["ready_timeout_s"], "machine": machine(),
           "load_start": os.getloadavg()[0]}
    plane = ControlPlane(work / "cluster")
    moto = operator = None
    try:
        kube = Kube(plane, work)
        run["extra_nodes"] = add_nodes(plane, n)
        moto, endpoint = start_moto(work)
        install_crd(plane)
        operator = start_operator(plane, kube, endpoint, work)
        log(f"operator pid {operator.pid} holds the lease; creating {n} pipelines")
        prerequisites(plane, namespaces)
        manifests = work / "pipelines.yaml"
        pipeline_manifests(plane, n, namespaces, manifests)

        writes_before = operator_metrics(operator)
        cpu_before = ProcStats.read(operator.pid).cpu_s
        run["apply_started"] = time.time()
        plane.kubectl("apply", "-f", manifests)
        run["apply_s"] = time.time() - run["apply_started"]
        log(f"applied {n} pipelines in {run['apply_s']:.1f} s")
        progress, run["all_ready"] = wait_ready(kube, n, plan["ready_timeout_s"])
        run["progress"] = progress
        run["ramp_cpu_s"] = ProcStats.read(operator.pid).cpu_s - cpu_before
        if run["all_ready"]:
            log(f"all {n} Ready {run['all_ready'] - run['apply_started']:.1f} s after the apply")
        run["settle_s"], run["settled"] = settle(kube, progress)
        log(f"settled after {run['settle_s']:.0f} s" if run["settled"] else "did not settle")
        writes_settled = operator_metrics(operator)
        run["ramp_writes"] = (metric_sum(writes_settled, "adpipe_operator_api_writes_total")
                              - metric_sum(writes_before, "adpipe_operator_api_writes_total"))
        run["ramp_writes_by_kind"] = ", ".join(
            f"{dict(labels)['kind']} {value - writes_before.get((name, labels), 0):.0f}"
            for (name, labels), value in sorted(writes_settled.items())
            if name == "adpipe_operator_api_writes_total")

        run["windows"] = []
        for i in range(plan["windows"]):
            window = steady_window(kube, operator, plan["window_s"])
            run["windows"].append(window)
            log(f"window {i + 1}/{plan['windows']}: operator {window.operator_writes:.2f} "
                f"writes/min, API server {window.owned_writes:.2f} writes/min to pipelines "
                f"and owned objects, {window.rewritten} rewritten, {window.changed} changed, "
                f"{window.reconciles:.1f} reconciles/min")
        run["end"] = ProcStats.read(operator.pid)
        run["plane_rss"] = plane.component_rss_mib()
        run["load_end"] = os.getloadavg()[0]
        return run
    finally:
        if operator is not None:
            operator.child.stop()
        if moto is not None:
            moto.stop()
        plane.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the part file to write")
    parser.add_argument("--quick", action="store_true",
                        help="20 pipelines, one 30 s window: a smoke run")
    parser.add_argument("--pipelines", type=int, help="how many PartnerPipelines")
    parser.add_argument("--windows", type=int, help="steady-state windows")
    parser.add_argument("--window-seconds", type=float, help="length of each window")
    parser.add_argument("--no-build", action="store_true", help="use the operator as built")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (logs, manifests) after a success")
    args = parser.parse_args()
    plan = dict(QUICK if args.quick else FULL)
    for name, value in (("pipelines", args.pipelines), ("windows", args.windows),
                        ("window_s", args.window_seconds)):
        if value:
            plan[name] = value

    # NOTE: run.py pins itself to one core and its children inherit that; the control plane
    # and the operator must share every core, as they would without the harness.
    os.sched_setaffinity(0, range(os.cpu_count() or 1))
    if not args.no_build:
        build()
    work = Path(tempfile.mkdtemp(prefix="adpipe-bench-operator-"))
    log(f"work directory {work}")
    try:
        run = measure(plan, work)
    except BaseException:
        log(f"failed; logs kept in {work}")
        raise
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(part_file(run), indent=2) + "\n")
    log(f"wrote {args.out}")
    if args.keep:
        log(f"logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
