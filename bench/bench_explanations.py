"""Building the explanations' JSON after the step: the plain per-slot filter against
the prefix slices `stream_app.scoring.ServingModelScorer._explanations` uses.

Same inputs for both (256 rows, K = 20, window L = 5, top M = 3 contributors, half the
windows with 2 padding positions), the worker's garbage-collector setting, interleaved
repeats, medians. Figures only, never pass/fail.

    .venv/bin/python bench/bench_explanations.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.host import machine
from stream_app.gc_tuning import tune_gc
from stream_app.scoring import ServingModelScorer


def per_slot_filter(
    history: np.ndarray, items: list[list[str]], attributions: Any, ids: np.ndarray
) -> list[dict[str, Any]]:
    """The implementation before 2026-12-07: a filter over each slot's M positions."""
    n = len(items)
    window = ids[history].tolist()
    positions = np.asarray(attributions.positions)[:n]
    weights = np.round(np.asarray(attributions.top_weights, np.float64)[:n], 6)
    use = (positions >= 0) & (weights > 0)
    pos_rows, weight_rows, use_rows = positions.tolist(), weights.tolist(), use.tolist()
    out = []
    for row, row_items in enumerate(items):
        win = window[row]
        pos_r, w_r, use_r = pos_rows[row], weight_rows[row], use_rows[row]
        per_item = []
        for slot, item in enumerate(row_items):
            u = use_r[slot]
            because = [win[p] for p, ok in zip(pos_r[slot], u, strict=True) if ok]
            kept = [w for w, ok in zip(w_r[slot], u, strict=True) if ok]
            per_item.append({"item": item, "because": because, "weights": kept})
        real = [w for w in win if w]
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
    w = rng.normal(size=(n, k, length))
    real = np.broadcast_to((history > 0)[:, None, :], w.shape)
    order = np.argsort(-np.where(real, w, -np.inf), axis=-1, kind="stable")[..., :m]
    kept = np.take_along_axis(real, order, axis=-1)
    attributions = type(
        "Attributions",
        (),
        {
            "positions": np.where(kept, order, -1).astype(np.int32),
            "top_weights": np.where(kept, np.take_along_axis(w, order, axis=-1), 0.0),
        },
    )
    items = [[str(ids[j]) for j in rng.integers(1, 6000, k)] for _ in range(n)]
    tune_gc(50_000)  # as the worker
    prefix = ServingModelScorer._explanations
    assert prefix(history, items, attributions, ids) == per_slot_filter(
        history, items, attributions, ids
    )
    times: dict[str, list[float]] = {"per-slot filter": [], "prefix slices": []}
    for _ in range(args.repeats):
        for name, build in (("per-slot filter", per_slot_filter), ("prefix slices", prefix)):
            started = time.perf_counter()
            build(history, items, attributions, ids)
            times[name].append(time.perf_counter() - started)
    for name, xs in times.items():
        median = float(np.median(xs))
        print(f"{name}: {median * 1e3:.2f} ms per {n}-row batch ({median / n * 1e6:.1f} us/event)")


if __name__ == "__main__":
    main()
