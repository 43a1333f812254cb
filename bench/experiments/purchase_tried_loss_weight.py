"""Tried 2026-12-07, not kept: a larger purchase-loss weight in the next-item model.

The default next-item config is trained on train_tr with the joint purchase head's loss
weight W (default 0.1); reported: its next-item Recall@20 / MRR@20 on train_valid, the
joint head's valid AUC, and the purchase classifiers fitted on its states (valid AUC).

Usage:
    .venv/bin/python bench/experiments/purchase_tried_loss_weight.py SEED W[,W...]
    .venv/bin/python bench/experiments/purchase_tried_loss_weight.py 0 0.1,0.5,1.0

Result (seed 0): W 0.1: MRR@20 0.2392, joint 0.657, classifier 0.774 with the hidden
state; W 0.5: 0.2401, 0.631, 0.756; W 1.0: 0.2407, 0.617, 0.720. A heavier joint loss
makes the joint head and the states worse for the purchase classifier.
"""

import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import purchase_common as pc
from common import first_buy_times, split
from purchase_select import TRIALS

from rnnrec_jax.configs.default import get_config
from rnnrec_jax.train import train_and_evaluate

seed = int(sys.argv[1])
weights = [float(x) for x in sys.argv[2].split(",")]
for pw in weights:
    mc, tc = get_config()
    mc = dataclasses.replace(mc, purchase_loss_weight=pw)
    t = time.time()
    res = train_and_evaluate(
        mc,
        dataclasses.replace(tc, seed=seed),
        split("train_tr"),
        buy_times=first_buy_times(),
        progress=False,
    )
    from rnnrec_jax import evaluate
    from rnnrec_jax.train import encode_events

    rv = evaluate.evaluate_encoded(
        res.model_cfg,
        res.params,
        encode_events(split("train_valid"), res.vocab, buy_times=first_buy_times()),
        len(res.vocab),
    )
    model = pc.NextItem(res.model_cfg, res.params, res.vocab, {})
    tr, va, _ = pc.pair_inputs("train_tr", "train_valid", model, 20.0, "split")
    vrows, vy = pc.valid_rows(va)
    out = [f"joint {pc.auc_ci(vy, va.joint_logit[vrows], n=20)['auc']:.4f}"]
    for name in ["mlp32_hidden_final_l2x10", "mlp32_feats_final"]:
        a, step = pc.fit_and_score(TRIALS[name], tr, va, n_boot=20)
        out.append(f"{name} {a['auc']:.4f}@{step}")
    ev = f"R@20 {rv['recall@20']:.4f} MRR@20 {rv['mrr@20']:.4f}"
    print(f"seed {seed} pw {pw}: {ev} " + "  ".join(out) + f" ({time.time() - t:.0f}s)", flush=True)
