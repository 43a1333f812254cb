"""Where a compiled training chunk spends its time, per XLA operation kind.

Builds the training chunk of a config (random batches with the config's shapes: the
cost does not depend on the data), runs it under the JAX profiler with XLA's per-thunk
trace events on, and sums the device time of each compiled operation over the timed
chunks, grouped into kinds (matmul, gather, scatter, elementwise, RNG loop, copy).
Profiling slows every operation a little, so read the shares, not the absolute times.
Figures only, never pass/fail.

    .venv/bin/python bench/profile_train_step.py [--config gru4rec_yoochoose] [--chunks 2]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Must be set before jax initialises its CPU client.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true"
).strip()

import jax
import jax.numpy as jnp
import numpy as np

from rnnrec_jax import train
from rnnrec_jax.cli import load_config

KINDS = (
    ("matmul", ("ynn_fusion", "dot")),
    ("scatter (row updates)", ("wrapped_scatter", "scatter")),
    ("gather (row reads)", ("gather",)),
    ("RNG loop (dropout)", ("while",)),
    ("copy", ("copy",)),
)


def kind_of(name: str) -> str:
    """Kind of an XLA thunk from its name (fusions are named after their root ops)."""
    for kind, prefixes in KINDS:
        if any(name.startswith(p) or f"_{p}" in name for p in prefixes):
            return kind
    return "elementwise and other fusions"


def random_batches(mc, tc, counts: np.ndarray, n_items: int, rng) -> train.StepBatch:
    """One chunk of steps with the config's shapes (inputs, targets, resets, negatives)."""
    steps, bsz = tc.steps_per_call, tc.batch_size
    p = counts[1 : n_items + 1] ** tc.sample_alpha
    p /= p.sum()
    return train.StepBatch(
        inputs=rng.integers(1, n_items, (steps, bsz)).astype(np.int32),
        targets=rng.integers(1, n_items, (steps, bsz)).astype(np.int32),
        reset=rng.random((steps, bsz)) < 0.2,
        weight=np.ones((steps, bsz), np.float32),
        times=np.zeros((steps, bsz), np.float32),
        buy_label=np.zeros((steps, bsz), np.float32),
        buy_weight=np.zeros((steps, bsz), np.float32),
        negatives=(1 + rng.choice(n_items, (steps, max(tc.n_sample, 0)), p=p)).astype(np.int32),
    )


def matmul_rates(batch: int, hidden: int, columns: int, gates: int) -> list[tuple[str, float]]:
    """GFLOP/s of the step's matmul shapes alone, each repeated 50 times in one loop."""
    key = jax.random.PRNGKey(0)

    def rate(a: jax.Array, b: jax.Array, spec: str, m: int, k: int, n: int) -> float:
        def body(acc: jax.Array, _: None) -> tuple[jax.Array, None]:
            # Depends on the loop carry, so XLA cannot hoist the product out of the loop.
            out = jnp.einsum(spec, a + acc, b)
            return acc + out[0, 0] * 1e-9, None

        run = jax.jit(lambda: jax.lax.scan(body, jnp.zeros(()), None, length=50)[0])
        run().block_until_ready()
        best = min(_timed(run) for _ in range(10))
        return 2 * m * k * n * 50 / best / 1e9

    b, h, c, g = batch, hidden, columns, gates * hidden
    x = jax.random.normal(key, (b, h))
    rows = jax.random.normal(key, (c, h))
    w = jax.random.normal(key, (h, g))
    g_scores = jax.random.normal(key, (b, c))
    g_gates = jax.random.normal(key, (b, g))
    big = jax.random.normal(key, (2048, 2048))
    return [
        (f"scores {b}x{h} @ ({c}x{h})^T", rate(x, rows, "mk,nk->mn", b, h, c)),
        (f"score gradient to the state {b}x{c} @ {c}x{h}", rate(g_scores, rows, "mk,kn->mn", b, c, h)),
        (f"score gradient to the rows ({b}x{c})^T @ {b}x{h}", rate(g_scores, x, "km,kn->mn", c, b, h)),
        (f"gates {b}x{h} @ {h}x{g}", rate(x, w, "mk,kn->mn", b, h, g)),
        (f"gate gradient to the weights ({b}x{h})^T @ {b}x{g}", rate(x, g_gates, "km,kn->mn", h, b, g)),
        (f"gate gradient to the input {b}x{g} @ ({h}x{g})^T", rate(g_gates, w, "mk,nk->mn", b, g, h)),
        ("reference 2048x2048 @ 2048x2048", rate(big, big, "mk,kn->mn", 2048, 2048, 2048)),
    ]  # fmt: skip


def _timed(run: Any) -> float:
    started = time.perf_counter()
    run().block_until_ready()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="gru4rec_yoochoose")
    parser.add_argument("--chunks", type=int, default=2, help="timed chunks (after one warm-up)")
    parser.add_argument("--items", type=int, default=6000, help="real items in the catalogue")
    args = parser.parse_args()
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    print(f"machine: {os.cpu_count()} cpus, jax {jax.__version__}")
    mc, tc = load_config(args.config)
    mc = dataclasses.replace(mc, item_capacity=max(mc.item_capacity, args.items + 1))
    rng = np.random.default_rng(0)
    counts = rng.zipf(1.5, mc.item_capacity).astype(np.float32).clip(1, 1e5)
    counts[0] = 0
    state, opts = train.init_train_state(mc, tc)
    chunk = train.make_train_chunk(mc, tc, opts, counts, args.items)
    batches = random_batches(mc, tc, counts, args.items, rng)
    state, losses = chunk(state, batches)
    jax.block_until_ready(losses)  # compile and warm up outside the trace

    trace_dir = Path(tempfile.mkdtemp(prefix="rnnrec-profile-"))
    options = jax.profiler.ProfileOptions()
    options.python_tracer_level = 0
    started = time.perf_counter()
    with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True, profiler_options=options):
        for _ in range(args.chunks):
            state, losses = chunk(state, batches)
            jax.block_until_ready(losses)
    wall = time.perf_counter() - started
    steps = args.chunks * tc.steps_per_call
    print(
        f"{args.config}: {steps} steps of batch {tc.batch_size} in {wall:.2f} s under the "
        f"profiler ({steps * tc.batch_size / wall:,.0f} targets/s; unprofiled runs are faster)"
    )

    trace = next(trace_dir.rglob("perfetto_trace.json.gz"))
    with gzip.open(trace) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    per_op: collections.Counter[str] = collections.Counter()
    for e in events:
        name = e.get("name", "")
        # Thunks of the compiled chunk; host-side and runtime events are not operations.
        if e.get("ph") != "X" or name.startswith(("$", "Thunk", "Pjit", "Slinky", "Task")):
            continue
        if any(c.isupper() for c in name) or " " in name:
            continue
        per_op[name] += e.get("dur", 0)
    per_kind: collections.Counter[str] = collections.Counter()
    for name, us in per_op.items():
        per_kind[kind_of(name)] += us
    total = sum(per_kind.values())
    print(f"\noperation time per step: {total / steps:,.0f} us (sum over operations)\n")
    print("| kind | us/step | share |")
    print("|---|---:|---:|")
    for kind, us in per_kind.most_common():
        print(f"| {kind} | {us / steps:,.0f} | {100 * us / total:.0f} % |")
    print("\n| matmul alone | GFLOP/s |")
    print("|---|---:|")
    gates = 3 if mc.cell == "gru" else 4
    columns = tc.batch_size + max(tc.n_sample, 0)
    for label, gflops in matmul_rates(tc.batch_size, mc.hidden_sizes[0], columns, gates):
        print(f"| {label} | {gflops:,.0f} |")
    print("\n| top operations | us/step |")
    print("|---|---:|")
    for name, us in per_op.most_common(12):
        print(f"| {name} | {us / steps:,.0f} |")


if __name__ == "__main__":
    main()
