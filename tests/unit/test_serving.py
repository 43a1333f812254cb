"""The jitted serving step: parity with the offline evaluator, no recompilation, masks."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd
import pytest

from rnnrec_jax import metrics, models
from rnnrec_jax.cli import load_config
from rnnrec_jax.config import ModelConfig
from rnnrec_jax.data.encoded import session_grid
from rnnrec_jax.data.vocabulary import ItemVocabulary
from rnnrec_jax.evaluate import evaluate
from rnnrec_jax.model_io import TrainedModel, load_trained_model
from rnnrec_jax.serving import ServingModel, compile_events, load_serving_model
from tests.serving_models import cached_tiny_model

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    return cached_tiny_model(tmp_path_factory)


@pytest.fixture(scope="module")
def trained(tiny: tuple[Path, pd.DataFrame, pd.DataFrame]) -> TrainedModel:
    return load_trained_model(tiny[0])


@pytest.fixture(scope="module")
def model(trained: TrainedModel) -> ServingModel:
    return ServingModel.from_trained(trained, buckets=(8, 32, 128, 512), k=20)


def replay_ranks(model: ServingModel, test_df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Event by event (sessions in parallel rows, each from a fresh carry): for every
    next-event target, its rank in the full scores and its 1-based position in the
    step's top-K (K + 1 when absent)."""
    items, times, lengths = session_grid(test_df, model.vocab)
    n = len(lengths)
    carry = model.init_carry(n)
    valid = model.valid_mask()
    full_ranks, list_ranks = [], []
    for t in range(items.shape[1] - 1):
        mask = t < lengths
        out = model.step(carry, items[:, t], mask, times=times[:, t])
        carry = out.carry
        has_target = (t + 1) < lengths
        targets = items[:, t + 1]
        ranks = metrics.target_ranks_np(model.score_all(carry), targets, valid)
        hit = out.top_items == targets[:, None]
        pos = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, model.k + 1)
        full_ranks.append(ranks[has_target])
        list_ranks.append(pos[has_target])
    return np.concatenate(full_ranks), np.concatenate(list_ranks)


def recall_mrr(ranks: np.ndarray, k: int = 20) -> tuple[float, float]:
    acc = metrics.RankingAccumulator((k,))
    acc.update(ranks)
    result = acc.result()
    return result[f"recall@{k}"], result[f"mrr@{k}"]


def test_step_reproduces_the_offline_evaluators_ranks(
    model: ServingModel, trained: TrainedModel, tiny: tuple
) -> None:
    _, _, test_df = tiny
    if len(test_df.SessionId.unique()) > 512:
        test_df = test_df[test_df.SessionId.isin(test_df.SessionId.unique()[:512])]
    offline = evaluate(trained.model_cfg, test_df, params=trained.params, vocab=trained.vocab)
    full_ranks, list_ranks = replay_ranks(model, test_df)
    assert len(full_ranks) == offline["n_targets"]
    recall, mrr = recall_mrr(full_ranks)
    assert recall == offline["recall@20"]
    assert mrr == pytest.approx(offline["mrr@20"], rel=1e-12)
    # The top-K lists give the same ranks wherever the target is in the top K.
    inside = full_ranks <= model.k
    np.testing.assert_array_equal(list_ranks[inside], full_ranks[inside])
    assert np.all(list_ranks[~inside] == model.k + 1)
    assert recall > 0.1  # a trained model, not noise (random: 20/300 = 0.067)


def test_steady_state_never_recompiles(model: ServingModel) -> None:
    model.warm_up()
    compiled, events = model.compile_count, compile_events()
    assert compiled == 4 * len(model.buckets)  # step and step_events, with and without
    rng = np.random.default_rng(0)
    n_items = len(model.vocab)
    carry = model.init_carry(300)
    for call in range(40):
        n = int(rng.integers(1, 301))
        rows = jax.tree_util.tree_map(lambda x, n=n: x[:n], carry)
        excluded = rng.integers(0, n_items, (n, int(rng.integers(1, 9))))
        history = rng.integers(0, n_items, (n, int(rng.integers(1, 8))))
        unavailable = rng.random(model.vocab.capacity) < 0.01
        out = model.step(
            rows, rng.integers(0, n_items + 1, n), rng.random(n) < 0.9,
            times=1.7e9 + rng.random(n) * 100, excluded=excluded, unavailable=unavailable,
            history=history if call % 2 else None,
        )  # fmt: skip
        assert out.top_items.shape == (n, model.k)
        n_users = int(rng.integers(1, n + 1))
        users = np.sort(rng.integers(0, n_users, n))
        many = model.step_events(
            jax.tree_util.tree_map(lambda x, u=n_users: x[:u], carry), users,
            rng.integers(0, n_items + 1, n), reset=rng.random(n) < 0.1,
            times=1.7e9 + rng.random(n) * 100 if call % 3 else None, excluded=excluded,
            unavailable=unavailable, history=history if call % 2 else None,
        )  # fmt: skip
        assert many.top_items.shape == (n, model.k)
    assert model.compile_count == compiled
    assert compile_events() == events  # nothing else compiled either (host code is numpy)


def test_vocabulary_growth_changes_values_not_shapes(trained: TrainedModel) -> None:
    vocab = type(trained.vocab).from_json(trained.vocab.to_json())  # a private copy
    model = ServingModel(trained.params, trained.model_cfg, vocab, "v", buckets=(8,), k=5)
    carry = model.init_carry(4)
    model.step(carry, np.array([1, 2, 3, 4]), np.ones(4, bool))
    compiled, events = model.compile_count, compile_events()
    new = vocab.add(["brand-new-item"])
    assert model.valid_mask()[new[0]]
    out = model.step(carry, np.array([int(new[0]), 2, 3, 4]), np.ones(4, bool))
    assert model.compile_count == compiled and compile_events() == events
    assert out.top_items.shape == (4, 5)


def test_masked_rows_and_oov_keep_their_carry_and_still_recommend(model: ServingModel) -> None:
    carry = model.init_carry(3)
    first = model.step(carry, np.array([1, 2, 3]), np.ones(3, bool), times=np.full(3, 1.7e9))
    # Row 0 steps; row 1 is masked out; row 2's event is out of vocabulary.
    second = model.step(
        first.carry, np.array([5, 6, 0]), np.array([True, False, True]),
        times=np.full(3, 1.7e9 + 30),
    )  # fmt: skip
    for leaf_before, leaf_after in zip(
        jax.tree_util.tree_leaves(first.carry), jax.tree_util.tree_leaves(second.carry), strict=True
    ):
        np.testing.assert_array_equal(leaf_before[1:], leaf_after[1:])
    assert not np.array_equal(first.carry["rep"][0], second.carry["rep"][0])
    # Unchanged carries recommend exactly what they recommended before.
    np.testing.assert_array_equal(second.top_items[1:], first.top_items[1:])
    np.testing.assert_array_equal(second.p_purchase[1:], first.p_purchase[1:])
    # OOV as a session's first event: bias-only (popularity-like) recommendations.
    fresh = model.step(model.init_carry(1), np.array([0]), np.ones(1, bool))
    assert (fresh.top_items > 0).all()
    assert 0.0 <= fresh.p_purchase[0] <= 1.0


def test_excluded_and_unavailable_items_are_never_recommended(model: ServingModel) -> None:
    carry = model.init_carry(2)
    base = model.step(carry, np.array([7, 7]), np.ones(2, bool))
    top = base.top_items
    unavailable = np.zeros(model.vocab.capacity, bool)
    unavailable[top[0, 0]] = True
    excluded = np.array([[top[0, 1], top[0, 2]], [0, 0]])
    out = model.step(carry, np.array([7, 7]), np.ones(2, bool), excluded=excluded,
                     unavailable=unavailable)  # fmt: skip
    banned = {int(top[0, 0]), int(top[0, 1]), int(top[0, 2])}
    assert not banned & set(out.top_items[0].tolist())
    assert int(top[0, 0]) not in out.top_items[1]  # unavailable for everyone
    assert int(top[0, 1]) in out.top_items[1]  # excluded for row 0 only
    # The remaining items keep their order and scores.
    rest = [i for i in top[0] if int(i) not in banned]
    assert out.top_items[0][: len(rest)].tolist() == [int(i) for i in rest]
    assert (out.top_items > 0).all() and (out.top_items <= len(model.vocab)).all()


def test_purchase_probability_is_the_calibrated_head(
    model: ServingModel, trained: TrainedModel
) -> None:
    items = np.array([3, 4, 5])
    times = np.array([1_700_000_000.0, 1_700_000_050.0, 1_700_000_170.0])
    carry = model.init_carry(1)
    probs = []
    for item, ts in zip(items, times, strict=True):
        out = model.step(carry, np.array([item]), np.ones(1, bool), times=np.array([ts]))
        carry = out.carry
        probs.append(float(out.p_purchase[0]))
    # Reference: the model's own step with small exact times (no float32 rounding).
    ref = models.initial_carry(trained.model_cfg, 1)
    scale, shift = trained.purchase_calibration
    expected = []
    for item, ts in zip(items, times - times[0], strict=True):
        ref, _, logit = models.encode_step(
            trained.model_cfg, trained.params, ref, np.array([item]), np.array([ts], np.float32)
        )
        expected.append(float(jax.nn.sigmoid(scale * logit[0] + shift)))
    assert probs == pytest.approx(expected, abs=1e-5)
    assert all(0.0 <= p <= 1.0 for p in probs)


def test_load_serving_model_reads_a_checkpoint(tiny: tuple) -> None:
    model = load_serving_model(str(tiny[0]), buckets=(8,), k=7)
    assert model.k == 7 and model.version == "1" and model.buckets == (8,)
    assert model.init_carry(2)["rep"].shape == (2, model.model_cfg.output_dim)


def rounds_reference(
    model: ServingModel, carry: dict, users: np.ndarray, items: np.ndarray, **per_event: Any
) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What `step_events` must equal: `step` once per round, a user's r-th events
    together, resets replaced by a fresh carry first."""
    carry = jax.tree_util.tree_map(np.copy, carry)
    fresh = model.init_carry(1)
    n = len(users)
    top = np.zeros((n, model.k), np.int32)
    scores = np.zeros((n, model.k), np.float32)
    p = np.zeros(n, np.float32)
    weights = np.zeros((n, model.k, model.explain_window), np.float32)
    positions = [np.flatnonzero(users == u) for u in range(int(users.max()) + 1)]
    for r in range(max(len(x) for x in positions)):
        active = [u for u, pos in enumerate(positions) if len(pos) > r]
        events = np.array([positions[u][r] for u in active])
        rows = jax.tree_util.tree_map(lambda x, a=active: x[a], carry)
        for row, event in enumerate(events):
            if per_event["reset"][event]:
                for leaf, init in zip(jax.tree_util.tree_leaves(rows),
                                      jax.tree_util.tree_leaves(fresh), strict=True):  # fmt: skip
                    leaf[row] = init[0]
        out = model.step(rows, items[events], np.ones(len(events), bool),
                         times=per_event["times"][events], excluded=per_event["excluded"][events],
                         history=per_event["history"][events])  # fmt: skip
        top[events], scores[events], p[events] = out.top_items, out.top_scores, out.p_purchase
        weights[events] = out.attributions.weights

        def put(whole: np.ndarray, part: np.ndarray, active: list = active) -> None:
            whole[active] = part

        jax.tree_util.tree_map(put, carry, out.carry)
    return carry, top, scores, p, weights


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(item_capacity=64, hidden_sizes=(16,)),
        ModelConfig(item_capacity=64, hidden_sizes=(16, 12), cell="lstm"),
        ModelConfig(item_capacity=64, hidden_sizes=(16,), attention=True, attention_window=16),
        dataclasses.replace(load_config("default")[0], item_capacity=64),
    ],
    ids=["gru", "lstm-stacked", "gru-attention-16", "default-config"],
)
@pytest.mark.parametrize("purchase_model", [False, True], ids=["head", "purchase-fn"])
def test_step_events_equals_stepping_round_by_round(cfg: ModelConfig, purchase_model: bool) -> None:
    # One call for several events per user (lanes in a jitted loop, one scoring of all
    # events) against one `step` per round. 40 users on 8 lanes (the 32 bucket), one
    # user with 12 events, resets, OOV events, times, exclusions and explanations.
    # Without a purchase model the loop reads the representations out after it; a
    # purchase model that reads every step's representation keeps them inside.
    rng = np.random.default_rng(1)
    params = models.init_params(cfg, jax.random.PRNGKey(0))
    params = jax.tree_util.tree_map(
        lambda x: x + 0.1 * rng.standard_normal(x.shape).astype(x.dtype), params
    )
    vocab = ItemVocabulary([f"i{i}" for i in range(60)], capacity=cfg.item_capacity)

    def purchase_fn(carry: dict, rep: jax.Array, logit: jax.Array) -> jax.Array:
        return jax.nn.sigmoid(0.3 * rep[:, 0] - 0.2 * rep[:, 1] + logit)

    model = ServingModel(params, cfg, vocab, "v", buckets=(8, 32, 128), k=10,
                         purchase_fn=purchase_fn if purchase_model else None)  # fmt: skip
    assert model.lanes_for(128) == 16 and model.lanes_for(32) == 8
    n_users = 40
    counts = rng.integers(1, 4, n_users)
    counts[7] = 12
    users = rng.permutation(np.repeat(np.arange(n_users), counts))  # interleaved, in order
    n = len(users)
    items = rng.integers(1, 61, n).astype(np.int32)
    items[rng.random(n) < 0.15] = 0
    per_event = {
        "reset": rng.random(n) < 0.1,
        "times": 1.7e9 + np.cumsum(rng.exponential(40.0, n)),
        "excluded": rng.integers(0, 61, (n, 3)).astype(np.int32),
        "history": rng.integers(0, 61, (n, 5)).astype(np.int32),
    }
    start = model.step(model.init_carry(n_users), rng.integers(1, 61, n_users).astype(np.int32),
                       rng.random(n_users) < 0.8, times=np.full(n_users, 1.7e9 - 60.0)).carry  # fmt: skip
    want_carry, top, scores, p, weights = rounds_reference(model, start, users, items, **per_event)
    got = model.step_events(start, users, items, **per_event)
    np.testing.assert_array_equal(got.top_items, top)
    np.testing.assert_allclose(got.top_scores, scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.p_purchase, p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.attributions.weights, weights, rtol=1e-4, atol=1e-5)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), got.carry, want_carry
    )
    # A user with no events keeps its carry; an empty call changes nothing.
    none = model.step_events(start, np.zeros(0, np.int64), np.zeros(0, np.int32))
    jax.tree_util.tree_map(np.testing.assert_array_equal, none.carry, start)


@pytest.mark.parametrize("exclude", [False, True])
def test_the_item_just_clicked_is_excluded_when_the_model_says_so(
    trained: TrainedModel, exclude: bool
) -> None:
    # The default model is evaluated with the input item excluded; serving ignored the
    # flag, so what was served was not what was measured.
    clicked = 7
    params = dict(trained.params)
    params["item_bias"] = np.array(params["item_bias"])
    params["item_bias"][clicked] += 1e4  # top of every list
    cfg = dataclasses.replace(trained.model_cfg, exclude_input_item=exclude)
    served = ServingModel.from_trained(
        dataclasses.replace(trained, params=params, model_cfg=cfg), buckets=(8,), k=5
    )
    items = np.array([clicked, 3], np.int32)
    one = served.step(served.init_carry(2), items, np.ones(2, bool)).top_items
    many = served.step_events(served.init_carry(2), np.array([0, 1]), items).top_items
    for top in (one, many):
        assert (clicked in top[0]) is not exclude
        assert top[1][0] == clicked  # another row's input is not excluded
