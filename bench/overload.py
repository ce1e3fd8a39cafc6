"""Overload and realism parts: adpipe at three times its saturation rate (memory bound,
503 with Retry-After, no acknowledged event lost), and both receivers against moto with the
records read back by aws-kinesis-agg.

    overload   loadgen --ack-log (every 200) ──▶ adpipe ──▶ kinesis-sink --record-ids
               └─ every acknowledged event id looked up among the stored ones
    moto       adpipe, reference ──▶ moto ──▶ GetRecords ──▶ aws-kinesis-agg ──▶ shard check
"""

import base64
import hashlib
import subprocess
import threading
import time
from pathlib import Path

from harness import (
    ADPIPE,
    REFERENCE,
    REGION,
    STREAM,
    Child,
    Sink,
    Subject,
    figures,
    free_port,
    log,
    metric,
    run_loadgen,
    wait_listening,
)

# adpipe's producer budget (receiver/src/producer.rs DEFAULT_MAX_BUFFERED_BYTES): the memory it
# may hold for events not yet acknowledged by the stream; beyond it, 503.
ADPIPE_BUFFER_BUDGET_BYTES = 64 * 1024 * 1024

# Connections adpipe serves at once (receiver/src/server.rs MAX_CONNECTIONS); past them it
# answers 503 and closes.
ADPIPE_MAX_CONNECTIONS = 2048

# How often the overload run samples memory and adpipe's buffer gauge.
OVERLOAD_SAMPLE_S = 0.5

# The overload figures: (key in a scenario's result, name, unit, better).
OVERLOAD_FIGURES = [
    ("idle_rss_mib", "RSS before the load", "MiB", "lower"),
    ("peak_rss_mib", "peak RSS", "MiB", "lower"),
    ("max_buffered_mib", "largest producer buffer (adpipe_receiver_buffered_bytes)", "MiB",
     "lower"),
    ("acknowledged", "events acknowledged (200)", "events", "higher"),
    ("answers_503", "503 answers", "answers", "lower"),
    ("missing_retry_after", "503 answers without Retry-After", "answers", "lower"),
    ("lost", "acknowledged events missing from the stream", "events", "lower"),
    ("duplicates", "events stored more than once", "events", "lower"),
    ("p99_ms", "latency p99 (all requests)", "ms", "lower"),
]


def overload(setup, plan, saturation_rate):
    """adpipe at 3× its saturation rate: once with the stream keeping up (the receiver's CPU is
    the limit) and once with the sink enforcing Kinesis' per-shard write limits (the stream is
    the limit, so the producer's buffer fills). Memory is sampled throughout; every event
    acknowledged with a 200 is looked up among the events the sink stored."""
    rate = plan["factor"] * saturation_rate
    metrics, goals, series, notes = [], [], [], []
    for scenario, throttle in (("receiver-bound", False), ("stream-bound", True)):
        result = overload_scenario(setup, plan, rate, scenario, throttle)
        group = (f"overload · {scenario} · {rate / 1000:,.0f}k events/s offered "
                 f"for {plan['duration']:g} s")
        for key, name, unit, better in OVERLOAD_FIGURES:
            metrics.append(metric(group, name, unit, better, [result[key]], subject=ADPIPE,
                                  figure=key))
        series.append({"name": f"overload memory ({scenario})", "subject": ADPIPE,
                       "x": "seconds", "y": "MiB", "points": result["timeline"]})
        goals += overload_goals(plan, scenario, throttle, result)
        notes.append(f"{scenario}: statuses {result['statuses']}, failures {result['failures']}.")
    notes.append(
        f"Receiver-bound: the sink keeps up, so the receiver's one core is the limit and "
        f"requests queue. Stream-bound: the sink enforces 1 MiB/s and 1,000 records/s per "
        f"shard like Kinesis, so acknowledgements wait for the stream and the producer's "
        f"buffer fills. The load generator keeps {plan['connections']:,} connections, each "
        f"with one request at a time (a 503 closes its connection, and the next request "
        f"opens a new one): more than the {ADPIPE_MAX_CONNECTIONS:,} adpipe serves at once, "
        f"so its connection limit is under test too. The RSS bound allows "
        f"{plan['rss_allowance']:g}× the buffer budget over the idle RSS for connection state "
        f"and the copies of records in flight.")
    return {"part": "overload", "metrics": metrics, "goals": goals, "series": series,
            "notes": notes}


def overload_goals(plan, scenario, throttle, result):
    budget_mib = ADPIPE_BUFFER_BUDGET_BYTES / 2**20
    bound = result["idle_rss_mib"] + plan["rss_allowance"] * budget_mib
    goals = [{
        "goal": f"overload ({scenario}): memory stays bounded",
        "target": f"buffer ≤ {budget_mib:.0f} MiB budget; "
                  f"RSS ≤ idle + {plan['rss_allowance']:g}× budget",
        "measured": f"buffer peak {result['max_buffered_mib']:.1f} MiB; RSS peak "
                    f"{result['peak_rss_mib']:.0f} MiB (idle {result['idle_rss_mib']:.0f})",
        "met": result["max_buffered_mib"] <= budget_mib and result["peak_rss_mib"] <= bound,
    }]
    if throttle:
        goals.append({
            "goal": "overload (stream-bound): full buffers answer 503 with Retry-After",
            "target": "503s, every one with Retry-After",
            "measured": f"{result['answers_503']:,} answers 503, "
                        f"{result['missing_retry_after']} without Retry-After",
            "met": result["answers_503"] > 0 and result["missing_retry_after"] == 0,
        })
    goals.append({
        "goal": f"overload ({scenario}): no acknowledged event lost",
        "target": "0 missing",
        "measured": f"{result['lost']} of {result['acknowledged']:,} acknowledged events "
                    f"missing from the stream",
        "met": result["lost"] == 0 and result["acknowledged"] > 0,
    })
    return goals


def overload_scenario(setup, plan, rate, scenario, throttle):
    ids = setup.work / f"overload-{scenario}-ids.txt"
    acks = setup.work / f"overload-{scenario}-acks.txt"
    sink = Sink(setup, throttle=throttle, record_ids=ids, tag=f"overload-{scenario}-sink")
    try:
        sut = Subject(setup, ADPIPE, sink.endpoint, f"overload-{scenario}")
        try:
            idle_rss = rss_mib(sut.pid)
            sampler = Sampler(sut)
            sampler.start()
            try:
                report = run_loadgen(setup, sut.url, rate, 20, 0.0, plan["duration"],
                                     plan["grace"], sut.pid, f"overload-{scenario}",
                                     ack_log=acks, timeout=plan["timeout"],
                                     connections=plan["connections"])
            finally:
                sampler.stop()
            sink.stats()  # flushes the ids file
        finally:
            sut.stop()
    finally:
        sink.stop()
    lost, duplicates, acknowledged = check_acknowledged(acks, ids, report["run"])
    statuses = report["whole_run"]["statuses"]
    log(f"overload {scenario}: {acknowledged:,} acknowledged, {lost} lost, "
        f"503s {statuses.get('503', 0):,}, peak RSS {report['watched']['peak_kib'] / 1024:.0f} MiB")
    return {
        "idle_rss_mib": idle_rss,
        "peak_rss_mib": report["watched"]["peak_kib"] / 1024,
        "max_buffered_mib": sampler.max_buffered / 2**20,
        "acknowledged": acknowledged,
        "answers_503": statuses.get("503", 0),
        "missing_retry_after": report["missing_retry_after"],
        "lost": lost,
        "duplicates": duplicates,
        "p99_ms": report["latency_ms"]["p99"],
        "statuses": statuses,
        "failures": report["whole_run"]["failures"],
        "timeline": sampler.timeline,
    }


def rss_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sampler(threading.Thread):
    """Samples a subject's RSS and adpipe's buffer gauge every OVERLOAD_SAMPLE_S."""

    def __init__(self, subject):
        super().__init__(daemon=True)
        self.subject = subject
        self.timeline = []
        self.max_buffered = 0.0
        self._halt = threading.Event()

    def run(self):
        start = time.monotonic()
        while not self._halt.wait(OVERLOAD_SAMPLE_S):
            try:
                rss = rss_mib(self.subject.pid)
            except OSError:
                return
            # None when the metrics endpoint did not answer in time: a gap, not a zero.
            buffered = self.subject.buffered_bytes()
            if buffered is not None:
                self.max_buffered = max(self.max_buffered, buffered)
            self.timeline.append([round(time.monotonic() - start, 2), round(rss, 1),
                                  None if buffered is None else round(buffered / 2**20, 1)])

    def stop(self):
        self._halt.set()
        self.join()


def check_acknowledged(ack_log, ids_file, run):
    """(lost, duplicates, acknowledged): acknowledged events the sink never stored, events it
    stored twice, and how many were acknowledged."""
    ranges = []
    for line in Path(ack_log).read_text().splitlines():
        first, count = line.split()
        ranges.append((int(first), int(count)))
    size = max((f + c for f, c in ranges), default=0)
    seen = bytearray(size)
    duplicates = 0
    prefix = f"evt-{run:04}-"
    with open(ids_file) as ids:
        for line in ids:
            if line.startswith(prefix):
                seq = int(line[len(prefix):])
                if seq < size:
                    if seen[seq]:
                        duplicates += 1
                    seen[seq] = 1
    lost = sum(seen[f:f + c].count(0) for f, c in ranges)
    return lost, duplicates, sum(c for _, c in ranges)


def moto(setup, plan):
    """Both receivers against moto (the AWS emulator the tests use) at a modest rate: the
    realism check of the sink's numbers. The records are read back with GetRecords and
    de-aggregated by aws-kinesis-agg, and each event's shard is checked against its key."""
    import boto3  # the test virtualenv's

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = Child("moto", setup.pinned(setup.load_core, [
        setup.venv_python, setup.root / "scripts" / "moto_server.py",
        "--exit-on-stdin-eof", "-H", "127.0.0.1", "-p", port,
    ]), setup.work / "moto.log", stdin=subprocess.PIPE)
    try:
        wait_listening(port, server, timeout=60)
        client = boto3.client("kinesis", endpoint_url=endpoint, region_name=REGION,
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_stream(StreamName=STREAM, ShardCount=setup.shards)
        client.get_waiter("stream_exists").wait(StreamName=STREAM)
        results = {}
        for subject in (ADPIPE, REFERENCE):
            sut = Subject(setup, subject, endpoint, f"moto-{subject}")
            try:
                report = run_loadgen(setup, sut.url, plan["rate"], 20, plan["warmup"],
                                     plan["duration"], plan["grace"], sut.pid, f"moto-{subject}")
            finally:
                sut.stop()
            results[subject] = (report, figures(report, 20))
        placement = read_back(client, {s: r["run"] for s, (r, _) in results.items()})
    finally:
        server.stop()
    group = f"moto · 20-event batches · {plan['rate'] / 1000:g}k events/s"
    metrics = []
    for subject, (report, fig) in results.items():
        for key, name, unit, better in (
            ("cpu_s_per_M_events", "CPU seconds per million events", "s", "lower"),
            ("p50_ms", "latency p50", "ms", "lower"),
            ("p99_ms", "latency p99", "ms", "lower"),
            ("error_pct", "errors", "%", "lower"),
        ):
            metrics.append(metric(group, name, unit, better, [fig[key]], subject=subject,
                                  figure=key))
        stored = placement[subject]
        metrics.append(metric(group, "events read back (aws-kinesis-agg)", "events", "higher",
                              [stored["events"]], subject=subject, figure="read_back"))
        metrics.append(metric(group, "events on their own key's shard (read back)", "%",
                              "higher", [stored["correct_pct"]], subject=subject,
                              figure="correct_shard_pct"))
    goals = [{
        "goal": "moto: every event adpipe acknowledged is read back, on its key's shard",
        "target": "100 %",
        "measured": f"{placement[ADPIPE]['events']:,} read back of "
                    f"{results[ADPIPE][0]['whole_run']['statuses'].get('200', 0) * 20:,} "
                    f"acknowledged; {placement[ADPIPE]['correct_pct']:.2f} % on their shard",
        "met": placement[ADPIPE]["correct_pct"] == 100.0
        and placement[ADPIPE]["events"]
        >= results[ADPIPE][0]["whole_run"]["statuses"].get("200", 0) * 20,
    }]
    notes = ["moto stores and indexes every record in Python; its latency, not the "
             "receivers', dominates here, which is why the throughput runs use the sink."]
    return {"part": "moto", "metrics": metrics, "goals": goals, "notes": notes}


def read_back(client, runs):
    """Per subject (by its run's id prefix): events read back and the share on their shard."""
    from aws_kinesis_agg.deaggregator import deaggregate_records  # the test virtualenv's

    shards = client.list_shards(StreamName=STREAM)["Shards"]
    counts = {s: {"events": 0, "correct": 0} for s in runs}
    prefixes = {f'"event_id":"evt-{run:04}-': s for s, run in runs.items()}
    for shard in shards:
        low = int(shard["HashKeyRange"]["StartingHashKey"])
        high = int(shard["HashKeyRange"]["EndingHashKey"])
        iterator = client.get_shard_iterator(StreamName=STREAM, ShardId=shard["ShardId"],
                                             ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            page = client.get_records(ShardIterator=iterator, Limit=10000)
            records = [{"kinesis": {"partitionKey": r["PartitionKey"],
                                    "data": base64.b64encode(r["Data"]).decode(),
                                    "sequenceNumber": r["SequenceNumber"],
                                    "approximateArrivalTimestamp": 0,
                                    "kinesisSchemaVersion": "1.0"}}
                       for r in page["Records"]]
            for user in deaggregate_records(records):
                data = user["kinesis"]["data"]
                text = data.decode() if isinstance(data, bytes) else \
                    base64.b64decode(data).decode()
                if user["kinesis"].get("aggregated"):
                    text = base64.b64decode(text).decode()
                subject = next((s for p, s in prefixes.items() if p in text), None)
                if subject is None:
                    continue
                key = int(hashlib.md5(user["kinesis"]["partitionKey"].encode()).hexdigest(), 16)
                counts[subject]["events"] += 1
                counts[subject]["correct"] += low <= key <= high
            if not page["Records"] and page.get("MillisBehindLatest", 0) == 0:
                break
            iterator = page.get("NextShardIterator")
    return {
        s: {"events": c["events"],
            "correct_pct": 100.0 * c["correct"] / c["events"] if c["events"] else 0.0}
        for s, c in counts.items()
    }
