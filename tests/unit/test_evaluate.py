"""GRU4Rec-protocol evaluation: ranks, Recall/MRR, exposure, purchase report, vocabularies."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from rnnrec_jax import evaluate, metrics, models
from rnnrec_jax.config import ModelConfig
from rnnrec_jax.data.vocabulary import ItemVocabulary
from rnnrec_jax.train import EncodedEvents

pytestmark = pytest.mark.unit

CFG = ModelConfig(item_capacity=32, hidden_sizes=(8,), embedding_mode="tied", n_items=25)
N_ITEMS = 25


def _encoded(sessions, buy_label=None):
    items = np.concatenate([np.asarray(s, np.int32) for s in sessions])
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sessions])]).astype(np.int64)
    n = len(items)
    label = np.zeros(n, np.float32) if buy_label is None else buy_label
    return EncodedEvents(
        items,
        np.arange(n, dtype=np.float64),
        offsets,
        np.array([str(i) for i in range(len(sessions))]),
        label,
        np.ones(n, bool),
    )


def _reference(cfg, params, sessions, n_items):
    """One session at a time in NumPy: conservative ranks and top-20 lists."""
    valid = np.asarray(models.valid_item_mask(cfg.item_capacity, n_items))
    ranks, tops = [], []
    for s in sessions:
        carry = models.initial_carry(cfg, 1)
        for x, y in itertools.pairwise(s):
            carry, rep, _ = models.encode_step(cfg, params, carry, jnp.array([x]))
            sc = np.asarray(models.score_items(params, rep, valid))[0]
            ranks.append(int(np.sum((sc >= sc[y]) & valid)))
            tops.append(np.argsort(-sc, kind="stable")[:20])
    return np.array(ranks), np.array(tops)


@pytest.fixture(scope="module")
def setup():
    p = models.init_params(CFG, jax.random.PRNGKey(0))
    p = jax.tree_util.tree_map(lambda x: x * 8.0, p)
    rng = np.random.default_rng(1)
    sessions = [rng.integers(1, N_ITEMS + 1, size=rng.integers(2, 7)).tolist() for _ in range(12)]
    return p, sessions


def test_recall_mrr_match_a_one_session_at_a_time_reference(setup):
    p, sessions = setup
    rep = evaluate.evaluate_encoded(CFG, p, _encoded(sessions), N_ITEMS, batch_size=3)
    ranks, _ = _reference(CFG, p, sessions, N_ITEMS)
    assert rep["n_targets"] == len(ranks) == sum(len(s) - 1 for s in sessions)
    for k in (1, 5, 10, 20):
        assert rep[f"recall@{k}"] == pytest.approx(np.mean(ranks <= k), abs=1e-12)
        mrr = np.mean(np.where(ranks <= k, 1.0 / ranks, 0.0))
        assert rep[f"mrr@{k}"] == pytest.approx(mrr, abs=1e-12)


def test_coverage_and_gini_of_the_top20_lists(setup):
    p, sessions = setup
    rep = evaluate.evaluate_encoded(CFG, p, _encoded(sessions), N_ITEMS, batch_size=4)
    _, tops = _reference(CFG, p, sessions, N_ITEMS)
    exposure = np.bincount(tops.reshape(-1), minlength=CFG.item_capacity)[1 : N_ITEMS + 1]
    assert rep["coverage@20"] == pytest.approx(np.mean(exposure > 0))
    x = np.sort(exposure.astype(float))
    n = len(x)
    expected = (n + 1 - 2 * np.sum(np.cumsum(x)) / x.sum()) / n
    assert rep["gini@20"] == pytest.approx(expected)


def test_ranks_are_the_shared_conservative_ranks():
    scores = jnp.array([[0.0, 1.0, 1.0, 0.5, 2.0], [0.0, 3.0, 1.0, 1.0, 1.0]])
    targets = jnp.array([2, 3])
    valid = jnp.array([False, True, True, True, True])
    np.testing.assert_array_equal(metrics.target_ranks(scores, targets, valid), [3, 4])


def test_small_metric_wrappers():
    assert evaluate.gini(np.array([0, 0, 0, 4])) == pytest.approx(0.75)
    assert evaluate.gini(np.array([2, 2, 2])) == pytest.approx(0.0)
    assert evaluate.gini(np.zeros(3)) == 0.0
    assert evaluate.roc_auc(np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.5, 0.5])) == 0.875
    assert np.isnan(evaluate.roc_auc(np.zeros(4), np.arange(4.0)))
    y = np.array([0, 1] * 20)
    lo, hi = evaluate.bootstrap_auc_ci(y, y + np.arange(40.0) / 30, n=50)
    assert 0.5 < lo <= hi <= 1.0


def test_purchase_report_and_platt():
    cfg = dataclasses.replace(CFG, purchase_head=True)
    p = models.init_params(cfg, jax.random.PRNGKey(2))
    rng = np.random.default_rng(3)
    sessions = [rng.integers(1, N_ITEMS + 1, size=rng.integers(2, 5)).tolist() for _ in range(40)]
    bought = rng.random(40) < 0.3
    label = np.repeat(bought, [len(s) for s in sessions]).astype(np.float32)
    enc = _encoded(sessions, label)
    rep = evaluate.evaluate_encoded(cfg, p, enc, N_ITEMS, batch_size=8, n_bootstrap=50)
    logits = np.array(rep["_purchase_logits"])
    labels = np.array(rep["_purchase_labels"])
    np.testing.assert_array_equal(labels, bought.astype(float))
    assert rep["purchase_auc"] == pytest.approx(metrics.roc_auc(labels, logits))
    prob = 1.0 / (1.0 + np.exp(-logits))
    assert rep["purchase_brier"] == pytest.approx(np.mean((prob - labels) ** 2))
    assert rep["purchase_brier_base_rate"] == pytest.approx(labels.mean() * (1 - labels.mean()))
    assert sum(b["count"] for b in rep["purchase_reliability"]) == 40
    # Platt scaling recovers a known logistic link.
    x = np.linspace(-4, 4, 4000)
    y = (np.random.default_rng(4).random(x.size) < 1 / (1 + np.exp(-(2 * x - 1)))).astype(float)
    a, b = evaluate.fit_platt(x, y)
    assert a == pytest.approx(2.0, abs=0.3) and b == pytest.approx(-1.0, abs=0.3)


def test_item_vocabulary_is_a_drop_in_for_the_dict(setup):
    p, sessions = setup
    ids = [f"i{k:03d}" for k in range(1, N_ITEMS + 1)]
    vocab_dict = {item: k for k, item in enumerate(ids, start=1)}
    vocab_obj = ItemVocabulary(ids, capacity=CFG.item_capacity)
    rows = [
        (str(s), ids[it - 1], float(t))
        for s, sess in enumerate(sessions)
        for t, it in enumerate(sess)
    ]
    frame = pd.DataFrame(rows, columns=["SessionId", "ItemId", "Time"])
    a = evaluate.evaluate(CFG, frame, params=p, vocab=vocab_dict, batch_size=5)
    b = evaluate.evaluate(CFG, frame, params=p, vocab=vocab_obj, batch_size=5)
    assert a == b
    assert a["n_targets"] == sum(len(s) - 1 for s in sessions)
    assert evaluate.n_items_of(vocab_obj) == evaluate.n_items_of(vocab_dict) == N_ITEMS


def test_ensemble_of_one_equals_the_model_and_of_two_is_servable(setup):
    p, sessions = setup
    enc = _encoded(sessions)
    single = evaluate.evaluate_encoded(CFG, p, enc, N_ITEMS, batch_size=3)
    one = evaluate.evaluate_encoded(
        CFG, models.stack_params([p]), enc, N_ITEMS, batch_size=3, ensemble=True
    )
    for k in ("recall@1", "recall@20", "mrr@20", "coverage@20"):
        assert one[k] == pytest.approx(single[k], abs=1e-9)
    q = models.init_params(CFG, jax.random.PRNGKey(9))
    two = evaluate.evaluate_encoded(
        CFG, models.stack_params([p, q]), enc, N_ITEMS, batch_size=5, ensemble=True
    )
    assert two["n_targets"] == single["n_targets"]
    # Same result when the sessions run one slot at a time (no state leaks across slots).
    two_b1 = evaluate.evaluate_encoded(
        CFG, models.stack_params([p, q]), enc, N_ITEMS, batch_size=1, ensemble=True
    )
    assert two_b1["mrr@20"] == pytest.approx(two["mrr@20"], abs=1e-9)


def test_platt_scaling_stays_finite_on_wide_nearly_separable_logits():
    # Undamped Newton returned a ~ 2e6 (a step function) on data like these.
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, 2972)
    y = (rng.random(x.size) < 1 / (1 + np.exp(-(0.6 * x - 3.4)))).astype(float)
    a, b = evaluate.fit_platt(x, y)
    assert a == pytest.approx(0.6, abs=0.25) and b == pytest.approx(-3.4, abs=0.8)


def test_events_on_unknown_items_are_dropped_as_the_protocol_does(setup):
    # Before, an unknown item was fed as index 0 (an untrained row) and stepped the
    # state; the protocol drops such test events.
    p, sessions = setup
    ids = [f"i{k:03d}" for k in range(1, N_ITEMS + 1)]
    vocab = {item: k for k, item in enumerate(ids, start=1)}
    rows = [(str(s), ids[it - 1], float(2 * t)) for s, sess in enumerate(sessions)
            for t, it in enumerate(sess)]  # fmt: skip
    clean = pd.DataFrame(rows, columns=["SessionId", "ItemId", "Time"])
    # One unknown item inside every session (after its first event).
    extra = [(str(s), "never-seen", 1.0) for s in range(len(sessions))]
    dirty = pd.DataFrame(rows + extra, columns=["SessionId", "ItemId", "Time"])
    a = evaluate.evaluate(CFG, clean, params=p, vocab=vocab, batch_size=5)
    b = evaluate.evaluate(CFG, dirty, params=p, vocab=vocab, batch_size=5)
    assert b.pop("n_dropped_unknown_events") == len(sessions)
    assert a.pop("n_dropped_unknown_events") == 0
    assert a == b
