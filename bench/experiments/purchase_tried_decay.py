"""Tried 2026-12-07, not kept: time-decayed buy-rate priors for the purchase model.

Each training session's clicks count 0.5 ** (age / half-life) in the item and category
priors (age: days before the prior data's last event). Fit on train_tr, scored on
train_valid only (the next-item model of purchase_nextitem.py train_tr SEED).

Usage:
    .venv/bin/python bench/experiments/purchase_tried_decay.py SEED HALVES TRIALS [SMOOTHING]
    .venv/bin/python bench/experiments/purchase_tried_decay.py 0 none,60,30,14 \
        mlp32_hidden_final_l2x10,mlp32_feats_final

Result (seed 0, valid AUC, hidden / features only): none 0.774 / 0.765; 60 days
0.776 / 0.763; 30 days 0.771 / 0.762; 14 days 0.759 / 0.757.
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

HALF = [None]
_orig = pm.build_priors


def build_priors(data, capacity, *, smoothing=20.0, session_mask=None, categories=None):
    if HALF[0] is None:
        return _orig(
            data, capacity, smoothing=smoothing, session_mask=session_mask, categories=categories
        )
    use = data.usable()
    sess = data.session_index()
    if session_mask is not None:
        use &= np.asarray(session_mask, bool)[sess]
    start = data.times[data.offsets[:-1]]
    ref = data.times.max()
    sw = 0.5 ** ((ref - start) / (HALF[0] * 86400.0))
    frame = pd.DataFrame(
        {
            "s": sess[use],
            "item": data.items[use],
            "bought": data.bought[use],
            "y": data.labels[sess[use]].astype(np.float64),
            "w": sw[sess[use]],
        }
    )
    pairs = frame.drop_duplicates(["s", "item"])
    pairs = pairs[(pairs["item"] > 0) & (pairs["item"] < capacity)]
    W = pairs["w"].to_numpy()
    n_obs = np.bincount(pairs["item"], weights=W, minlength=capacity)[:capacity]
    n_bought = np.bincount(pairs["item"], weights=W * pairs["bought"], minlength=capacity)[
        :capacity
    ]
    n_pos = np.bincount(pairs["item"], weights=W * pairs["y"], minlength=capacity)[:capacity]
    us = np.unique(frame["s"])
    session_rate = float(np.average(data.labels[us], weights=sw[us]))
    buy_rate = float(n_bought.sum() / max(n_obs.sum(), 1e-9))
    m = float(smoothing)
    denom = n_obs + m
    item_buy = pm._logit((n_bought + m * buy_rate) / denom)
    item_session = pm._logit((n_pos + m * session_rate) / denom)
    cats = data.categories[use]
    if categories is None:
        categories = tuple(sorted(set(cats.tolist()) - {""}))
    cf = pd.DataFrame(
        {"s": frame["s"], "c": cats, "y": frame["y"], "w": frame["w"]}
    ).drop_duplicates(["s", "c"])
    cf["wy"] = cf["w"] * cf["y"]
    g = cf.groupby("c")[["wy", "w"]].sum().reindex(list(categories)).fillna(0.0)
    rate = (g["wy"].to_numpy() + m * session_rate) / (g["w"].to_numpy() + m)
    category_session = np.concatenate([[pm._logit(np.array(session_rate))], pm._logit(rate)])
    # log count stays unweighted (popularity), as the base feature
    n_obs_raw = np.bincount(pairs["item"], minlength=capacity)[:capacity].astype(np.float64)
    return pm.PriorTables(
        item_buy.astype(np.float32),
        item_session.astype(np.float32),
        np.log1p(n_obs_raw).astype(np.float32),
        np.asarray(category_session, np.float32),
        tuple(categories),
    )


pm.build_priors = build_priors


def run(seed, halves, trials, smoothing):
    model = pc.load_nextitem("train_tr", seed)
    for h in halves:
        HALF[0] = h
        tr, va, _ = pc.pair_inputs("train_tr", "train_valid", model, smoothing, "split")
        for name in trials:
            a, step = pc.fit_and_score(replace(TRIALS[name], smoothing=smoothing), tr, va)
            print(
                f"seed {seed} half {h} m {smoothing} {name:28s} valid {a['auc']:.4f} step {step}",
                flush=True,
            )


if __name__ == "__main__":
    seed = int(sys.argv[1])
    halves = [None if x == "none" else float(x) for x in sys.argv[2].split(",")]
    trials = sys.argv[3].split(",")
    m = float(sys.argv[4]) if len(sys.argv) > 4 else 20.0
    run(seed, halves, trials, m)
