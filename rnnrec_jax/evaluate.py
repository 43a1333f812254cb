"""Next-item and purchase evaluation under the GRU4Rec protocol (ANCHORS.md).

Every test session starts from a zero state; every next event is a target ranked
against all valid training items; ties are conservative (rank = number of valid items
scoring >= the target). Sessions run session-parallel in batches, which gives exactly
the one-session-at-a-time result: slots never share state and each slot is reset at
its session's first event.

Purchase prediction: the probability is read after the session's last event that
precedes its first buy (all events for sessions without a buy).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnrec_jax import calibration, metrics, models, sampling
from rnnrec_jax.config import ModelConfig
from rnnrec_jax.train import (
    EncodedEvents,
    Events,
    as_session_events,
    encode_events,
    encode_items,
    vocab_size,
)

EVAL_STEPS_PER_CALL = 16
TOP_K = 20


def make_eval_chunk(
    mc: ModelConfig, n_items: int, top_k: int = TOP_K, ensemble: bool = False
) -> Any:
    """Builds the jitted evaluation loop over a chunk of session-parallel steps.

    Args:
      mc: model configuration.
      n_items: real items (validity mask).
      top_k: length of the recommendation lists kept for coverage/Gini.
      ensemble: params and carry carry a leading ensemble axis (`models.stack_params`);
        items are scored by the members' mean softmax probability.

    Returns:
      chunk(params, carry, inputs, targets, reset) -> (carry, (ranks, top, logits)).
    """
    valid = models.valid_item_mask(mc.item_capacity, n_items)
    top_k = min(top_k, mc.item_capacity)

    def step(params: dict, carry: dict, xs: tuple) -> tuple[dict, tuple]:
        inputs, targets, reset, times = xs
        exclude = inputs if mc.exclude_input_item else None
        if ensemble:
            carry = jax.vmap(models.reset_carry, in_axes=(0, None))(carry, reset)
            carry, scores, logit = models.ensemble_step_scores(
                mc, params, carry, inputs, times, valid, exclude
            )
        else:
            carry = models.reset_carry(carry, reset)
            carry, rep, logit = models.encode_step(mc, params, carry, inputs, times)
            scores = models.score_items(params, rep, valid, exclude)
        # Conservative ties: the target itself counts, as does every item tied with it.
        ranks = metrics.target_ranks(scores, targets, valid)
        _, top = jax.lax.top_k(scores, top_k)
        return carry, (ranks, top.astype(jnp.int32), logit)

    def chunk(params: dict, carry: dict, inputs, targets, reset, times):
        return jax.lax.scan(
            lambda c, xs: step(params, c, xs), carry, (inputs, targets, reset, times)
        )

    return jax.jit(chunk)


def evaluate_encoded(
    mc: ModelConfig,
    params: dict,
    enc: EncodedEvents,
    n_items: int,
    *,
    batch_size: int = 512,
    ks: Sequence[int] = (1, 5, 10, 20),
    with_purchase: bool = True,
    calibration: tuple[float, float] = (1.0, 0.0),
    n_bootstrap: int = 1000,
    seed: int = 0,
    ensemble: bool = False,
) -> dict[str, Any]:
    """Evaluates next-item accuracy (and purchase prediction) on encoded sessions.

    Args:
      mc: model configuration.
      params: model params.
      enc: encoded evaluation sessions.
      n_items: real items in the vocabulary.
      batch_size: parallel sessions.
      ks: cut-offs for Recall@K and MRR@K (must be <= 20 for coverage/Gini).
      with_purchase: also score purchases (needs the purchase head).
      calibration: Platt (scale, shift) applied to purchase logits.
      n_bootstrap: bootstrap resamples for the AUC interval.
      seed: bootstrap seed.
      ensemble: `params` are stacked members (`models.stack_params`) of one config.

    Returns:
      JSON-able dict: recall@K, mrr@K, coverage@20, gini@20, n_targets, n_sessions,
      and purchase_* entries when with_purchase.
    """
    with_purchase = with_purchase and mc.purchase_head
    plan = sampling.session_parallel_plan(enc.offsets, batch_size, include_last=with_purchase)
    chunk = make_eval_chunk(mc, n_items, ensemble=ensemble)
    t0 = float(enc.times.min()) if len(enc.times) else 0.0
    if ensemble:
        n_models = jax.tree_util.tree_leaves(params)[0].shape[0]
        carry = models.ensemble_initial_carry(mc, n_models, batch_size)
    else:
        carry = models.initial_carry(mc, batch_size)
    ranks_all, top_all, logit_all = [], [], []
    k = EVAL_STEPS_PER_CALL
    for s0 in range(0, plan.n_steps, k):
        inp = plan.input_event[s0 : s0 + k]
        tgt = plan.target_event[s0 : s0 + k]
        rst = plan.reset[s0 : s0 + k]
        pad = k - inp.shape[0]
        if pad:
            inp = np.concatenate([inp, np.full((pad, batch_size), -1)])
            tgt = np.concatenate([tgt, np.full((pad, batch_size), -1)])
            rst = np.concatenate([rst, np.zeros((pad, batch_size), bool)])
        items_in = np.where(inp >= 0, enc.items[np.maximum(inp, 0)], 0).astype(np.int32)
        items_tgt = np.where(tgt >= 0, enc.items[np.maximum(tgt, 0)], 0).astype(np.int32)
        times = np.where(inp >= 0, enc.times[np.maximum(inp, 0)] - t0, 0).astype(np.float32)
        carry, (ranks, top, logits) = chunk(params, carry, items_in, items_tgt, rst, times)
        ranks_all.append((np.asarray(ranks), tgt, items_tgt))
        top_all.append(np.asarray(top))
        logit_all.append((np.asarray(logits), inp))
    ranks = np.concatenate([r[0].reshape(-1) for r in ranks_all]) if ranks_all else np.zeros(0)
    tgt_ev = np.concatenate([r[1].reshape(-1) for r in ranks_all]) if ranks_all else np.zeros(0)
    tgt_it = np.concatenate([r[2].reshape(-1) for r in ranks_all]) if ranks_all else np.zeros(0)
    counted = (tgt_ev >= 0) & (tgt_it > 0)
    ranks = ranks[counted]
    report: dict[str, Any] = {
        "n_targets": int(counted.sum()),
        "n_oov_targets": int(((tgt_ev >= 0) & (tgt_it == 0)).sum()),
        "n_sessions": len(enc.offsets) - 1,
    }
    acc = metrics.RankingAccumulator(tuple(ks))
    acc.update(ranks)
    ranking = acc.result()
    for kk in ks:
        # An empty evaluation reports 0.0 (the accumulator says NaN).
        report[f"recall@{kk}"] = ranking[f"recall@{kk}"] if len(ranks) else 0.0
        report[f"mrr@{kk}"] = ranking[f"mrr@{kk}"] if len(ranks) else 0.0
    if top_all:
        width = top_all[0].shape[-1]
        tops = np.concatenate([t.reshape(-1, width) for t in top_all])[counted]
        exposure = metrics.exposure_counts(tops, mc.item_capacity)
        mask = np.asarray(models.valid_item_mask(mc.item_capacity, n_items))
        report["coverage@20"] = metrics.catalogue_coverage(exposure, mask)
        report["gini@20"] = gini(exposure[mask])
    if with_purchase:
        logits = np.concatenate([lg[0].reshape(-1) for lg in logit_all])
        inp_ev = np.concatenate([lg[1].reshape(-1) for lg in logit_all])
        report.update(_purchase_report(enc, logits, inp_ev, calibration, n_bootstrap, seed))
    return report


def prediction_points(enc: EncodedEvents) -> np.ndarray:
    """Per session, the event index after which the purchase is predicted (-1 if none).

    The last event before the session's first buy; sessions whose first buy precedes
    all their events get -1 (the prediction is then made from the empty state).
    """
    n_sessions = len(enc.offsets) - 1
    sess = np.repeat(np.arange(n_sessions), np.diff(enc.offsets))
    point = np.full(n_sessions, -1, np.int64)
    idx = np.flatnonzero(enc.before_buy)
    # Events are time-ordered within a session, so the last write wins.
    point[sess[idx]] = idx
    return point


def _purchase_report(
    enc: EncodedEvents,
    logits: np.ndarray,
    inp_ev: np.ndarray,
    calibration: tuple[float, float],
    n_bootstrap: int,
    seed: int,
) -> dict[str, Any]:
    by_event = np.full(len(enc.items), np.nan)
    has = inp_ev >= 0
    by_event[inp_ev[has]] = logits[has]
    point = prediction_points(enc)
    labels = enc.buy_label[enc.offsets[:-1]].astype(np.float64)
    raw = np.where(point >= 0, by_event[np.maximum(point, 0)], np.nan)
    # No event before the buy: fall back to the mean logit (no information).
    raw = np.where(np.isfinite(raw), raw, np.nanmean(raw) if np.isfinite(raw).any() else 0.0)
    scale, shift = calibration
    prob = 1.0 / (1.0 + np.exp(-(scale * raw + shift)))
    auc = roc_auc(labels, raw)
    lo, hi = bootstrap_auc_ci(labels, raw, n_bootstrap, seed)
    base = float(labels.mean()) if len(labels) else 0.0
    return {
        "purchase_auc": auc,
        "purchase_auc_ci95": [lo, hi],
        "purchase_brier": metrics.brier_score(labels, prob),
        "purchase_brier_base_rate": metrics.base_rate_brier(labels),
        "purchase_base_rate": base,
        "purchase_n_sessions": len(labels),
        "purchase_n_positive": int(labels.sum()),
        "purchase_n_no_prefix": int((point < 0).sum()),
        "purchase_reliability": reliability_bins(labels, prob),
        "_purchase_logits": raw.tolist(),
        "_purchase_labels": labels.tolist(),
    }


def evaluate(
    result_or_cfg: Any,
    events: Events,
    *,
    params: dict | None = None,
    vocab: Any = None,
    buy_times: dict | None = None,
    batch_size: int = 512,
    calibration: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Evaluates a trained model on raw events (GRU4Rec protocol).

    Args:
      result_or_cfg: a `train.TrainResult`, or a ModelConfig (then pass params, vocab).
      events: evaluation sessions.
      params: model params (when result_or_cfg is a ModelConfig).
      vocab: item vocabulary (idem).
      buy_times: session id -> first buy time; enables the purchase metrics.
      batch_size: parallel sessions.
      calibration: Platt (scale, shift); default the result's own calibration.

    Returns:
      The report dict (see `evaluate_encoded`), without private keys.
    """
    if isinstance(result_or_cfg, ModelConfig):
        mc = result_or_cfg
    else:
        mc = result_or_cfg.model_cfg
        params = result_or_cfg.params
        vocab = result_or_cfg.vocab
        if calibration is None:
            calibration = result_or_cfg.purchase_calibration
    # The protocol drops test events on items unseen in training (the canonical split
    # has none). Fed instead, each would step the state with an untrained row.
    events = as_session_events(events)
    known = encode_items(vocab, events.item_ids) > 0
    if not known.all():
        events = events.filter_mask(known)
    enc = encode_events(events, vocab, buy_times=buy_times)
    report = evaluate_encoded(
        mc,
        params,
        enc,
        vocab_size(vocab),
        batch_size=batch_size,
        with_purchase=buy_times is not None,
        calibration=calibration or (1.0, 0.0),
    )
    report["n_dropped_unknown_events"] = int((~known).sum())
    return {k: v for k, v in report.items() if not k.startswith("_")}


# ------------------------------------------------------------------ small metrics


def gini(exposure: np.ndarray) -> float:
    """Gini coefficient of non-negative exposure counts (0 = equal, 1 = one item).

    `metrics.gini_index`, except that no exposure at all gives 0.0 instead of NaN.
    """
    x = np.asarray(exposure, np.float64)
    if x.size == 0 or x.sum() == 0:
        return 0.0
    return metrics.gini_index(x)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC (`metrics.roc_auc`, ties count one half); NaN when a class is missing."""
    labels = np.asarray(labels)
    if labels.size == 0 or np.all(labels > 0) or not np.any(labels > 0):
        return float("nan")
    return metrics.roc_auc(labels > 0, scores)


def bootstrap_auc_ci(
    labels: np.ndarray, scores: np.ndarray, n: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile bootstrap interval of the AUC (`metrics.bootstrap_ci`, sessions resampled)."""
    labels = np.asarray(labels) > 0
    if labels.size == 0 or labels.all() or not labels.any():
        return (float("nan"), float("nan"))
    ci = metrics.bootstrap_ci(metrics.roc_auc, labels, np.asarray(scores), n=n, seed=seed)
    return (ci.low, ci.high)


def reliability_bins(labels: np.ndarray, prob: np.ndarray, n_bins: int = 10) -> list[dict]:
    """Equal-count bins of predicted probability with the observed rate per bin.

    Kept here rather than `metrics.reliability_bins` (equal-width bins): with a base
    rate of ~6% almost every prediction falls into the first equal-width bin.
    """
    order = np.argsort(prob, kind="mergesort")
    out = []
    for part in np.array_split(order, n_bins):
        if len(part) == 0:
            continue
        out.append(
            {
                "mean_predicted": float(prob[part].mean()),
                "observed_rate": float(labels[part].mean()),
                "count": len(part),
            }
        )
    return out


def fit_platt(logits: np.ndarray, labels: np.ndarray, l2: float = 1e-3) -> tuple[float, float]:
    """Platt scaling of the joint purchase head (`rnnrec_jax.calibration.fit_platt`).

    Args:
      logits: raw purchase logits.
      labels: 0/1 labels.
      l2: small ridge on (a - 1, b) for stability with few positives.

    Returns:
      (a, b).
    """
    return calibration.fit_platt(logits, labels, l2)


def n_items_of(vocab: Any) -> int:
    """Number of real items of a vocabulary (dict or object)."""
    return vocab_size(vocab)
