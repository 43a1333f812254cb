"""One model-selection trial on train_tr -> train_valid, logged to trials.jsonl.

Usage:
    .venv/bin/python bench/experiments/trial.py NAME [--m JSON] [--t JSON]

The base is the tuned GRU (128 units, tied embeddings, dropout 0.2/0.35, full
softmax, Adagrad lr 0.13 momentum 0.35, batch 176, up to 10 epochs, patience 2 on
valid MRR@20); --m and --t are JSON overrides of ModelConfig and TrainConfig fields.
Appends one JSON line (name, configs, per-epoch history with valid metrics, the best
epoch's full valid report) to bench/experiments/trials.jsonl.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import split

from rnnrec_jax import evaluate
from rnnrec_jax.config import ModelConfig, TrainConfig
from rnnrec_jax.train import encode_events, train_and_evaluate

LOG = Path(__file__).parent / "trials.jsonl"

BASE_M = dict(
    item_capacity=6400,
    hidden_sizes=(128,),
    embedding_mode="tied",
    dropout_embedding=0.2,
    dropout_hidden=0.35,
)
BASE_T = dict(
    batch_size=176,
    n_sample=-1,
    optimiser="adagrad",
    learning_rate=0.13,
    momentum=0.35,
    epochs=10,
    patience=2,
    steps_per_call=64,
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("--m", default="{}")
    ap.add_argument("--t", default="{}")
    args = ap.parse_args()
    mc = ModelConfig(**{**BASE_M, **json.loads(args.m)})
    tc = TrainConfig(**{**BASE_T, **json.loads(args.t)})
    t = time.time()
    r = train_and_evaluate(mc, tc, split("train_tr"), split("train_valid"), progress=False)
    # The same params scored with the inference-time input-item exclusion flipped.
    flipped = dataclasses.replace(r.model_cfg, exclude_input_item=not mc.exclude_input_item)
    enc_v = encode_events(split("train_valid"), r.vocab)
    alt = evaluate.evaluate_encoded(flipped, r.params, enc_v, len(r.vocab), with_purchase=False)
    rec = {
        "name": args.name,
        "model": dataclasses.asdict(mc),
        "train": dataclasses.asdict(tc),
        "best_epoch": r.best_epoch,
        "history": r.history,
        "valid": {k: v for k, v in r.valid_report.items() if not k.startswith("_")},
        "wall_s": time.time() - t,
        "valid_exclude_input_item_flipped": {k: v for k, v in alt.items() if not k.startswith("_")},
    }
    with LOG.open("a") as f:
        f.write(json.dumps(rec) + "\n")
    v = rec["valid"]
    print(
        f"TRIAL {args.name}: R@20={v['recall@20']:.4f} MRR@20={v['mrr@20']:.4f} "
        f"epoch={r.best_epoch} {rec['wall_s']:.0f}s | exclude_input_item flipped: "
        f"R@20={alt['recall@20']:.4f} MRR@20={alt['mrr@20']:.4f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
