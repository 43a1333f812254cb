"""Metrics against plain Python reference loops and hand-made cases."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnrec_jax import metrics as M

pytestmark = pytest.mark.unit


# ------------------------------------------------------------------ reference loops


def ref_rank(row: list[float], target: int, valid: list[bool]) -> int:
    t = row[target]
    rank = sum(1 for j, s in enumerate(row) if valid[j] and s >= t)
    return rank if valid[target] else rank + 1


def ref_recall_mrr(ranks: list[int], k: int) -> tuple[float, float]:
    hits = [1.0 if r <= k else 0.0 for r in ranks]
    rr = [1.0 / r if r <= k else 0.0 for r in ranks]
    return sum(hits) / len(ranks), sum(rr) / len(ranks)


def ref_auc(labels: list[int], scores: list[float]) -> float:
    pos = [s for y, s in zip(labels, scores, strict=True) if y]
    neg = [s for y, s in zip(labels, scores, strict=True) if not y]
    wins = 0.0
    for p in pos:
        for n in neg:
            wins += 1.0 if p > n else 0.5 if p == n else 0.0
    return wins / (len(pos) * len(neg))


def ref_gini(x: list[float]) -> float:
    # Mean absolute difference over all ordered pairs / (2 * mean).
    n = len(x)
    mean = sum(x) / n
    return sum(abs(a - b) for a in x for b in x) / (2 * n * n * mean)


def tied_scores(rng: np.random.Generator, batch: int, capacity: int) -> np.ndarray:
    # Few distinct values so ties are everywhere.
    return rng.integers(0, 5, size=(batch, capacity)).astype(np.float32)


# -------------------------------------------------------------------------- ranks


def test_ranks_hand_made() -> None:
    scores = np.array(
        [
            [9.0, 0.5, 0.9, 0.1, 0.3],  # index 0 (OOV) scores highest but is not valid
            [0.0, 0.2, 0.2, 0.2, 0.1],  # three-way tie with the target
            [0.0, 0.1, 0.2, 0.3, 0.4],
        ],
        np.float32,
    )
    targets = np.array([2, 1, 1])
    valid = np.array([False, True, True, True, True])
    expected = [1, 3, 4]
    assert M.target_ranks_np(scores, targets, valid).tolist() == expected
    assert np.asarray(M.target_ranks(scores, targets, valid)).tolist() == expected
    # Without a mask the OOV column counts too.
    assert M.target_ranks_np(scores, targets)[0] == 2


def test_ranks_match_reference_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        batch, capacity = 7, 13
        scores = tied_scores(rng, batch, capacity)
        valid = rng.random(capacity) < 0.8
        valid[0] = False
        targets = rng.integers(0, capacity, batch)  # some invalid targets too
        expected = [
            ref_rank(scores[b].tolist(), int(targets[b]), valid.tolist()) for b in range(batch)
        ]
        assert M.target_ranks_np(scores, targets, valid).tolist() == expected
        got = M.target_ranks(jnp.asarray(scores), jnp.asarray(targets), jnp.asarray(valid))
        assert np.asarray(got).tolist() == expected
        assert got.dtype == jnp.int32


def test_nan_scores_rank_worst_not_best() -> None:
    scores = np.array([[0.0, np.nan, np.nan, np.nan]], np.float32)
    valid = np.array([False, True, True, True])
    assert M.target_ranks_np(scores, np.array([1]), valid).tolist() == [3]
    assert np.asarray(M.target_ranks(scores, np.array([1]), valid)).tolist() == [3]


# ---------------------------------------------------------------- recall and MRR


def test_recall_mrr_hand_made() -> None:
    ranks = np.array([1, 2, 5, 6, 20, 21])
    out = M.ranking_metrics(ranks)
    assert out["n"] == 6
    assert out["recall@1"] == pytest.approx(1 / 6)
    assert out["recall@5"] == pytest.approx(3 / 6)
    assert out["recall@20"] == pytest.approx(5 / 6)
    assert out["mrr@5"] == pytest.approx((1 + 1 / 2 + 1 / 5) / 6)
    assert out["mrr@20"] == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 6 + 1 / 20) / 6)


def test_accumulator_matches_reference_and_device_sums() -> None:
    rng = np.random.default_rng(1)
    ranks = rng.integers(1, 40, 257)
    acc = M.RankingAccumulator()
    for chunk in np.array_split(ranks, 5):
        acc.update(chunk)
    dev = M.RankingAccumulator()
    sums = jax.jit(M.ranking_sums, static_argnums=1)
    for chunk in np.array_split(ranks, 3):
        dev.update_sums(*sums(jnp.asarray(chunk), M.DEFAULT_CUTOFFS))
    out, out_dev = acc.result(), dev.result()
    for k in M.DEFAULT_CUTOFFS:
        recall, mrr = ref_recall_mrr(ranks.tolist(), k)
        assert out[f"recall@{k}"] == pytest.approx(recall)
        assert out[f"mrr@{k}"] == pytest.approx(mrr)
        assert out_dev[f"recall@{k}"] == pytest.approx(recall, rel=1e-6)
        assert out_dev[f"mrr@{k}"] == pytest.approx(mrr, rel=1e-5)
    assert out["n"] == out_dev["n"] == 257


def test_accumulator_weights_and_merge() -> None:
    a = M.RankingAccumulator((1, 3))
    a.update(np.array([1, 2, 99]), weights=np.array([1, 1, 0]))  # third row is padding
    b = M.RankingAccumulator((1, 3))
    b.update(np.array([4]))
    out = a.merge(b).result()
    assert out["n"] == 3
    assert out["recall@3"] == pytest.approx(2 / 3)
    assert out["mrr@3"] == pytest.approx((1 + 0.5) / 3)
    assert math.isnan(M.RankingAccumulator().result()["recall@20"])


# -------------------------------------------------------------- coverage and Gini


def test_coverage_and_gini_hand_made() -> None:
    valid = np.array([False, True, True, True, True])
    top = np.array([[1, 2], [1, 3], [0, 1]])  # index 0 is never counted as valid
    counts = M.exposure_counts(top, 5)
    assert counts.tolist() == [1, 3, 1, 1, 0]
    assert M.catalogue_coverage(counts, valid) == pytest.approx(3 / 4)
    assert M.gini_index(counts, valid) == pytest.approx(ref_gini([3, 1, 1, 0]))
    assert M.gini_index(np.array([0, 2, 2, 2, 2]), valid) == pytest.approx(0.0)
    one_item = np.array([0, 10, 0, 0, 0])
    assert M.gini_index(one_item, valid) == pytest.approx(1 - 1 / 4)
    assert math.isnan(M.gini_index(np.zeros(5), valid))


def test_exposure_accumulator_matches_reference() -> None:
    rng = np.random.default_rng(2)
    capacity = 30
    valid = np.ones(capacity, bool)
    valid[0] = False
    valid[25:] = False  # spare capacity, not yet real items
    acc = M.ExposureAccumulator(capacity, cutoffs=(1, 5))
    lists = [rng.integers(0, 25, (4, 5)) for _ in range(3)]
    for top in lists:
        acc.update(top)
    out = acc.result(valid)
    for k in (1, 5):
        ref_counts = [0] * capacity
        for top in lists:
            for row in top.tolist():
                for item in row[:k]:
                    ref_counts[item] += 1
        real = [ref_counts[i] for i in range(capacity) if valid[i]]
        assert out[f"coverage@{k}"] == pytest.approx(sum(c > 0 for c in real) / len(real))
        assert out[f"gini@{k}"] == pytest.approx(ref_gini(real))


# ------------------------------------------------------------------ purchase metrics


def test_auc_matches_pairwise_count_with_ties() -> None:
    rng = np.random.default_rng(3)
    for size in (2, 7, 50, 200):
        labels = rng.integers(0, 2, size)
        labels[0], labels[1] = 0, 1
        scores = rng.integers(0, 4, size).astype(float)  # heavy ties
        assert M.roc_auc(labels, scores) == pytest.approx(ref_auc(labels.tolist(), scores.tolist()))
        cont = rng.normal(size=size)
        assert M.roc_auc(labels, cont) == pytest.approx(ref_auc(labels.tolist(), cont.tolist()))


def test_auc_hand_made_and_errors() -> None:
    assert M.roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert M.roc_auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert M.roc_auc([0, 1], [0.5, 0.5]) == 0.5
    with pytest.raises(ValueError, match="both classes"):
        M.roc_auc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="0/1"):
        M.roc_auc([0, 2], [0.1, 0.2])


def test_bootstrap_ci_is_reproducible_and_brackets_estimate() -> None:
    rng = np.random.default_rng(4)
    labels = rng.random(400) < 0.2
    scores = labels + rng.normal(scale=1.0, size=400)
    ci = M.bootstrap_ci(M.roc_auc, labels, scores, n=200, seed=7)
    assert ci == M.bootstrap_ci(M.roc_auc, labels, scores, n=200, seed=7)
    assert ci.low < ci.estimate < ci.high
    assert ci.n_resamples == 200
    assert 0.05 < ci.high - ci.low < 0.3
    # Tiny samples: resamples with one class are redrawn, not crashed on.
    small = M.bootstrap_ci(M.roc_auc, [0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8], n=50, seed=0)
    assert small.n_resamples == 50


def test_brier_and_base_rate() -> None:
    labels = np.array([1, 0, 0, 0])
    assert M.brier_score(labels, [1.0, 0.0, 0.0, 0.0]) == 0.0
    assert M.brier_score(labels, [0.5] * 4) == pytest.approx(0.25)
    assert M.base_rate_brier(labels) == pytest.approx(0.25 * 0.75)
    assert M.base_rate_brier(labels, base_rate=0.5) == pytest.approx(0.25)
    ref = sum((p - y) ** 2 for p, y in zip([0.9, 0.2, 0.1, 0.3], labels, strict=True)) / 4
    assert M.brier_score(labels, [0.9, 0.2, 0.1, 0.3]) == pytest.approx(ref)


def test_reliability_bins_and_ece_against_loop() -> None:
    rng = np.random.default_rng(5)
    probs = rng.random(300)
    probs[:3] = [0.0, 1.0, 0.1]  # edges: 1.0 falls in the last bin, 0.1 in the second
    labels = (rng.random(300) < probs).astype(int)
    bins = M.reliability_bins(labels, probs, n_bins=10)
    ece = 0.0
    for i in range(10):
        lo, hi = i / 10, (i + 1) / 10
        members = [
            (p, y)
            for p, y in zip(probs, labels, strict=True)
            if lo <= p < hi or (i == 9 and p == 1.0)
        ]
        assert bins.count[i] == len(members)
        if members:
            mean_p = sum(p for p, _ in members) / len(members)
            rate = sum(y for _, y in members) / len(members)
            assert bins.mean_prob[i] == pytest.approx(mean_p)
            assert bins.frac_pos[i] == pytest.approx(rate)
            ece += len(members) / len(probs) * abs(rate - mean_p)
    assert M.expected_calibration_error(labels, probs) == pytest.approx(ece)
    # A perfectly calibrated constant predictor has ECE 0.
    assert M.expected_calibration_error([1, 0, 0, 0], [0.25] * 4) == pytest.approx(0.0)


# ------------------------------------------------------------------------ plots


def test_plots_write_pngs(tmp_path) -> None:
    from rnnrec_jax import plots

    history = [
        {"epoch": 1, "loss": 5.0, "valid_recall@20": 0.40, "valid_mrr@20": 0.15},
        {"epoch": 2, "loss": 4.2, "valid_recall@20": 0.47, "valid_mrr@20": 0.19},
    ]
    rng = np.random.default_rng(6)
    probs = rng.random(200)
    bins = M.reliability_bins((rng.random(200) < probs).astype(int), probs)
    paths = [
        plots.plot_training_curve(history, tmp_path / "curve.png"),
        plots.plot_recall_at_k({1: 0.1, 5: 0.3, 10: 0.4, 20: 0.5}, tmp_path / "r" / "recall.png"),
        plots.plot_reliability(bins, tmp_path / "reliability.png"),
        plots.plot_latency_histogram(rng.gamma(2.0, 3.0, 500), tmp_path / "latency.png"),
        plots.plot_latency_histogram([], tmp_path / "empty.png"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
