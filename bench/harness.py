"""The benchmark harness of the receiver parts: the processes of one measurement and the
figures it yields.

    subject under test (core 0) ◀── loadgen (core 1): open loop, fixed rate, acme-video
      │                               batches signed with HMAC-SHA256, HDR latency from the
      │                               scheduled send time; CPU and memory of the subject from
      │                               /proc/PID/stat and /proc/PID/status
      └── PutRecords ──▶ kinesis-sink (core 1): calls, billed 25 KiB units, shard placement

Subjects: adpipe's receiver (`adpipe-receiver`), the Node.js reference design
(`../shared/baseline-node/server.js`, run as it is) and a bare hyper server (`bare-http`).
Each measurement starts a fresh sink and a fresh subject, so peak memory and the sink's
counters belong to that run alone. Every process is started here and stopped by its pid.
"""

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

STREAM = "ads-acme-video"
PARTNER = "acme-video"
REGION = "us-east-1"
SECRET_NAME = "acme-video-auth"

# The saturation point: the highest offered rate answered with p99 under this latency and
# fewer errors than this share, acknowledging at least this share of what was offered.
SATURATION_P99_MS = 100.0
SATURATION_MAX_ERRORS = 0.001
SATURATION_MIN_ACHIEVED = 0.95

# The subjects, as the part files and the report name them.
ADPIPE = "adpipe"
REFERENCE = "reference"
BARE = "bare-http"

# How long a subject may take to start answering.
START_TIMEOUT_S = 30.0
# How long a process may take to stop after SIGTERM before SIGKILL.
STOP_TIMEOUT_S = 10.0
# The same for a subject, whose measurement is over: an overloaded adpipe would drain its
# queued requests and buffers first, which only makes the benchmark longer.
SUBJECT_STOP_TIMEOUT_S = 2.0

BUFFERED_GAUGE = re.compile(r'^adpipe_receiver_buffered_bytes\{[^}]*\}\s+([0-9.e+]+)$', re.M)


def image_env(stage):
    """The `ENV` settings of one stage of `docker/Dockerfile`: a subject runs with what its
    image would give it."""
    dockerfile = Path(__file__).resolve().parents[1] / "docker" / "Dockerfile"
    env, current = {}, None
    for line in dockerfile.read_text().splitlines():
        started = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.I)
        if started:
            current = started.group(1)
        setting = re.match(r"ENV\s+([A-Za-z_][A-Za-z0-9_]*)=(\S+)\s*$", line)
        if setting and current == stage:
            env[setting.group(1)] = setting.group(2)
    return env


def log(message):
    print(f"receiver bench: {message}", file=sys.stderr, flush=True)


@dataclass
class Setup:
    """Where everything is, and how runs are pinned and paced."""

    root: Path
    bin_dir: Path
    node_dir: Path
    work: Path
    sut_core: str | None
    load_core: str | None
    sink_latency_ms: int
    shards: int
    venv_python: Path
    secrets_dir: Path = field(init=False)
    secret_file: Path = field(init=False)
    pipeline: Path = field(init=False)
    run_counter: int = 0

    def __post_init__(self):
        self.work.mkdir(parents=True, exist_ok=True)
        self.secrets_dir = self.work / "secrets"
        self.secret_file = self.secrets_dir / SECRET_NAME / "secret"
        self.secret_file.parent.mkdir(parents=True, exist_ok=True)
        # No trailing newline: both receivers use the file's bytes as they are.
        self.secret_file.write_text(secrets.token_hex(16))
        self.pipeline = self.root / "examples" / "pipelines" / "acme-video.yaml"

    def next_run(self):
        """A fresh run number: the event id prefix of the next load."""
        self.run_counter += 1
        return self.run_counter

    def pinned(self, core, argv):
        return (["taskset", "-c", core] if core is not None else []) + [str(a) for a in argv]


class Child:
    """A process this benchmark started, its output in a log file; stopped by its pid only."""

    def __init__(self, name, argv, log_path, env=None, cwd=None, stdin=None):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=cwd, stdin=stdin
        )

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def log_tail(self, lines=20):
        self._log.flush()
        text = Path(self.log_path).read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def wait_answering(self, url, timeout=START_TIMEOUT_S):
        """Waits until `url` answers 200; stops the process if it never does."""
        try:
            wait_answering(url, self, timeout)
        except RuntimeError:
            self.stop()
            raise

    def stop(self, timeout=STOP_TIMEOUT_S):
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5.0):
    """(status, body text); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return 0, ""


def wait_answering(url, child, timeout=START_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited at start:\n{child.log_tail()}")
        status, _ = http_get(url, timeout=1.0)
        if status == 200:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{child.name} did not answer {url} within {timeout:.0f} s")


def wait_listening(port, child, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited at start:\n{child.log_tail()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{child.name} did not listen on port {port} within {timeout:.0f} s")


class Sink:
    """A fresh kinesis-sink on the load generator's core."""

    def __init__(self, setup, throttle=False, record_ids=None, tag="sink", latency_ms=None):
        self.port = free_port()
        argv = [
            setup.bin_dir / "kinesis-sink",
            "--listen", f"127.0.0.1:{self.port}",
            "--stream", STREAM,
            "--shards", setup.shards,
            "--latency-ms", setup.sink_latency_ms if latency_ms is None else latency_ms,
        ]
        if throttle:
            argv.append("--throttle")
        if record_ids:
            argv += ["--record-ids", record_ids]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.child = Child("kinesis-sink", setup.pinned(setup.load_core, argv),
                           setup.work / f"{tag}.log")
        self.child.wait_answering(f"{self.endpoint}/healthz")

    def stats(self):
        status, body = http_get(f"{self.endpoint}/stats")
        if status != 200:
            raise RuntimeError(f"kinesis-sink /stats answered {status}")
        return json.loads(body)

    def stop(self):
        self.child.stop()


def aws_env(endpoint):
    """The environment of a subject: the SDK's standard chain pointed at `endpoint`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
    })
    return env


class Subject:
    """A receiver under test, on its own core, writing to `endpoint`."""

    def __init__(self, setup, name, endpoint, tag):
        self.name = name
        port = free_port()
        self.metrics_url = None
        self.url = f"http://127.0.0.1:{port}/v1/{PARTNER}/events"
        env = aws_env(endpoint)
        cwd = None
        if name == ADPIPE:
            env.update(image_env("receiver"))
            metrics_port = free_port()
            self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
            argv = [
                setup.bin_dir / "adpipe-receiver",
                "--pipeline", setup.pipeline,
                "--listen", f"127.0.0.1:{port}",
                "--metrics-listen", f"127.0.0.1:{metrics_port}",
                "--secrets-dir", setup.secrets_dir,
                "--log-level", "warn",
            ]
            ready = f"http://127.0.0.1:{port}/readyz"
        elif name == REFERENCE:
            argv = [
                shutil.which("node") or "node", "server.js",
                "--port", port,
                "--stream", STREAM,
                "--partner", PARTNER,
                "--secret-file", setup.secret_file,
            ]
            cwd = setup.node_dir
            ready = f"http://127.0.0.1:{port}/healthz"
        elif name == BARE:
            argv = [setup.bin_dir / "bare-http", "--listen", f"127.0.0.1:{port}"]
            ready = f"http://127.0.0.1:{port}/healthz"
        else:
            raise ValueError(f"unknown subject {name}")
        self.child = Child(name, setup.pinned(setup.sut_core, argv),
                           setup.work / f"{tag}-{name}.log", env=env, cwd=cwd)
        self.child.wait_answering(ready)

    @property
    def pid(self):
        return self.child.pid

    def buffered_bytes(self):
        if not self.metrics_url:
            return None
        status, body = http_get(self.metrics_url, timeout=1.0)
        found = BUFFERED_GAUGE.search(body) if status == 200 else None
        return float(found.group(1)) if found else None

    def stop(self):
        self.child.stop(timeout=SUBJECT_STOP_TIMEOUT_S)


def run_loadgen(setup, url, rate, batch, warmup, duration, grace, watch_pid, tag,
                ack_log=None, timeout=10.0, connections=0):
    out = setup.work / f"{tag}-loadgen.json"
    argv = [
        setup.bin_dir / "loadgen",
        "--url", url,
        "--rate", rate,
        "--batch", batch,
        "--warmup", warmup,
        "--duration", duration,
        "--grace", grace,
        "--timeout", timeout,
        "--connections", connections,
        "--secret-file", setup.secret_file,
        "--run", setup.next_run(),
        "--watch-pid", watch_pid,
        "--out", out,
    ]
    if ack_log:
        argv += ["--ack-log", ack_log]
    done = subprocess.run(setup.pinned(setup.load_core, argv), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed ({tag}):\n{done.stderr}")
    report = json.loads(out.read_text())
    report["run"] = setup.run_counter
    return report


def sink_delta(before, after):
    """What the sink counted between two /stats answers."""
    delta = {k: after[k] - before.get(k, 0) for k in after if isinstance(after[k], (int, float))}
    delta["calls"] = {k: v - before["calls"].get(k, 0) for k, v in after["calls"].items()}
    return delta


def figures(report, batch, sink=None):
    """The figures of one run: the subject's CPU, memory and latency, and what the stream
    would bill for its events."""
    watched = report["watched"]
    ok_events = report["window_ok_events"]
    cpu = watched["cpu_seconds"]
    out = {
        "offered": report["rate_events_per_s"],
        "achieved": report["achieved_events_per_s"],
        "cpu_s_per_M_events": cpu / ok_events * 1e6 if ok_events else None,
        "cpu_us_per_request": cpu / (ok_events / batch) * 1e6 if ok_events else None,
        "p50_ms": report["latency_ms"]["p50"],
        "p99_ms": report["latency_ms"]["p99"],
        "p999_ms": report["latency_ms"]["p999"],
        "peak_rss_mib": watched["peak_kib"] / 1024,
        "error_pct": report["error_rate"] * 100,
        "sustained": sustained(report),
    }
    if sink is not None:
        users = sink["user_records"]
        aggregated = sink["aggregated_user_records"]
        if users:
            out.update({
                "puts_per_M_events": sink["calls"].get("PutRecords", 0) / users * 1e6,
                "units_per_M_events": sink["billed_units"] / users * 1e6,
                "ideal_units_per_M_events": sink["ideal_units"] / users * 1e6,
                "billed_over_ideal": sink["billed_units"] / sink["ideal_units"],
                "events_per_record": users / sink["records"],
                "correct_shard_pct": 100.0 * (1 - sink["misplaced_user_records"] / aggregated)
                if aggregated else 100.0,
                "misplaced_events": sink["misplaced_user_records"],
            })
    return out


def sustained(report):
    return (
        report["latency_ms"]["p99"] < SATURATION_P99_MS
        and report["error_rate"] < SATURATION_MAX_ERRORS
        and report["achieved_events_per_s"]
        >= SATURATION_MIN_ACHIEVED * report["rate_events_per_s"]
    )


def measure(setup, subject, rate, batch, warmup, duration, grace, tag, sink_latency_ms=None):
    """One run: fresh sink (answering in the setup's latency unless told) and subject, the
    load, the figures."""
    sink = Sink(setup, tag=f"{tag}-sink", latency_ms=sink_latency_ms)
    try:
        sut = Subject(setup, subject, sink.endpoint, tag)
        try:
            before = sink.stats()
            report = run_loadgen(setup, sut.url, rate, batch, warmup, duration, grace,
                                 sut.pid, tag)
            after = sink.stats()
        finally:
            sut.stop()
    finally:
        sink.stop()
    writes = subject != BARE
    result = figures(report, batch, sink_delta(before, after) if writes else None)
    log(f"{tag}: {subject} {rate:,.0f} ev/s ×{batch}: "
        f"p99 {result['p99_ms']:.1f} ms, "
        f"CPU {fmt(result['cpu_s_per_M_events'])} s/M ev, errors {result['error_pct']:.2f} %")
    return result


def fmt(value, digits=2):
    return "n/a" if value is None else f"{value:.{digits}f}"


def metric(group, name, unit, better, runs, **extra):
    runs = [r for r in runs if r is not None]
    return {"group": group, "name": name, "unit": unit, "better": better, "runs": runs, **extra}
