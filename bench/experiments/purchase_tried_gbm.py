"""Tried 2026-12-08: gradient-boosted trees instead of the MLP for the purchase model.

scikit-learn's HistGradientBoostingClassifier on the same inputs as the current trials
(running session features with out-of-fold priors; optionally the frozen GRU hidden
state), fitted on train_tr's prediction points with early stopping on a slice of the
training rows (not on valid), scored on train_valid. Also the average of the tree
model's and the current MLP's logits. scikit-learn is not a project dependency: install
it beside the venv for this script only.

Usage:
    .venv/bin/pip install --no-deps --target /tmp/sklib scikit-learn threadpoolctl joblib cloudpickle narwhals
    PYTHONPATH=/tmp/sklib .venv/bin/python bench/experiments/purchase_tried_gbm.py [SEED]

Result (seed 0, valid AUC, 204 positives, so one standard error is about 0.017): the
current MLPs 0.774 (hidden state) and 0.765 (features only). Trees on the features
0.763 to 0.769 over four settings; on features plus hidden state 0.760 to 0.771; the
average of a tree model's and the hidden-state MLP's standardised logits 0.773 to
0.780. No better than the MLP on the same features, and the ensemble's +0.006 at best
is a third of a standard error: not worth a second model kind in the serving step.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import numpy as np
import purchase_common as pc
from purchase_select import TRIALS
from sklearn.ensemble import HistGradientBoostingClassifier

from rnnrec_jax import purchase as pm

seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
model = pc.load_nextitem("train_tr", seed)
tr, va, _ = pc.pair_inputs("train_tr", "train_valid", model, 20.0, "split")
vrows, vy = pc.valid_rows(va)
rows, y, _ = pm.training_rows(tr.data, "final")
print(f"train rows {rows.size} (pos {int(y.sum())}), valid {vy.size} (pos {int(vy.sum())})")

mlp = {}
for name in ["mlp32_hidden_final_l2x10", "mlp32_feats_final"]:
    _, info, scores = pc.fit_on_valid(TRIALS[name], tr, va)
    mlp[name] = scores
    print(f"{name:34s} valid {pc.auc_ci(vy, scores, n=200)['auc']:.4f}", flush=True)

GRID = [
    dict(learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=100, l2_regularization=1.0),
    dict(learning_rate=0.05, max_leaf_nodes=31, min_samples_leaf=50, l2_regularization=1.0),
    dict(learning_rate=0.03, max_leaf_nodes=7, min_samples_leaf=200, l2_regularization=1.0),
    dict(learning_rate=0.05, max_depth=3, min_samples_leaf=100, l2_regularization=0.0),
]
inputs = {
    "feats": (tr.stats[rows], va.stats[vrows]),
    "feats+hidden": (
        np.concatenate([tr.stats[rows], tr.hidden[rows]], axis=1),
        np.concatenate([va.stats[vrows], va.hidden[vrows]], axis=1),
    ),
}
for label, (xtr, xva) in inputs.items():
    for k, params in enumerate(GRID):
        t = time.time()
        clf = HistGradientBoostingClassifier(
            max_iter=1000,
            early_stopping=True,
            validation_fraction=0.15,
            n_iter_no_change=30,
            scoring="roc_auc",
            random_state=seed,
            **params,
        )
        clf.fit(xtr, y)
        s = clf.decision_function(xva)
        line = f"gbm {label:13s} grid{k} iters {clf.n_iter_:4d} valid {pc.auc_ci(vy, s, n=200)['auc']:.4f}"
        for name, m in mlp.items():
            z = (s - s.mean()) / s.std() + (m - m.mean()) / m.std()
            line += f" | +{name.split('_')[1]} {pc.auc_ci(vy, z, n=200)['auc']:.4f}"
        print(line + f" ({time.time() - t:.0f}s)", flush=True)
