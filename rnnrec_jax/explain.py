"""Occlusion explanations: which of a user's recent items raised a recommendation's score.

Faithful by construction: an attribution is a measured score difference of the model
itself, not a gradient or a surrogate. For a window of the user's last L events
``history`` (oldest first, 0 = padding) and a recommended item i:

* ``full[i]``: the score of i after replaying the whole window from a zero state;
* ``without_j[i]``: the score after replaying the window with event j removed (the
  event is skipped: the state passes it unchanged, exactly as serving treats an
  out-of-vocabulary event);
* ``weight[i, j] = full[i] - without_j[i]``: how much event j raised i's score.

The L + 1 replays run as one batch of ``(L + 1) * B`` sequences inside the jitted
serving step, and only the K recommended items are scored (a (B, K) gather of item
rows, not the catalogue), so the cost is L * (L + 1) recurrent steps at batch B plus
(L + 1) * B * K dot products. The score of the window replay differs from the served
score (which comes from the whole session's state): the explanation describes the
last L events only, which is what a user can recognise.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnrec_jax import models
from rnnrec_jax.config import ModelConfig

Params = models.Params


class Attributions(NamedTuple):
    """Per recommended item, the history positions that raised its score.

    Attributes:
        weights: float32 (B, K, L): ``weights[b, k, j]`` = score of row b's k-th
            recommendation from the full window minus its score with history position
            j removed (0 for padding positions and for empty recommendation slots).
        positions: int32 (B, K, M): the M history positions with the largest weights,
            largest first (indices into ``history``'s second axis); -1 where the
            window has fewer than M real events (or the slot is empty).
        top_weights: float32 (B, K, M): the weights at ``positions``.
    """

    weights: jax.Array
    positions: jax.Array
    top_weights: jax.Array


def replay_window(cfg: ModelConfig, params: Params, history: jax.Array) -> jax.Array:
    """Representation after replaying each window from a zero state.

    Args:
        cfg: model configuration.
        params: model params.
        history: int32 (N, L) item indices, oldest first; 0 entries are skipped (the
            state and representation pass them unchanged).

    Returns:
        float32 (N, output_dim) representations (zeros for a window of padding only).
    """
    n, _ = history.shape
    carry = models.initial_carry(cfg, n)
    rep = jnp.zeros((n, cfg.output_dim), jnp.float32)

    def body(state: tuple, items: jax.Array) -> tuple[tuple, None]:
        carry, rep = state
        new_carry, new_rep, _ = models.encode_step(cfg, params, carry, items)
        step = items > 0

        def keep(new: jax.Array, old: jax.Array) -> jax.Array:
            return jnp.where(step.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)

        return (jax.tree_util.tree_map(keep, new_carry, carry), keep(new_rep, rep)), None

    (_, rep), _ = jax.lax.scan(body, (carry, rep), history.T)
    return rep


def item_scores(params: Params, rep: jax.Array, items: jax.Array) -> jax.Array:
    """Scores of selected items only, the same formula as `models.score_items`.

    Args:
        params: model params.
        rep: float32 (V, B, D) representations (V variants per row).
        items: int32 (B, K) item indices.

    Returns:
        float32 (V, B, K) scores.
    """
    rows = jnp.take(params["item_out"], items, axis=0)  # (B, K, D)
    if models.uses_score_norm(params):
        # As score_items: cosine scores normalise the item rows (rep already is).
        rows = rows * jax.lax.rsqrt(jnp.sum(jnp.square(rows), axis=-1, keepdims=True) + 1e-6)
    bias = jnp.take(params["item_bias"], items, axis=0)  # (B, K)
    return jnp.einsum("vbd,bkd->vbk", rep, rows) + bias[None]


def occlusion(
    cfg: ModelConfig, params: Params, history: jax.Array, items: jax.Array, top: int = 3
) -> Attributions:
    """Occlusion attributions of recommended ``items`` to the events of ``history``.

    Args:
        cfg: model configuration.
        params: model params.
        history: int32 (B, L) the user's last L item indices, oldest first, 0 = padding.
        items: int32 (B, K) recommended item indices (0 = empty slot).
        top: M, the positions returned per recommendation (clipped to L).

    Returns:
        `Attributions` (weights (B, K, L), top positions and weights (B, K, M)).
    """
    b, length = history.shape
    # Variant 0 is the full window; variant j + 1 drops position j.
    drop = jnp.concatenate(
        [jnp.zeros((1, length), bool), jnp.eye(length, dtype=bool)], axis=0
    )  # (L + 1, L)
    variants = jnp.where(drop[:, None, :], 0, history[None, :, :])  # (L + 1, B, L)
    rep = replay_window(cfg, params, variants.reshape((length + 1) * b, length))
    scores = item_scores(params, rep.reshape(length + 1, b, -1), items)  # (L + 1, B, K)
    weights = jnp.transpose(scores[0][None] - scores[1:], (1, 2, 0))  # (B, K, L)
    real = (history > 0)[:, None, :] & (items > 0)[:, :, None]
    weights = jnp.where(real, weights, 0.0)
    m = min(top, length)
    # Padding never ranks among the contributors, even above negative weights.
    _, positions = jax.lax.top_k(jnp.where(real, weights, -jnp.inf), m)
    top_weights = jnp.take_along_axis(weights, positions, axis=-1)
    kept = jnp.take_along_axis(real, positions, axis=-1)
    positions = jnp.where(kept, positions, -1).astype(jnp.int32)
    return Attributions(weights, positions, jnp.where(kept, top_weights, 0.0))
