"""Tried 2026-12-07, not kept: item priors shrunk towards an embedding-predicted rate.

Instead of the base rate, each item's buy-rate priors shrink towards the rate that a
ridge logistic regression (IRLS) on the next-item model's normalised output
embeddings (mode `emb`, plus log count with `embcnt`) predicts, fitted per fold from
the same data as the priors. Fit on train_tr, scored on train_valid only.

Usage:
    .venv/bin/python bench/experiments/purchase_tried_embedding_prior.py SEED MODES LAMBDAS [SMOOTHINGS]
    .venv/bin/python bench/experiments/purchase_tried_embedding_prior.py 0 none,emb,embcnt 1,10 20

Result (seed 0, valid AUC, hidden / features only): none 0.774 / 0.765; emb 0.771 to
0.773 / 0.762 to 0.763; embcnt 0.770 to 0.772 / 0.761 to 0.763.
"""

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import numpy as np
import pandas as pd
import purchase_common as pc
from purchase_select import TRIALS

from rnnrec_jax import purchase as pm

CFG = {"emb": None, "lam": 1.0, "mode": None}
_orig = pm.build_priors


def fit_target(X, n_obs, n_pos, lam, iters=25):
    """Weighted logistic regression of per-item rates on item features (IRLS, ridge)."""
    keep = n_obs > 0
    Xk = np.c_[np.ones(keep.sum()), X[keep]]
    n = n_obs[keep]
    k = n_pos[keep]
    w = np.zeros(Xk.shape[1])
    r = k.sum() / n.sum()
    w[0] = np.log(r / (1 - r))
    R = lam * np.eye(Xk.shape[1])
    R[0, 0] = 0
    for _ in range(iters):
        z = Xk @ w
        p = 1 / (1 + np.exp(-z))
        g = Xk.T @ (k - n * p) - R @ w
        H = (Xk * (n * p * (1 - p))[:, None]).T @ Xk + R
        w = w + np.linalg.solve(H, g)
    return 1 / (1 + np.exp(-(np.c_[np.ones(X.shape[0]), X] @ w)))


def build_priors(data, capacity, *, smoothing=20.0, session_mask=None, categories=None):
    t = _orig(data, capacity, smoothing=smoothing, session_mask=session_mask, categories=categories)
    if CFG["mode"] is None:
        return t
    use = data.usable()
    sess = data.session_index()
    if session_mask is not None:
        use &= np.asarray(session_mask, bool)[sess]
    frame = pd.DataFrame(
        {
            "s": sess[use],
            "item": data.items[use],
            "bought": data.bought[use],
            "y": data.labels[sess[use]].astype(np.float64),
        }
    )
    pairs = frame.drop_duplicates(["s", "item"])
    pairs = pairs[(pairs["item"] > 0) & (pairs["item"] < capacity)]
    n_obs = np.bincount(pairs["item"], minlength=capacity)[:capacity].astype(float)
    n_b = np.bincount(pairs["item"], weights=pairs["bought"], minlength=capacity)[:capacity]
    n_p = np.bincount(pairs["item"], weights=pairs["y"], minlength=capacity)[:capacity]
    X = CFG["emb"]
    X = np.c_[X, np.log1p(n_obs)] if "cnt" in CFG["mode"] else X
    m = float(smoothing)
    ts = fit_target(X, n_obs, n_p, CFG["lam"])
    tb = fit_target(X, n_obs, n_b, CFG["lam"])
    sess_p = (n_p + m * ts) / (n_obs + m)
    buy_p = (n_b + m * tb) / (n_obs + m)
    return replace(
        t,
        item_session=pm._logit(sess_p).astype(np.float32),
        item_buy=pm._logit(buy_p).astype(np.float32),
    )


pm.build_priors = build_priors

seed = int(sys.argv[1])
modes = sys.argv[2].split(",")
lams = [float(x) for x in sys.argv[3].split(",")]
ms = [float(x) for x in sys.argv[4].split(",")] if len(sys.argv) > 4 else [20.0]
trials = ["mlp32_hidden_final_l2x10", "mlp32_feats_final"]
model = pc.load_nextitem("train_tr", seed)
e = np.asarray(model.params["item_out"], np.float64)
CFG["emb"] = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-9)
for mode in modes:
    for lam in lams if mode != "none" else [0]:
        for sm in ms:
            CFG["mode"] = None if mode == "none" else mode
            CFG["lam"] = lam
            tr, va, _ = pc.pair_inputs("train_tr", "train_valid", model, sm, "split")
            out = []
            for name in trials:
                a, step = pc.fit_and_score(replace(TRIALS[name], smoothing=sm), tr, va, n_boot=50)
                out.append(f"{name} {a['auc']:.4f}@{step}")
            print(f"seed {seed} mode {mode} lam {lam} m {sm}: " + "  ".join(out), flush=True)
