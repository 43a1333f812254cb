"""Model selection for the purchase model: fit on train_tr, score on train_valid.

Usage: .venv/bin/python bench/experiments/purchase_select.py [--seed 0]

Uses the next-item model trained on train_tr (purchase_nextitem.py train_tr SEED).
One JSON line per trial is appended to bench/experiments/purchase_trials.jsonl with
the config, the best early-stopping step and the valid AUC (bootstrap 95% interval).
Never touches test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from purchase_common import auc_ci, fit_on_valid, load_nextitem, pair_inputs, valid_rows

from rnnrec_jax import purchase as pm

LOG = Path(__file__).parent / "purchase_trials.jsonl"

BASE = pm.PurchaseConfig()
NO_PRIORS = tuple(
    f
    for f in pm.FEATURE_NAMES
    if not f.startswith(("item_", "category_", "repeated_item", "popularity"))
)
TRIALS = {
    "lr_feats_final": replace(BASE, use_hidden=False),
    "lr_feats_prefixes": replace(BASE, use_hidden=False, points="prefixes"),
    "lr_feats_mixed": replace(BASE, use_hidden=False, points="mixed"),
    "lr_nopriors_final": replace(BASE, use_hidden=False, features=NO_PRIORS),
    "lr_hidden_final": replace(BASE, use_hidden=True),
    "lr_hidden_final_l2x10": replace(BASE, use_hidden=True, hidden_l2_scale=10.0),
    "lr_hidden_prefixes": replace(BASE, use_hidden=True, points="prefixes"),
    "mlp32_feats_final": replace(BASE, use_hidden=False, hidden_units=32, learning_rate=0.01),
    "mlp32_hidden_final": replace(BASE, use_hidden=True, hidden_units=32, learning_rate=0.01),
    "mlp32_feats_prefixes": replace(
        BASE, use_hidden=False, hidden_units=32, learning_rate=0.01, points="prefixes"
    ),
}
MLP = replace(BASE, use_hidden=False, hidden_units=32, learning_rate=0.01)
TRIALS.update(
    {
        "mlp32_feats_final_s1": replace(MLP, seed=1),
        "mlp32_feats_final_s2": replace(MLP, seed=2),
        "mlp32_feats_mixed": replace(MLP, points="mixed"),
        "mlp16_feats_final": replace(MLP, hidden_units=16),
        "mlp64_feats_final": replace(MLP, hidden_units=64),
        "mlp32_feats_final_l2e-2": replace(MLP, l2=1e-2),
        "mlp32_feats_final_l2e-4": replace(MLP, l2=1e-4),
        "mlp32_hidden_final_l2x10": replace(MLP, use_hidden=True, hidden_l2_scale=10.0),
        "mlp32_nopriors_final": replace(MLP, features=NO_PRIORS),
        "bag5_mlp32_hidden_final_l2x10": replace(
            MLP, use_hidden=True, hidden_l2_scale=10.0, n_bags=5
        ),
        "bag5_mlp32_feats_final": replace(MLP, n_bags=5),
    }
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0, help="next-item model seed (train_tr)")
    ap.add_argument("--smoothing", type=float, nargs="+", default=[20.0])
    ap.add_argument("--trials", nargs="*", default=None)
    ap.add_argument("--priors", default="split", choices=["split", "raw"])
    args = ap.parse_args()
    model = load_nextitem("train_tr", args.seed)
    names = args.trials or list(TRIALS)
    for m in args.smoothing:
        t0 = time.time()
        tr, va, _ = pair_inputs("train_tr", "train_valid", model, m, args.priors)
        print(f"inputs ready in {time.time() - t0:.0f}s", flush=True)
        vrows, vy = valid_rows(va)
        baselines = {
            "count": auc_ci(vy, va.stats[vrows, pm.STATS_COUNT]),
            "joint_head": auc_ci(vy, va.joint_logit[vrows]),
        }
        print("baselines", json.dumps(baselines), flush=True)
        for name in names:
            cfg = replace(TRIALS[name], smoothing=m)
            t1 = time.time()
            params, info, scores = fit_on_valid(cfg, tr, va)
            rec = {
                "trial": name,
                "nextitem": f"train_tr_s{args.seed}",
                "priors": args.priors,
                "config": cfg.to_dict(),
                "valid": auc_ci(vy, scores),
                "best_step": info["best_step"],
                "n_valid": int(vy.size),
                "n_valid_pos": int(vy.sum()),
                "baselines_valid": baselines,
                "seconds": time.time() - t1,
            }
            if not cfg.use_hidden and cfg.hidden_units == 0:
                rec["weights"] = dict(
                    zip(cfg.features, np.asarray(params["w"]).round(3).tolist(), strict=True)
                )
            with LOG.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            print(
                f"{name:28s} m={m:g} {args.priors} valid AUC {rec['valid']['auc']:.4f} "
                f"[{rec['valid']['ci95'][0]:.3f}, {rec['valid']['ci95'][1]:.3f}] "
                f"step {info['best_step']} ({rec['seconds']:.0f}s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
