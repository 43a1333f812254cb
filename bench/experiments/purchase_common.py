"""Shared loading for the purchase-model experiments (yoochoose-1pct canonical split).

Builds, for a cached frozen next-item model (bench/experiments/purchase_nextitem.py),
the purchase model's inputs on a training split (out-of-fold priors) and on an
evaluation split (priors from the whole training split): running statistics at every
event, GRU hidden states and the jointly trained head's logits.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from common import RAW, split
from purchase_nextitem import cache_path

from rnnrec_jax import purchase as pm
from rnnrec_jax.checkpoint import unflatten_tree
from rnnrec_jax.config import ModelConfig
from rnnrec_jax.data.raw import read_yoochoose_buys, read_yoochoose_clicks
from rnnrec_jax.metrics import bootstrap_ci, roc_auc
from rnnrec_jax.train import encode_items


@cache
def buys():
    """Raw buys."""
    return read_yoochoose_buys(RAW / "buys.csv.gz")


@cache
def categories(name: str) -> np.ndarray:
    """Category of every event of a split file (joined from the raw clicks)."""
    return pm.attach_categories(split(name), _clicks())


@cache
def _clicks():
    return read_yoochoose_clicks(RAW / "clicks.csv.gz")


@dataclass
class NextItem:
    """A cached frozen next-item model."""

    cfg: ModelConfig
    params: dict
    vocab: dict
    meta: dict

    def encode(self, ids: np.ndarray) -> np.ndarray:
        return encode_items(self.vocab, ids)


def load_nextitem(train: str, seed: int) -> NextItem:
    """Load a model cached by purchase_nextitem.py."""
    z = np.load(cache_path(train, seed))
    meta = json.loads(str(z["meta"]))
    flat = {k[len("params/") :]: z[k] for k in z.files if k.startswith("params/")}
    params = jax.tree_util.tree_map(jax.numpy.asarray, unflatten_tree(flat))
    vocab = {str(i): k + 1 for k, i in enumerate(z["vocab_ids"].tolist())}
    return NextItem(ModelConfig.from_json(meta["model_cfg"]), params, vocab, meta)


@dataclass
class SplitInputs:
    """Everything the classifier needs about one split."""

    data: pm.TrainingEvents
    stats: np.ndarray
    hidden: np.ndarray
    joint_logit: np.ndarray


def _inputs(name: str, model: NextItem, priors: pm.EventPriors, data) -> SplitInputs:
    stats = pm.batch_stats(data.items, data.times, data.offsets, priors)
    hidden, joint = pm.hidden_states(model.cfg, model.params, data.items, data.times, data.offsets)
    return SplitInputs(data, stats, hidden, joint)


def prior_source_events(
    source: str, train_name: str, eval_name: str, model: NextItem
) -> pm.TrainingEvents:
    """Events the priors are learned from.

    'split': the training split's sessions. 'raw': every raw click of the sessions
    that end before the evaluation period starts (minus evaluation sessions), with
    buys before that cut only: all training-period data, unfiltered by the split's
    support and length rules.
    """
    if source == "split":
        return pm.prepare_events(split(train_name), buys(), model.encode, categories(train_name))
    ev = split(eval_name)
    cut = float(ev.times.min())
    raw = pm.training_period_sessions(_clicks(), cut, exclude=ev.session_keys())
    b = buys()
    b = b.filter_mask(b.times < cut)
    return pm.prepare_events(raw, b, model.encode, raw.categories)


def pair_inputs(
    train_name: str, eval_name: str, model: NextItem, smoothing: float, source: str = "split"
) -> tuple[SplitInputs, SplitInputs, pm.PriorTables]:
    """Training rows (out-of-fold priors) and evaluation rows (priors from all training)."""
    prior_data = prior_source_events(source, train_name, eval_name, model)
    tr_data = pm.prepare_events(split(train_name), buys(), model.encode, categories(train_name))
    tr_priors = pm.out_of_fold_event_priors(
        tr_data, model.cfg.item_capacity, smoothing=smoothing, prior_data=prior_data
    )
    tables = pm.build_priors(prior_data, model.cfg.item_capacity, smoothing=smoothing)
    ev_data = pm.prepare_events(split(eval_name), buys(), model.encode, categories(eval_name))
    ev_priors = pm.event_priors(ev_data, tables)
    return (
        _inputs(train_name, model, tr_priors, tr_data),
        _inputs(eval_name, model, ev_priors, ev_data),
        tables,
    )


def auc_ci(labels: np.ndarray, scores: np.ndarray, n: int = 1000) -> dict:
    """AUC with a percentile bootstrap 95% interval."""
    ci = bootstrap_ci(roc_auc, labels, scores, n=n, seed=0)
    return {"auc": ci.estimate, "ci95": [ci.low, ci.high]}


def valid_rows(va: SplitInputs) -> tuple[np.ndarray, np.ndarray]:
    """Prediction-point rows and labels of the evaluation sessions that have one."""
    points = va.data.prediction_points()
    keep = points >= 0
    return points[keep], va.data.labels[keep]


def fit_on_valid(
    cfg: pm.PurchaseConfig, tr: SplitInputs, va: SplitInputs
) -> tuple[dict, dict, np.ndarray]:
    """Fit `cfg` on `tr` with early stopping on `va`: (params, fit info, `va` logits)."""
    vrows, vy = valid_rows(va)
    rows, y, w = pm.training_rows(tr.data, cfg.points)
    params, info = pm.fit_classifier(
        cfg,
        tr.stats[rows],
        tr.hidden[rows] if cfg.use_hidden else None,
        y,
        w,
        valid=(va.stats[vrows], va.hidden[vrows] if cfg.use_hidden else None, vy),
    )
    return params, info, np.asarray(pm.raw_logit(params, va.hidden[vrows], va.stats[vrows]))


def fit_and_score(
    cfg: pm.PurchaseConfig, tr: SplitInputs, va: SplitInputs, n_boot: int = 200
) -> tuple[dict, int]:
    """Fit `cfg` on `tr` (early stopping on `va`), score `va`: AUC with interval, best step."""
    _, info, scores = fit_on_valid(cfg, tr, va)
    return auc_ci(valid_rows(va)[1], scores, n=n_boot), info["best_step"]
