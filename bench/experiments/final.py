"""Train a named config on train_full, evaluate on test (GRU4Rec protocol), per seed.

Usage:
    .venv/bin/python bench/experiments/final.py CONFIG [--seeds 0 1 2] [--epochs N]

CONFIG is a module of rnnrec_jax/configs. Appends one JSON line per seed to
bench/experiments/final.jsonl (config, test report, the same report with the
input-item exclusion flipped, per-epoch history with targets/s), saves the params
under artifacts/final/ (gitignored; bench/experiments/ensemble.py reads them) and
prints the mean and std over seeds. With a purchase head, Platt calibration is fitted
on train_valid sessions (part of train_full) and applied. `--train train_tr --test
train_valid` gives the valid-side figures of the same recipe.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from common import first_buy_times, split

from rnnrec_jax import evaluate
from rnnrec_jax.checkpoint import flatten_tree
from rnnrec_jax.train import encode_events, train_and_evaluate

LOG = Path(__file__).parent / "final.jsonl"
PARAMS = Path(__file__).resolve().parents[2] / "artifacts" / "final"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--train", default="train_full")
    ap.add_argument("--test", default="test")
    args = ap.parse_args()
    mc, tc = importlib.import_module(f"rnnrec_jax.configs.{args.config}").get_config()
    if args.epochs:
        tc = dataclasses.replace(tc, epochs=args.epochs)
    buys = first_buy_times() if mc.purchase_head else None
    reports = []
    for seed in args.seeds:
        tcs = dataclasses.replace(tc, seed=seed)
        res = train_and_evaluate(mc, tcs, split(args.train), buy_times=buys, progress=False)
        calib = (1.0, 0.0)
        if mc.purchase_head:
            enc_v = encode_events(split("train_valid"), res.vocab, buy_times=buys)
            rv = evaluate.evaluate_encoded(res.model_cfg, res.params, enc_v, len(res.vocab))
            calib = evaluate.fit_platt(
                np.array(rv["_purchase_logits"]), np.array(rv["_purchase_labels"])
            )
            res.purchase_calibration = calib
        rep = evaluate.evaluate(res, split(args.test), buy_times=buys)
        # Same params, inference-time input-item exclusion flipped (for the record).
        flipped = dataclasses.replace(
            res.model_cfg, exclude_input_item=not res.model_cfg.exclude_input_item
        )
        alt = evaluate.evaluate(flipped, split(args.test), params=res.params, vocab=res.vocab)
        tps = [h["targets_per_s"] for h in res.history[1:] if "targets_per_s" in h]
        rec = {
            "config": args.config,
            "seed": seed,
            "train": args.train,
            "test": args.test,
            "model": dataclasses.asdict(res.model_cfg),
            "train_cfg": dataclasses.asdict(tcs),
            "report": rep,
            "report_exclude_input_item_flipped": alt,
            "history": res.history,
            "calibration": calib,
            "median_targets_per_s_after_first": float(np.median(tps)) if tps else None,
            "train_seconds": float(sum(h["seconds"] for h in res.history)),
        }
        with LOG.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        # Keep the trained params for seed ensembles (bench/experiments/ensemble.py).
        PARAMS.mkdir(parents=True, exist_ok=True)
        vocab_ids = np.array(sorted(res.vocab, key=res.vocab.get))
        np.savez(
            PARAMS / f"{args.config}_{args.train}_s{seed}.npz",
            vocab_ids=vocab_ids,
            model_cfg=np.array(res.model_cfg.to_json()),
            calibration=np.array(calib),
            **{"params/" + k: v for k, v in flatten_tree(res.params).items()},
        )
        reports.append(rep)
        print(
            json.dumps({k: v for k, v in rep.items() if k != "purchase_reliability"}),
            "median targets/s",
            rec["median_targets_per_s_after_first"],
            flush=True,
        )
    for key in ("recall@20", "mrr@20", "recall@10", "mrr@10", "purchase_auc"):
        vals = [r[key] for r in reports if key in r]
        if vals:
            print(
                f"{key}: {np.mean(vals):.4f} ± {np.std(vals, ddof=1) if len(vals) > 1 else 0:.4f}"
            )


if __name__ == "__main__":
    main()
