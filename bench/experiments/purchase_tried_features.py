"""Tried 2026-12-07, not kept: eleven more session features for the purchase model.

Category count and top-category share, dwell-weighted item priors, events since the
best-prior item, count of above-median-prior items, spread of the gaps, minimum prior,
last minus best prior, the joint head's logit; added beside the running statistics of
the features-only MLP (passed in the classifier's "hidden" block). Fit on train_tr,
scored on train_valid only.

Usage:
    .venv/bin/python bench/experiments/purchase_tried_features.py [SEED]

Result (seed 0, valid AUC): features-only MLP 0.765; with the extra features 0.762 to
0.766 by subset and L2 scale.
"""

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import numpy as np
import pandas as pd
import purchase_common as pc
from common import split
from purchase_select import TRIALS

from rnnrec_jax import purchase as pm


def inputs(name, model, priors, data):
    return pc._inputs(name, model, priors, data), priors


def extra(data, pri, hidden, joint, rows):
    """Features at each row (event index) from its session prefix."""
    sess = data.session_index()
    off = data.offsets
    out = []
    for r in rows:
        s = sess[r]
        a = off[s]
        idx = np.arange(a, r + 1)
        cats = data.categories[idx]
        t = data.times[idx]
        gaps = np.clip(np.diff(t), 0, 3600)
        isess = pri.item_session[idx]
        ib = pri.item_buy[idx]
        vc = pd.Series(cats).value_counts()
        ncat = len(vc)
        top_share = vc.iloc[0] / len(idx)
        dw = (np.sum(gaps * isess[:-1]) / gaps.sum()) if gaps.size and gaps.sum() > 0 else isess[-1]
        dwb = (np.sum(gaps * ib[:-1]) / gaps.sum()) if gaps.size and gaps.sum() > 0 else ib[-1]
        since_best = len(idx) - 1 - int(np.argmax(isess))
        n_hi = float((isess > np.median(pri.item_session)).sum())
        lg = np.log1p(gaps) if gaps.size else np.zeros(1)
        out.append(
            [
                np.log1p(ncat),
                top_share,
                dw,
                dwb,
                np.log1p(since_best),
                np.log1p(n_hi),
                lg.min(),
                lg.std(),
                isess.min(),
                isess[-1] - isess.max(),
                joint[r],
            ]
        )
    return np.asarray(out, np.float32)


NAMES = [
    "log_ncat",
    "top_cat_share",
    "dwell_w_sess",
    "dwell_w_buy",
    "log_since_best",
    "log_n_hi",
    "min_log_gap",
    "std_log_gap",
    "sess_min",
    "last_minus_max",
    "joint_logit",
]

seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
model = pc.load_nextitem("train_tr", seed)
sm = 20.0
prior_data = pc.prior_source_events("split", "train_tr", "train_valid", model)
tr_data = pm.prepare_events(split("train_tr"), pc.buys(), model.encode, pc.categories("train_tr"))
tr_pri = pm.out_of_fold_event_priors(
    tr_data, model.cfg.item_capacity, smoothing=sm, prior_data=prior_data
)
tables = pm.build_priors(prior_data, model.cfg.item_capacity, smoothing=sm)
va_data = pm.prepare_events(
    split("train_valid"), pc.buys(), model.encode, pc.categories("train_valid")
)
va_pri = pm.event_priors(va_data, tables)
tr = pc._inputs("train_tr", model, tr_pri, tr_data)
va = pc._inputs("train_valid", model, va_pri, va_data)
vp = va.data.prediction_points()
keep = vp >= 0
vy = va.data.labels[keep]
vrows = vp[keep]
rows, y, w = pm.training_rows(tr.data, "final")
Xtr = extra(tr.data, tr_pri, tr.hidden, tr.joint_logit, rows)
Xva = extra(va.data, va_pri, va.hidden, va.joint_logit, vrows)
# (the feature matrices are not kept)
print(
    "single-feature valid AUCs:",
    {n: round(pc.auc_ci(vy, Xva[:, i], n=10)["auc"], 3) for i, n in enumerate(NAMES)},
    flush=True,
)
base = replace(TRIALS["mlp32_feats_final"], use_hidden=True, hidden_l2_scale=1.0)
subsets = {
    "all": list(range(len(NAMES))),
    "nojoint": list(range(len(NAMES) - 1)),
    "joint": [len(NAMES) - 1],
    "cat": [0, 1],
    "dwell": [2, 3, 6, 7],
    "prior_shape": [4, 5, 8, 9],
}
for label, cols in subsets.items():
    for l2s in [1.0, 10.0]:
        cfg = replace(base, hidden_l2_scale=l2s)
        params, info = pm.fit_classifier(
            cfg, tr.stats[rows], Xtr[:, cols], y, w, valid=(va.stats[vrows], Xva[:, cols], vy)
        )
        s = np.asarray(pm.raw_logit(params, Xva[:, cols], va.stats[vrows]))
        print(
            f"seed {seed} extra {label:12s} l2x{l2s:g} valid {pc.auc_ci(vy, s, n=50)['auc']:.4f}@{info['best_step']}",
            flush=True,
        )
