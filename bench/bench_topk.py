"""Benchmark exact top-K selection (with the scoring matmul) for the serving step.

For each catalogue size C and batch size B: B random states of width H are scored
against C synthetic item embeddings (+ bias, catalogue mask with index 0 and ~2% of items
unavailable), and the best K items are selected by each method in rnnrec_jax.topk.
Timings include the scoring matmul; "score only" is the matmul (+ bias, mask) alone.
Methods are timed round-robin (one call each per repeat) so load from other processes on
a shared machine spreads evenly over them; the median of the repeats is reported, with
the minimum beside it. Every exact method is checked index for index against
jax.lax.top_k; approx_max_k reports its recall against it.

    .venv/bin/python bench/bench_topk.py --out bench/results/topk.json

writes the JSON there and a markdown table next to it (same name, .md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from rnnrec_jax import topk as T

SHARED_NOTE = (
    "Shared machine: other engineers' jobs ran on the same 2 cores during this benchmark; "
    "absolute timings are noisy (load averages recorded), compare methods within a row group."
)

Inputs = tuple[jax.Array, jax.Array, jax.Array, jax.Array]
Method = Callable[[Inputs, int], Any]


def make_inputs(batch: int, capacity: int, hidden: int, seed: int = 0) -> Inputs:
    """Random states, item embeddings, bias and a catalogue mask (index 0 invalid)."""
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(seed), 4)
    states = jax.random.normal(k1, (batch, hidden), jnp.float32)
    items = jax.random.normal(k2, (capacity, hidden), jnp.float32) * 0.1
    bias = jax.random.normal(k3, (capacity,), jnp.float32) * 0.1
    mask = (jax.random.uniform(k4, (capacity,)) > 0.02).at[0].set(False)
    return states, items, bias, mask


_score = jax.jit(T.score_items)


def _numpy_topk(x: Inputs, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(_score(*x))  # jitted matmul, then a host argpartition
    return T.topk_numpy(scores, k)


METHODS: dict[str, tuple[Method, bool]] = {
    # name: (fn(inputs, k) -> result, exact)
    "score only": (lambda x, k: _score(*x), True),
    "lax.top_k": (lambda x, k: T.score_topk(*x, k, "lax"), True),
    "blocked two-stage": (lambda x, k: T.score_topk(*x, k, "blocked"), True),
    "threshold (block max)": (lambda x, k: T.score_topk(*x, k, "threshold"), True),
    "fused chunks": (lambda x, k: T.score_topk_fused(*x, k), True),
    "numpy argpartition": (_numpy_topk, True),
    "approx_max_k": (lambda x, k: T.score_topk(*x, k, "approx"), False),
    "default_topk": (lambda x, k: T.default_topk(*x, k), True),
}


def _time_once(fn: Method, x: Inputs, k: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of one call."""
    c0, t0 = time.process_time(), time.perf_counter()
    jax.block_until_ready(fn(x, k))
    return time.perf_counter() - t0, time.process_time() - c0


def run_config(
    capacity: int, batch: int, hidden: int, k: int, repeats: int, warmup: int, methods: list[str]
) -> list[dict[str, Any]]:
    """Time every method on one (C, B); returns one record per method."""
    x = make_inputs(batch, capacity, hidden)
    _, ref_idx = jax.block_until_ready(T.score_topk(*x, k, "lax"))
    ref_idx = np.asarray(ref_idx)
    checks: dict[str, dict[str, Any]] = {}
    for name in methods:
        fn, exact = METHODS[name]
        for _ in range(warmup):  # compile, then run once more warm
            out = jax.block_until_ready(fn(x, k))
        if name == "score only":
            checks[name] = {}
            continue
        idx = np.asarray(out[1])
        same = bool((idx == ref_idx).all())
        recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(idx, ref_idx, strict=True)])
        checks[name] = {"matches_lax_top_k": same, "recall_vs_exact": float(recall)}
        if exact and not same:
            raise AssertionError(f"{name} disagrees with lax.top_k at C={capacity} B={batch}")
    times: dict[str, list[float]] = {name: [] for name in methods}
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name in methods:
            wall, used = _time_once(METHODS[name][0], x, k)
            times[name].append(wall)
            cpu[name].append(used)
    records = []
    for name in methods:
        med = float(np.median(times[name]))
        cpu_med = float(np.median(cpu[name]))
        records.append(
            {
                "catalogue": capacity,
                "batch": batch,
                "hidden": hidden,
                "k": k,
                "method": name,
                "exact": METHODS[name][1],
                "median_ms": med * 1e3,
                "min_ms": float(np.min(times[name])) * 1e3,
                "events_per_s": batch / med,
                "cpu_median_ms": cpu_med * 1e3,
                "events_per_cpu_s": batch / cpu_med if cpu_med > 0 else float("nan"),
                "times_ms": [t * 1e3 for t in times[name]],
                "cpu_times_ms": [t * 1e3 for t in cpu[name]],
                **checks[name],
            }
        )
    return records


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else the platform's machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(argv: list[str]) -> dict[str, Any]:
    return {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *argv]),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": cpu_model(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "device": str(jax.devices()[0]),
        "backend": jax.default_backend(),
        "shared_machine": True,
        "note": SHARED_NOTE,
        "loadavg_start": list(os.getloadavg()),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def winners(records: list[dict[str, Any]], key_field: str = "median_ms") -> dict[str, str]:
    """Fastest exact method (by ``key_field``, scoring included) per "C/B" configuration."""
    out: dict[str, str] = {}
    for key in sorted({(r["catalogue"], r["batch"]) for r in records}):
        rows = [
            r
            for r in records
            if (r["catalogue"], r["batch"]) == key
            and r["exact"]
            and r["method"] not in ("score only", "default_topk")
        ]
        out[f"{key[0]}/{key[1]}"] = min(rows, key=lambda r: r[key_field])["method"]
    return out


def to_markdown(env: dict[str, Any], records: list[dict[str, Any]]) -> str:
    lines = [
        "# Top-K selection benchmark (scoring matmul included)",
        "",
        f"Command: `{env['command']}`",
        "",
        f"Machine: {env['cpu_count']} CPUs ({env['processor']}), {env['platform']}; "
        f"jax {env['jax']} on {env['device']}; numpy {env['numpy']}.",
        "",
        f"**{SHARED_NOTE}** Load average at start {env['loadavg_start']}, "
        f"at end {env.get('loadavg_end')}.",
        "",
        f"Hidden {records[0]['hidden']}, K = {records[0]['k']}, float32; median of "
        f"{len(records[0]['times_ms'])} round-robin repeats after warm-up (min in brackets). "
        "`score only` is the matmul + bias + mask alone; `over scoring` is a method's median "
        "minus it. `CPU ms` is the CPU time this process used per call (all threads): on a "
        "shared machine it is steadier than wall time, and events per CPU-second is the "
        "throughput of one worker process pinned to one core. All exact methods returned "
        "exactly the indices of `jax.lax.top_k`." + _approx_note(records),
        "",
        "| catalogue | batch | method | exact | wall ms median (min) | over scoring ms "
        "| events/s | CPU ms | events/CPU-s |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        base = next(
            q["median_ms"]
            for q in records
            if (q["catalogue"], q["batch"], q["method"])
            == (r["catalogue"], r["batch"], "score only")
        )
        exact = "yes" if r["exact"] else f"no (recall {r.get('recall_vs_exact', float('nan')):.3f})"
        over = "" if r["method"] == "score only" else f"{r['median_ms'] - base:+.1f}"
        lines.append(
            f"| {r['catalogue']:,} | {r['batch']} | {r['method']} | {exact} | "
            f"{r['median_ms']:.1f} ({r['min_ms']:.1f}) | {over} | {r['events_per_s']:,.0f} | "
            f"{r['cpu_median_ms']:.1f} | {r['events_per_cpu_s']:,.0f} |"
        )
    lines += [
        "",
        "Fastest exact method per catalogue/batch (excluding `default_topk`, which is one of "
        "them), by wall-time median and by CPU-time median:",
        "",
    ]
    by_cpu = winners(records, "cpu_median_ms")
    lines += [f"* {cfg}: {name} (CPU: {by_cpu[cfg]})" for cfg, name in winners(records).items()]
    lines.append("")
    return "\n".join(lines)


def _approx_note(records: list[dict[str, Any]]) -> str:
    recalls = [r["recall_vs_exact"] for r in records if r["method"] == "approx_max_k"]
    if not recalls:
        return ""
    if min(recalls) == 1.0:
        return (
            " `approx_max_k` returned the exact top K everywhere (recall 1.000): on this "
            "backend it is not approximate, so it cannot be faster than an exact method."
        )
    return f" `approx_max_k` recall against the exact top K: {min(recalls):.3f} at worst."


def print_table(records: list[dict[str, Any]]) -> None:
    print(
        f"{'C':>8} {'B':>4} {'method':<24} {'median ms':>10} {'min ms':>8} {'events/s':>10} "
        f"{'CPU ms':>8} {'ev/CPU-s':>10}"
    )
    for r in records:
        flag = "" if r["exact"] else f"  approx, recall {r.get('recall_vs_exact', 0):.3f}"
        print(
            f"{r['catalogue']:>8} {r['batch']:>4} {r['method']:<24} {r['median_ms']:>10.1f} "
            f"{r['min_ms']:>8.1f} {r['events_per_s']:>10,.0f} {r['cpu_median_ms']:>8.1f} "
            f"{r['events_per_cpu_s']:>10,.0f}{flag}"
        )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/topk.json"))
    parser.add_argument("--catalogues", default="6400,40000,100000")
    parser.add_argument("--batches", default="64,256,512")
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument(
        "--render", type=Path, help="only rewrite the markdown of an existing JSON result"
    )
    args = parser.parse_args(argv[1:])
    if args.render is not None:
        payload = json.loads(args.render.read_text())
        args.render.with_suffix(".md").write_text(
            to_markdown(payload["environment"], payload["results"])
        )
        return
    methods = [m.strip() for m in args.methods.split(",")]
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; known: {list(METHODS)}")
    if "score only" not in methods:
        methods.insert(0, "score only")

    env = environment(argv)
    print(f"command: {env['command']}")
    print(
        f"machine: {env['cpu_count']} CPUs, {env['platform']}, jax {env['jax']} "
        f"on {env['device']}; load average {env['loadavg_start']}"
    )
    print(SHARED_NOTE)
    configs = [
        (int(c), int(b)) for c in args.catalogues.split(",") for b in args.batches.split(",")
    ]
    records: list[dict[str, Any]] = []
    for capacity, batch in tqdm(configs, desc="catalogue x batch", unit="config"):
        records += run_config(
            capacity, batch, args.hidden, args.k, args.repeats, args.warmup, methods
        )
    env["loadavg_end"] = list(os.getloadavg())
    env["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    print_table(records)
    print("fastest exact method per C/B (wall):", json.dumps(winners(records)))
    print("fastest exact method per C/B (CPU):", json.dumps(winners(records, "cpu_median_ms")))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "environment": env,
        "winners_wall": winners(records),
        "winners_cpu": winners(records, "cpu_median_ms"),
        "results": records,
    }
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    md = args.out.with_suffix(".md")
    md.write_text(to_markdown(env, records))
    print(f"wrote {args.out} and {md}")


if __name__ == "__main__":
    main()
