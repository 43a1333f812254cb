"""Small model search on train_tr -> train_valid; one JSON line per trial.

Usage: .venv/bin/python bench/experiments/search.py TRIALS_NAME [--out FILE]
Trials are named groups defined below; each trial records config and valid metrics.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import split

from rnnrec_jax.config import ModelConfig, TrainConfig
from rnnrec_jax.train import train_and_evaluate

LOG = Path(__file__).parent / "trials.jsonl"

BASE_M = dict(item_capacity=6400, hidden_sizes=(100,), embedding_mode="tied")
BASE_T = dict(
    batch_size=128,
    n_sample=-1,
    optimiser="adam",
    learning_rate=1e-3,
    epochs=12,
    patience=2,
    steps_per_call=64,
)

TUNED = dict(hidden_sizes=(128,), dropout_embedding=0.2, dropout_hidden=0.35)
ADAG = dict(optimiser="adagrad", learning_rate=0.13, momentum=0.35, batch_size=176, epochs=10)

GROUPS = {
    "full2": [
        (TUNED, ADAG),
        ({**TUNED, "attention": True}, ADAG),
        (TUNED, {"learning_rate": 5e-3, "batch_size": 176}),
    ],
    "full1": [
        ({}, {}),
        ({"dropout_hidden": 0.2}, {}),
        ({"dropout_hidden": 0.2, "attention": True}, {}),
        ({"dropout_hidden": 0.2, "hidden_sizes": (200,)}, {}),
        ({"dropout_hidden": 0.4, "dropout_embedding": 0.2}, {}),
        ({"dropout_hidden": 0.2}, {"learning_rate": 3e-3}),
    ],
}


def run(m_over: dict, t_over: dict) -> dict:
    mc = ModelConfig(**{**BASE_M, **m_over})
    tc = TrainConfig(**{**BASE_T, **t_over})
    t = time.time()
    r = train_and_evaluate(mc, tc, split("train_tr"), split("train_valid"), progress=False)
    rec = {
        "model": dataclasses.asdict(mc),
        "train": dataclasses.asdict(tc),
        "best_epoch": r.best_epoch,
        "history": r.history,
        "valid": {k: v for k, v in r.valid_report.items() if not k.startswith("_")},
        "wall_s": time.time() - t,
    }
    with LOG.open("a") as f:
        f.write(json.dumps(rec) + "\n")
    v = rec["valid"]
    print(
        f"TRIAL {m_over} {t_over}: R@20={v['recall@20']:.4f} MRR@20={v['mrr@20']:.4f} "
        f"epoch={r.best_epoch} {rec['wall_s']:.0f}s",
        flush=True,
    )
    return rec


if __name__ == "__main__":
    for m_over, t_over in GROUPS[sys.argv[1]]:
        run(m_over, t_over)
