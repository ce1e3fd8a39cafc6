#!/usr/bin/env python3
"""`make bench`: every benchmark of issue #5, one after the other, then the report.

    python bench/run.py [--quick] [--parts micro,floor,...] [--reps N] [--no-build]

    build (release) ──▶ the reference design: npm ci in ~/.cache/adpipe/baseline-node
    parts, each writing {work}/parts/{name}.json:
      micro        criterion micro-benchmarks of the hot paths (bench/benches/hot_paths.rs)
      floor        codec-floor: the least CPU an event costs (parse, HMAC, MD5, base64, SHA-256);
                   sdk-put: the CPU of one PutRecords call in the AWS SDK
      fixed-rate   adpipe vs the reference design (vs a bare hyper server) at fixed loads
      saturation   the highest rate each sustains with p99 < 100 ms
      overload     adpipe at 3× its saturation rate
      moto         both receivers against moto, records read back by aws-kinesis-agg
      deliverer    bench/deliverer.py (the deliverer's part)
      operator     bench/operator_bench.py (200 pipelines on the real control plane)
    bench/report.py ──▶ bench/results/{date}-{commit}.json, latest.md, PNG plots

The process under test runs on core 0; the load generator, the Kinesis sink, moto and this
script on core 1 (taskset). `--quick` shortens everything for a smoke run of the harness; its
numbers are not worth comparing. Run it in the test virtualenv (boto3, aws-kinesis-agg,
matplotlib): `make bench` does.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

# The sibling modules are scripts of this directory, not a package: no __pycache__ in the tree.
sys.dont_write_bytecode = True

import harness  # noqa: E402
import overload  # noqa: E402
import receiver  # noqa: E402
import report  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
HOME = Path.home()
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", HOME / ".cache/adpipe/target"))
CACHE = HOME / ".cache/adpipe"
BASELINE_SOURCE = REPO.parent / "shared" / "baseline-node"
PARTS = ["micro", "floor", "fixed-rate", "saturation", "overload", "moto", "deliverer", "operator"]

# What a full run measures (about 20 minutes on two cores) and what a smoke run does.
FULL = {
    "reps": 3,
    "floor_seconds": 3.0,
    "fixed": {
        "warmup": 3.0, "duration": 6.0, "grace": 3.0,
        "loads": [
            (20, [10_000, 50_000, 200_000], [harness.ADPIPE, harness.REFERENCE, harness.BARE]),
            (1, [10_000, 50_000], [harness.ADPIPE, harness.REFERENCE, harness.BARE]),
        ],
        "slow_sink": {"latency_ms": 30,
                      "loads": [(20, [10_000], [harness.ADPIPE, harness.REFERENCE])]},
    },
    "saturation": {
        "warmup": 2.0, "duration": 5.0, "grace": 2.0, "start": 20_000, "floor": 500,
        "precision": 1.1, "bracket": 1.25, "max_steps": 10,
        "subjects": [harness.ADPIPE, harness.REFERENCE],
    },
    "overload": {"factor": 3.0, "duration": 60.0, "grace": 5.0, "timeout": 10.0,
                 "connections": 6000, "rss_allowance": 2.0},
    "moto": {"rate": 2_000, "warmup": 2.0, "duration": 8.0, "grace": 3.0},
    "criterion": [],
}
QUICK = {
    "reps": 1,
    "floor_seconds": 0.5,
    "fixed": {
        "warmup": 1.0, "duration": 3.0, "grace": 1.0,
        "loads": [
            (20, [10_000, 50_000], [harness.ADPIPE, harness.REFERENCE, harness.BARE]),
            (1, [5_000], [harness.ADPIPE, harness.REFERENCE, harness.BARE]),
        ],
        "slow_sink": {"latency_ms": 30,
                      "loads": [(20, [10_000], [harness.ADPIPE, harness.REFERENCE])]},
    },
    "saturation": {
        "warmup": 1.0, "duration": 2.0, "grace": 1.0, "start": 20_000, "floor": 500,
        "precision": 1.5, "bracket": 1.5, "max_steps": 6,
        "subjects": [harness.ADPIPE, harness.REFERENCE],
    },
    "overload": {"factor": 3.0, "duration": 8.0, "grace": 2.0, "timeout": 5.0,
                 "connections": 6000, "rss_allowance": 2.0},
    "moto": {"rate": 1_000, "warmup": 1.0, "duration": 3.0, "grace": 2.0},
    "criterion": ["--warm-up-time", "1", "--measurement-time", "2"],
}
# Used for the overload run when the saturation part did not run.
DEFAULT_SATURATION = 50_000

# Criterion's estimates: (group/bench directory, figure name, events per iteration).
CRITERION = [
    ("receiver/map_validate_encode_aggregate_20",
     "receiver: map + validate + stream JSON + KPL aggregate", 20),
    ("deliverer/deaggregate_decode_enrich_parquet_10k",
     "deliverer: de-aggregate + decode + user-agent enrichment + zstd Parquet", 10_000),
]


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


def sh(argv, **kwargs):
    log("$ " + " ".join(str(a) for a in argv))
    subprocess.run([str(a) for a in argv], check=True, **kwargs)


def output(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def build(micro):
    """Release binaries, and the criterion benchmark when it runs, built on every core."""
    env = dict(os.environ, CARGO_TARGET_DIR=str(TARGET))
    sh(["cargo", "build", "--release", "-p", "adpipe", "-p", "adpipe-bench",
        "-p", "adpipe-kinesis-sink", "--bins"], cwd=REPO, env=env)
    if micro:
        sh(["cargo", "bench", "-p", "adpipe-bench", "--bench", "hot_paths", "--no-run"],
           cwd=REPO, env=env)


def prepare_baseline(source):
    """A writable copy of the reference design with its locked dependencies installed; kept
    between runs while package-lock.json is unchanged."""
    target = CACHE / "baseline-node"
    lock = (source / "package-lock.json").read_bytes()
    stamp = target / ".adpipe-lock.sha256"
    want = hashlib.sha256(lock + (source / "server.js").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == want and (target / "node_modules").is_dir():
        return target
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)
    sh(["npm", "ci", "--no-audit", "--no-fund"], cwd=target)
    stamp.write_text(want)
    return target


def machine(cores):
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), platform.processor())
    meminfo = Path("/proc/meminfo").read_text().split()
    memory_gib = int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "memory_gib": round(memory_gib, 1),
        "rustc": output(["rustc", "--version"]),
        "node": output(["node", "--version"]),
        "python": platform.python_version(),
        "load_average_at_start": list(os.getloadavg()),
        "pinning": cores,
    }


def commit():
    sha = output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = output(["git", "-C", str(REPO), "status", "--porcelain"]) not in ("", "unknown")
    return sha, dirty


# --- the parts that run here ---------------------------------------------------------------


def micro_part(plan, setup):
    env = dict(os.environ, CARGO_TARGET_DIR=str(TARGET))
    sh(setup.pinned(setup.sut_core, ["cargo", "bench", "-p", "adpipe-bench", "--bench",
                                     "hot_paths", "--", *plan["criterion"]]),
       cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    metrics = []
    for path, name, events in CRITERION:
        estimates = json.loads((TARGET / "criterion" / path / "new" / "estimates.json").read_text())
        median = estimates["median"]
        interval = median["confidence_interval"]
        metrics.append(harness.metric(
            "micro-benchmarks (criterion)", f"{name}, per event", "ns", "lower",
            [median["point_estimate"] / events],
            ci=[interval["lower_bound"] / events, interval["upper_bound"] / events]))
    notes = ["Criterion's median estimate per event; the range is its 95 % confidence "
             "interval, pinned to the core the receivers run on."]
    return {"part": "micro", "metrics": metrics, "goals": [], "notes": notes}


def floor_part(plan, setup):
    """The codec floor per event, and what one PutRecords call costs in the AWS SDK: the two
    costs no receiver can avoid besides HTTP, which `receiver.py` turns into the bounds of
    the CPU goals."""
    runs = {}
    calls = {}
    for rep in range(plan["reps"]):
        out = setup.work / f"floor-{rep}.json"
        sh(setup.pinned(setup.sut_core, [setup.bin_dir / "codec-floor", "--batches", "1,20",
                                         "--seconds", plan["floor_seconds"], "--out", out]))
        for figures in json.loads(out.read_text())["batches"]:
            runs.setdefault(figures["batch"], []).append(figures)
        for shape in sdk_put(plan, setup, rep):
            calls.setdefault(shape["entries"], []).append(shape["cpu_us_per_call"])
    metrics = []
    for batch, figures in sorted(runs.items()):
        group = f"codec floor · {batch}-event batches"
        metrics.append(harness.metric(group, "CPU per event", "ns", "lower",
                                      [f["cpu_ns_per_event"] for f in figures],
                                      subject="floor", batch=batch, figure="cpu_ns_per_event"))
        metrics.append(harness.metric(group, "CPU per request", "ns", "lower",
                                      [f["cpu_ns_per_request"] for f in figures],
                                      subject="floor", batch=batch, figure="cpu_ns_per_request"))
    for entries, values in sorted(calls.items()):
        metrics.append(harness.metric(
            "AWS SDK PutRecords", f"CPU per call of {entries} × 25 KiB", "µs", "lower", values,
            figure=f"sdk_put_{entries}_us"))
    notes = ["The same bodies the load generator sends, through HMAC-SHA256, a typed serde "
             "parse, MD5 of each partition key and of the bytes (KPL trailer), base64 and "
             "SHA-256 of the base64 (SigV4 payload hash), in a tight loop on core 0.",
             "AWS SDK PutRecords: `sdk-put` on core 0 calls a Kinesis sink that answers at once, "
             "one call at a time, through the receiver's own writer (the SDK client, "
             "mimalloc), entries of one "
             "25 KiB billing unit each; the difference between the two shapes gives the cost "
             "per unit carried, the rest is the cost of a call."]
    part = {"part": "floor", "metrics": metrics, "goals": [], "notes": notes}
    floor = {"codec_ns": {b: statistics.median(f["cpu_ns_per_event"] for f in figs)
                          for b, figs in runs.items()}}
    medians = [(n, statistics.median(v)) for n, v in sorted(calls.items())]
    if len(medians) >= 2:
        (few, few_us), (many, many_us) = medians[0], medians[-1]
        unit_us = (many_us - few_us) / (many - few)
        floor["sdk_call_us"] = few_us - few * unit_us
        floor["sdk_unit_us"] = unit_us
    return part, floor


def sdk_put(plan, setup, rep):
    """The `sdk-put` shapes of one repetition, against a sink of their own that answers at
    once: calls back to back, the least CPU a call can cost."""
    sink = harness.Sink(setup, tag=f"floor-sink-{rep}", latency_ms=0)
    try:
        out = setup.work / f"sdk-put-{rep}.json"
        sh(setup.pinned(setup.sut_core, [setup.bin_dir / "sdk-put", "--entries", "1,4",
                                         "--seconds", plan["floor_seconds"], "--out", out]),
           env=harness.aws_env(sink.endpoint))
        return json.loads(out.read_text())["shapes"]
    finally:
        sink.stop()


def script_part(script, out, quick):
    """A part whose own script writes its part file."""
    sh([sys.executable, REPO / "bench" / script, "--out", out]
       + (["--quick"] if quick else []))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run of everything")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--reps", type=int, help="repetitions of every measurement")
    parser.add_argument("--no-build", action="store_true", help="use the binaries as built")
    parser.add_argument("--sink-latency-ms", type=int, default=5,
                        help="latency the Kinesis sink adds to every put (a Kinesis round trip)")
    parser.add_argument("--shards", type=int, default=2,
                        help="shards of the sink's stream (acme-video's stream.shards)")
    parser.add_argument("--baseline", type=Path, default=BASELINE_SOURCE,
                        help="the reference design's directory")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results",
                        help="where the results go")
    args = parser.parse_args()
    plan = dict(QUICK if args.quick else FULL)
    if args.reps:
        plan["reps"] = args.reps
    chosen = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(chosen) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")

    two_cores = (os.cpu_count() or 1) >= 2 and shutil.which("taskset")
    sut_core, load_core = ("0", "1") if two_cores else (None, None)
    started = time.monotonic()
    stamp = datetime.datetime.now(datetime.timezone.utc)
    work = CACHE / "bench" / "runs" / stamp.strftime("%Y%m%dT%H%M%SZ")
    parts_dir = work / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    log(f"work directory {work}")

    if not args.no_build:
        build("micro" in chosen)
    node_dir = prepare_baseline(args.baseline) if {"fixed-rate", "saturation", "moto"} & set(
        chosen) else CACHE / "baseline-node"
    if two_cores:
        # This script, and what it starts unpinned, stays off the subject's core.
        os.sched_setaffinity(0, {int(load_core)})
    venv_python = Path(os.environ.get("ADPIPE_VENV", CACHE / "venv")) / "bin" / "python"
    setup = harness.Setup(
        root=REPO, bin_dir=TARGET / "release", node_dir=node_dir, work=work,
        sut_core=sut_core, load_core=load_core, sink_latency_ms=args.sink_latency_ms,
        shards=args.shards, venv_python=venv_python,
    )
    sha, dirty = commit()
    meta = {
        "date": stamp.strftime("%Y-%m-%d"),
        "time": stamp.strftime("%H:%M:%SZ"),
        "commit": sha,
        "dirty": dirty,
        "quick": args.quick,
        "machine": machine({"subject": sut_core, "load generator and sinks": load_core}),
        "config": {"reps": plan["reps"], "sink_latency_ms": args.sink_latency_ms,
                   "shards": args.shards, "parts": chosen},
    }

    failed = []
    floor = None
    saturation_rate = DEFAULT_SATURATION

    def write(name, part):
        (parts_dir / f"{name}.json").write_text(json.dumps(part, indent=2) + "\n")

    for name in chosen:
        log(f"part {name} ({time.monotonic() - started:.0f} s in)")
        try:
            if name == "micro":
                write(name, micro_part(plan, setup))
            elif name == "floor":
                part, floor = floor_part(plan, setup)
                write(name, part)
            elif name == "fixed-rate":
                write(name, receiver.fixed_rate(setup, plan["fixed"] | {"reps": plan["reps"]},
                                                floor))
            elif name == "saturation":
                part = receiver.saturation(setup, plan["saturation"] | {"reps": plan["reps"]})
                found = part.pop("found")
                if found.get(harness.ADPIPE):
                    saturation_rate = statistics.median(found[harness.ADPIPE])
                write(name, part)
            elif name == "overload":
                write(name, overload.overload(setup, plan["overload"], saturation_rate))
            elif name == "moto":
                write(name, overload.moto(setup, plan["moto"]))
            elif name == "deliverer":
                script_part("deliverer.py", parts_dir / "deliverer.json", args.quick)
            elif name == "operator":
                script_part("operator_bench.py", parts_dir / "operator.json", args.quick)
        except Exception as e:  # noqa: BLE001 — one broken part must not lose the others
            failed.append(name)
            log(f"part {name} failed: {e}")
            traceback.print_exc()
            write(name, {"part": name, "metrics": [], "goals": [],
                         "notes": [f"this part failed: {e}"]})

    meta["elapsed_s"] = round(time.monotonic() - started)
    meta["machine"]["load_average_at_end"] = list(os.getloadavg())
    (work / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    written = report.write(work, args.out)
    log(f"done in {meta['elapsed_s']} s: " + ", ".join(str(p) for p in written))
    if failed:
        log(f"failed parts: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
