"""Does a last pass over the most recent sessions help? (model selection, valid only)

Usage:
    .venv/bin/python bench/experiments/recency.py CONFIG [--seed 0] \
        [--days 1 2] [--lrs 0.01 0.03]

Trains CONFIG on train_tr for its epoch count (its own recency pass off), then for
each (days, learning rate) runs the recency pass (`rnnrec_jax.train.recency_pass`:
one epoch of `rnnrec_jax.finetune.fine_tune` on the sessions that start in the last
``days`` of train_tr) on a copy, and scores every model on train_valid.
Session-parallel training walks the data in time order, so the last params already
lean to recent behaviour; this asks whether leaning further pays off on the next day.
Appends one JSON line per run to bench/experiments/recency.jsonl (``recent_events``:
the events the pass trained on, consecutive repeats dropped; the first 19 lines
counted them before the drop).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import split

from rnnrec_jax import evaluate
from rnnrec_jax.train import encode_events, recency_pass, train_and_evaluate

LOG = Path(__file__).parent / "recency.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--days", type=float, nargs="+", default=[1.0, 2.0])
    ap.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.03])
    args = ap.parse_args()
    mc, tc = importlib.import_module(f"rnnrec_jax.configs.{args.config}").get_config()
    tc = dataclasses.replace(tc, seed=args.seed, recency_days=0.0)
    train, valid = split("train_tr"), split("train_valid")
    started = time.time()
    result = train_and_evaluate(mc, tc, train, None, progress=False)
    enc_v = encode_events(valid, result.vocab)
    n_items = len(result.vocab)

    def score(params: dict) -> dict:
        rep = evaluate.evaluate_encoded(
            result.model_cfg, params, enc_v, n_items, ks=(20,), with_purchase=False
        )
        return {k: rep[k] for k in ("recall@20", "mrr@20")}

    base = score(result.params)
    print(f"base ({time.time() - started:.0f}s): {base}", flush=True)
    for days in args.days:
        for lr in args.lrs:
            t = time.time()
            pass_tc = dataclasses.replace(tc, recency_days=days, recency_lr=lr)
            params, figures = recency_pass(
                result.model_cfg, pass_tc, result.params, result.vocab, train
            )
            got = score(params)
            row = {
                "config": args.config, "seed": args.seed, "days": days, "lr": lr,
                "optimiser": "sgd", "recent_events": figures["events"],
                "base": base, "tuned": got, "seconds": time.time() - t,
            }  # fmt: skip
            with LOG.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(
                f"days={days} lr={lr} events={figures['events']}: {got} "
                f"(base MRR@20 {base['mrr@20']:.4f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
