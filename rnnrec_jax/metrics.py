"""Evaluation metrics: next-item ranking, catalogue exposure and purchase prediction.

Ranking follows the GRU4Rec evaluation protocol (ANCHORS.md): the rank of a target is the
number of valid items whose score is ``>=`` the target's score, so rank 1 is best and ties
count against the model ("conservative"). Everything else is built from ranks, top-K lists
or (label, probability) pairs and accumulates over batches, so evaluation never needs the
whole test set in memory.

Item conventions: int32 indices, index 0 is OOV/padding and never a valid recommendation,
real items live in a fixed capacity ``C`` marked by a bool ``valid_mask`` of length ``C``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

DEFAULT_CUTOFFS: tuple[int, ...] = (1, 5, 10, 20)

__all__ = [
    "DEFAULT_CUTOFFS",
    "BootstrapCI",
    "ExposureAccumulator",
    "RankingAccumulator",
    "ReliabilityBins",
    "base_rate_brier",
    "bootstrap_ci",
    "brier_score",
    "catalogue_coverage",
    "expected_calibration_error",
    "exposure_counts",
    "gini_index",
    "ranking_metrics",
    "ranking_sums",
    "reliability_bins",
    "roc_auc",
    "target_ranks",
    "target_ranks_np",
]


# --------------------------------------------------------------------------- ranking


@jax.jit
def target_ranks(scores: Array, targets: Array, valid_mask: Array | None = None) -> Array:
    """Conservative rank of each target among the valid items (jittable).

    ``rank = #{valid j : scores[j] >= scores[target]}``, so rank 1 is best and every tie
    counts against the model. A target outside ``valid_mask`` is still ranked as if it
    were valid (it counts itself once). NaN scores are treated as ``-inf``, so a model
    producing NaN gets the worst rank instead of an accidental rank 1.

    Args:
        scores: float ``(batch, C)`` scores over the whole capacity.
        targets: int ``(batch,)`` target item indices.
        valid_mask: bool ``(C,)`` real items (``None``: every index counts).

    Returns:
        int32 ``(batch,)`` ranks, ``>= 1``.
    """
    scores = jnp.where(jnp.isnan(scores), -jnp.inf, scores)
    target_scores = jnp.take_along_axis(scores, targets[:, None], axis=1)
    at_least = scores >= target_scores
    if valid_mask is None:
        return at_least.sum(axis=1, dtype=jnp.int32)
    counted = (at_least & valid_mask).sum(axis=1, dtype=jnp.int32)
    # The target always ranks behind itself: count it when the mask left it out.
    return counted + (~valid_mask[targets]).astype(jnp.int32)


def target_ranks_np(
    scores: np.ndarray, targets: np.ndarray, valid_mask: np.ndarray | None = None
) -> np.ndarray:
    """NumPy twin of :func:`target_ranks` (same definition, same NaN handling).

    Args:
        scores: float ``(batch, C)``.
        targets: int ``(batch,)``.
        valid_mask: bool ``(C,)`` or ``None``.

    Returns:
        int32 ``(batch,)`` ranks, ``>= 1``.
    """
    scores = np.asarray(scores)
    targets = np.asarray(targets)
    scores = np.where(np.isnan(scores), -np.inf, scores)
    target_scores = np.take_along_axis(scores, targets[:, None], axis=1)
    at_least = scores >= target_scores
    if valid_mask is None:
        return at_least.sum(axis=1).astype(np.int32)
    valid_mask = np.asarray(valid_mask, dtype=bool)
    counted = (at_least & valid_mask).sum(axis=1)
    return (counted + ~valid_mask[targets]).astype(np.int32)


def ranking_sums(
    ranks: Array, cutoffs: Sequence[int] = DEFAULT_CUTOFFS, weights: Array | None = None
) -> tuple[Array, Array, Array]:
    """Per-cutoff hit and reciprocal-rank sums of a batch (jittable; cutoffs static).

    Args:
        ranks: int ``(batch,)`` ranks from :func:`target_ranks`.
        cutoffs: the K values.
        weights: float/bool ``(batch,)`` (0 for padded rows), or ``None``.

    Returns:
        ``(hits, reciprocal_ranks, count)``: float32 ``(len(cutoffs),)`` sums of
        ``rank <= K`` and of ``1/rank if rank <= K else 0``, and the weighted count.
    """
    ks = jnp.asarray(tuple(cutoffs), dtype=ranks.dtype)
    w = jnp.ones(ranks.shape, jnp.float32) if weights is None else weights.astype(jnp.float32)
    inside = (ranks[None, :] <= ks[:, None]).astype(jnp.float32) * w
    reciprocal = inside / jnp.maximum(ranks, 1).astype(jnp.float32)
    return inside.sum(axis=1), reciprocal.sum(axis=1), w.sum()


def ranking_metrics(
    ranks: np.ndarray | Array, cutoffs: Sequence[int] = DEFAULT_CUTOFFS
) -> dict[str, float]:
    """Recall@K and MRR@K of a complete set of ranks.

    Args:
        ranks: int ``(n,)`` ranks (``>= 1``).
        cutoffs: the K values.

    Returns:
        ``{"recall@K": ..., "mrr@K": ..., "n": n}`` for every K.
    """
    acc = RankingAccumulator(tuple(cutoffs))
    acc.update(ranks)
    return acc.result()


@dataclass
class RankingAccumulator:
    """Accumulates Recall@K and MRR@K over batches of ranks.

    ``Recall@K`` is the share of targets with ``rank <= K``; ``MRR@K`` the mean of
    ``1/rank`` where ``rank <= K``, else 0. Sums are kept in float64 on the host so long
    evaluations do not lose precision.
    """

    cutoffs: tuple[int, ...] = DEFAULT_CUTOFFS
    hits: np.ndarray = field(init=False)
    reciprocal_ranks: np.ndarray = field(init=False)
    count: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        if not self.cutoffs or min(self.cutoffs) < 1:
            raise ValueError(f"cutoffs must be positive integers, got {self.cutoffs}")
        self.cutoffs = tuple(int(k) for k in self.cutoffs)
        self.hits = np.zeros(len(self.cutoffs), np.float64)
        self.reciprocal_ranks = np.zeros(len(self.cutoffs), np.float64)

    def update(self, ranks: np.ndarray | Array, weights: np.ndarray | Array | None = None) -> None:
        """Add a batch of ranks.

        Args:
            ranks: int ``(batch,)`` ranks (``>= 1``).
            weights: ``(batch,)`` 1 for real targets, 0 for padded rows; ``None``: all 1.
        """
        ranks = np.asarray(ranks, np.int64).reshape(-1)
        w = np.ones(ranks.shape, np.float64) if weights is None else np.asarray(weights, float)
        ks = np.asarray(self.cutoffs)[:, None]
        inside = (ranks[None, :] <= ks) * w
        self.hits += inside.sum(axis=1)
        self.reciprocal_ranks += (inside / np.maximum(ranks, 1)).sum(axis=1)
        self.count += float(w.sum())

    def update_sums(self, hits: Array, reciprocal_ranks: Array, count: Array) -> None:
        """Add sums computed on the device by :func:`ranking_sums` (same cutoffs)."""
        self.hits += np.asarray(hits, np.float64)
        self.reciprocal_ranks += np.asarray(reciprocal_ranks, np.float64)
        self.count += float(count)

    def merge(self, other: RankingAccumulator) -> RankingAccumulator:
        """Add another accumulator's sums (same cutoffs) into this one; returns self."""
        if other.cutoffs != self.cutoffs:
            raise ValueError(f"cutoffs differ: {self.cutoffs} vs {other.cutoffs}")
        self.hits += other.hits
        self.reciprocal_ranks += other.reciprocal_ranks
        self.count += other.count
        return self

    def result(self) -> dict[str, float]:
        """``{"recall@K", "mrr@K"}`` for each K, plus ``"n"`` (NaN metrics when empty)."""
        out: dict[str, float] = {}
        n = self.count
        for i, k in enumerate(self.cutoffs):
            out[f"recall@{k}"] = float(self.hits[i] / n) if n else float("nan")
            out[f"mrr@{k}"] = float(self.reciprocal_ranks[i] / n) if n else float("nan")
        out["n"] = n
        return out


# ------------------------------------------------------------------ catalogue exposure


def exposure_counts(
    top_items: np.ndarray | Array,
    capacity: int,
    k: int | None = None,
    row_weights: np.ndarray | Array | None = None,
) -> np.ndarray:
    """How often each item appears in the top-K lists.

    Args:
        top_items: int ``(batch, >=k)`` recommended indices, best first. Negative or
            ``>= capacity`` entries (padding) are ignored.
        capacity: ``C``.
        k: use the first ``k`` columns (``None``: all).
        row_weights: ``(batch,)`` 0 for padded rows, or ``None``.

    Returns:
        int64 ``(C,)`` appearance counts.
    """
    items = np.asarray(top_items)
    if k is not None:
        items = items[:, :k]
    keep = (items >= 0) & (items < capacity)
    if row_weights is not None:
        keep &= np.asarray(row_weights, bool)[:, None]
    return np.bincount(items[keep].astype(np.int64), minlength=capacity)[:capacity]


def catalogue_coverage(counts: np.ndarray, valid_mask: np.ndarray) -> float:
    """Share of valid items recommended at least once.

    Args:
        counts: ``(C,)`` appearance counts from :func:`exposure_counts`.
        valid_mask: bool ``(C,)`` real items.

    Returns:
        Coverage in ``[0, 1]`` (NaN when there is no valid item).
    """
    valid_mask = np.asarray(valid_mask, bool)
    n_valid = int(valid_mask.sum())
    if n_valid == 0:
        return float("nan")
    return float((np.asarray(counts)[valid_mask] > 0).sum() / n_valid)


def gini_index(counts: np.ndarray, valid_mask: np.ndarray | None = None) -> float:
    """Gini index of exposure over the valid items.

    0 means every valid item was recommended equally often; it approaches 1 when all
    recommendations go to one item (exactly ``1 - 1/n`` for ``n`` items). Never
    recommended valid items count as zeros, which is the point: they are unexposed.

    Args:
        counts: ``(C,)`` appearance counts.
        valid_mask: bool ``(C,)`` real items (``None``: all entries).

    Returns:
        Gini in ``[0, 1)`` (NaN when there are no recommendations or no valid item).
    """
    x = np.asarray(counts, np.float64)
    if valid_mask is not None:
        x = x[np.asarray(valid_mask, bool)]
    n = x.size
    total = x.sum()
    if n == 0 or total <= 0:
        return float("nan")
    x = np.sort(x)
    i = np.arange(1, n + 1)
    return float(((2 * i - n - 1) * x).sum() / (n * total))


@dataclass
class ExposureAccumulator:
    """Accumulates item exposure in top-K lists for coverage@K and Gini@K.

    Args:
        capacity: ``C``.
        cutoffs: the K values (each list contributes its first K items to cutoff K).
    """

    capacity: int
    cutoffs: tuple[int, ...] = (20,)
    counts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.cutoffs = tuple(int(k) for k in self.cutoffs)
        self.counts = np.zeros((len(self.cutoffs), self.capacity), np.int64)

    def update(
        self, top_items: np.ndarray | Array, row_weights: np.ndarray | Array | None = None
    ) -> None:
        """Add a batch of top-K lists ``(batch, >= max(cutoffs))``, best first."""
        top_items = np.asarray(top_items)
        if top_items.shape[1] < max(self.cutoffs):
            raise ValueError(f"lists have {top_items.shape[1]} items, need {max(self.cutoffs)}")
        for i, k in enumerate(self.cutoffs):
            self.counts[i] += exposure_counts(top_items, self.capacity, k, row_weights)

    def merge(self, other: ExposureAccumulator) -> ExposureAccumulator:
        """Add another accumulator's counts (same capacity and cutoffs); returns self."""
        if (other.capacity, other.cutoffs) != (self.capacity, self.cutoffs):
            raise ValueError("capacity or cutoffs differ")
        self.counts += other.counts
        return self

    def result(self, valid_mask: np.ndarray) -> dict[str, float]:
        """``{"coverage@K", "gini@K"}`` for each K over the valid items."""
        out: dict[str, float] = {}
        for i, k in enumerate(self.cutoffs):
            out[f"coverage@{k}"] = catalogue_coverage(self.counts[i], valid_mask)
            out[f"gini@{k}"] = gini_index(self.counts[i], valid_mask)
        return out


# ---------------------------------------------------------------- purchase prediction


def _binary_inputs(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).reshape(-1)
    s = np.asarray(scores, np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in length")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1 (or bool)")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return y.astype(bool), s


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC by the Mann-Whitney U statistic, ties counted as one half.

    Equals the probability that a random positive scores above a random negative, with
    ties worth 1/2 (average ranks over tied groups).

    Args:
        labels: ``(n,)`` 0/1 or bool.
        scores: ``(n,)`` real scores (higher means more likely positive).

    Returns:
        AUC in ``[0, 1]``.

    Raises:
        ValueError: when only one class is present (AUC is undefined).
    """
    y, s = _binary_inputs(labels, scores)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC needs both classes (positives={n_pos}, negatives={n_neg})")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    # Average 1-based rank of each run of equal scores.
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], s.size]
    run_rank = (starts + 1 + ends) / 2.0
    ranks = np.empty(s.size, np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


class BootstrapCI(NamedTuple):
    """A point estimate with a percentile bootstrap interval."""

    estimate: float
    low: float
    high: float
    n_resamples: int


def bootstrap_ci(
    metric_fn: Callable[[np.ndarray, np.ndarray], float],
    labels: np.ndarray,
    scores: np.ndarray,
    n: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> BootstrapCI:
    """Percentile bootstrap interval of ``metric_fn(labels, scores)``.

    Resamples the pairs with replacement ``n`` times. Resamples on which the metric is
    undefined (``metric_fn`` raises ``ValueError``, e.g. AUC on one class) are redrawn,
    up to ``10 * n`` draws in total.

    Args:
        metric_fn: ``(labels, scores) -> float``, e.g. :func:`roc_auc`.
        labels: ``(n_samples,)``.
        scores: ``(n_samples,)``.
        n: number of resamples.
        seed: RNG seed (results are reproducible).
        alpha: ``1 - confidence``; 0.05 gives a 95% interval.

    Returns:
        :class:`BootstrapCI` with the full-sample estimate and the interval bounds.
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores)
    estimate = float(metric_fn(labels, scores))
    rng = np.random.default_rng(seed)
    size = labels.shape[0]
    values: list[float] = []
    draws = 0
    while len(values) < n and draws < 10 * n:
        draws += 1
        idx = rng.integers(0, size, size)
        try:
            values.append(float(metric_fn(labels[idx], scores[idx])))
        except ValueError:
            continue
    if not values:
        raise ValueError("the metric was undefined on every bootstrap resample")
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return BootstrapCI(estimate, float(low), float(high), len(values))


def brier_score(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean squared error of predicted probabilities against 0/1 outcomes (lower is better).

    Args:
        labels: ``(n,)`` 0/1.
        probs: ``(n,)`` probabilities in ``[0, 1]``.

    Returns:
        Brier score in ``[0, 1]``.
    """
    y, p = _binary_inputs(labels, probs)
    return float(np.mean((p - y) ** 2))


def base_rate_brier(labels: np.ndarray, base_rate: float | None = None) -> float:
    """Brier score of the constant predictor ``p = base_rate``: the bar to beat.

    Args:
        labels: ``(n,)`` 0/1 outcomes being scored.
        base_rate: the constant probability; ``None`` uses the mean of ``labels``
            (then the score is ``rate * (1 - rate)``). Pass the training base rate for
            an honest out-of-sample baseline.

    Returns:
        Brier score of the constant predictor.
    """
    y = np.asarray(labels, np.float64).reshape(-1)
    rate = float(y.mean()) if base_rate is None else float(base_rate)
    return float(np.mean((rate - y) ** 2))


class ReliabilityBins(NamedTuple):
    """Equal-width probability bins for a reliability diagram (arrays of ``n_bins``)."""

    lower: np.ndarray
    upper: np.ndarray
    count: np.ndarray
    mean_prob: np.ndarray  # NaN in empty bins
    frac_pos: np.ndarray  # observed positive rate, NaN in empty bins


def reliability_bins(labels: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> ReliabilityBins:
    """Bin predictions by probability and compare mean prediction with observed rate.

    Bins are ``[i/n, (i+1)/n)``, the last one closed at 1.

    Args:
        labels: ``(n,)`` 0/1.
        probs: ``(n,)`` probabilities in ``[0, 1]``.
        n_bins: number of equal-width bins.

    Returns:
        :class:`ReliabilityBins`.
    """
    y, p = _binary_inputs(labels, probs)
    if ((p < 0) | (p > 1)).any():
        raise ValueError("probabilities must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    prob_sum = np.bincount(which, weights=p, minlength=n_bins)
    pos_sum = np.bincount(which, weights=y.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.where(count > 0, prob_sum / count, np.nan)
        frac_pos = np.where(count > 0, pos_sum / count, np.nan)
    return ReliabilityBins(edges[:-1], edges[1:], count, mean_prob, frac_pos)


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error: count-weighted mean of ``|observed rate - mean prob|``.

    Args:
        labels: ``(n,)`` 0/1.
        probs: ``(n,)`` probabilities in ``[0, 1]``.
        n_bins: number of equal-width bins.

    Returns:
        ECE in ``[0, 1]``.
    """
    bins = reliability_bins(labels, probs, n_bins)
    filled = bins.count > 0
    gaps = np.abs(bins.frac_pos[filled] - bins.mean_prob[filled])
    return float((gaps * bins.count[filled]).sum() / bins.count.sum())
