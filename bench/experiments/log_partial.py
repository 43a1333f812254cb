"""Appends a trial that was stopped early (by hand) to trials.jsonl from its epoch log.

Usage:
    .venv/bin/python bench/experiments/log_partial.py NAME LOGFILE --m JSON [--t JSON] [--note TEXT]

The log holds train_and_evaluate's per-epoch lines (`epoch=1 loss=... valid_mrr@20=...`).
The record carries `"stopped_early_by_hand": true` and no final valid report.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from trial import BASE_M, BASE_T, LOG

from rnnrec_jax.config import ModelConfig, TrainConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("logfile")
    ap.add_argument("--m", default="{}")
    ap.add_argument("--t", default="{}")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    history = []
    for line in Path(args.logfile).read_text().splitlines():
        if not line.startswith("epoch="):
            continue
        rec = {}
        for part in line.split():
            k, v = part.split("=", 1)
            rec[k] = int(v) if k == "epoch" else float(v)
        history.append(rec)
    mc = ModelConfig(**{**BASE_M, **json.loads(args.m)})
    tc = TrainConfig(**{**BASE_T, **json.loads(args.t)})
    best = max(history, key=lambda h: h["valid_mrr@20"])
    rec = {
        "name": args.name,
        "model": dataclasses.asdict(mc),
        "train": dataclasses.asdict(tc),
        "stopped_early_by_hand": True,
        "note": args.note,
        "best_epoch": best["epoch"],
        "history": history,
        "valid": {"recall@20": best["valid_recall@20"], "mrr@20": best["valid_mrr@20"]},
    }
    with LOG.open("a") as f:
        f.write(json.dumps(rec) + "\n")
    print(args.name, rec["valid"], "epochs", len(history))


if __name__ == "__main__":
    main()
