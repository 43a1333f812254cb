"""Does a last pass over the most recent sessions help? (model selection, valid only)

Usage:
    .venv/bin/python bench/experiments/recency.py CONFIG [--seed 0] \
        [--days 1 2] [--lrs 0.01 0.03] [--optimiser sgd]

Trains CONFIG on train_tr for its epoch count, then for each (days, learning rate)
fine-tunes a copy (`rnnrec_jax.finetune.fine_tune`, one epoch) on the sessions that
start in the last ``days`` of train_tr, and scores every model on train_valid.
Session-parallel training walks the data in time order, so the last params already
lean to recent behaviour; this asks whether leaning further pays off on the next day.
Appends one JSON line per run to bench/experiments/recency.jsonl.
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
from rnnrec_jax.finetune import fine_tune
from rnnrec_jax.model_io import TrainedModel, as_item_vocabulary
from rnnrec_jax.train import encode_events, train_and_evaluate

LOG = Path(__file__).parent / "recency.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--days", type=float, nargs="+", default=[1.0, 2.0])
    ap.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.03])
    ap.add_argument("--optimiser", default="sgd")
    args = ap.parse_args()
    mc, tc = importlib.import_module(f"rnnrec_jax.configs.{args.config}").get_config()
    tc = dataclasses.replace(tc, seed=args.seed)
    train, valid = split("train_tr"), split("train_valid")
    started = time.time()
    result = train_and_evaluate(mc, tc, train, None, progress=False)
    model = TrainedModel(
        params=result.params,
        model_cfg=result.model_cfg,
        vocab=as_item_vocabulary(result.vocab, result.model_cfg.item_capacity),
        version="base",
        train_cfg=result.train_cfg,
    )
    enc_v = encode_events(valid, model.vocab)
    n_items = len(model.vocab)

    def score(params: dict) -> dict:
        rep = evaluate.evaluate_encoded(
            result.model_cfg, params, enc_v, n_items, ks=(20,), with_purchase=False
        )
        return {k: rep[k] for k in ("recall@20", "mrr@20")}

    base = score(result.params)
    print(f"base ({time.time() - started:.0f}s): {base}", flush=True)
    last = float(train.times.max())
    starts = train.session_start_times()
    for days in args.days:
        recent = train.filter_sessions(starts >= last - days * 86400)
        for lr in args.lrs:
            t = time.time()
            tuned = fine_tune(
                model, recent, learning_rate=lr, optimiser=args.optimiser, seed=args.seed
            )
            got = score(tuned.params)
            row = {
                "config": args.config, "seed": args.seed, "days": days, "lr": lr,
                "optimiser": args.optimiser, "recent_events": recent.n_events,
                "base": base, "tuned": got, "seconds": time.time() - t,
            }  # fmt: skip
            with LOG.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(
                f"days={days} lr={lr} events={recent.n_events}: {got} "
                f"(base MRR@20 {base['mrr@20']:.4f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
