"""Recovery from a backlog: a burst of events, then a fixed offered rate, per worker setting.

A fresh worker per variant (fresh topics, users new to it): once it is ready, ``--burst``
events are produced at once, then ``--rate`` events/s for ``--seconds``. Latency is
input broker timestamp to recommendation broker timestamp (LogAppendTime), reported per
second of input time, so the report shows whether and when the worker works its way
back from the backlog to the latency it has without one. Variants differ only in
environment settings of the same worker, side by side in one run:

    .venv/bin/python bench/bench_backlog.py --rate 2000 --burst 4000 --seconds 15 \\
        --variants fetch1500,fetch50

Writes backlog.{md,json} and backlog.png (p50 and max per second) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_serving import (  # noqa: E402
    VARIANTS,
    create,
    ensure_models,
    loadavg,
    log,
    machine,
    make_events,
    produce_all,
    produce_at_rate,
    read_topic,
    start,
    wait_outputs,
    wait_ready,
)

WORKER = "worker-explain-256"
"""The serving benchmark's variant every backlog variant starts from."""

SETTINGS: dict[str, dict[str, str]] = {
    # Faust's fixed fetch wait, as before stream_app.kafka_fetch.
    "fetch1500": {"RNNREC_FETCH_MAX_WAIT_MS": "1500"},
    "fetch50": {"RNNREC_FETCH_MAX_WAIT_MS": "50"},
    "fetch20": {"RNNREC_FETCH_MAX_WAIT_MS": "20"},
    "fetch50-noexplain": {"RNNREC_FETCH_MAX_WAIT_MS": "50", "RNNREC_EXPLAIN_WINDOW": "0"},
}
RECOVERED_P50_MS = 200.0
"""A second counts as recovered when its median latency is below this."""


def run_variant(name: str, args: argparse.Namespace, model: Path, workdir: Path) -> dict:
    """Start a worker with the variant's settings, offer burst + rate, return the timeline."""
    app, _, env_extra, _ = VARIANTS[WORKER]
    tag = f"backlog-{uuid.uuid4().hex[:8]}-{name}"
    topics = {"in": f"{tag}-in", "rec": f"{tag}-rec", "pp": f"{tag}-pp", "dlq": f"{tag}-dlq"}
    create(args.bootstrap, list(topics.values()))
    env = {**env_extra, **SETTINGS[name]}
    proc = start(sys.executable, app, model, env, topics, tag, args.bootstrap, ROOT, workdir)
    steady = int(args.rate * args.seconds)
    events = make_events(args.burst + steady, tag=f"{name}-")
    try:
        wait_ready(proc)
        log(f"[{name}] ready; {args.burst:,} events at once, then {args.rate:,.0f}/s "
            f"for {args.seconds:.0f} s")  # fmt: skip
        produce_all(args.bootstrap, topics["in"], events[: args.burst])
        achieved = produce_at_rate(args.bootstrap, topics["in"], events[args.burst :], args.rate)
        wait_outputs(proc, args.bootstrap, topics["rec"], len(events), name, 300)
    finally:
        proc.stop()
    in_ts, in_ids, _ = read_topic(args.bootstrap, topics["in"], want_ids=True)
    out_ts, out_ids, _ = read_topic(args.bootstrap, topics["rec"], want_ids=True)
    sent = dict(zip(in_ids, in_ts.tolist(), strict=True))
    got = dict(zip(out_ids, out_ts.tolist(), strict=True))
    ids = [i for i in in_ids if i in got]
    when = np.asarray([sent[i] for i in ids], np.float64)
    latency = np.asarray([got[i] - sent[i] for i in ids], np.float64)
    order = np.argsort(when, kind="stable")
    when, latency = (when[order] - when[order][0]) / 1000.0, latency[order]
    seconds = []
    for second in range(int(np.ceil(when.max())) if when.size else 0):
        mask = (when >= second) & (when < second + 1)
        if mask.any():
            seconds.append({
                "second": second, "events": int(mask.sum()),
                "p50_ms": float(np.median(latency[mask])), "max_ms": float(latency[mask].max()),
            })  # fmt: skip
    recovered = None
    for i, row in enumerate(seconds):
        if all(r["p50_ms"] < RECOVERED_P50_MS for r in seconds[i:]):
            recovered = row["second"]
            break
    tail = latency[when >= when.max() / 2] if when.size else latency
    q = np.percentile(tail, [50, 95, 99]) if tail.size else [float("nan")] * 3
    result = {
        "variant": name, "settings": SETTINGS[name], "events": int(latency.size),
        "achieved_rate": achieved, "recovered_after_s": recovered,
        "second_half_p50_ms": float(q[0]), "second_half_p95_ms": float(q[1]),
        "second_half_p99_ms": float(q[2]), "per_second": seconds,
    }  # fmt: skip
    log(f"[{name}] recovered after {recovered} s; second half p50 {q[0]:.0f} p95 {q[1]:.0f} "
        f"p99 {q[2]:.0f} ms")  # fmt: skip
    return result


def plot(results: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for i, r in enumerate(results):
        xs = [s["second"] for s in r["per_second"]]
        color = f"C{i}"  # one colour per variant: p50 solid, max dotted
        ax.plot(
            xs, [s["p50_ms"] for s in r["per_second"]], color=color, label=f"{r['variant']} p50"
        )
        ax.plot(xs, [s["max_ms"] for s in r["per_second"]], ":", color=color,
                label=f"{r['variant']} max")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("second of input (burst at 0)")
    ax.set_ylabel("input to recommendation, ms")
    ax.set_title("Backlog then fixed rate: latency per second")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "backlog.json").write_text(json.dumps(report, indent=1))
    plot(report["results"], out / "backlog.png")
    m = report["machine"]
    lines = [
        "# Backlog recovery: burst, then a fixed offered rate",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {m['cpus']} CPUs, {m['cpu_model']}, Python {m['python']}, jax {m['jax']}  ",
        f"Offered: {report['burst']:,} events at once, then {report['rate']:,.0f} events/s for "
        f"{report['seconds']:.0f} s.  ",
        f"Load average before {report['load_before']}, after {report['load_after']}.  ",
        f"Worker: `{WORKER}` of bench_serving.py plus each variant's settings. "
        f"Recovered: the first second from which every second's p50 stays below "
        f"{RECOVERED_P50_MS:.0f} ms.",
        "",
        "| variant | settings | recovered after | p50 / p95 / p99 ms, second half |",
        "|---|---|---:|---|",
    ]
    for r in report["results"]:
        settings = ", ".join(f"{k}={v}" for k, v in r["settings"].items())
        rec = "never" if r["recovered_after_s"] is None else f"{r['recovered_after_s']} s"
        lines.append(
            f"| {r['variant']} | {settings} | {rec} | {r['second_half_p50_ms']:.0f} / "
            f"{r['second_half_p95_ms']:.0f} / {r['second_half_p99_ms']:.0f} |"
        )
    lines += ["", "Per second (p50 / max ms):", ""]
    names = [r["variant"] for r in report["results"]]
    lines += ["| second | " + " | ".join(names) + " |", "|---:|" + "---|" * len(names)]
    width = max(len(r["per_second"]) for r in report["results"])
    for i in range(width):
        cells = []
        for r in report["results"]:
            row = r["per_second"][i] if i < len(r["per_second"]) else None
            cells.append(f"{row['p50_ms']:.0f} / {row['max_ms']:.0f}" if row else "")
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    lines += ["", "Plot: `backlog.png`."]
    (out / "backlog.md").write_text("\n".join(lines) + "\n")
    log(f"wrote {out / 'backlog.md'}, backlog.json, backlog.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000.0, help="offered events/s")
    parser.add_argument("--burst", type=int, default=4000, help="events produced at once first")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of the fixed rate")
    parser.add_argument("--variants", default="fetch1500,fetch50", help=f"of {','.join(SETTINGS)}")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    args = parser.parse_args()
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in SETTINGS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(SETTINGS)}")
    if args.rate <= 0 or args.burst < 0 or args.seconds <= 0:
        parser.error("--rate and --seconds must be positive, --burst not negative")
    command = "python bench/bench_backlog.py " + " ".join(sys.argv[1:])
    load_before = loadavg()
    model = ensure_models(sys.executable, {"1pct"})["1pct"]
    workdir = Path(tempfile.mkdtemp(prefix="rnnrec-backlog-"))
    started = time.monotonic()
    results = []
    for i, name in enumerate(names):
        log(f"variant {i + 1}/{len(names)} ({time.monotonic() - started:.0f} s so far)")
        results.append(run_variant(name, args, model, workdir))
    report = {
        "command": command, "machine": machine(), "load_before": load_before,
        "load_after": loadavg(), "rate": args.rate, "burst": args.burst,
        "seconds": args.seconds, "results": results,
    }  # fmt: skip
    write_report(report, args.out)


if __name__ == "__main__":
    main()
