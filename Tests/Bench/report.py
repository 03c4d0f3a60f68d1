"""The benchmark's results for people: a text table, Markdown, an SVG chart, the targets.

Every function here reads the results dictionary bench.py builds (and writes as results.json),
so a results.json can be rendered again without running anything:
    python3 Tests/Bench/report.py docs/bench/results.json
"""

import json
import math
import sys
from pathlib import Path

README_BEGIN = "<!-- bench:begin (make bench --write-docs rewrites this block) -->"
README_END = "<!-- bench:end -->"
PROCESSES = ["order", "inventory", "payment", "notification", "rabbitmq", "postgres", "load generator"]
# The confirmed path's events, each with the services it goes between (bench.py's sagaHopsMs).
SAGA_HOPS = {"OrderPlaced": ("order", "inventory"), "StockReserved": ("inventory", "payment"),
             "PaymentCaptured": ("payment", "order")}


def hop_label(event):
    producer, consumer = SAGA_HOPS[event]
    return f"{producer} → {consumer}"


# -- the figures, as sections of rows --------------------------------------------------------------


def _number(value, digits=0):
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def _share(part, whole):
    return f"{100 * part / whole:.0f}%" if part is not None and whole else "–"


def _steps(results):
    """The ladder's steps, then the step with history."""
    steps = [s for s in results.get("ladder", []) if s.get("load")]
    history = results.get("history", {}).get("step")
    return steps + ([history] if history and history.get("load") else [])


def _raw_capacity(results):
    raw = results.get("raw", {})
    rows = []
    if raw.get("confirmedPublish"):
        rows.append(["confirmed publish, persistent 400 B to a quorum queue, batches of 200",
                     _number(raw["confirmedPublish"]["perSecond"]), "msg/s"])
    if raw.get("consumeAndAck"):
        # (Runs before this version recorded no settings: theirs were 4 consumers × prefetch 20.)
        rows.append([f"consume and ack, {raw.get('consumers', 4)} consumer(s) × prefetch {raw.get('prefetch', 20)}",
                     _number(raw["consumeAndAck"]["perSecond"]), "msg/s"])
    for step in raw.get("sagaStep", []):
        rows.append([f"saga-step transaction through the Postgres pool, {step['concurrency']} at a time",
                     _number(step["perSecond"]), "tx/s"])
    for bench in raw.get("pgbench", []):
        rows.append([f"pgbench, Tests/Bench/saga-step.sql, -c {bench['clients']} -j {bench['threads']}",
                     _number(bench["tps"]), f"tx/s ({bench['latencyMs']:.2f} ms average)"])
    return "Raw capacity of this machine", ["measurement", "rate", "unit"], rows


def _ladder(results):
    raw = results.get("raw", {})
    publish = (raw.get("confirmedPublish") or {}).get("perSecond")
    consume = (raw.get("consumeAndAck") or {}).get("perSecond")
    pgbench = next((b["tps"] for b in raw.get("pgbench", []) if b["clients"] == 16), None)
    rows = []
    for step in _steps(results):
        load, latency = step["load"], step["load"]["placedToSettledMs"]
        rows.append([
            step["label"], _number(step.get("completedPerSecond"), 1), f"{load['settled']}/{load['placed']}",
            _number(latency["p50"], 1), _number(latency["p90"], 1), _number(latency["p99"], 1),
            _number(latency["p999"], 1), _number(latency["max"], 1), _number(load["postOrdersMs"]["p99"], 1),
            _number(step.get("cpuMsPerOrderTotal"), 1), _number(step.get("eventsPerOrder"), 1),
            _number(step.get("commitsPerOrder"), 1),
            _share(step.get("publishedPerSecond"), publish), _share(step.get("consumedPerSecond"), consume),
            _share(step.get("commitsPerSecond"), pgbench), "yes" if step.get("sustained") else "no"])
    headers = ["offered", "orders/s", "settled", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "POST p99 ms",
               "CPU ms/order", "events/order", "db tx/order", "publish cap", "consume cap", "pgbench cap", "sustained"]
    return ("Orders under open-loop load (orders/s: settled ÷ time from the first order's schedule to the "
            "last one's settling; latency: POST /orders scheduled → order confirmed or cancelled; db tx: "
            "every committed transaction of the database, reads and polls included; cap: share of the raw "
            "capacity used — events published/s vs confirmed publish, deliveries consumed/s vs "
            "consume-and-ack, database transactions/s vs pgbench -c 16)"), headers, rows


def _cpu(results):
    rows = []
    for step in _steps(results):
        per_order = step.get("cpuMsPerOrder", {})
        rows.append([step["label"]] + [_number(per_order.get(name), 2) for name in PROCESSES]
                    + [_number(step.get("cpuMsPerOrderTotal"), 2), f"{100 * step.get('cpuUtilisation', 0):.0f}%"])
    return ("CPU milliseconds per completed order, by process (all of the machine's cores)",
            ["step"] + PROCESSES + ["total", "machine busy"], rows)


def _disk(results):
    rows = [[step["label"], _number(step.get("walKiBPerOrder"), 1), _number(step.get("fullPageImagesPerOrder"), 2),
             _number(step.get("checkpointBuffersWritten")), _number(step.get("checkpointsCompleted"))]
            for step in _steps(results)]
    return ("PostgreSQL's disk work per step (a checkpoint running beside a step writes pages back, and after it "
            "each page's first change logs the whole page: more WAL to flush per commit, and latency to match)",
            ["step", "WAL KiB/order", "full-page images/order", "checkpointer buffers written", "checkpoints ended"],
            rows)


def _hops(results):
    steps = [step for step in _steps(results) if step.get("sagaHopsMs")]
    if not steps:
        return None
    rows = []
    for step in steps:
        hops = step["sagaHopsMs"]
        rows.append([step["label"]]
                    + [_number(hops[event][quantile], 1) for event in SAGA_HOPS for quantile in ("p50", "p99")]
                    + [_number(hops["total"]["p50"], 1), _number(step["load"]["placedToSettledMs"]["p50"], 1)])
    headers = (["step"] + [f"{hop_label(event)} {quantile} ms" for event in SAGA_HOPS for quantile in ("p50", "p99")]
               + ["placed → last step p50 ms", "scheduled → confirmed p50 ms"])
    return ("Where a confirmed order's time goes, hop by hop (from one saga step's transaction start to the next's, "
            "by the database's clock: the step's statements and commit, its relay, the broker, the next "
            "consumer; the last column is the ladder's p50, which adds the wait before the order service's "
            "transaction and the last step itself)", headers, rows)


def _services(results):
    rss = results.get("rssMiB", {})
    ready, ready_history = results.get("readiness", {}), results.get("readinessWithHistory", {})
    rows = [[service, _number(ready.get(service), 2), _number(ready_history.get(service), 2),
             _number(rss.get("idle", {}).get(service), 1), _number(rss.get("atHighestRate", {}).get(service), 1)]
            for service in ["order", "inventory", "payment", "notification"]]
    return ("The services (one instance each)",
            ["service", "ready s", "ready s, with history", "RSS idle MiB", "RSS peak MiB, highest rate"], rows)


def _history(results):
    history = results.get("history")
    if not history:
        return None
    rows = [["old rows in every inbox and outbox", _number(history["rows"])],
            ["rate", f"{history['rate']:g}/s"],
            ["throughput, with history ÷ empty", _number(history.get("throughputRatio"), 3)],
            ["p50 latency, with history ÷ empty", _number(history.get("p50Ratio"), 2)],
            ["p99 latency, with history ÷ empty", _number(history.get("p99Ratio"), 2)],
            ["CPU per order, with history ÷ empty", _number(history.get("cpuRatio"), 2)]]
    return "Cost with history", ["measurement", "value"], rows


def targets(results):
    """Each target of issue #7 with what this run measured; `met` is None when not measured."""
    def step_at(rate):
        return next((s for s in results.get("ladder", []) if s["rate"] == rate and s.get("load")), None)

    def check(name, measured, limit, below=True, unit=""):
        met = None if measured is None else (measured <= limit if below else measured >= limit)
        return {"target": name, "measured": None if measured is None else round(measured, 3), "unit": unit, "met": met}

    sustained = [s["completedPerSecond"] for s in results.get("ladder", []) if s.get("sustained")]
    at250 = step_at(250)
    rss = results.get("rssMiB", {})
    ready = results.get("readiness", {})
    history = results.get("history", {})
    return [
        check("sustained throughput ≥ 500 orders/s", max(sustained) if sustained else None, 500, below=False,
              unit="orders/s"),
        check("at 250/s: p50 placed → confirmed ≤ 15 ms", at250 and at250["load"]["placedToSettledMs"]["p50"], 15,
              unit="ms"),
        check("at 250/s: p99 placed → confirmed ≤ 50 ms", at250 and at250["load"]["placedToSettledMs"]["p99"], 50,
              unit="ms"),
        check("at 250/s: POST /orders p99 ≤ 10 ms", at250 and at250["load"]["postOrdersMs"]["p99"], 10, unit="ms"),
        check(f"with {history.get('rows', 1_000_000):,} old rows per inbox and outbox: throughput within 10% of empty",
              history.get("throughputRatio"), 0.9,
              below=False, unit="× empty"),
        check("each service's RSS idle ≤ 64 MiB", max(rss.get("idle", {}).values(), default=None), 64, unit="MiB"),
        check("each service's RSS at saturation ≤ 128 MiB", max(rss.get("atHighestRate", {}).values(), default=None),
              128, unit="MiB"),
        check("each service ready within 1 s of its start", max(ready.values(), default=None), 1, unit="s"),
    ]


def _targets(results):
    rows = []
    for target in results.get("targets") or targets(results):
        verdict = {True: "met", False: "not met", None: "not measured"}[target["met"]]
        measured = "–" if target["measured"] is None else f"{_number(target['measured'], 2)} {target['unit']}".strip()
        rows.append([target["target"], measured, verdict])
    return "Targets (reported, never asserted)", ["target", "this run", ""], rows


def sections(results, summary=False):
    chosen = [_raw_capacity, _ladder, _history, _targets] if summary else [
        _raw_capacity, _ladder, _cpu, _hops, _disk, _services, _history, _targets]
    return [section for section in (make(results) for make in chosen) if section]


def _caption(results):
    machine = results.get("machine", {})
    load = machine.get("loadAverageAtStart")
    return (f"Run of {results.get('startedAt', '?')}{' (--quick smoke run)' if results.get('settings', {}).get('quick') else ''}"
            f" on {machine.get('cpus', '?')} CPUs, load average {load[0] if load else '?'} at the start;"
            f" {results.get('settings', {}).get('durationSeconds', '?')} s per rate.")


def _notes(results):
    """What must be said about a run beside its tables: anything that went wrong in it."""
    notes = []
    if results.get("deadLetters"):
        notes.append("Dead letters left in: " + ", ".join(f"{q} ({n})" for q, n in results["deadLetters"].items()))
    restarts = max((s.get("unplannedRestarts", 0) for s in _steps(results)), default=0)
    if restarts:
        notes.append(f"{restarts} unplanned service restart(s) during the run: see .run/bench/logs")
    failed = [s["label"] for s in results.get("ladder", []) if not s.get("load")]
    if failed:
        notes.append("bazaar load gave no report at: " + ", ".join(failed))
    return notes


# -- text and Markdown -----------------------------------------------------------------------------


def table(results):
    """Fixed-width text for the terminal."""
    out = [_caption(results)]
    for title, headers, rows in sections(results):
        widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)] if rows else []
        out += ["", title]
        if not rows:
            out.append("  (nothing measured)")
            continue
        for row in [headers] + rows:
            out.append("  " + "  ".join(str(cell).rjust(width) if index else str(cell).ljust(width)
                                        for index, (cell, width) in enumerate(zip(row, widths))).rstrip())
    out += [""] + _notes(results) if _notes(results) else []
    return "\n".join(out)


def markdown(results, summary=False):
    """Markdown tables: the whole results (docs/bench/results.md), or a summary (README.md)."""
    out = [] if summary else ["# Benchmark results", "",
                              "Written by `make bench` (Tests/Bench/bench.py); the figures are this run's, on this "
                              "machine. The chart: [throughput-latency.svg](throughput-latency.svg); every figure: "
                              "[results.json](results.json).", ""]
    out.append(_caption(results))
    for title, headers, rows in sections(results, summary):
        out += ["", f"**{title}**", ""]
        out.append("| " + " | ".join(headers) + " |")
        out.append("|" + "|".join("---" if index == 0 else "---:" for index in range(len(headers))) + "|")
        out += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    out += [""] + _notes(results) if _notes(results) else []
    return "\n".join(out) + "\n"


def update_readme(readme, results):
    """Rewrites the block between the README's bench markers with the summary tables."""
    text = readme.read_text()
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        print(f"{readme}: no bench block ({README_BEGIN} … {README_END}), left as it is", file=sys.stderr)
        return
    block = README_BEGIN + "\n" + markdown(results, summary=True) + README_END
    readme.write_text(text[:begin] + block + text[end + len(README_END):])


# -- the chart -------------------------------------------------------------------------------------


def _nice_step(span, ticks=6):
    raw = span / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)


def svg(results):
    """Completed orders/s (left axis) and p50/p99 latency (right axis, log) against the offered rate."""
    width, height = 800, 460
    left, right, top, bottom = 80, 90, 60, 70
    plot_w, plot_h = width - left - right, height - top - bottom
    ladder = [s for s in results.get("ladder", []) if s.get("load")]
    history = results.get("history", {}).get("step")
    history = history if history and history.get("load") else None
    rates = [s["rate"] for s in ladder] or [1]
    x_step = _nice_step(max(rates))
    x_max = x_step * math.ceil(max(rates) * 1.05 / x_step)
    y_max = x_max  # same scale: a point on the diagonal completes all it is offered
    latencies = [s["load"]["placedToSettledMs"][p] for s in ladder + ([history] if history else []) for p in ("p50", "p99")]
    decades = (0, max(2, math.ceil(math.log10(max(latencies + [1]))))) if latencies else (0, 3)

    def x(rate):
        return left + plot_w * rate / x_max

    def y_left(value):
        return top + plot_h * (1 - value / y_max)

    def y_right(ms):
        exponent = math.log10(max(ms, 10 ** decades[0]))
        return top + plot_h * (1 - (exponent - decades[0]) / (decades[1] - decades[0]))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             'font-family="Helvetica, Arial, sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{width / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">'
             'Bazaar: completed orders/s and latency against the offered rate</text>',
             f'<text x="{width / 2}" y="44" text-anchor="middle" fill="#555">{_escape(_caption(results))}</text>']
    # Grid and axes.
    tick = 0.0
    while tick <= x_max + 1e-9:
        parts.append(f'<line x1="{x(tick):.1f}" y1="{top}" x2="{x(tick):.1f}" y2="{top + plot_h}" stroke="#eee"/>')
        parts.append(f'<text x="{x(tick):.1f}" y="{top + plot_h + 18}" text-anchor="middle">{tick:g}</text>')
        parts.append(f'<text x="{left - 8}" y="{y_left(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')
        tick += x_step
    for exponent in range(decades[0], decades[1] + 1):
        parts.append(f'<line x1="{left}" y1="{y_right(10 ** exponent):.1f}" x2="{left + plot_w}" '
                     f'y2="{y_right(10 ** exponent):.1f}" stroke="#f3e6e6" stroke-dasharray="2,3"/>')
        parts.append(f'<text x="{left + plot_w + 8}" y="{y_right(10 ** exponent) + 4:.1f}">{10 ** exponent:g}</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 22}" text-anchor="middle">offered rate (orders/s)</text>')
    parts.append(f'<text transform="translate(22,{top + plot_h / 2}) rotate(-90)" text-anchor="middle" fill="#1f5fbf">'
                 'completed orders/s</text>')
    parts.append(f'<text transform="translate({width - 24},{top + plot_h / 2}) rotate(90)" text-anchor="middle" '
                 'fill="#c0392b">latency POST → final state, ms (log)</text>')
    # The diagonal: everything offered is completed.
    parts.append(f'<line x1="{x(0)}" y1="{y_left(0)}" x2="{x(x_max):.1f}" y2="{y_left(y_max):.1f}" stroke="#999" '
                 'stroke-dasharray="5,4"/>')

    def series(points, colour, dash="", marker="circle"):
        if not points:
            return
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2" '
                     f'{f"stroke-dasharray={chr(34)}{dash}{chr(34)}" if dash else ""}/>')
        for px, py in points:
            parts.append(_marker(marker, px, py, colour))

    series([(x(s["rate"]), y_left(s["completedPerSecond"])) for s in ladder], "#1f5fbf")
    series([(x(s["rate"]), y_right(s["load"]["placedToSettledMs"]["p50"])) for s in ladder], "#e67e22", "6,3")
    series([(x(s["rate"]), y_right(s["load"]["placedToSettledMs"]["p99"])) for s in ladder], "#c0392b", "2,2")
    if history:
        parts.append(_marker("square", x(history["rate"]), y_left(history["completedPerSecond"]), "#1f5fbf", hollow=True))
        parts.append(_marker("square", x(history["rate"]), y_right(history["load"]["placedToSettledMs"]["p99"]),
                             "#c0392b", hollow=True))
    # Legend.
    legend = [("completed orders/s (left)", "#1f5fbf", "", "circle"), ("p50 latency (right)", "#e67e22", "6,3", "circle"),
              ("p99 latency (right)", "#c0392b", "2,2", "circle"), ("all offered completed", "#999", "5,4", None)]
    if history:
        legend.append((f"with {results['history']['rows']:,} old rows per table", "#555", "", "hollow"))
    lx, ly = left + 12, top + 14
    parts.append(f'<rect x="{lx - 6}" y="{ly - 12}" width="250" height="{18 * len(legend) + 6}" fill="white" '
                 'fill-opacity="0.85" stroke="#ccc"/>')
    for index, (label, colour, dash, marker) in enumerate(legend):
        yy = ly + 18 * index
        if marker != "hollow":
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            parts.append(f'<line x1="{lx}" y1="{yy - 4}" x2="{lx + 28}" y2="{yy - 4}" stroke="{colour}" '
                         f'stroke-width="2"{dash_attr}/>')
        if marker:
            parts.append(_marker("square" if marker == "hollow" else marker, lx + 14, yy - 4, colour,
                                 hollow=marker == "hollow"))
        parts.append(f'<text x="{lx + 36}" y="{yy}">{_escape(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _marker(kind, px, py, colour, hollow=False):
    fill = "white" if hollow else colour
    if kind == "square":
        return f'<rect x="{px - 5:.1f}" y="{py - 5:.1f}" width="10" height="10" fill="{fill}" stroke="{colour}" stroke-width="2"/>'
    return f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3.5" fill="{fill}" stroke="{colour}"/>'


def _escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        sys.exit(0 if len(sys.argv) == 2 else 2)
    print(table(json.loads(Path(sys.argv[1]).read_text())))
