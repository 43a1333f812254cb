"""The worker's adapter to the serving model: carry layout, explanations, one call per batch."""

from __future__ import annotations

import jax
import numpy as np
import orjson
import pytest

from rnnrec_jax.model_io import load_trained_model
from rnnrec_jax.serving import ServingModel
from stream_app.scoring import (
    EventScorer,
    ServingModelScorer,
    UserSteps,
    exact_positions,
    score_in_rounds,
)
from tests.serving_models import cached_tiny_model

pytestmark = pytest.mark.unit


def test_exact_positions_are_integer_leaves_and_times() -> None:
    names = ["['count']", "['h']", "['last_time']", "['recent_items']", "['t_hi']", "['t_lo']"]
    dtypes = [np.dtype(np.int32), np.dtype(np.float32), np.dtype(np.float32),
              np.dtype(np.int32), np.dtype(np.float32), np.dtype(np.float32)]  # fmt: skip
    sizes = [1, 4, 1, 3, 1, 1]
    # count 0 | h 1-4 | last_time 5 | recent_items 6-8 | t_hi 9 | t_lo 10
    assert exact_positions(names, dtypes, sizes).tolist() == [0, 5, 6, 7, 8, 9, 10]


def test_scorer_names_the_positions_of_a_purchase_head_carry(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    trained = load_trained_model(cached_tiny_model(tmp_path_factory)[0])
    model = ServingModel(trained.params, trained.model_cfg, trained.vocab, "v", buckets=(8,), k=5)
    scorer = ServingModelScorer(model)
    with_paths, _ = jax.tree_util.tree_flatten_with_path(model.init_carry(1))
    start, expected = 0, []
    for path, leaf in with_paths:
        size = int(np.prod(np.shape(leaf)[1:]))
        name = jax.tree_util.keystr(path)
        if any(
            key in name
            for key in ("recent_items", "count", "time", "t_hi", "t_lo", "dwell", "repeat")
        ):
            expected.extend(range(start, start + size))
        start += size
    assert scorer.initial_carry().size == start
    assert sorted(scorer.exact_carry_positions.tolist()) == expected
    assert len(expected) >= 16 + 1  # the purchase head's recent items and its time


def _reference_explanations(history, items, weights, ids):  # type: ignore[no-untyped-def]
    """The plain loop: per row its real history positions, per recommended item the
    weight of each, rounded to 6 places."""
    out = []
    for row, row_items in enumerate(items):
        real = [j for j in range(history.shape[1]) if history[row, j] > 0]
        matrix = [
            [round(float(weights[row, slot, j]), 6) + 0.0 for j in real]
            for slot in range(len(row_items))
        ]
        recent = [str(ids[history[row, j]]) for j in real]
        out.append({"method": "occlusion", "recent_items": recent, "weights": matrix})
    return out


@pytest.mark.parametrize("seed", range(5))
def test_explanations_give_each_recommendation_the_weight_of_each_real_event(seed: int) -> None:
    # Attribution weights shaped as rnnrec_jax.explain.occlusion returns them: (n, K, L),
    # 0 at padding; histories right-aligned, with leading padding and, where an event
    # was out of the vocabulary, a 0 inside the window. Some weights too small to
    # survive rounding to 6 places, of either sign (no -0.0 may come out).
    rng = np.random.default_rng(seed)
    n, k, length = 17, 6, 5
    ids = np.asarray(["", *[f"item{i}" for i in range(1, 40)]], dtype=object)
    history = rng.integers(1, 40, (n, length))
    pad = rng.integers(0, length + 1, n)  # leading padding per row
    for row in range(n):
        history[row, : pad[row]] = 0
    gaps = rng.random((n, length)) < 0.15  # out-of-vocabulary events
    history[gaps] = 0
    weights = rng.normal(size=(n, k, length)) * rng.choice([1.0, 1e-7], (n, k, length))
    weights = np.where((history > 0)[:, None, :], weights, 0.0).astype(np.float32)
    items = [[f"rec{row}-{slot}" for slot in range(k - row % 3)] for row in range(n)]
    attributions = type("A", (), {"weights": weights})

    got = ServingModelScorer._explanations(history, items, attributions, ids)

    want = _reference_explanations(history, items, weights, ids)
    assert got == want
    for e in got:  # the state codec's copy of the weights: exactly the same numbers
        assert e.millionths.dtype == np.int32
        assert (e.millionths / 1e6).tolist() == e["weights"]
    assert [orjson.dumps(e) for e in got] == [orjson.dumps(e) for e in want]
    assert any(0 < len(e["recent_items"]) < length for e in got)
    inner_gap = [(h[np.argmax(h > 0) :] == 0).any() for h in history if (h > 0).any()]
    assert any(inner_gap)  # the masked path is exercised too
    assert any(len(e["weights"]) < k for e in got)  # fewer recommendations than K


class _RoundsOnly:
    """The plain `Scorer` protocol of a scorer: `score_in_rounds` steps round by round."""

    def __init__(self, scorer: ServingModelScorer) -> None:
        self._scorer = scorer

    @property
    def version(self) -> str:
        return self._scorer.version

    def initial_carry(self) -> np.ndarray:
        return self._scorer.initial_carry()

    def step(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return self._scorer.step(*args, **kwargs)


def test_one_call_per_micro_batch_equals_rounds(tmp_path_factory: pytest.TempPathFactory) -> None:
    # The worker's path (`score_users` through the model's `step_events`) against one
    # `step` per round: the same items, scores, probabilities, explanations and carries,
    # with silent steps, resets, a user with no events and users longer than
    # max_rows (cut into parts).
    trained = load_trained_model(cached_tiny_model(tmp_path_factory)[0])
    model = ServingModel(trained.params, trained.model_cfg, trained.vocab, "v",
                         buckets=(8, 32), k=5)  # fmt: skip
    scorer = ServingModelScorer(model)
    assert isinstance(scorer, EventScorer) and not isinstance(_RoundsOnly(scorer), EventScorer)
    ids = [str(x) for x in trained.vocab.decode(np.arange(1, 40))] + ["never-seen"]
    rng = np.random.default_rng(3)
    users = []
    for count in [3, 1, 0, 45, 2, 7, 1, 1, 30, 4]:
        items = [ids[i] for i in rng.integers(0, len(ids), count)]
        users.append(
            UserSteps(
                carry=None if count % 2 else scorer.initial_carry() + 0.01 * count,
                items=items,
                emit=(rng.random(count) < 0.8).tolist(),
                reset=(rng.random(count) < 0.1).tolist(),
                excluded=[items[:j] or None for j in range(count)],
                times=(1.7e9 + np.cumsum(rng.exponential(30.0, count))).tolist(),
                history=[items[max(0, j - 4) : j + 1] for j in range(count)],
            )
        )
    got, got_carries = score_in_rounds(scorer, users, max_rows=32, k=5)
    want, want_carries = score_in_rounds(_RoundsOnly(scorer), users, max_rows=32, k=5)
    assert [[o is None for o in u] for u in got] == [[not e for e in u.emit] for u in users]
    for got_user, want_user in zip(got, want, strict=True):
        for g, w in zip(got_user, want_user, strict=True):
            if w is None:
                continue
            assert g.items == w.items and g.explanation == w.explanation
            np.testing.assert_allclose(g.scores, w.scores, rtol=1e-6)
            assert g.p_purchase == pytest.approx(w.p_purchase, rel=1e-6)
    for g, w in zip(got_carries, want_carries, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_millionths_are_exact_for_any_float32_weight() -> None:
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((64, 20, 5)) * rng.choice([1e-7, 1e-3, 1.0, 300.0], (64, 20, 5))
    history = np.ones((64, 5), np.int64)
    items = [[f"i{j}" for j in range(20)]] * 64
    ids = np.asarray(["", "a"], dtype=object)
    attributions = type("A", (), {"weights": weights.astype(np.float32)})
    for e in ServingModelScorer._explanations(history, items, attributions, ids):
        assert (e.millionths / 1e6).tolist() == e["weights"]


def test_weights_past_int32_millionths_leave_the_lists_to_the_codec() -> None:
    history = np.ones((2, 5), np.int64)
    weights = np.zeros((2, 3, 5), np.float32)
    weights[1, 0, 0] = 5000.0  # 5e9 millionths
    attributions = type("A", (), {"weights": weights})
    ids = np.asarray(["", "a"], dtype=object)
    got = ServingModelScorer._explanations(history, [["x", "y", "z"]] * 2, attributions, ids)
    assert all(e.millionths is None for e in got)
    assert got[1]["weights"][0][0] == 5000.0
