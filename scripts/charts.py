#!/usr/bin/env python3
"""Draws BENCHMARKS.md's scaling curves as SVG, by hand, from signet-bench's JSON lines (the
file `scripts/bench.sh curves` appends to, default docs/bench-curves.jsonl), so it runs anywhere
Python 3 does, with nothing to install.

    python3 scripts/charts.py [LINES.jsonl] [OUT_DIR] [NOTE]

NOTE (e.g. the commit and date measured) goes into every chart's subtitle.

Each JSON line is one run: Signet's figures at the top level, the baseline's under `baseline`
and each peer's under `peers.<name>`. Three charts come out of them, one curve per server:

- curve-idle-memory.svg: server memory per idle connection (KiB) against connections held;
- curve-broadcast-throughput.svg: deliveries/s against receivers, unpaced broadcast runs;
- curve-broadcast-p99.svg: p99 delivery latency (ms, log scale) against receivers, paced runs.

Where several runs measured the same server at the same size, the last one counts. A point
whose run did not deliver everything, hold every connection or keep the paced rate is drawn
hollow and named in the footnote;
a server that failed a run has no point there (and the footnote says so).
"""
import json
import math
import os
import sys
from html import escape

COLOURS = {
    "signet": "#1f77b4",
    "baseline": "#7f7f7f",
    "socketioxide": "#d62728",
    "socketio-node": "#2ca02c",
    "aiosignalr": "#9467bd",
}
ORDER = list(COLOURS)
WIDTH, HEIGHT = 720, 440
LEFT, RIGHT, TOP, BOTTOM = 80, 170, 70, 78


def runs(line):
    """(server name, figures) for every server a JSON line measured."""
    if "scenario" not in line or "target" not in line:
        return
    yield line["target"], line
    if isinstance(line.get("baseline"), dict):
        yield "baseline", line["baseline"]
    for name, figures in (line.get("peers") or {}).items():
        yield name, figures


def idle_point(figures):
    """At the connections asked for (opened plus failed); lossy when fewer were held."""
    kib = figures.get("server_bytes_per_connection")
    opened = figures.get("connect", {}).get("established", 0)
    asked = opened + figures.get("failures", 0)
    held = figures.get("held")
    if kib is None or not held or not asked:
        return None
    return asked, kib / 1024.0, held < asked


def broadcast_point(figures, value):
    receivers = figures.get("receivers")
    if not receivers or value is None:
        return None
    lossy = (
        figures.get("receivers_lost", 0) > 0
        or figures.get("receiver_failures", 0) > 0
        or figures.get("delivered", 0) < figures.get("expected_deliveries", 0)
        or figures.get("admin_error") is not None
    )
    # A paced run whose server could not keep the rate: its latency is a queue's.
    rate = figures.get("rate_limit_per_s")
    if rate and figures.get("deliveries_per_s", 0) < 0.9 * rate * receivers:
        lossy = True
    return receivers, value, lossy


def collect(lines):
    """{chart: {server: {x: (y, lossy)}}}, failures {chart: [(server, size, error)]}, loads."""
    series = {"idle": {}, "throughput": {}, "p99": {}}
    failures = {"idle": [], "throughput": [], "p99": []}
    loads = []
    for line in lines:
        scenario = line.get("scenario")
        if scenario == "idle":
            chart = "idle"
        elif scenario == "broadcast":
            chart = "throughput" if line.get("rate_limit_per_s") is None else "p99"
        else:
            continue
        if chart == "idle":
            size = line.get("connect", {}).get("established", 0) + line.get("failures", 0)
        else:
            size = line.get("receivers")
        for server, figures in runs(line):
            load = (figures.get("load_average") or {}).get("before")
            if load:
                loads.append(load[0])
            if "error" in figures:
                failures[chart].append((server, size, figures["error"]))
                continue
            if chart == "idle":
                point = idle_point(figures)
            elif chart == "throughput":
                point = broadcast_point(figures, figures.get("deliveries_per_s"))
            else:
                latency = figures.get("delivery_latency") or {}
                point = broadcast_point(figures, latency.get("p99_ms"))
            if point:
                x, y, lossy = point
                series[chart].setdefault(server, {})[x] = (y, lossy)
    return series, failures, loads


def nice_ticks(low, high, count=5):
    """Round tick values covering [low, high] on a linear axis."""
    span = max(high - low, 1e-9)
    step = 10 ** math.floor(math.log10(span / count))
    for factor in (1, 2, 2.5, 5, 10):
        if span / (step * factor) <= count:
            step *= factor
            break
    first = math.floor(low / step) * step
    ticks, value = [], first
    while value <= high + step * 0.5:
        ticks.append(round(value, 10))
        value += step
    return ticks


def log_ticks(low, high):
    ticks = []
    for exponent in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1):
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if low / 1.01 <= value <= high * 1.01:
                ticks.append(value)
    return ticks


def label(value):
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def draw(path, title, subtitle, x_label, y_label, data, notes, log_y=False):
    xs = sorted({x for points in data.values() for x in points})
    ys = [y for points in data.values() for y, _ in points.values()]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT}" y="22" font-size="16" font-weight="bold">{escape(title)}</text>',
    ]
    for i, text in enumerate(subtitle.split("\n")):
        out.append(f'<text x="{LEFT}" y="{40 + i * 15}" fill="#555">{escape(text)}</text>')
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    if not xs or not ys:
        out.append(f'<text x="{LEFT}" y="{TOP + 40}">no data</text></svg>')
        write(path, out)
        return
    x_low, x_high = min(xs), max(xs)
    if x_low == x_high:
        x_low, x_high = x_low / 2, x_high * 2
    lx_low, lx_high = math.log10(x_low), math.log10(x_high)

    def px(x):
        return LEFT + (math.log10(x) - lx_low) / (lx_high - lx_low) * plot_w

    if log_y:
        y_low, y_high = min(ys) / 1.5, max(ys) * 1.5
        y_ticks = log_ticks(y_low, y_high)

        def py(y):
            fraction = (math.log10(y) - math.log10(y_low)) / (math.log10(y_high) - math.log10(y_low))
            return TOP + plot_h - fraction * plot_h
    else:
        y_ticks = nice_ticks(0, max(ys) * 1.08)
        y_low, y_high = 0, y_ticks[-1]

        def py(y):
            return TOP + plot_h - (y - y_low) / (y_high - y_low) * plot_h

    out.append(
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>'
    )
    for y in y_ticks:
        yy = py(y)
        out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end">{label(y)}</text>')
    for x in xs:
        xx = px(x)
        out.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{TOP}" y2="{TOP + plot_h}" stroke="#eee"/>')
        out.append(
            f'<text x="{xx:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">{label(x)}</text>'
        )
    out.append(
        f'<text x="{LEFT + plot_w / 2}" y="{TOP + plot_h + 34}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
    )
    out.append(
        f'<text transform="translate(18 {TOP + plot_h / 2}) rotate(-90)" text-anchor="middle">'
        f"{escape(y_label)}</text>"
    )
    servers = sorted(data, key=lambda s: (ORDER.index(s) if s in ORDER else len(ORDER), s))
    for rank, server in enumerate(servers):
        colour = COLOURS.get(server, "#000")
        points = sorted(data[server].items())
        path_d = " ".join(
            f"{'M' if i == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for i, (x, (y, _)) in enumerate(points)
        )
        width = 3 if server == "signet" else 2
        out.append(f'<path d="{path_d}" fill="none" stroke="{colour}" stroke-width="{width}"/>')
        for x, (y, lossy) in points:
            fill = "white" if lossy else colour
            out.append(
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="4" fill="{fill}" '
                f'stroke="{colour}" stroke-width="2"><title>{escape(server)}: {y:.4g} at '
                f"{x}</title></circle>"
            )
        ly = TOP + 10 + rank * 20
        lx = LEFT + plot_w + 14
        out.append(f'<line x1="{lx}" x2="{lx + 22}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="3"/>')
        out.append(f'<text x="{lx + 28}" y="{ly + 4}">{escape(server)}</text>')
    for i, note in enumerate(notes[:2]):
        out.append(
            f'<text x="{LEFT}" y="{HEIGHT - 22 + i * 14}" fill="#555" font-size="10">'
            f"{escape(note[:130])}</text>"
        )
    out.append("</svg>")
    write(path, out)


def write(path, out):
    with open(path, "w", encoding="utf-8") as file:
        file.write("\n".join(out) + "\n")
    print(f"wrote {path}")


def notes_for(chart, series, failures):
    notes = []
    lossy = sorted(
        f"{server} at {label(x)}"
        for server, points in series[chart].items()
        for x, (_, flag) in points.items()
        if flag
    )
    if lossy:
        notes.append(
            "hollow: not every delivery arrived, connection held or paced rate kept ("
            + ", ".join(lossy)
            + ")"
        )
    failed = sorted({f"{server} at {label(size or 0)}" for server, size, _ in failures[chart]})
    if failed:
        notes.append("failed, no point: " + ", ".join(failed))
    return notes


def main():
    source = sys.argv[1] if len(sys.argv) > 1 else "docs/bench-curves.jsonl"
    out_dir = sys.argv[2] if len(sys.argv) > 2 else "docs"
    with open(source, encoding="utf-8") as file:
        lines = [json.loads(text) for text in file if text.strip().startswith("{")]
    series, failures, loads = collect(lines)
    load = f"1-min load average {min(loads):.1f} to {max(loads):.1f}" if loads else "load unknown"
    note = sys.argv[3] if len(sys.argv) > 3 else "scripts/bench.sh curves"
    machine = f"{note}\n{os.cpu_count()} cores shared with the generator, {load}"
    rate = next(
        (l.get("rate_limit_per_s") for l in lines if l.get("scenario") == "broadcast" and l.get("rate_limit_per_s")),
        None,
    )
    charts = [
        ("idle", "curve-idle-memory.svg", "Idle memory per WebSocket connection (lower is better)",
         "idle connections opened (log scale)", "server RSS per connection, KiB", False),
        ("throughput", "curve-broadcast-throughput.svg",
         "Broadcast deliveries per second, one sender (higher is better)",
         "receivers (log scale)", "deliveries/s", False),
        ("p99", "curve-broadcast-p99.svg",
         f"p99 broadcast delivery latency at {f'{rate:g}' if rate else '?'} broadcasts/s (lower is better)",
         "receivers (log scale)", "p99 delivery latency, ms (log scale)", True),
    ]
    for chart, name, title, x_label, y_label, log_y in charts:
        draw(os.path.join(out_dir, name), title, machine, x_label, y_label, series[chart],
             notes_for(chart, series, failures), log_y=log_y)

if __name__ == "__main__":
    main()
