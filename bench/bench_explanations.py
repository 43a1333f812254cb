"""Building and serialising the explanations after the step: the per-recommendation
objects of recommendations schema 1 against the weight matrix of schema 2 (what
`stream_app.scoring.ServingModelScorer._explanations` builds now).

Same inputs for both (256 rows, K = 20, window L = 5, top M = 3 contributors for the
schema 1 shape, half the windows with 2 padding positions), the worker's
garbage-collector setting, interleaved repeats, medians: the time to build a batch's
explanation objects, the time orjson takes to write them, and their bytes. Figures
only, never pass/fail.

    .venv/bin/python bench/bench_explanations.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.host import machine
from stream_app.gc_tuning import tune_gc
from stream_app.scoring import ServingModelScorer


def per_item_objects(
    history: np.ndarray, items: list[list[str]], attributions: Any, ids: np.ndarray
) -> list[dict[str, Any]]:
    """Schema 1 (until 2026-12-07): per recommended item a dict of its positive causes."""
    n = len(items)
    hist = np.asarray(history)[:n]
    positions = np.asarray(attributions.positions)[:n]  # (n, K, M), strongest first
    weights = np.round(np.asarray(attributions.top_weights, np.float64)[:n], 6)
    used = ((positions >= 0) & (weights > 0)).sum(axis=-1).tolist()
    names = ids[np.take_along_axis(hist[:, None, :], np.maximum(positions, 0), axis=-1)]
    name_rows, weight_rows, window = names.tolist(), weights.tolist(), ids[hist].tolist()
    out: list[dict[str, Any]] = []
    for row, row_items in enumerate(items):
        names_r, weights_r, used_r = name_rows[row], weight_rows[row], used[row]
        per_item = [
            {"item": item, "because": names_r[slot][:c], "weights": weights_r[slot][:c]}
            for slot, (item, c) in enumerate(zip(row_items, used_r, strict=False))
        ]
        real = [w for w in window[row] if w]
        out.append({"method": "occlusion", "recent_items": real, "per_item": per_item})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    print(f"machine: {machine()}")
    rng = np.random.default_rng(0)
    n, k, length, m = 256, 20, 5, 3
    ids = np.asarray(["", *[str(214800000 + i) for i in range(1, 6000)]], dtype=object)
    history = rng.integers(1, 6000, (n, length))
    history[: n // 2, :2] = 0
    real = np.broadcast_to((history > 0)[:, None, :], (n, k, length))
    w = np.where(real, rng.normal(size=(n, k, length)), 0.0)
    order = np.argsort(-np.where(real, w, -np.inf), axis=-1, kind="stable")[..., :m]
    kept = np.take_along_axis(real, order, axis=-1)
    attributions = type(
        "Attributions",
        (),
        {
            "weights": w.astype(np.float32),
            "positions": np.where(kept, order, -1).astype(np.int32),
            "top_weights": np.where(kept, np.take_along_axis(w, order, axis=-1), 0.0),
        },
    )
    items = [[str(ids[j]) for j in rng.integers(1, 6000, k)] for _ in range(n)]
    tune_gc(50_000)  # as the worker
    builders: dict[str, Callable[..., list[dict[str, Any]]]] = {
        "schema 1: per-item objects": per_item_objects,
        "schema 2: weight matrix": ServingModelScorer._explanations,
    }
    build_s: dict[str, list[float]] = {name: [] for name in builders}
    dump_s: dict[str, list[float]] = {name: [] for name in builders}
    size: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, build in builders.items():
            started = time.perf_counter()
            built = build(history, items, attributions, ids)
            built_at = time.perf_counter()
            written = [orjson.dumps(e) for e in built]
            build_s[name].append(built_at - started)
            dump_s[name].append(time.perf_counter() - built_at)
            size[name] = float(np.mean([len(x) for x in written]))
    for name in builders:
        b, d = float(np.median(build_s[name])), float(np.median(dump_s[name]))
        print(f"{name}: build {b * 1e3:.2f} ms + JSON {d * 1e3:.2f} ms per {n}-row batch "
              f"({(b + d) / n * 1e6:.1f} us/event), {size[name]:,.0f} bytes per explanation")  # fmt: skip


if __name__ == "__main__":
    main()
