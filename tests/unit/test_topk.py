"""Exact top-K methods agree with ``jax.lax.top_k`` index for index, ties included."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from rnnrec_jax import topk as T

pytestmark = pytest.mark.unit

K = 5


def reference(scores: np.ndarray, k: int, mask: np.ndarray | None = None):
    """Plain loop: sort by (score desc, index asc), masked items at -inf."""
    out_v, out_i = [], []
    for b, row in enumerate(scores):
        allowed = (
            np.ones(row.size, bool) if mask is None else np.broadcast_to(mask, scores.shape)[b]
        )
        keyed = sorted(range(row.size), key=lambda j: (-(row[j] if allowed[j] else -np.inf), j))[:k]
        out_i.append(keyed)
        out_v.append([row[j] if allowed[j] else -np.inf for j in keyed])
    return np.array(out_v, np.float32), np.array(out_i, np.int32)


def tied(rng: np.random.Generator, shape: tuple[int, ...], levels: int = 4) -> np.ndarray:
    return rng.integers(0, levels, size=shape).astype(np.float32)


SELECTORS = {
    "lax": lambda s, k, m=None: T.topk_lax(s, k, m),
    "threshold": lambda s, k, m=None: T.topk_threshold(s, k, m),
    "threshold_b8": lambda s, k, m=None: T.topk_threshold(s, k, m, block=8),
    "threshold_ragged": lambda s, k, m=None: T.topk_threshold(s, k, m, block=7),
    "blocked": lambda s, k, m=None: T.topk_blocked(s, k, m),
    "blocked_b10": lambda s, k, m=None: T.topk_blocked(s, k, m, block=10),
    "numpy": lambda s, k, m=None: T.topk_numpy(
        np.asarray(s), k, None if m is None else np.asarray(m)
    ),
}


@pytest.mark.parametrize("name", sorted(SELECTORS))
@pytest.mark.parametrize("capacity", [50, 200, 333])
@pytest.mark.parametrize("levels", [3, 1000])
def test_selectors_match_reference_with_ties(name: str, capacity: int, levels: int) -> None:
    rng = np.random.default_rng(capacity + levels)
    scores = tied(rng, (6, capacity), levels)
    mask = rng.random(capacity) < 0.7
    mask[0] = False
    for m in (None, mask):
        want_v, want_i = reference(scores, K, m)
        got_v, got_i = SELECTORS[name](
            jnp.asarray(scores), K, None if m is None else jnp.asarray(m)
        )
        np.testing.assert_array_equal(np.asarray(got_i), want_i)
        np.testing.assert_array_equal(np.asarray(got_v), want_v)
        _, lax_i = T.topk_lax(jnp.asarray(scores), K, None if m is None else jnp.asarray(m))
        np.testing.assert_array_equal(np.asarray(got_i), np.asarray(lax_i))
        assert np.asarray(got_i).dtype == np.int32


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_row_mask_and_fewer_valid_than_k(name: str) -> None:
    rng = np.random.default_rng(9)
    scores = tied(rng, (4, 64), 2)
    row_mask = rng.random((4, 64)) < 0.5
    row_mask[2] = False
    row_mask[2, [5, 9]] = True  # only two items allowed: the tail is -inf, lowest indices
    want_v, want_i = reference(scores, K, row_mask)
    got_v, got_i = SELECTORS[name](jnp.asarray(scores), K, jnp.asarray(row_mask))
    np.testing.assert_array_equal(np.asarray(got_i), want_i)
    np.testing.assert_array_equal(np.asarray(got_v), want_v)
    assert np.isneginf(np.asarray(got_v)[2, 2:]).all()


def score_case(rng: np.random.Generator, batch: int, capacity: int, hidden: int = 8):
    # Integer-valued embeddings and states: exact float sums, so ties are real ties.
    states = rng.integers(-2, 3, (batch, hidden)).astype(np.float32)
    emb = rng.integers(-1, 2, (capacity, hidden)).astype(np.float32)
    bias = rng.integers(0, 2, capacity).astype(np.float32)
    mask = rng.random(capacity) < 0.8
    mask[0] = False
    return states, emb, bias, mask


@pytest.mark.parametrize("capacity", [40, 300, 1000])
def test_scoring_methods_match_lax_with_ties(capacity: int) -> None:
    rng = np.random.default_rng(capacity)
    states, emb, bias, mask = score_case(rng, 9, capacity)
    exclude = rng.integers(0, capacity, (9, 3)).astype(np.int32)
    for m, ex in ((mask, None), (None, None), (mask, exclude)):
        full = states @ emb.T + bias
        if m is not None:
            full = np.where(m, full, -np.inf)
        if ex is not None:
            np.put_along_axis(full, ex, -np.inf, axis=1)
        want_v, want_i = reference(full, K)
        candidates = {
            "default": T.default_topk(states, emb, bias, m, K, exclude=ex),
            "fused_c64_b8": T.score_topk_fused(states, emb, bias, m, K, 64, ex, block=8),
            "fused_c60_b4": T.score_topk_fused(states, emb, bias, m, K, 60, ex, block=4),
            "fused_c37": T.score_topk_fused(states, emb, bias, m, K, chunk=37, exclude=ex),
            "folded": T.score_topk_fused(
                states, T.fold_items(emb, bias, m), None, None, K, exclude=ex, folded=True
            ),
        }
        for method in ("lax", "blocked", "threshold"):
            candidates[method] = T.score_topk(states, emb, bias, m, K, method, exclude=ex)
        for name, (got_v, got_i) in candidates.items():
            np.testing.assert_array_equal(np.asarray(got_i), want_i, err_msg=name)
            np.testing.assert_array_equal(np.asarray(got_v), want_v, err_msg=name)


@pytest.mark.parametrize(("capacity", "chunk"), [(9000, 3000), (9001, 3000), (9001, 4096)])
def test_fused_on_several_chunks(capacity: int, chunk: int) -> None:
    # Whole chunks only; a 1-item ragged tail (fewer than k); a 809-item tail.
    rng = np.random.default_rng(capacity)
    states, emb, bias, mask = score_case(rng, 3, capacity)
    row_mask = np.broadcast_to(mask, (3, capacity)).copy()
    row_mask[1, rng.integers(0, capacity, capacity // 2)] = False
    for m in (mask, row_mask):
        full = np.where(m, states @ emb.T + bias, -np.inf)
        want_v, want_i = reference(full, 20)
        got_v, got_i = T.score_topk_fused(states, emb, bias, m, 20, chunk=chunk)
        np.testing.assert_array_equal(np.asarray(got_i), want_i)
        np.testing.assert_array_equal(np.asarray(got_v), want_v)


def test_scoring_with_row_mask() -> None:
    rng = np.random.default_rng(1)
    states, emb, bias, _ = score_case(rng, 5, 500)
    row_mask = rng.random((5, 500)) < 0.6
    full = np.where(row_mask, states @ emb.T + bias, -np.inf)
    want_v, want_i = reference(full, K)
    for got_v, got_i in (
        T.default_topk(states, emb, bias, row_mask, K),
        T.score_topk(states, emb, bias, row_mask, K, "threshold"),
    ):
        np.testing.assert_array_equal(np.asarray(got_i), want_i)
        np.testing.assert_array_equal(np.asarray(got_v), want_v)


def test_folded_items_still_honour_a_late_mask() -> None:
    rng = np.random.default_rng(3)
    states, emb, bias, mask = score_case(rng, 4, 600)
    want = T.score_topk(states, emb, bias, mask, K, "lax")
    folded = T.fold_items(emb, bias, None)  # fold the bias only; mask passed per call
    for got in (
        T.score_topk(states, folded, None, mask, K, "threshold", folded=True),
        T.score_topk_fused(states, folded, None, mask, K, chunk=200, block=8, folded=True),
    ):
        np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))
    with pytest.raises(ValueError, match="bias must be None"):
        T.score_topk(states, folded, bias, None, K, folded=True)


def test_approx_recall_is_measurable() -> None:
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(8, 2000)).astype(np.float32)
    _, exact = T.topk_lax(scores, 20)
    _, approx = T.topk_approx(scores, 20)
    hits = [
        len(set(a) & set(e)) for a, e in zip(np.asarray(approx), np.asarray(exact), strict=True)
    ]
    assert sum(hits) / (8 * 20) >= 0.8


def test_bad_k_is_rejected() -> None:
    scores = jnp.zeros((2, 10))
    with pytest.raises(ValueError, match="k=11"):
        T.topk_threshold(scores, 11)
    with pytest.raises(ValueError, match="k=0"):
        T.topk_numpy(np.zeros((2, 10)), 0)


def test_pick_block_prefers_divisors() -> None:
    assert 40_000 % T.pick_block(40_000, 20) == 0
    assert 6_400 % T.pick_block(6_400, 20) == 0
    assert 16 <= T.pick_block(40_009, 20) <= 128  # a prime: ragged blocks, still valid
