"""Optax-style optimisers that update only the touched rows of embedding tables.

A step of sampled training touches a few thousand rows of a table (inputs, targets
and sampled negatives). Updating every row each step (a dense optimiser) moves the
whole table and its optimiser state through memory, which on a CPU costs more than
the model. These transformations take `SparseRows` (row indices with their gradient
rows; repeats allowed, summed as PyTorch's sparse `coalesce` does) and return the
row updates, with state as a NamedTuple, so they compose like optax transforms:

    opt = row_adagrad(0.2, momentum=0.2)
    state = opt.init(table)
    updates, state = opt.update(SparseRows(idx, grads), state, table)
    table = apply_row_updates(table, updates)

`adagrad_momentum` is the dense counterpart (GRU4Rec's optimiser for the recurrent
weights) as an ordinary optax transformation.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class SparseRows(NamedTuple):
    """Rows of a table: `indices` (K,) int32 and `values` (K, ...).

    Indices >= the table's row count are padding and ignored (the update values at
    padding positions are meaningless; `apply_row_updates` drops them).
    """

    indices: jax.Array
    values: jax.Array


def first_occurrence(indices: jax.Array, num_rows: int) -> jax.Array:
    """Position of the first occurrence of each index, without sorting.

    One scatter-min of K positions into a (num_rows + 1,) int table and one gather:
    far cheaper on a CPU than sorting K indices, and it lets the caller sum repeated
    rows wherever that is cheapest (e.g. on narrow score columns, not wide rows).

    Args:
      indices: (K,) row indices; those >= num_rows are padding (all map to one slot).
      num_rows: rows of the table.

    Returns:
      (K,) int32 `owner`: for each position p, the smallest q with the same index
      (owner[p] == p exactly at first occurrences).
    """
    k = indices.shape[0]
    idx = jnp.where(indices < num_rows, indices, num_rows)
    pos = jnp.arange(k, dtype=jnp.int32)
    first = jnp.full((num_rows + 1,), k, jnp.int32).at[idx].min(pos)
    return first[idx]


def coalesce(rows: SparseRows, num_rows: int) -> SparseRows:
    """Sums the values of repeated indices; static size K, padding index = num_rows.

    Sort-free: each index's values are summed into the position of its first
    occurrence (`first_occurrence`), and the other positions become padding.

    Args:
      rows: possibly repeated rows.
      num_rows: rows of the table (used as the padding index).

    Returns:
      SparseRows of the same size K where each valid index appears once (at its
      first position, with the summed values); other positions are padding
      (index num_rows, zero values).
    """
    k = rows.indices.shape[0]
    owner = first_occurrence(rows.indices, num_rows)
    summed = jax.ops.segment_sum(rows.values, owner, num_segments=k)
    keep = (owner == jnp.arange(k)) & (rows.indices < num_rows)
    return SparseRows(jnp.where(keep, rows.indices, num_rows).astype(jnp.int32), summed)


def apply_row_updates(table: jax.Array, updates: SparseRows) -> jax.Array:
    """Adds row updates to a table (padding indices dropped).

    Args:
      table: (N, ...) table.
      updates: coalesced row updates.

    Returns:
      The updated table.
    """
    return table.at[updates.indices].add(updates.values, mode="drop")


class RowAdagradState(NamedTuple):
    """Per-row Adagrad accumulator and momentum.

    `mom` has the table's shape, or zero rows when momentum is off (nothing to carry).
    """

    acc: jax.Array
    mom: jax.Array


def row_adagrad(
    learning_rate: float,
    momentum: float = 0.0,
    eps: float = 1e-6,
    *,
    unique_indices: bool = False,
) -> optax.GradientTransformation:
    """Row-wise Adagrad with momentum, as GRU4Rec's IndexedAdagradM.

    For each touched row: acc += g^2; mom = momentum * mom - lr * g / sqrt(acc + eps);
    update = mom. Untouched rows keep their state (momentum is applied lazily).

    Args:
      learning_rate: step size.
      momentum: momentum coefficient (0 = plain Adagrad, and no momentum table).
      eps: added inside the square root.
      unique_indices: the caller guarantees that the valid indices of each update
        are unique (already coalesced, e.g. by `first_occurrence` upstream); skips
        the coalescing pass over the (K, D) values.

    Returns:
      An optax.GradientTransformation over SparseRows.
    """

    def init(table: jax.Array) -> RowAdagradState:
        mom_rows = table.shape[0] if momentum > 0 else 0
        mom = jnp.zeros((mom_rows, *table.shape[1:]), table.dtype)
        return RowAdagradState(jnp.zeros_like(table), mom)

    def update(
        rows: SparseRows, state: RowAdagradState, params: Any = None
    ) -> tuple[SparseRows, RowAdagradState]:
        del params
        n = state.acc.shape[0]
        if not unique_indices:
            rows = coalesce(rows, n)
        idx, g = rows.indices, rows.values
        acc_rows = state.acc.at[idx].get(mode="clip") + jnp.square(g)
        step = -learning_rate * g / jnp.sqrt(acc_rows + eps)
        acc = state.acc.at[idx].set(acc_rows, mode="drop")
        if momentum > 0:
            step = momentum * state.mom.at[idx].get(mode="clip") + step
            mom = state.mom.at[idx].set(step, mode="drop")
        else:
            mom = state.mom
        return SparseRows(idx, step), RowAdagradState(acc, mom)

    return optax.GradientTransformation(init, update)


class RowAdamState(NamedTuple):
    """Per-row first and second moments and the global step count."""

    count: jax.Array
    mu: jax.Array
    nu: jax.Array


def row_adam(
    learning_rate: float,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    *,
    unique_indices: bool = False,
) -> optax.GradientTransformation:
    """Lazy (row-wise) Adam/AdamW: moments and decay of touched rows only.

    Bias correction uses the global step, as TensorFlow's LazyAdam does.

    Args:
      learning_rate: step size.
      b1, b2: moment decay rates.
      eps: denominator epsilon.
      weight_decay: decoupled weight decay on the touched rows (needs params).
      unique_indices: valid indices are already unique (see `row_adagrad`).

    Returns:
      An optax.GradientTransformation over SparseRows.
    """

    def init(table: jax.Array) -> RowAdamState:
        return RowAdamState(jnp.zeros([], jnp.int32), jnp.zeros_like(table), jnp.zeros_like(table))

    def update(
        rows: SparseRows, state: RowAdamState, params: jax.Array | None = None
    ) -> tuple[SparseRows, RowAdamState]:
        n = state.mu.shape[0]
        if not unique_indices:
            rows = coalesce(rows, n)
        idx, g = rows.indices, rows.values
        count = state.count + 1
        mu_rows = b1 * state.mu.at[idx].get(mode="clip") + (1 - b1) * g
        nu_rows = b2 * state.nu.at[idx].get(mode="clip") + (1 - b2) * g * g
        c = count.astype(jnp.float32)
        mu_hat = mu_rows / (1 - b1**c)
        nu_hat = nu_rows / (1 - b2**c)
        step = -learning_rate * mu_hat / (jnp.sqrt(nu_hat) + eps)
        if weight_decay > 0 and params is not None:
            step = step - learning_rate * weight_decay * params.at[idx].get(
                mode="fill", fill_value=0.0
            )
        new = RowAdamState(
            count,
            state.mu.at[idx].set(mu_rows, mode="drop"),
            state.nu.at[idx].set(nu_rows, mode="drop"),
        )
        return SparseRows(idx, step), new

    return optax.GradientTransformation(init, update)


class AdagradMomentumState(NamedTuple):
    """Dense Adagrad accumulator and momentum pytrees."""

    acc: Any
    mom: Any


def adagrad_momentum(
    learning_rate: float, momentum: float = 0.0, eps: float = 1e-6
) -> optax.GradientTransformation:
    """Dense Adagrad with momentum exactly as GRU4Rec (acc starts at 0, eps in sqrt).

    Args:
      learning_rate: step size.
      momentum: momentum coefficient.
      eps: added inside the square root.

    Returns:
      An optax.GradientTransformation.
    """

    def init(params: Any) -> AdagradMomentumState:
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return AdagradMomentumState(zeros, jax.tree_util.tree_map(jnp.zeros_like, params))

    def update(
        grads: Any, state: AdagradMomentumState, params: Any = None
    ) -> tuple[Any, AdagradMomentumState]:
        del params
        acc = jax.tree_util.tree_map(lambda a, g: a + g * g, state.acc, grads)
        step = jax.tree_util.tree_map(
            lambda g, a: -learning_rate * g / jnp.sqrt(a + eps), grads, acc
        )
        if momentum > 0:
            mom = jax.tree_util.tree_map(lambda m, s: momentum * m + s, state.mom, step)
            return mom, AdagradMomentumState(acc, mom)
        return step, AdagradMomentumState(acc, state.mom)

    return optax.GradientTransformation(init, update)
