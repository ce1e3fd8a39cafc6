#!/usr/bin/env python3
"""Merges the part files of one benchmark run into the results: a JSON record, a markdown
report and PNG plots.

    python bench/report.py --run DIR [--out bench/results]

    DIR/meta.json      date, commit, machine, configuration (written by bench/run.py)
    DIR/parts/*.json   {"part", "metrics": [{"group", "name", "unit", "better", "runs", …}],
                        "goals": [{"goal", "target", "measured", "met"}], "notes": [...],
                        "series": [{"name", "subject", "x", "y", "points"}] (optional)}
      ──▶ OUT/{date}-{commit}.json   every part, each metric with its median, min and max
      ──▶ OUT/latest.md              goals, then each part: subjects side by side
      ──▶ OUT/latency.png, cpu.png, overload.png   (when matplotlib is installed)

A metric may carry `subject` (adpipe, reference, bare-http, floor, …): metrics of one group
with subjects are shown as one table with a column per subject. `ci` replaces min and max
for single estimates that come with a confidence interval (criterion).
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

PART_ORDER = ["fixed-rate", "saturation", "overload", "moto", "floor", "micro", "deliverer"]
PART_TITLES = {
    "fixed-rate": "Receivers at fixed offered loads",
    "saturation": "Saturation point",
    "overload": "Overload (adpipe)",
    "moto": "Against moto",
    "floor": "Codec floor",
    "micro": "Micro-benchmarks",
    "deliverer": "Deliverer",
}
SUBJECT_ORDER = ["adpipe", "reference", "bare-http", "floor"]
SUBJECT_TITLES = {
    "adpipe": "adpipe",
    "reference": "reference (Node.js)",
    "bare-http": "bare hyper",
    "floor": "codec floor",
}
# A one-minute load average above this (the benchmark itself keeps about two cores busy)
# means other work ran on the machine too.
BUSY_LOAD_AVERAGE = 2.5
PLOTS = {
    "latency": "latency.png",
    "cpu": "cpu.png",
    "overload": "overload.png",
}


def summarise(metric):
    runs = metric.get("runs") or []
    if runs:
        metric["median"] = statistics.median(runs)
        low, high = metric.get("ci") or (min(runs), max(runs))
        metric["min"], metric["max"] = low, high
    return metric


def load(run_dir):
    meta = json.loads((run_dir / "meta.json").read_text())
    parts = [json.loads(p.read_text()) for p in sorted((run_dir / "parts").glob("*.json"))]
    rank = {name: i for i, name in enumerate(PART_ORDER)}
    parts.sort(key=lambda p: rank.get(p.get("part"), len(PART_ORDER)))
    for part in parts:
        for metric in part.get("metrics", []):
            summarise(metric)
    return meta, parts


def number(value):
    if value is None:
        return "–"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def cell(metric):
    if "median" not in metric:
        return "–"
    text = f"{number(metric['median'])} {metric['unit']}".strip()
    if len(metric["runs"]) > 1 or metric.get("ci"):
        text += f" ({number(metric['min'])}–{number(metric['max'])})"
    return text


def groups_of(metrics):
    groups = {}
    for metric in metrics:
        groups.setdefault(metric["group"], []).append(metric)
    return groups


def table(rows):
    header, *body = rows
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def group_table(metrics):
    subjects = [m.get("subject") for m in metrics]
    if not any(subjects):
        rows = [["figure", "median (min–max)", "better"]]
        rows += [[m["name"], cell(m), m["better"]] for m in metrics]
        return table(rows)
    present = sorted({s for s in subjects if s},
                     key=lambda s: (SUBJECT_ORDER.index(s) if s in SUBJECT_ORDER else 99, s))
    names = list(dict.fromkeys(m["name"] for m in metrics))
    by_key = {(m["name"], m.get("subject")): m for m in metrics}
    rows = [["figure"] + [SUBJECT_TITLES.get(s, s) for s in present] + ["better"]]
    for name in names:
        better = next(m["better"] for m in metrics if m["name"] == name)
        rows.append([name] + [cell(by_key[(name, s)]) if (name, s) in by_key else "–"
                              for s in present] + [better])
    return table(rows)


def markdown(meta, parts, plots):
    m = meta["machine"]
    quick = (" — **quick smoke run: these numbers are not worth comparing**"
             if meta["quick"] else "")
    lines = [
        "# Benchmark results",
        "",
        f"Run of {meta['date']} {meta.get('time', '')}, commit `{meta['commit']}`"
        f"{' (with uncommitted changes)' if meta.get('dirty') else ''}, "
        f"{meta.get('elapsed_s', 0) / 60:.0f} minutes{quick}. Reproduce with `make bench` "
        "(`bench/README.md` says what each figure means). Each figure is the median of the "
        "runs, with the smallest and largest in brackets.",
        "",
        *busy_warning(m),
        "## Machine",
        "",
        table([
            ["", ""],
            ["CPU", f"{m['cpu']}, {m['cores']} cores"],
            ["memory", f"{m['memory_gib']} GiB"],
            ["kernel", m["kernel"]],
            ["toolchains", f"{m['rustc']}; node {m['node']}; Python {m['python']}"],
            ["pinning", ", ".join(f"{k}: core {v}" for k, v in m["pinning"].items())
             if all(m["pinning"].values()) else "none (fewer than two cores)"],
            ["load average", f"{fmt_load(m['load_average_at_start'])} at start, "
                             f"{fmt_load(m.get('load_average_at_end'))} at the end"],
            ["configuration", ", ".join(f"{k} {v}" for k, v in meta["config"].items())],
        ]),
        "",
    ]
    goals = [(p["part"], g) for p in parts for g in p.get("goals", [])]
    if goals:
        lines += ["## Goals", ""]
        rows = [["part", "goal", "target", "measured", "met"]]
        rows += [[part, g["goal"], g["target"], g["measured"], "yes" if g["met"] else "**no**"]
                 for part, g in goals]
        lines += [table(rows), ""]
    for name, path in plots.items():
        lines += [f"![{name}]({path})", ""]
    for part in parts:
        lines += [f"## {PART_TITLES.get(part['part'], part['part'])}", ""]
        for group, metrics in groups_of(part.get("metrics", [])).items():
            lines += [f"### {group}", "", group_table(metrics), ""]
        for note in part.get("notes", []):
            lines.append(f"- {note}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def busy_warning(machine):
    """A warning when other work shared the machine: the subject's core was not its own."""
    one_minute = [loads[0] for loads in (machine.get("load_average_at_start"),
                                         machine.get("load_average_at_end")) if loads]
    if not one_minute or max(one_minute) <= BUSY_LOAD_AVERAGE:
        return []
    return [f"**Other work shared the machine (1-minute load average up to "
            f"{max(one_minute):.1f}, where the benchmark alone keeps about 2): latencies and "
            f"saturation points are pessimistic; CPU per event less so.**", ""]


def fmt_load(values):
    return "–" if not values else " / ".join(f"{v:.2f}" for v in values)


# --- plots ---------------------------------------------------------------------------------


def plot(meta, parts, out):
    """The PNG plots that have data; {} without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report: matplotlib is not installed; no plots", file=sys.stderr)
        return {}
    by_part = {p["part"]: p for p in parts}
    made = {}
    if "fixed-rate" in by_part or "saturation" in by_part:
        fig, ax = plt.subplots(figsize=(8, 5))
        latency_plot(ax, by_part.get("fixed-rate"), by_part.get("saturation"))
        made["latency"] = save(fig, out / PLOTS["latency"])
    if "fixed-rate" in by_part:
        fig, ax = plt.subplots(figsize=(9, 5))
        cpu_plot(ax, by_part["fixed-rate"], by_part.get("floor"))
        made["cpu"] = save(fig, out / PLOTS["cpu"])
    if by_part.get("overload", {}).get("series"):
        series = by_part["overload"]["series"]
        fig, axes = plt.subplots(1, len(series), figsize=(6 * len(series), 4), squeeze=False)
        for ax, s in zip(axes[0], series):
            overload_plot(ax, s)
        made["overload"] = save(fig, out / PLOTS["overload"])
    return made


def save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


COLOURS = {"adpipe": "tab:blue", "reference": "tab:orange", "bare-http": "tab:green",
           "floor": "tab:gray"}


def latency_plot(ax, fixed, saturation):
    for subject in ("adpipe", "reference"):
        colour = COLOURS[subject]
        for figure, style in (("p99_ms", "-o"), ("p50_ms", "--s")):
            points = sorted(
                (m["load"], m["median"], m["min"], m["max"])
                for m in (fixed or {}).get("metrics", [])
                if m.get("subject") == subject and m.get("figure") == figure
                and m.get("batch") == 20 and "median" in m
            )
            if points:
                xs, ys, lows, highs = zip(*points)
                ax.errorbar(xs, ys, yerr=[[y - lo for y, lo in zip(ys, lows)],
                                          [hi - y for y, hi in zip(ys, highs)]],
                            fmt=style, color=colour, capsize=3,
                            label=f"{SUBJECT_TITLES[subject]} {figure[:-3]}")
        for s in (saturation or {}).get("series", []):
            if s.get("subject") == subject and s["points"]:
                xs, ys = zip(*s["points"])
                ax.scatter(xs, ys, color=colour, alpha=0.3, marker="x",
                           label=f"{SUBJECT_TITLES[subject]} p99, saturation search")
    ax.axhline(100, color="gray", linestyle=":", label="100 ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered events/s (20-event batches)")
    ax.set_ylabel("latency (ms), from the scheduled send time")
    ax.set_title("Latency vs offered load")
    ax.legend(fontsize=7)


def cpu_plot(ax, fixed, floor):
    metrics = [m for m in fixed["metrics"] if m.get("figure") == "cpu_s_per_M_events"
               and "median" in m]
    loads = sorted({(m["batch"], m["load"]) for m in metrics}, key=lambda x: (-x[0], x[1]))
    subjects = [s for s in SUBJECT_ORDER if any(m.get("subject") == s for m in metrics)]
    width = 0.8 / max(len(subjects), 1)
    for i, subject in enumerate(subjects):
        xs, ys, errs = [], [], [[], []]
        for j, (batch, load) in enumerate(loads):
            found = [m for m in metrics if m["subject"] == subject and m["batch"] == batch
                     and m["load"] == load]
            if found:
                m = found[0]
                xs.append(j + i * width)
                ys.append(m["median"])
                errs[0].append(m["median"] - m["min"])
                errs[1].append(m["max"] - m["median"])
        ax.bar(xs, ys, width, yerr=errs, capsize=2, color=COLOURS.get(subject),
               label=SUBJECT_TITLES.get(subject, subject))
    for m in (floor or {}).get("metrics", []):
        if m.get("figure") == "cpu_ns_per_event" and "median" in m:
            style = ":" if m["batch"] == 20 else "--"
            ax.axhline(m["median"] / 1000, color="gray", linestyle=style,
                       label=f"codec floor, {m['batch']}-event batches")
    ax.set_xticks([j + width * (len(subjects) - 1) / 2 for j in range(len(loads))])
    ax.set_xticklabels([f"{load / 1000:g}k ev/s\n×{batch}" for batch, load in loads])
    ax.set_yscale("log")
    ax.set_ylabel("CPU seconds per million events")
    ax.set_title("Receiver CPU per event")
    ax.legend(fontsize=7)


def overload_plot(ax, series):
    if not series["points"]:
        return
    t, rss, buffered = zip(*series["points"])
    buffered = [float("nan") if b is None else b for b in buffered]
    ax.plot(t, rss, label="RSS (MiB)")
    ax.plot(t, buffered, label="producer buffer (MiB)")
    ax.axhline(64, color="gray", linestyle=":", label="buffer budget (64 MiB)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("MiB")
    ax.set_title(series["name"])
    ax.legend(fontsize=7)


def write(run_dir, out):
    """Writes the results of the run in `run_dir` into `out`; returns the paths written."""
    run_dir, out = Path(run_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta, parts = load(run_dir)
    record = out / f"{meta['date']}-{meta['commit']}.json"
    record.write_text(json.dumps(meta | {"parts": parts}, indent=2) + "\n")
    plots = plot(meta, parts, out)
    latest = out / "latest.md"
    latest.write_text(markdown(meta, parts, plots))
    return [record, latest, *(out / p for p in plots.values())]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="the run's work directory")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                        help="where the results go")
    args = parser.parse_args()
    for path in write(args.run, args.out):
        print(path)


if __name__ == "__main__":
    main()
