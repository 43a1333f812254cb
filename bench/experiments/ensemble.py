"""Evaluates a seed ensemble of models saved by final.py (mean softmax probability).

Usage:
    .venv/bin/python bench/experiments/ensemble.py CONFIG --seeds 0 1 2 \
        [--train train_full] [--test test]

Loads artifacts/final/{CONFIG}_{TRAIN}_s{SEED}.npz (written by final.py), stacks the
members' params (`models.stack_params`) and evaluates them as one model
(`evaluate_encoded(..., ensemble=True)`: items scored by the log of the members'
mean softmax probability), with and without the input-item exclusion. Appends one
JSON line with "ensemble": [seeds] to bench/experiments/final.jsonl.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from common import split
from final import LOG, PARAMS

from rnnrec_jax import evaluate, models
from rnnrec_jax.checkpoint import unflatten_tree
from rnnrec_jax.config import ModelConfig
from rnnrec_jax.train import encode_events


def load(path: Path) -> tuple[ModelConfig, dict, dict]:
    """(model config, params, vocab dict) of one saved member."""
    z = np.load(path)
    mc = ModelConfig.from_json(str(z["model_cfg"]))
    flat = {k[len("params/") :]: z[k] for k in z.files if k.startswith("params/")}
    vocab = {str(v): i + 1 for i, v in enumerate(z["vocab_ids"])}
    return mc, unflatten_tree(flat), vocab


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--train", default="train_full")
    ap.add_argument("--test", default="test")
    args = ap.parse_args()
    members = [load(PARAMS / f"{args.config}_{args.train}_s{s}.npz") for s in args.seeds]
    mc, _, vocab = members[0]
    if any(m[2] != vocab or m[0] != mc for m in members):
        raise ValueError("members differ in config or vocabulary")
    stacked = models.stack_params([m[1] for m in members])
    enc = encode_events(split(args.test), vocab)
    reports = {}
    for excl in (mc.exclude_input_item, not mc.exclude_input_item):
        cfg = dataclasses.replace(mc, exclude_input_item=excl)
        rep = evaluate.evaluate_encoded(
            cfg, stacked, enc, len(vocab), with_purchase=False, ensemble=True
        )
        reports[excl] = {k: v for k, v in rep.items() if not k.startswith("_")}
        print(f"exclude_input_item={excl}:", json.dumps(reports[excl]), flush=True)
    rec = {
        "config": args.config,
        "ensemble": args.seeds,
        "train": args.train,
        "test": args.test,
        "model": dataclasses.asdict(mc),
        "report": reports[mc.exclude_input_item],
        "report_exclude_input_item_flipped": reports[not mc.exclude_input_item],
    }
    with LOG.open("a") as f:
        f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
