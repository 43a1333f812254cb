"""Serving step throughput with and without occlusion explanations.

Batch 512, hidden 128, catalogue 6,400 items (random init params: cost does not depend
on training), K = 20, explanation window L = 5; or a named model config (``--config
default``: the default model, attention readout included). Reports events/s (median of repeats)
for the full `ServingModel.step` (host padding and transfers included). Writes
bench/results/serving_step.{json,md} (serving_step-CONFIG.{json,md} with --config).
Figures only, never pass/fail.

    .venv/bin/python bench/bench_serving_step.py [--repeats 20] [--config default --batch 256]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

from rnnrec_jax import models
from rnnrec_jax.cli import load_config
from rnnrec_jax.config import ModelConfig
from rnnrec_jax.data.vocabulary import ItemVocabulary
from rnnrec_jax.serving import ServingModel

OUT = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--items", type=int, default=6400)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument(
        "--config",
        default=None,
        help="model config of rnnrec_jax/configs (e.g. default: attention readout); "
        "replaces --hidden and --items",
    )
    args = parser.parse_args()
    command = " ".join([sys.executable, *sys.argv])
    machine = (
        f"{platform.machine()} {os.cpu_count()} cpus, jax {jax.__version__} {jax.devices()[0]}"
    )
    print(f"command: {command}\nmachine: {machine} (shared machine: figures are noisy)")

    if args.config:
        cfg = load_config(args.config)[0]
        args.items = cfg.item_capacity - 1
    else:
        cfg = ModelConfig(
            item_capacity=args.items + 1, hidden_sizes=(args.hidden,), purchase_head=True
        )
    params = models.init_params(cfg, jax.random.PRNGKey(0))
    vocab = ItemVocabulary([str(i) for i in range(args.items)], capacity=cfg.item_capacity)
    model = ServingModel(
        params, cfg, vocab, "bench", buckets=(args.batch,), k=20, explain_window=args.window
    )
    rng = np.random.default_rng(0)
    b = args.batch
    carry = model.init_carry(b)
    items = rng.integers(1, args.items + 1, b)
    history = rng.integers(1, args.items + 1, (b, args.window))
    times = 1.7e9 + np.arange(b, dtype=np.float64)
    results = {}
    for name, hist in (("without_explanations", None), ("with_explanations", history)):
        out = model.step(carry, items, np.ones(b, bool), times=times, history=hist)  # compile
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            out = model.step(out.carry, items, np.ones(b, bool), times=times, history=hist)
            seconds.append(time.perf_counter() - started)
        median = float(np.median(seconds))
        results[name] = {"median_ms": median * 1e3, "events_per_s": b / median}
        print(f"{name:22s} {median * 1e3:8.2f} ms/step  {b / median:10,.0f} events/s")
    slowdown = (
        results["with_explanations"]["median_ms"] / results["without_explanations"]["median_ms"]
    )
    report = {
        "command": command,
        "machine": machine,
        "shared_machine": True,
        "config": vars(args),
        "results": results,
        "explanation_cost_ratio": slowdown,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    stem = f"serving_step-{args.config}" if args.config else "serving_step"
    (OUT / f"{stem}.json").write_text(json.dumps(report, indent=2))
    lines = [
        "# Serving step: events/s with and without explanations",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine} (shared machine: figures are noisy)  ",
        f"Batch {b}, {f'config {args.config}' if args.config else f'hidden {args.hidden}'}, "
        f"{args.items} items, K 20, window {args.window}, median of {args.repeats}.",
        "",
        "| variant | ms/step | events/s |",
        "|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['median_ms']:.2f} | {r['events_per_s']:,.0f} |")
    lines += ["", f"Explanations cost {slowdown:.2f}x the plain step."]
    (OUT / f"{stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
