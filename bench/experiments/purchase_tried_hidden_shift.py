"""Tried 2026-12-07: do the purchase classifier's in-sample hidden states hurt?

The next-item model is trained on 70 % of train_tr's sessions (a keyed hash of the id);
the classifier is fitted on all train_tr sessions, on the held-out 30 % only (hidden
states out of sample) or on the in-sample 70 % only, and scored on train_valid.

Usage:
    .venv/bin/python bench/experiments/purchase_tried_hidden_shift.py [SEED]

Result (seed 0, valid AUC, mlp32_hidden_final_l2x10): all 0.773, held-out 30 % 0.768,
in-sample 70 % 0.771: no sign that in-sample states hurt; the amount of data matters
more.
"""

import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import numpy as np
import purchase_common as pc
from common import first_buy_times, split
from purchase_select import TRIALS

from rnnrec_jax import purchase as pm
from rnnrec_jax.configs.default import get_config
from rnnrec_jax.train import train_and_evaluate

seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
ev = split("train_tr")
fold = pm.session_folds(ev.session_keys(), 10, seed=7)
held = fold < 3
mc, tc = get_config()
t = time.time()
res = train_and_evaluate(
    mc,
    dataclasses.replace(tc, seed=seed),
    ev.filter_sessions(~held),
    buy_times=first_buy_times(),
    progress=False,
)
print("trained", time.time() - t, flush=True)
model = pc.NextItem(res.model_cfg, res.params, res.vocab, {})
tr, va, _ = pc.pair_inputs("train_tr", "train_valid", model, 20.0, "split")
heldset = set(ev.session_keys()[held].tolist())
vp = va.data.prediction_points()
keep = vp >= 0
vy = va.data.labels[keep]
vrows = vp[keep]
for name in ["mlp32_hidden_final_l2x10", "mlp32_hidden_final", "mlp32_feats_final"]:
    cfg = TRIALS[name]
    rows, y, w = pm.training_rows(tr.data, cfg.points)
    sess_of_row = tr.data.session_ids[tr.data.session_index()[rows]]
    is_held = np.isin(sess_of_row, list(heldset))
    for label, sel in [
        ("all", np.ones_like(is_held)),
        ("held30", is_held),
        ("insample70", ~is_held),
    ]:
        params, info = pm.fit_classifier(
            cfg,
            tr.stats[rows[sel]],
            tr.hidden[rows[sel]] if cfg.use_hidden else None,
            y[sel],
            w[sel],
            valid=(va.stats[vrows], va.hidden[vrows] if cfg.use_hidden else None, vy),
        )
        s = np.asarray(pm.raw_logit(params, va.hidden[vrows], va.stats[vrows]))
        print(
            f"seed {seed} {name:26s} {label:10s} n={sel.sum()} pos={y[sel].sum()} valid {pc.auc_ci(vy, s, n=100)['auc']:.4f} step {info['best_step']}",
            flush=True,
        )
