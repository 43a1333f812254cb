"""Occlusion explanations: which of a user's recent items raised a recommendation's score.

Faithful by construction: an attribution is a measured score difference of the model
itself, not a gradient or a surrogate. For a window of the user's last L events
``history`` (oldest first, 0 = padding) and a recommended item i:

* ``full[i]``: the score of i after replaying the whole window from a zero state;
* ``without_j[i]``: the score after replaying the window with event j removed (the
  event is skipped: the state passes it unchanged, exactly as serving treats an
  out-of-vocabulary event);
* ``weight[i, j] = full[i] - without_j[i]``: how much event j raised i's score.

The L + 1 replays run inside the jitted serving step, sharing their common prefixes
(`replay_variants`), and only the K recommended items are scored (a (B, K) gather of
item rows, not the catalogue), so the cost is L * (L + 1) / 2 recurrent steps at batch
B (without their readouts), L + 1 readouts at batch B and (L + 1) * B * K dot products. The score of the window replay differs from the served
score (which comes from the whole session's state): the explanation describes the
last L events only, which is what a user can recognise.
"""

from __future__ import annotations

import dataclasses
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


def replay_variants(cfg: ModelConfig, params: Params, history: jax.Array) -> jax.Array:
    """Representations of each window and of its L one-event-removed variants.

    The same results as `replay_window` over the L + 1 windows (variant 0 the full
    window, variant j + 1 the window without position j), at half the recurrent
    steps: a variant equals the full window until its removed position, so its
    replay starts from the full window's state there instead of from zero. With
    attention, the replay's window holds L slots (all a replay can fill). At time t
    the full window and the t variants that already differ step together
    (L (L + 1) / 2 row-steps of batch B in all, against L (L + 1)); the loop over the
    L positions is unrolled (L is a static window width, 5 by default).

    Args:
        cfg: model configuration.
        params: model params.
        history: int32 (B, L) item indices, oldest first; 0 entries are skipped.

    Returns:
        float32 (L + 1, B, output_dim) representations.
    """
    b, length = history.shape
    if cfg.attention and cfg.attention_window > length:
        # A replay holds at most L events, and attention only looks at the last
        # `count` window slots: a window of L slots gives the same result, and the
        # attention keys, the readout's largest cost, are computed for L slots, not 16.
        cfg = dataclasses.replace(cfg, attention_window=length)
    # The replays step the recurrent state only; each variant's representation is read
    # out once, at the end, from its last state and last input (the readout feeds
    # nothing back into the state): L + 1 readouts per row instead of L (L + 1) / 2.
    table = params[models.input_table_name(cfg)]
    full_carry = models.initial_carry(cfg, b)
    full_last = jnp.zeros((b, models.input_dim(cfg)), jnp.float32)
    # The variants that already skipped their position, stacked: t * B rows at time t.
    var_carry = jax.tree_util.tree_map(lambda x: x[:0], full_carry)
    var_last = full_last[:0]
    for t in range(length):
        carry = jax.tree_util.tree_map(
            lambda f, v: jnp.concatenate([f, v], axis=0), full_carry, var_carry
        )
        last = jnp.concatenate([full_last, var_last], axis=0)
        items = jnp.tile(history[:, t], t + 1)
        # All t + 1 blocks step with the same items: their input rows and the first
        # layer's input product are computed once, for B rows.
        rows = jnp.take(table, history[:, t], axis=0)
        projected = models.first_layer_input(cfg, params, rows)
        new_carry, new_last, _ = models.recurrent_step(
            cfg, params, carry, items,
            input_rows=jnp.tile(rows, (t + 1, 1)),
            projected=None if projected is None else jnp.tile(projected, (t + 1, 1)),
        )  # fmt: skip
        step = items > 0

        def keep(new: jax.Array, old: jax.Array, step: jax.Array = step) -> jax.Array:
            return jnp.where(step.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)

        new_carry = jax.tree_util.tree_map(keep, new_carry, carry)
        new_last = keep(new_last, last)
        # Variant t skips position t: its state is the full window's before this step.
        var_carry = jax.tree_util.tree_map(
            lambda n, f: jnp.concatenate([n[b:], f], axis=0), new_carry, full_carry
        )
        var_last = jnp.concatenate([new_last[b:], full_last], axis=0)
        full_carry = jax.tree_util.tree_map(lambda x: x[:b], new_carry)
        full_last = new_last[:b]
    carry = jax.tree_util.tree_map(
        lambda f, v: jnp.concatenate([f, v], axis=0), full_carry, var_carry
    )
    rep = models.readout(cfg, params, carry, jnp.concatenate([full_last, var_last], axis=0))
    # A window with no real event has no representation (zeros, as `replay_window`).
    rep = jnp.where((carry["count"] > 0)[:, None], rep, 0.0)
    return rep.reshape(length + 1, b, -1)


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
    length = history.shape[1]
    rep = replay_variants(cfg, params, history)  # (L + 1, B, D)
    scores = item_scores(params, rep, items)  # (L + 1, B, K)
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
