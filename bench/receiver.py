"""Receiver parts: the fixed-rate comparison of adpipe's receiver, the Node.js reference
design and a bare hyper server, and the saturation point of each.

    fixed-rate   every (batch, rate) × subject, repeated and interleaved ─▶ CPU per event and
                 per request, p50/p99/p99.9, peak RSS, errors, Kinesis calls and billed units
                 per event, shard placement ─▶ the goals of issue #5 measured side by side
    saturation   per subject and repetition, a geometric search for the highest rate with
                 p99 < 100 ms and < 0.1 % errors

Each returns a part file's content (see bench/report.py).
"""

import statistics

from harness import (
    ADPIPE,
    BARE,
    REFERENCE,
    SATURATION_P99_MS,
    log,
    measure,
    metric,
)

# (figure key, name, unit, better, the subjects it applies to: None for all)
FIGURES = [
    ("cpu_s_per_M_events", "CPU seconds per million events", "s", "lower", None),
    ("cpu_us_per_request", "CPU per request", "µs", "lower", None),
    ("p50_ms", "latency p50", "ms", "lower", None),
    ("p99_ms", "latency p99", "ms", "lower", None),
    ("p999_ms", "latency p99.9", "ms", "lower", None),
    ("peak_rss_mib", "peak RSS", "MiB", "lower", None),
    ("error_pct", "errors", "%", "lower", None),
    ("achieved", "acknowledged events per second", "ev/s", "higher", None),
    ("puts_per_M_events", "PutRecords calls per million events", "calls", "lower",
     (ADPIPE, REFERENCE)),
    ("units_per_M_events", "billed 25 KiB units per million events", "units", "lower",
     (ADPIPE, REFERENCE)),
    ("billed_over_ideal", "billed units ÷ ideal (bytes / 25 KiB)", "×", "lower",
     (ADPIPE, REFERENCE)),
    ("events_per_record", "events per Kinesis record", "events", "higher",
     (ADPIPE, REFERENCE)),
    ("correct_shard_pct", "events on their own key's shard", "%", "higher",
     (ADPIPE, REFERENCE)),
]


def load_group(batch, rate):
    return f"fixed rate · {batch}-event batches · {rate / 1000:g}k events/s"


def figures_of(results):
    """(batch, rate, subject, figure key, name, unit, better, values of the runs) for every
    figure that applies to each (batch, rate, subject) of `results`."""
    for (batch, rate, subject), runs in results.items():
        for key, name, unit, better, only in FIGURES:
            if not only or subject in only:
                yield batch, rate, subject, key, name, unit, better, [r.get(key) for r in runs]


def fixed_rate(setup, plan, floor):
    """Every (batch, rate) of `plan` for every subject, `plan["reps"]` times, interleaved:
    adpipe, reference (, bare) for one load, then the next load, then the next repetition;
    then, in each repetition, the `slow_sink` loads against a sink answering as slowly as
    Kinesis does (figures only: the goals are measured with the setup's sink)."""
    results = {}
    slow = plan.get("slow_sink")
    slow_results = {}
    # (loads, the sink's latency (None: the setup's), tag prefix, where the runs go)
    series = [(plan["loads"], None, "fixed", results)]
    if slow:
        series.append((slow["loads"], slow["latency_ms"], "slow-sink", slow_results))
    for rep in range(plan["reps"]):
        for loads, latency_ms, prefix, into in series:
            for batch, rates, subjects in loads:
                for rate in rates:
                    for subject in subjects:
                        tag = f"{prefix}-b{batch}-r{int(rate)}-{subject}-{rep}"
                        into.setdefault((batch, rate, subject), []).append(
                            measure(setup, subject, rate, batch, plan["warmup"],
                                    plan["duration"], plan["grace"], tag,
                                    sink_latency_ms=latency_ms))
    metrics = [metric(load_group(batch, rate), name, unit, better, values, subject=subject,
                      batch=batch, load=rate, figure=key)
               for batch, rate, subject, key, name, unit, better, values in figures_of(results)]
    # NOTE: no batch or load on these, so the plots of the main loads leave them out.
    metrics += [metric(f"{load_group(batch, rate)} · Kinesis answering in "
                       f"{slow['latency_ms']} ms", name, unit, better, values, subject=subject,
                       figure=f"slow_sink_{key}")
                for batch, rate, subject, key, name, unit, better, values
                in figures_of(slow_results)]
    goals = fixed_rate_goals(results, floor)
    notes = [
        f"Open-loop load, latency from each request's scheduled send time; connections sized "
        f"by Little's law for 250 ms per request (8 to 2,000); {plan['warmup']:g} s warm-up, "
        f"{plan['duration']:g} s measured, {plan['reps']} interleaved repetitions per load.",
        f"Kinesis sink: {setup.shards} shards split evenly, {setup.sink_latency_ms} ms added "
        f"to every put call. Billed units are ceil((key + data bytes) / 25 KiB) per record; "
        f"the ideal is the same bytes / 25 KiB.",
        "What no receiver can shed bounds the two CPU goals: the bare hyper server's CPU for "
        "the same requests plus the AWS SDK's for the PutRecords calls and billed units "
        "adpipe needed, at the per-call and per-unit costs of the floor part.",
        "The reference design packs events of every shard into one aggregate under the first "
        "event's key (aws-kinesis-agg), so events of other shards land on the wrong shard; "
        "adpipe aggregates per predicted shard and places each aggregate with an explicit "
        "hash key.",
    ]
    if slow:
        notes.append(
            f"The loads marked 'Kinesis answering in {slow['latency_ms']} ms' run against a "
            f"sink that takes that long per put, as PutRecords does in a region (tens of ms): "
            f"each receiver packs more per call while puts are in flight. Figures only; the "
            f"goals are measured with the {setup.sink_latency_ms} ms sink.")
    return {"part": "fixed-rate", "metrics": metrics, "goals": goals, "notes": notes}


def median_of(results, key, figure):
    values = [r[figure] for r in results.get(key, []) if r.get(figure) is not None]
    return statistics.median(values) if values else None


def all_sustained(results, key):
    runs = results.get(key, [])
    return bool(runs) and all(r["sustained"] for r in runs)


def fixed_rate_goals(results, floor):
    """The goals of issue #5 that the fixed-rate runs measure, each at the loads where it
    means something."""
    batch20 = sorted({rate for (b, rate, s) in results if b == 20 and s == ADPIPE})
    batch1 = sorted({rate for (b, rate, s) in results if b == 1 and s == ADPIPE})
    # Past both saturation points, latency only measures how long the run let queues grow.
    sustained = [r for r in batch20 if all_sustained(results, (20, r, ADPIPE))] or batch20[:1]
    goals = [
        cpu_vs_reference(results, batch20, floor),
        cpu_vs_floor(results, batch20, floor),
        latency_vs_reference(results, sustained),
        request_vs_bare(results, batch1, floor),
        shard_placement(results),
        *billing(results, sustained),
    ]
    return [g for g in goals if g]


def goal(name, target, measured, met):
    return {"goal": name, "target": target, "measured": measured, "met": bool(met)}


def cpu_vs_reference(results, batch20, floor):
    """At the highest 20-event load the reference sustains (else the lowest): both then do
    the same work."""
    both = [r for r in batch20 if all_sustained(results, (20, r, REFERENCE))]
    at = max(both) if both else (batch20[0] if batch20 else None)
    ours = median_of(results, (20, at, ADPIPE), "cpu_s_per_M_events")
    theirs = median_of(results, (20, at, REFERENCE), "cpu_s_per_M_events")
    if not (ours and theirs):
        return None
    ratio = theirs / ours
    unavoidable = unavoidable_s_per_m(results, at, floor)
    bound = (f"; HTTP and the SDK's calls alone cost {unavoidable:.2f}, so no receiver "
             f"could be more than {theirs / unavoidable:.1f}× lower here" if unavoidable else "")
    return goal("receiver CPU per event vs the reference design (20-event batches)",
                "≥ 6× lower",
                f"{ratio:.1f}× lower at {at / 1000:g}k ev/s "
                f"({ours:.2f} vs {theirs:.2f} CPU s per M events){bound}",
                ratio >= 6.0)


def unavoidable_s_per_m(results, rate, floor, batch=20):
    """CPU seconds per million events that no receiver of these `batch`-event requests can
    shed: a bare hyper server's for the same requests, and the AWS SDK's for the PutRecords
    calls and billed units adpipe needed at `rate` (its per-call and per-unit costs from the
    floor part). None when a figure is missing."""
    bare = median_of(results, (batch, rate, BARE), "cpu_s_per_M_events")
    calls = median_of(results, (batch, rate, ADPIPE), "puts_per_M_events")
    units = median_of(results, (batch, rate, ADPIPE), "units_per_M_events")
    floor = floor or {}
    if None in (bare, calls, units, floor.get("sdk_call_us"), floor.get("sdk_unit_us")):
        return None
    return bare + (calls * floor["sdk_call_us"] + units * floor["sdk_unit_us"]) / 1e6


def cpu_vs_floor(results, batch20, floor):
    """At the highest 20-event load adpipe sustains, where batching costs least per event."""
    loads = [r for r in batch20 if all_sustained(results, (20, r, ADPIPE))]
    floor20 = (floor or {}).get("codec_ns", {}).get(20)
    if not (loads and floor20):
        return None
    at = max(loads)
    ours_ns = median_of(results, (20, at, ADPIPE), "cpu_s_per_M_events") * 1000
    ratio = ours_ns / floor20
    unavoidable = unavoidable_s_per_m(results, at, floor)
    bound = (f"; HTTP and the SDK's calls alone are {unavoidable * 1000 / floor20:.1f}× "
             f"the floor" if unavoidable else "")
    return goal("receiver CPU per event vs the codec floor (20-event batches)", "within 1.5×",
                f"{ratio:.1f}× the floor at {at / 1000:g}k ev/s "
                f"({ours_ns:,.0f} vs {floor20:,.0f} ns per event){bound}",
                ratio <= 1.5)


def latency_vs_reference(results, loads):
    ratios = []
    for rate in loads:
        ours = median_of(results, (20, rate, ADPIPE), "p99_ms")
        theirs = median_of(results, (20, rate, REFERENCE), "p99_ms")
        if ours and theirs:
            ratios.append((rate, theirs / ours, ours, theirs))
    if not ratios:
        return None
    return goal("p99 latency vs the reference at the same offered load (20-event batches)",
                "≥ 5× lower",
                "; ".join(f"{r / 1000:g}k ev/s: {x:.1f}× ({o:.1f} vs {t:.1f} ms)"
                          for r, x, o, t in ratios),
                all(x >= 5.0 for _, x, _, _ in ratios))


def request_vs_bare(results, batch1, floor):
    """At the highest single-event load adpipe sustains (else the lowest)."""
    pairs = [r for r in batch1
             if all_sustained(results, (1, r, ADPIPE)) and (1, r, BARE) in results]
    at = max(pairs) if pairs else (batch1[0] if batch1 else None)
    ours = median_of(results, (1, at, ADPIPE), "cpu_us_per_request")
    bare = median_of(results, (1, at, BARE), "cpu_us_per_request")
    if not (ours and bare):
        return None
    ratio = ours / bare
    # NOTE: with one event a request, CPU seconds per million events are µs per request.
    unavoidable = unavoidable_s_per_m(results, at, floor, batch=1)
    floor1 = (floor or {}).get("codec_ns", {}).get(1)
    bound = ""
    if unavoidable:
        bound = (f"; HTTP and the SDK's calls alone cost {unavoidable:.1f} µs a request "
                 f"({unavoidable / bare:.2f}×), leaving {1.3 * bare - unavoidable:.1f} µs "
                 f"within the goal for everything else")
        if floor1:
            bound += (f", where the codec floor alone takes {floor1 / 1000:.1f} µs (its "
                      f"base64 and payload hash partly inside the SDK's share)")
    return goal("CPU per single-event request vs a bare hyper server answering 200",
                "within 1.3×",
                f"{ratio:.1f}× at {at / 1000:g}k requests/s "
                f"({ours:.1f} vs {bare:.1f} µs per request){bound}",
                ratio <= 1.3)


def shard_placement(results):
    """Over every run that wrote to the sink."""
    ours = [r for (_, _, s), runs in results.items() if s == ADPIPE for r in runs
            if "misplaced_events" in r]
    theirs = [r["correct_shard_pct"] for (_, _, s), runs in results.items()
              if s == REFERENCE for r in runs if "correct_shard_pct" in r]
    if not ours:
        return None
    misplaced = sum(r["misplaced_events"] for r in ours)
    worst = min(r["correct_shard_pct"] for r in ours)
    reference = f"; the reference: {statistics.median(theirs):.1f} %" if theirs else ""
    return goal("every aggregated event on its key's shard", "100 %",
                f"{worst:.3f} % in the worst run, {misplaced} misplaced events{reference}",
                misplaced == 0)


def billing(results, loads):
    rows = []
    for rate in loads:
        ratio = median_of(results, (20, rate, ADPIPE), "billed_over_ideal")
        units = median_of(results, (20, rate, ADPIPE), "units_per_M_events")
        theirs = median_of(results, (20, rate, REFERENCE), "units_per_M_events")
        if ratio:
            rows.append((rate, ratio, units, theirs))
    if not rows:
        return []
    goals = [goal("billed Kinesis units per event vs the ideal (20-event batches)", "within 5 %",
                  "; ".join(f"{r / 1000:g}k ev/s: {(x - 1) * 100:+.1f} %" for r, x, _, _ in rows),
                  all(x <= 1.05 for _, x, _, _ in rows))]
    compared = [(r, u, t) for r, _, u, t in rows if t is not None]
    if compared:
        goals.append(goal("billed Kinesis units per event vs the reference (20-event batches)",
                          "never above",
                          "; ".join(f"{r / 1000:g}k ev/s: {u:,.0f} vs {t:,.0f} per M events"
                                    for r, u, t in compared),
                          all(u <= t for _, u, t in compared)))
    return goals


def saturation(setup, plan):
    """The highest rate each subject sustains (p99 < 100 ms, errors < 0.1 %), by a geometric
    search per repetition; later repetitions start from a bracket around the first result."""
    points = {s: [] for s in plan["subjects"]}
    found = {s: [] for s in plan["subjects"]}
    for rep in range(plan["reps"]):
        for subject in plan["subjects"]:
            previous = found[subject][0] if found[subject] else None
            best = search(setup, plan, subject, rep, previous, points[subject])
            found[subject].append(best)
            log(f"saturation {subject} rep {rep}: {best:,.0f} ev/s")
    metrics = [
        metric("saturation · 20-event batches",
               f"highest rate with p99 < {SATURATION_P99_MS:g} ms and errors < 0.1 %",
               "ev/s", "higher", found[s], subject=s, figure="saturation")
        for s in plan["subjects"]
    ]
    series = [
        {"name": "saturation search", "subject": s, "x": "offered events/s",
         "y": "latency p99 (ms)", "points": points[s]}
        for s in plan["subjects"]
    ]
    notes = [
        f"Each step is a fresh subject at one offered rate ({plan['warmup']:g} s warm-up, "
        f"{plan['duration']:g} s measured); the search doubles or halves until it brackets "
        f"the point, then bisects (geometrically) to within {plan['precision']:g}×.",
    ]
    return {"part": "saturation", "metrics": metrics, "series": series, "notes": notes,
            "found": found}


def search(setup, plan, subject, rep, previous, points):
    """The highest passing rate, found within `plan["precision"]`."""
    precision = plan["precision"]

    def passes(rate):
        tag = f"sat-{subject}-{rep}-r{int(rate)}"
        result = measure(setup, subject, rate, 20, plan["warmup"], plan["duration"],
                         plan["grace"], tag)
        points.append([rate, result["p99_ms"]])
        return result["sustained"]

    lo = hi = None
    rate = previous / plan["bracket"] if previous else plan["start"]
    for _ in range(plan["max_steps"]):
        if passes(rate):
            lo = rate
            if hi is None:
                rate = previous * plan["bracket"] if previous and rate < previous else rate * 2
                continue
        else:
            hi = rate
            if lo is None:
                rate /= 2
                if rate < plan["floor"]:
                    return 0.0
                continue
        if hi / lo <= precision:
            break
        rate = (lo * hi) ** 0.5
    return lo or 0.0
