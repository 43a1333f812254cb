"""Next-item losses as GRU4Rec defines them, plus the purchase loss.

Sampled losses score each mini-batch row against the columns
`Y = [targets of the batch; extra negatives]`; row i's positive is column i (the
in-batch targets of the other rows are its negatives, as in GRU4Rec). Columns whose
item is 0 (padding of finished slots) are masked out. All losses return a sum over
rows weighted by `weights` (0 for padded slots); the caller divides by the batch size
as GRU4Rec does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnnrec_jax.models import MASKED_SCORE


def logq_correction(
    counts: jax.Array, columns: jax.Array, n_targets: int, sample_alpha: float, strength: float
) -> jax.Array:
    """GRU4Rec's logQ term per column: log count for targets, alpha*log count for samples.

    Args:
      counts: (capacity,) item counts in training (>= 1 where defined).
      columns: (M,) item index of each score column.
      n_targets: the first n_targets columns are in-batch targets; the rest are samples.
      sample_alpha: sampler exponent (samples were drawn from counts**alpha).
      strength: multiplier of the correction (GRU4Rec's `logq`).

    Returns:
      (M,) values to subtract from the scores.
    """
    logc = jnp.log(jnp.maximum(jnp.take(counts, columns), 1.0))
    is_sample = jnp.arange(columns.shape[0]) >= n_targets
    return strength * jnp.where(is_sample, sample_alpha * logc, logc)


def sampled_cross_entropy(
    scores: jax.Array,
    columns: jax.Array,
    weights: jax.Array,
    correction: jax.Array | None = None,
) -> jax.Array:
    """Softmax cross-entropy with the positive on the diagonal.

    Args:
      scores: (B, M) scores of each row against the columns, M >= B.
      columns: (M,) item index of each column (0 = padding, masked).
      weights: (B,) row weights (0 for padded rows).
      correction: (M,) optional logQ term subtracted from the scores.

    Returns:
      Scalar: sum over rows of weight * -log softmax(scores)[i, i].
    """
    if correction is not None:
        scores = scores - correction[None, :]
    scores = jnp.where(columns[None, :] > 0, scores, MASKED_SCORE)
    n = scores.shape[0]
    logp = jax.nn.log_softmax(scores, axis=-1)
    diag = logp[jnp.arange(n), jnp.arange(n)]
    return -jnp.sum(weights * diag)


def bpr_max(
    scores: jax.Array,
    columns: jax.Array,
    weights: jax.Array,
    bpreg: float = 1.0,
    elu_param: float = 0.0,
) -> jax.Array:
    """BPR-max (Hidasi & Karatzoglou 2018) with the positive on the diagonal.

    loss_i = -log sum_j s_ij sigmoid(r_ii - r_ij) + bpreg * sum_j s_ij r_ij^2, where s_i
    is the softmax over the negatives of row i (all valid columns but i).

    Args:
      scores: (B, M) scores.
      columns: (M,) item index of each column (0 = padding, masked).
      weights: (B,) row weights.
      bpreg: score regularisation strength.
      elu_param: apply ELU(alpha) to the scores first when > 0.

    Returns:
      Scalar weighted sum of per-row losses.
    """
    if elu_param > 0:
        scores = jax.nn.elu(scores, elu_param)
    n, m = scores.shape
    negative = (jnp.arange(m)[None, :] != jnp.arange(n)[:, None]) & (columns[None, :] > 0)
    s = jax.nn.softmax(jnp.where(negative, scores, MASKED_SCORE), axis=-1)
    s = jnp.where(negative, s, 0.0)
    target = scores[jnp.arange(n), jnp.arange(n)][:, None]
    prob = jnp.sum(jax.nn.sigmoid(target - scores) * s, axis=-1)
    reg = jnp.sum(jnp.square(scores) * s, axis=-1)
    per_row = -jnp.log(prob + 1e-24) + bpreg * reg
    return jnp.sum(weights * per_row)


def full_cross_entropy(
    scores: jax.Array,
    targets: jax.Array,
    weights: jax.Array,
    label_smoothing: float = 0.0,
    valid: jax.Array | None = None,
) -> jax.Array:
    """Softmax cross-entropy against the whole catalogue.

    Args:
      scores: (B, capacity) scores, invalid items already masked.
      targets: (B,) target item indices.
      weights: (B,) row weights.
      label_smoothing: mass spread uniformly over the valid items.
      valid: (capacity,) bool mask (needed when label_smoothing > 0).

    Returns:
      Scalar weighted sum of per-row losses.
    """
    logp = jax.nn.log_softmax(scores, axis=-1)
    nll = -jnp.take_along_axis(logp, targets[:, None], axis=-1)[:, 0]
    if label_smoothing > 0:
        v = valid.astype(scores.dtype) if valid is not None else jnp.ones(scores.shape[-1])
        smooth = -jnp.sum(jnp.where(v[None, :] > 0, logp, 0.0), axis=-1) / jnp.sum(v)
        nll = (1.0 - label_smoothing) * nll + label_smoothing * smooth
    return jnp.sum(weights * nll)


def purchase_bce(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
    """Weighted binary cross-entropy of purchase logits (sum over rows).

    Args:
      logits: (B,) purchase logits.
      labels: (B,) 0/1 labels.
      weights: (B,) row weights.

    Returns:
      Scalar weighted sum.
    """
    ll = labels * jax.nn.log_sigmoid(logits) + (1.0 - labels) * jax.nn.log_sigmoid(-logits)
    return -jnp.sum(weights * ll)
