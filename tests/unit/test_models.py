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
NARM = {
    "attention": True,
    "attention_mode": "residual",
    "attention_window": 4,
    "readout_last_item": True,
    "readout_mean_item": True,
}


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
        NARM,
        {**NARM, "output_projection": True, "score_norm": True, "embedding_mode": "none"},
        {"output_projection": True, "score_norm": True, "cell": "lstm"},
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


@pytest.mark.parametrize(
    "over", [{}, {"attention": True, "attention_window": 4}, {**NARM, "score_norm": True}]
)
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


def _run(cfg, params, sessions_steps):
    carry = models.initial_carry(cfg, sessions_steps.shape[1])
    reps = []
    for items in sessions_steps:
        carry, rep, _ = models.encode_step(cfg, params, carry, jnp.asarray(items))
        reps.append(rep)
    return jnp.stack(reps)


def test_residual_readout_and_projection_start_as_the_plain_gru():
    # NARM/STAMP readout (zero-initialised) and the identity output projection must
    # leave a freshly initialised model's output equal to the plain GRU's.
    plain = TINY
    rich = dataclasses.replace(TINY, **NARM, output_projection=True)
    p_rich = models.init_params(rich, jax.random.PRNGKey(3))
    p_plain = {**p_rich, "encoder": {"gru_0": p_rich["encoder"]["gru_0"]}}
    steps = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9], [1, 1, 2], [3, 5, 8]])
    np.testing.assert_allclose(_run(rich, p_rich, steps), _run(plain, p_plain, steps), rtol=1e-6)
    assert float(jnp.abs(p_rich["encoder"]["readout"]["kernel"]).max()) == 0.0
    np.testing.assert_array_equal(p_rich["encoder"]["out_proj"]["kernel"], np.eye(8))


def test_residual_readout_uses_the_session_history():
    cfg = dataclasses.replace(TINY, **NARM)
    p = models.init_params(cfg, jax.random.PRNGKey(4))
    k = p["encoder"]["readout"]["kernel"]
    p["encoder"]["readout"]["kernel"] = jax.random.normal(jax.random.PRNGKey(5), k.shape)
    # Same last item and state path would differ only through the pooled history.
    a = _run(cfg, p, np.array([[1], [2], [3]]))[-1]
    b = _run(cfg, p, np.array([[4], [2], [3]]))[-1]
    assert not np.allclose(a, b)


def test_cosine_scores_are_bounded_by_the_scale():
    cfg = dataclasses.replace(TINY, score_norm=True, score_scale_init=7.0)
    p = models.init_params(cfg, jax.random.PRNGKey(6))
    assert models.uses_score_norm(p) and not models.uses_score_norm(
        models.init_params(TINY, jax.random.PRNGKey(6))
    )
    carry = models.initial_carry(cfg, 2)
    _, rep, _ = models.encode_step(cfg, p, carry, jnp.array([1, 2]))
    np.testing.assert_allclose(jnp.linalg.norm(rep, axis=-1), 7.0, rtol=1e-4)
    p["item_out"] = p["item_out"] * 100.0  # cosine scores ignore the row norms
    s = np.asarray(models.score_items(p, rep, models.valid_item_mask(16, 10)))[:, 1:11]
    assert np.abs(s).max() <= 7.0 + 1e-4


def test_readout_extras_need_the_residual_attention():
    with pytest.raises(ValueError):
        ModelConfig(readout_last_item=True)
    with pytest.raises(ValueError):
        ModelConfig(attention=True, attention_mode="bogus")


def test_exclude_input_item_masks_the_clicked_item_only_at_inference():
    p = models.init_params(TINY, jax.random.PRNGKey(7))
    rep = jnp.ones((2, 8))
    valid = models.valid_item_mask(16, 10)
    s = np.asarray(models.score_items(p, rep, valid, exclude=jnp.array([3, 7])))
    base = np.asarray(models.score_items(p, rep, valid))
    assert s[0, 3] == models.MASKED_SCORE and s[1, 7] == models.MASKED_SCORE
    keep = np.ones_like(s, bool)
    keep[0, 3] = keep[1, 7] = False
    np.testing.assert_array_equal(s[keep], base[keep])
    # Evaluation: with the flag the input item can no longer outrank the target.
    cfg = dataclasses.replace(TINY, exclude_input_item=True)
    p = {**p, "item_out": jnp.zeros_like(p["item_out"]), "item_bias": jnp.zeros(16)}
    p["item_bias"] = p["item_bias"].at[1].set(5.0).at[2].set(4.0)
    with_flag = evaluate_encoded(cfg, p, _encoded([[1, 2]]), 10, batch_size=1, with_purchase=False)
    without = evaluate_encoded(TINY, p, _encoded([[1, 2]]), 10, batch_size=1, with_purchase=False)
    assert with_flag["recall@1"] == 1.0 and without["recall@1"] == 0.0
