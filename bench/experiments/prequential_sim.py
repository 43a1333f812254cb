"""The prequential protocol of bench/prequential.py in one process, without Kafka.

For choosing the trainer's fine-tuning settings quickly: the same offline model and
stream (`bench/prequential.py` `load_data`, `offline_model`), the trainer's daily round
(`stream_app.trainer_window.split_holdout`, `grow_vocabulary`, `fine_tune`, `evaluate_slice`,
publish when not worse by the margin on MRR@20), and each day judged with
`evaluate_slice` on the sessions that START that day (the system run judges each
output by its event's own day, and sessions crossing midnight are served by two
models there), so figures are close to, not equal to, the system's. One JSON line per
run is appended to bench/experiments/prequential_sim.jsonl.

    .venv/bin/python bench/experiments/prequential_sim.py --days 14 --optimiser sgd --lr 0.1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from prequential import DAY, JULY_1, load_data, offline_model  # noqa: E402

LOG = ROOT / "bench" / "experiments" / "prequential_sim.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--window-days", type=float, default=7.0)
    parser.add_argument("--optimiser", default="sgd")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--encoder-lr-scale", type=float, default=1.0)
    parser.add_argument("--holdout", type=float, default=0.1)
    parser.add_argument("--margin", type=float, default=0.0)
    parser.add_argument("--no-growth", action="store_true")
    args = parser.parse_args()

    from rnnrec_jax.finetune import browsing_events, evaluate_slice, fine_tune, grow_vocabulary
    from rnnrec_jax.model_io import load_trained_model
    from stream_app.trainer_window import split_holdout

    train, stream = load_data(args.days + 1)
    base = load_trained_model(offline_model(train, "default", 8192, 0))
    starts = stream.session_start_times()[stream.session_index()]
    serving = base
    totals = {"frozen": np.zeros(3), "finetune": np.zeros(3)}
    outcomes: dict[str, int] = {}
    started = time.monotonic()
    for day in range(args.days):
        boundary = JULY_1 + day * DAY
        in_window = (starts >= boundary - args.window_days * DAY) & (stream.times < boundary)
        today = stream.filter_mask((starts >= boundary) & (starts < boundary + DAY))
        window = browsing_events(stream.filter_mask(in_window))
        part, held = split_holdout(window, args.holdout)
        outcome = "skipped"
        if held.n_targets >= 20 and part.n_targets >= 50:
            candidate = serving
            if not args.no_growth:
                candidate, _ = grow_vocabulary(serving, part.item_ids, part.times, seed=day + 1)
            candidate = fine_tune(
                candidate, part, epochs=args.epochs, learning_rate=args.lr,
                optimiser=args.optimiser, encoder_lr_scale=args.encoder_lr_scale, seed=day + 1,
            )  # fmt: skip
            better = evaluate_slice(candidate, held)["mrr@20"]
            floor = evaluate_slice(serving, held)["mrr@20"] - args.margin
            outcome = "published" if better >= floor else "rejected"
            if outcome == "published":
                serving = candidate
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        for name, model in (("frozen", base), ("finetune", serving)):
            report = evaluate_slice(model, today)
            n = report["n_targets"]
            totals[name] += [report["recall@20"] * n, report["mrr@20"] * n, n]
        print(
            f"day {day + 1}: {outcome}; so far frozen R@20 "
            f"{totals['frozen'][0] / max(totals['frozen'][2], 1):.4f}, fine-tuned "
            f"{totals['finetune'][0] / max(totals['finetune'][2], 1):.4f} "
            f"({time.monotonic() - started:.0f} s)",
            flush=True,
        )
    result = {
        "args": vars(args),
        "outcomes": outcomes,
        "seconds": time.monotonic() - started,
        **{
            f"{name}_{metric}": float(t[i] / t[2])
            for name, t in totals.items()
            for i, metric in enumerate(("recall@20", "mrr@20"))
        },
    }
    for metric in ("recall@20", "mrr@20"):
        result[f"relative_{metric}"] = result[f"finetune_{metric}"] / result[f"frozen_{metric}"] - 1
    print(json.dumps(result))
    with LOG.open("a") as log:
        log.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
