"""Accuracy cost of the float16 carry option (``RNNREC_CARRY_DTYPE=float16``).

The worker stores each user's carry in the state table between events and starts the
next step from what it reads back. This replays the test sessions event by event
through the serving step (sessions in parallel rows, as `tests/unit/test_serving.py`
does), and between steps passes every row's flat carry through the worker's own
state codec (`stream_app.state.encode_state` / `decode_state`, flattened as
`stream_app.scoring.ServingModelScorer` flattens it). Three storage modes:

* ``float32``: exact (the parity path);
* ``float16-all``: every position in float16 (the option before its fix);
* ``float16``: float16 except `exact_carry_positions` (item indices, counts, event
  times), the option as shipped.

Reported per mode: Recall@20 and MRR@20 from each step's top-20 list against the
next item, the share of events whose top-20 list differs from float32's, the mean and
max absolute change of the purchase probability, and the carry bytes per user.

    .venv/bin/python bench/carry_precision.py --model artifacts/bench/model-1pct \\
        --test ../shared/data/yoochoose-1pct/split/test.tsv

Writes bench/results/carry_precision.{json,md}. Figures only, no pass/fail.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rnnrec_jax.data.encoded import session_grid  # noqa: E402
from rnnrec_jax.model_io import load_trained_model  # noqa: E402
from rnnrec_jax.serving import ServingModel  # noqa: E402
from stream_app.scoring import ServingModelScorer  # noqa: E402
from stream_app.settings import CarryDtype  # noqa: E402
from stream_app.state import UserState, decode_state, encode_state  # noqa: E402

MODES = ("float32", "float16-all", "float16")
K = 20
ROWS = 512


def store(scorer: ServingModelScorer, carry: object, mode: str) -> tuple[object, int]:
    """Each row's carry after a write to and a read from the state table."""
    flat = np.concatenate(
        [np.asarray(leaf, np.float32).reshape(len(leaf), -1) for leaf in jax.tree_util.tree_leaves(carry)],
        axis=1,
    )  # fmt: skip
    dtype = CarryDtype.FLOAT32 if mode == "float32" else CarryDtype.FLOAT16
    exact = scorer.exact_carry_positions if mode == "float16" else None
    back = []
    for row in flat:
        record = encode_state(UserState(carry=row), dtype, exact)
        back.append(decode_state(record).carry)
    size = len(record) - len(encode_state(UserState()))  # the carry's share of a record
    return scorer._unflatten(np.stack(back)), size


def replay(model: ServingModel, scorer: ServingModelScorer, grid: tuple, mode: str) -> dict:
    items, times, lengths = grid
    tops, probs, hits = [], [], []
    size = 0
    started = time.monotonic()
    for lo in range(0, len(lengths), ROWS):
        it, tm, ln = items[lo : lo + ROWS], times[lo : lo + ROWS], lengths[lo : lo + ROWS]
        carry = model.init_carry(len(ln))
        for t in range(int(ln.max()) - 1):
            rows = np.flatnonzero(t + 1 < ln)  # rows with a next item to predict
            if not len(rows):
                break
            part = jax.tree_util.tree_map(lambda x, rows=rows: x[rows], carry)
            out = model.step(part, it[rows, t], np.ones(len(rows), bool), times=tm[rows, t])
            stored, size = store(scorer, out.carry, mode)
            carry = jax.tree_util.tree_map(
                lambda full, new, rows=rows: _put(full, rows, new), carry, stored
            )
            target = it[rows, t + 1]
            hit = out.top_items[:, :K] == target[:, None]
            pos = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)
            tops.append(out.top_items[:, :K])
            probs.append(out.p_purchase)
            hits.append(pos)
        done = min(lo + ROWS, len(lengths))
        rate = done / (time.monotonic() - started)
        print(f"  [{mode}] {done:,}/{len(lengths):,} sessions, {rate:,.0f}/s, "
              f"ETA {(len(lengths) - done) / rate:,.0f} s", flush=True)  # fmt: skip
    pos = np.concatenate(hits)
    return {
        "tops": np.concatenate(tops),
        "p": np.concatenate(probs),
        "recall@20": float((pos > 0).mean()),
        "mrr@20": float(np.where(pos > 0, 1.0 / np.maximum(pos, 1), 0.0).mean()),
        "carry_bytes": size,
        "targets": len(pos),
    }


def _put(full: np.ndarray, rows: np.ndarray, new: np.ndarray) -> np.ndarray:
    full = np.array(full)
    full[rows] = new
    return full


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "artifacts/bench/model-1pct")
    parser.add_argument(
        "--test", type=Path, default=ROOT.parent / "shared/data/yoochoose-1pct/split/test.tsv"
    )
    parser.add_argument("--sessions", type=int, default=0, help="First N sessions (0: all).")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    for path in (args.model, args.test):
        if not path.exists():
            parser.error(f"{path} does not exist")
    trained = load_trained_model(args.model)
    model = ServingModel.from_trained(trained, buckets=(8, 32, 128, ROWS), k=K)
    scorer = ServingModelScorer(model)
    test = pd.read_csv(args.test, sep="\t", dtype={"ItemId": str})
    if args.sessions:
        test = test[test.SessionId.isin(test.SessionId.unique()[: args.sessions])]
    grid = session_grid(test, trained.vocab)
    print(f"{len(grid[2]):,} sessions, {int((grid[2] - 1).sum()):,} targets; "
          f"{len(scorer.exact_carry_positions)} of {scorer.initial_carry().size} carry "
          f"positions kept in float32 by the float16 option", flush=True)  # fmt: skip
    runs = {mode: replay(model, scorer, grid, mode) for mode in MODES}
    base = runs["float32"]
    rows = []
    for mode, run in runs.items():
        rows.append({
            "mode": mode,
            "recall@20": round(run["recall@20"], 4),
            "mrr@20": round(run["mrr@20"], 4),
            "top20_changed": round(float((run["tops"] != base["tops"]).any(axis=1).mean()), 4),
            "p_purchase_mean_abs_diff": float(np.abs(run["p"] - base["p"]).mean()),
            "p_purchase_max_abs_diff": float(np.abs(run["p"] - base["p"]).max()),
            "carry_bytes_per_user": run["carry_bytes"],
        })  # fmt: skip
    report = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "model": str(args.model),
        "model_config": str(trained.model_cfg),
        "targets": base["targets"],
        "exact_positions": len(scorer.exact_carry_positions),
        "carry_size": int(scorer.initial_carry().size),
        "rows": rows,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "carry_precision.json").write_text(json.dumps(report, indent=1, default=str))
    lines = [
        "# Accuracy cost of the float16 carry",
        "",
        f"Command: `{report['command']}`  ",
        f"Model: {args.model}; {base['targets']:,} targets; carry {report['carry_size']} "
        f"values, {report['exact_positions']} kept in float32 by the float16 option",
        "",
        "| stored carry | Recall@20 | MRR@20 | top-20 lists changed | mean abs. change of "
        "p(purchase) | max | carry bytes per user (base64) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['recall@20']:.4f} | {r['mrr@20']:.4f} | "
            f"{100 * r['top20_changed']:.2f} % | {r['p_purchase_mean_abs_diff']:.2e} | "
            f"{r['p_purchase_max_abs_diff']:.2e} | {r['carry_bytes_per_user']:,} |"
        )
    (args.out / "carry_precision.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
