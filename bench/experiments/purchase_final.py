"""Final purchase-model evaluation on test, one frozen next-item model per seed.

Usage:
    .venv/bin/python bench/experiments/purchase_final.py --trial NAME --steps N \
        [--seeds 0 1 2] [--smoothing M] [--priors split|raw] [--calibration platt]

For each seed: the default next-item config trained on train_full with that seed
(purchase_nextitem.py train_full SEED) is frozen; the purchase classifier (config of
`--trial` in purchase_select.py, trained for the `--steps` chosen on train_valid) is
fitted on train_full sessions outside train_valid (out-of-fold priors), calibrated
on the train_valid sessions of train_full (held out from the fit; never test), and
scored on test at the ANCHORS prediction point (last test.tsv event before the
first buy). The purchase classifier's init seed = the next-item seed. Writes one
JSON line per seed plus a summary to bench/experiments/purchase_final.jsonl, the
models to artifacts/purchase/, and the reliability PNG of the pooled seeds to
bench/results/purchase_reliability.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from common import split
from purchase_common import auc_ci, load_nextitem, pair_inputs
from purchase_nextitem import CACHE
from purchase_select import TRIALS

from rnnrec_jax import purchase as pm
from rnnrec_jax.metrics import (
    base_rate_brier,
    brier_score,
    expected_calibration_error,
    reliability_bins,
)
from rnnrec_jax.plots import plot_reliability

LOG = Path(__file__).parent / "purchase_final.jsonl"
PNG = Path(__file__).resolve().parents[1] / "results" / "purchase_reliability.png"


def calibration_report(y: np.ndarray, p: np.ndarray, train_rate: float) -> dict:
    """Brier vs the base-rate predictors, ECE."""
    return {
        "brier": brier_score(y, p),
        "brier_base_rate_train": base_rate_brier(y, train_rate),
        "brier_base_rate_oracle": base_rate_brier(y),
        "ece": expected_calibration_error(y, p),
        "mean_prob": float(p.mean()),
        "observed_rate": float(y.mean()),
    }


def running_check(model: pm.PurchaseModel, te, rows: np.ndarray, n: int = 40) -> float:
    """Max |p_running - p_batch| over the first `n` test sessions' prediction points."""
    jt = model.tables.jax_tables()
    update = jax.jit(pm.purchase_features_update)
    prob = jax.jit(pm.purchase_probability)
    d = te.data
    cats = d.categories
    cidx = model.tables.category_index(cats)
    special = (cats == pm.SPECIAL_CATEGORY).astype(np.float32)
    missing = (cats == pm.MISSING_CATEGORY).astype(np.float32)
    ts = pm.split_epoch_seconds(d.times)
    worst = 0.0
    for r in rows[:n]:
        s = int(np.searchsorted(d.offsets, r, side="right") - 1)
        stats = pm.initial_stats()
        for i in range(d.offsets[s], r + 1):
            stats = update(stats, d.items[i], ts[i], jt, cidx[i], special[i], missing[i])
        p_run = float(prob(model.params, te.hidden[r], stats))
        p_batch = float(prob(model.params, te.hidden[r], te.stats[r]))
        worst = max(worst, abs(p_run - p_batch))
    return worst


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trial", required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--smoothing", type=float, default=20.0)
    ap.add_argument("--priors", default="split", choices=["split", "raw"])
    ap.add_argument("--calibration", default="platt", choices=["platt", "binning"])
    args = ap.parse_args()
    cfg = replace(TRIALS[args.trial], smoothing=args.smoothing, calibration=args.calibration)
    valid_ids = split("train_valid").session_keys()
    pooled_y, pooled_p, results = [], [], []
    for seed in args.seeds:
        t0 = time.time()
        cfg_s = replace(cfg, seed=seed)
        model = load_nextitem("train_full", seed)
        tr, te, tables = pair_inputs("train_full", "test", model, args.smoothing, args.priors)
        in_cal = np.isin(tr.data.session_ids, valid_ids)
        rows, y, w = pm.training_rows(tr.data, cfg_s.points)
        fit = ~in_cal[tr.data.session_index()[rows]]
        params, _ = pm.fit_classifier(
            cfg_s,
            tr.stats[rows[fit]],
            tr.hidden[rows[fit]] if cfg_s.use_hidden else None,
            y[fit],
            w[fit],
            fixed_steps=args.steps,
        )
        cal_pts = tr.data.prediction_points()[in_cal & (tr.data.n_inputs > 0)]
        cal_y = tr.data.labels[in_cal & (tr.data.n_inputs > 0)]
        cal_logit = np.asarray(pm.raw_logit(params, tr.hidden[cal_pts], tr.stats[cal_pts]))
        params = pm.with_calibration(params, cal_logit, cal_y, cfg_s.calibration)
        train_rate = float(np.average(y[fit], weights=w[fit]))
        model_out = pm.PurchaseModel(
            params,
            tables,
            cfg_s,
            {"nextitem": f"train_full_s{seed}", "steps": args.steps, "priors": args.priors},
        )
        np.savez(CACHE / f"purchase_model_s{seed}.npz", **model_out.to_arrays())

        pts = te.data.prediction_points()
        keep = pts >= 0
        ty, tp = te.data.labels[keep], pts[keep]
        logit = np.asarray(pm.raw_logit(params, te.hidden[tp], te.stats[tp]))
        prob = np.asarray(pm.purchase_probability(params, te.hidden[tp], te.stats[tp]), np.float64)
        a, b = model.meta["joint_head_calibration"]
        joint_p = 1.0 / (1.0 + np.exp(-(a * te.joint_logit[tp] + b)))
        rec = {
            "seed": seed,
            "trial": args.trial,
            "config": cfg_s.to_dict(),
            "steps": args.steps,
            "priors": args.priors,
            "n_test": int(ty.size),
            "n_test_pos": int(ty.sum()),
            "n_test_excluded": int((~keep).sum()),
            "purchase_model": {**auc_ci(ty, logit), **calibration_report(ty, prob, train_rate)},
            "joint_head": {
                **auc_ci(ty, te.joint_logit[tp]),
                **calibration_report(ty, joint_p, train_rate),
            },
            "event_count": auc_ci(ty, te.stats[tp, pm.STATS_COUNT]),
            "calibration_slice": {"n": int(cal_y.size), "pos": int(cal_y.sum())},
            "running_vs_batch_max_abs_diff": running_check(model_out, te, tp),
            "seconds": time.time() - t0,
        }
        results.append(rec)
        pooled_y.append(ty)
        pooled_p.append(prob)
        with LOG.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        pmr = rec["purchase_model"]
        print(
            f"seed {seed}: AUC {pmr['auc']:.4f} [{pmr['ci95'][0]:.3f}, {pmr['ci95'][1]:.3f}] "
            f"Brier {pmr['brier']:.4f} (base {pmr['brier_base_rate_train']:.4f}) "
            f"ECE {pmr['ece']:.4f}; joint head {rec['joint_head']['auc']:.4f}; "
            f"count {rec['event_count']['auc']:.4f}",
            flush=True,
        )
    y_all = np.concatenate(pooled_y)
    p_all = np.concatenate(pooled_p)
    plot_reliability(reliability_bins(y_all, p_all), PNG)
    aucs = [r["purchase_model"]["auc"] for r in results]
    summary = {
        "summary": True,
        "trial": args.trial,
        "seeds": args.seeds,
        "auc_mean": float(np.mean(aucs)),
        "auc_std": float(np.std(aucs)),
        "seed_mean_prob_auc": auc_ci(pooled_y[0], np.mean(pooled_p, axis=0)),
        "brier_mean": float(np.mean([r["purchase_model"]["brier"] for r in results])),
        "brier_base_rate_train_mean": float(
            np.mean([r["purchase_model"]["brier_base_rate_train"] for r in results])
        ),
        "ece_mean": float(np.mean([r["purchase_model"]["ece"] for r in results])),
        "pooled_ece": expected_calibration_error(y_all, p_all),
        "joint_head_auc_mean": float(np.mean([r["joint_head"]["auc"] for r in results])),
        "reliability_png": str(PNG),
    }
    with LOG.open("a") as f:
        f.write(json.dumps(summary) + "\n")
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
