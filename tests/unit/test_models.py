"""Model wiring: init, masking, state reset, variants, batched == one-at-a-time eval."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnrec_jax import models
from rnnrec_jax.config import ModelConfig, TrainConfig
from rnnrec_jax.evaluate import evaluate_encoded
from rnnrec_jax.train import EncodedEvents

pytestmark = pytest.mark.unit

TINY = ModelConfig(item_capacity=16, hidden_sizes=(8,), embedding_mode="tied", n_items=10)


def _encoded(sessions):
    items = np.concatenate([np.asarray(s, np.int32) for s in sessions])
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sessions])]).astype(np.int64)
    n = len(items)
    return EncodedEvents(
        items,
        np.arange(n, dtype=np.float64),
        offsets,
        np.array([str(i) for i in range(len(sessions))]),
        np.zeros(n, np.float32),
        np.ones(n, bool),
    )


def test_config_json_round_trip():
    mc = dataclasses.replace(TINY, hidden_sizes=(8, 4), attention=True)
    tc = TrainConfig(batch_size=7, optimiser="adamw")
    assert ModelConfig.from_json(mc.to_json()) == mc
    assert TrainConfig.from_json(tc.to_json()) == tc
    with pytest.raises(ValueError):
        ModelConfig.from_json('{"bogus": 1}')


def test_gru4rec_init_ranges_and_zero_bias():
    cfg = dataclasses.replace(TINY, item_capacity=64, n_items=50, hidden_sizes=(20,))
    p = models.init_params(cfg, jax.random.PRNGKey(0))
    bound = np.sqrt(6.0 / (51 + 20))
    assert float(jnp.abs(p["item_out"]).max()) <= bound
    assert float(jnp.abs(p["item_out"]).max()) > 0.8 * bound
    assert float(jnp.abs(p["item_bias"]).max()) == 0.0
    w_h = p["encoder"]["gru_0"]["w_h"]
    assert float(jnp.abs(w_h).max()) <= np.sqrt(6.0 / (20 + 20))


def test_scores_mask_padding_and_rows_beyond_vocabulary():
    p = models.init_params(TINY, jax.random.PRNGKey(0))
    rep = jnp.ones((2, 8))
    s = models.score_items(p, rep, models.valid_item_mask(16, 10))
    assert np.all(np.asarray(s[:, 0]) == models.MASKED_SCORE)
    assert np.all(np.asarray(s[:, 11:]) == models.MASKED_SCORE)
    assert np.all(np.asarray(s[:, 1:11]) > models.MASKED_SCORE)


@pytest.mark.parametrize(
    "over",
    [
        {},
        {"cell": "lstm"},
        {"embedding_mode": "none"},
        {"embedding_mode": "separate", "embedding_dim": 5},
        {"attention": True, "attention_window": 3},
        {"hidden_sizes": (8, 6), "purchase_head": True, "dropout_hidden": 0.3},
    ],
)
def test_variants_step_and_reset(over):
    cfg = dataclasses.replace(TINY, **over)
    p = models.init_params(cfg, jax.random.PRNGKey(1))
    carry = models.initial_carry(cfg, 3)
    items = jnp.array([1, 2, 3])
    c1, rep, logit = models.encode_step(cfg, p, carry, items)
    assert rep.shape == (3, cfg.output_dim) and logit.shape == (3,)
    _c2, rep2, _ = models.encode_step(cfg, p, c1, items)
    assert not np.allclose(rep, rep2)  # the state carries information
    # Resetting a slot gives exactly the fresh-session output for that slot.
    reset = jnp.array([True, False, False])
    _c3, rep3, _ = models.encode_step(cfg, p, models.reset_carry(c1, reset), items)
    np.testing.assert_allclose(rep3[0], rep[0], rtol=1e-6)
    np.testing.assert_allclose(rep3[1:], rep2[1:], rtol=1e-6)


@pytest.mark.parametrize("over", [{}, {"attention": True, "attention_window": 4}])
def test_batched_eval_equals_one_session_at_a_time(over):
    # With batch 2 slots serve several sessions each; a missing reset would leak the
    # previous session's state and change the ranks.
    cfg = dataclasses.replace(TINY, **over)
    p = models.init_params(cfg, jax.random.PRNGKey(2))
    # Make scores depend strongly on the state so a leak would show.
    p = jax.tree_util.tree_map(lambda x: x * 5.0, p)
    rng = np.random.default_rng(0)
    sessions = [rng.integers(1, 11, size=rng.integers(2, 6)).tolist() for _ in range(9)]
    batched = evaluate_encoded(cfg, p, _encoded(sessions), 10, batch_size=2, with_purchase=False)
    single = [
        evaluate_encoded(cfg, p, _encoded([s]), 10, batch_size=1, with_purchase=False)
        for s in sessions
    ]
    n = sum(r["n_targets"] for r in single)
    assert batched["n_targets"] == n
    for key in ("recall@1", "recall@5", "mrr@20"):
        expect = sum(r[key] * r["n_targets"] for r in single) / n
        assert batched[key] == pytest.approx(expect, abs=1e-9)


def test_conservative_ties_rank_counts_all_tied_items():
    cfg = TINY
    p = models.init_params(cfg, jax.random.PRNGKey(0))
    # All item embeddings and biases equal: every valid item ties with the target.
    p = {**p, "item_out": jnp.ones_like(p["item_out"]), "item_bias": jnp.zeros(16)}
    rep = evaluate_encoded(cfg, p, _encoded([[1, 2]]), 10, batch_size=1, with_purchase=False)
    assert rep["recall@5"] == 0.0 and rep["recall@10"] == 1.0  # rank = 10
    assert rep["mrr@10"] == pytest.approx(0.1)
