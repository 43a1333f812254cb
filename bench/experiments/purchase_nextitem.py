"""Train (and cache) the frozen next-item models the purchase model sits on.

Usage:
    .venv/bin/python bench/experiments/purchase_nextitem.py TRAIN SEED [SEED ...]

TRAIN is `train_tr` (model selection; scored on train_valid) or `train_full`
(final; scored on test). The default config (rnnrec_jax/configs/default.py, which
has the jointly trained purchase head) is trained with `train_and_evaluate`; params,
vocabulary and config are cached under `artifacts/purchase/nextitem_{TRAIN}_s{SEED}.npz`
(gitignored) together with the joint head's Platt calibration (fitted on
train_valid, as bench/experiments/final.py does) so the purchase experiments can
reuse them.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from common import first_buy_times, split

from rnnrec_jax import evaluate
from rnnrec_jax.checkpoint import flatten_tree
from rnnrec_jax.configs.default import get_config
from rnnrec_jax.train import encode_events, train_and_evaluate

CACHE = Path(__file__).resolve().parents[2] / "artifacts" / "purchase"


def cache_path(train: str, seed: int) -> Path:
    """Where the next-item model trained on `train` with `seed` is cached."""
    return CACHE / f"nextitem_{train}_s{seed}.npz"


def main() -> None:
    train = sys.argv[1]
    seeds = [int(s) for s in sys.argv[2:]]
    mc, tc = get_config()
    buys = first_buy_times()
    CACHE.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        out = cache_path(train, seed)
        if out.exists():
            print("cached", out)
            continue
        t = time.time()
        res = train_and_evaluate(
            mc, dataclasses.replace(tc, seed=seed), split(train), buy_times=buys, progress=False
        )
        # Joint head's Platt calibration on train_valid (as final.py does).
        enc_v = encode_events(split("train_valid"), res.vocab, buy_times=buys)
        rv = evaluate.evaluate_encoded(res.model_cfg, res.params, enc_v, len(res.vocab))
        calib = evaluate.fit_platt(
            np.array(rv["_purchase_logits"]), np.array(rv["_purchase_labels"])
        )
        vocab_ids = np.array(sorted(res.vocab, key=res.vocab.get))
        meta = {
            "model_cfg": json.loads(res.model_cfg.to_json()),
            "train": train,
            "seed": seed,
            "joint_head_calibration": list(calib),
            "valid_recall@20": rv["recall@20"],
            "valid_mrr@20": rv["mrr@20"],
            "seconds": time.time() - t,
        }
        np.savez(
            out,
            vocab_ids=vocab_ids,
            meta=np.array(json.dumps(meta)),
            **{"params/" + k: v for k, v in flatten_tree(res.params).items()},
        )
        print(json.dumps(meta), flush=True)


if __name__ == "__main__":
    main()
