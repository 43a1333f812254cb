"""Exact top-K selection over the item catalogue for the serving step.

Scoring a batch of GRU states against the whole catalogue and selecting the best K items
dominates the serving cost (ANCHORS.md). This module holds several interchangeable ways of
doing it, all with the same contract, and :func:`default_topk`, the one serving uses.

Contract shared by every exact method:

* ``scores`` is float32 ``(batch, C)``; ``C`` is the fixed vocabulary capacity.
* ``mask`` (optional) is bool ``(C,)`` (catalogue-wide: valid and available items) or
  ``(batch, C)`` (per row: e.g. items already seen in the session excluded). Masked-out
  items score ``-inf``. Index 0 (OOV/padding) must be masked out by the caller's
  ``valid_mask``; these functions do not special-case it.
* Returns ``(values, indices)``, each ``(batch, k)``, best first; indices are int32.
* Ties are broken deterministically: among equal scores the lowest item index comes first.
  This is the order ``jax.lax.top_k`` documents, so every exact method returns exactly the
  indices ``jax.lax.top_k`` would (tests check it on random cases with ties). When a row has
  fewer than ``k`` unmasked items the tail holds ``-inf`` values (lowest masked indices):
  callers drop entries whose value is ``-inf``.
* Scores must be NaN-free (checkpoint loading rejects non-finite parameters); NaN ordering
  is not part of the contract.

Measured on 2 CPU cores (bench/results/topk.md): XLA's CPU ``TopK`` runs a single-threaded
partial sort per row (about 1 us per row plus about 1 ns per item), so over the full
catalogue it costs about as much as the scoring matmul, while a max over small contiguous
blocks is one vectorised pass. :func:`topk_threshold` uses the block maxima to cut the
candidates down to ``k`` blocks before sorting anything; :func:`score_topk_fused` does the
same chunk by chunk while each chunk's scores are still in cache. Two XLA CPU traps shaped
the code: an elementwise bias/mask fused into the block-max reduction, or ``jnp.pad`` of
the scores, turns that pass into a slow scalar loop (hence :func:`fold_items` and blocks
that divide ``C``).

Caveat on signed zeros: ``lax.top_k`` orders ``-0.0`` below ``+0.0``, the other methods
treat them as equal. Matmul scores never come out as ``-0.0`` (accumulators start at
``+0.0``), so this matters only for hand-made inputs.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

__all__ = [
    "FUSED_MIN_CATALOGUE",
    "SELECTORS",
    "apply_mask",
    "default_topk",
    "fold_items",
    "pick_block",
    "score_items",
    "score_topk",
    "score_topk_fused",
    "topk_approx",
    "topk_blocked",
    "topk_lax",
    "topk_numpy",
    "topk_threshold",
]


def apply_mask(scores: Array, mask: Array | None) -> Array:
    """Set the scores of masked-out items to ``-inf``.

    Args:
        scores: float ``(batch, C)`` scores.
        mask: bool ``(C,)`` or ``(batch, C)``; True marks items that may be recommended.
            ``None`` leaves the scores unchanged.

    Returns:
        The masked scores, same shape and dtype.
    """
    if mask is None:
        return scores
    return jnp.where(mask, scores, jnp.asarray(-jnp.inf, scores.dtype))


def fold_items(
    item_embeddings: Array, bias: Array | None = None, mask: Array | None = None
) -> Array:
    """Fold the output bias and a catalogue-wide mask into one extra embedding column.

    ``[h, 1] @ [e, b].T == h @ e.T + b``, and a masked item gets ``b = -inf``. Scores then
    come out of the matmul already biased and masked: an elementwise bias/mask pass over the
    ``(batch, C)`` scores, fused by XLA's CPU backend into the block-max reduction, made
    that reduction several times slower (measured). Serving can fold once per model
    version or availability change and pass the result with ``bias=None, mask=None``
    to :func:`score_items` via ``folded=True``.

    Args:
        item_embeddings: float ``(C, H)``.
        bias: float ``(C,)`` or ``None`` (zeros).
        mask: bool ``(C,)`` or ``None`` (all allowed).

    Returns:
        float ``(C, H + 1)``.
    """
    capacity = item_embeddings.shape[0]
    dtype = item_embeddings.dtype
    column = jnp.zeros((capacity,), dtype) if bias is None else bias.astype(dtype)
    if mask is not None:
        column = jnp.where(mask, column, jnp.asarray(-jnp.inf, dtype))
    return jnp.concatenate([item_embeddings, column[:, None]], axis=1)


def _unfold_states(states: Array) -> Array:
    """Append the constant-1 input that multiplies the folded bias column."""
    return jnp.concatenate([states, jnp.ones((states.shape[0], 1), states.dtype)], axis=1)


def _late_mask(mask: Array | None, bias: Array | None, folded: bool) -> Array | None:
    """The part of ``mask`` applied after the matmul: per-row masks, or any mask when the
    items were folded beforehand (a catalogue mask is otherwise folded in)."""
    if folded and bias is not None:
        raise ValueError("bias must be None with folded items: fold_items already added it")
    if mask is not None and (mask.ndim == 2 or folded):
        return mask
    return None


def score_items(
    states: Array,
    item_embeddings: Array,
    bias: Array | None = None,
    mask: Array | None = None,
    *,
    folded: bool = False,
) -> Array:
    """Score every item for every state: ``states @ item_embeddings.T + bias``, masked.

    Args:
        states: float ``(batch, H)`` output states.
        item_embeddings: float ``(C, H)``, or ``(C, H + 1)`` from :func:`fold_items`
            when ``folded``.
        bias: float ``(C,)`` or ``None``.
        mask: bool ``(C,)`` (folded into the matmul) or ``(batch, C)`` (applied after
            it), or ``None``.
        folded: ``item_embeddings`` already carries the bias/mask column (then ``bias``
            must be ``None``; a ``mask`` is applied after the matmul).

    Returns:
        float ``(batch, C)`` scores with masked-out items at ``-inf``.
    """
    late_mask = _late_mask(mask, bias, folded)
    if not folded and (bias is not None or (mask is not None and late_mask is None)):
        item_embeddings = fold_items(item_embeddings, bias, None if late_mask is not None else mask)
        folded = True
    if folded:
        states = _unfold_states(states)
    return apply_mask(states @ item_embeddings.T, late_mask)


def _check_k(k: int, capacity: int) -> None:
    if not 0 < k <= capacity:
        raise ValueError(f"k={k} must be in 1..{capacity} (the score row length)")


@partial(jax.jit, static_argnames=("k",))
def topk_lax(scores: Array, k: int, mask: Array | None = None) -> tuple[Array, Array]:
    """Exact top-k with ``jax.lax.top_k`` (the reference every other method must match).

    Args:
        scores: float ``(batch, C)``.
        k: number of items to return (static).
        mask: optional bool ``(C,)`` or ``(batch, C)``.

    Returns:
        ``(values, indices)``, each ``(batch, k)``, best first, ties by lowest index.
    """
    _check_k(k, scores.shape[-1])
    values, indices = jax.lax.top_k(apply_mask(scores, mask), k)
    return values, indices.astype(jnp.int32)


def _divisor_block(capacity: int, lo: int, hi: int, target: int) -> int | None:
    """The divisor of ``capacity`` in ``[lo, hi]`` closest to ``target`` (None if none)."""
    divisors = [b for b in range(lo, hi + 1) if capacity % b == 0]
    if not divisors:
        return None
    return min(divisors, key=lambda b: (abs(math.log(b / target)), b))


def pick_block(capacity: int, k: int) -> int:
    """Block size for the block-based selections.

    The work after the block pass is about ``capacity / block`` block maxima plus
    ``k * block`` candidates, smallest near ``block = sqrt(capacity / k)``; below 16 the
    block pass stops vectorising well. A block that divides ``capacity`` is preferred:
    ragged blocks need padding, which XLA's CPU backend runs as a slow scalar loop.

    Args:
        capacity: row length ``C``.
        k: number of items to select.

    Returns:
        The block length (items per block).
    """
    target = min(128, max(16, round(math.sqrt(capacity / k))))
    block = _divisor_block(capacity, 16, 128, target)
    return block if block is not None else 1 << round(math.log2(target))


def _block_maxima(scores: Array, block: int) -> Array:
    """Max of each contiguous block of ``block`` items: ``(batch, ceil(C / block))``."""
    batch, capacity = scores.shape
    if capacity % block == 0:
        # A free reshape: one vectorised pass, the cheapest way on CPU.
        return scores.reshape(batch, capacity // block, block).max(axis=-1)
    # Ragged last block: reduce_window pads virtually (jnp.pad would copy slowly).
    pad = -capacity % block
    return jax.lax.reduce_window(
        scores,
        jnp.asarray(-jnp.inf, scores.dtype),
        jax.lax.max,
        window_dimensions=(1, block),
        window_strides=(1, block),
        padding=((0, 0), (0, pad)),
    )


@partial(jax.jit, static_argnames=("k", "block"))
def topk_threshold(
    scores: Array, k: int, mask: Array | None = None, block: int | None = None
) -> tuple[Array, Array]:
    """Exact top-k by a threshold from block maxima, then a top-k over ``k`` blocks only.

    Let ``t`` be the k-th largest block maximum of a row. The ``k`` blocks whose maxima
    reach ``t`` hold at least ``k`` items scoring ``>= t``, so every top-k item scores
    ``>= t`` and therefore lies in a block whose maximum is ``>= t``: the top-k blocks by
    maximum (ties by lowest block index, which keeps lowest-index tie-breaking exact).
    The selected blocks are gathered in index order, so the final ``lax.top_k`` over
    ``k * block`` candidates breaks ties by item index exactly like a full ``lax.top_k``.

    Args:
        scores: float ``(batch, C)``.
        k: number of items to return (static).
        mask: optional bool ``(C,)`` or ``(batch, C)``.
        block: items per block (static); default :func:`pick_block`.

    Returns:
        ``(values, indices)``, each ``(batch, k)``, best first, ties by lowest index.
    """
    batch, capacity = scores.shape
    _check_k(k, capacity)
    block = pick_block(capacity, k) if block is None else block
    n_blocks = -(-capacity // block)
    scores = apply_mask(scores, mask)
    if n_blocks <= k:
        values, indices = jax.lax.top_k(scores, k)
        return values, indices.astype(jnp.int32)
    _, top_blocks = jax.lax.top_k(_block_maxima(scores, block), k)
    top_blocks = jnp.sort(top_blocks, axis=1)  # index order: ties resolve by item index
    cand = (top_blocks[:, :, None] * block + jnp.arange(block, dtype=jnp.int32)).reshape(
        batch, k * block
    )
    inside = cand < capacity  # only the ragged last block can reach past the row
    cand_scores = jnp.take_along_axis(scores, jnp.minimum(cand, capacity - 1), axis=1)
    cand_scores = jnp.where(inside, cand_scores, jnp.asarray(-jnp.inf, scores.dtype))
    values, pos = jax.lax.top_k(cand_scores, k)
    return values, jnp.take_along_axis(cand, pos, axis=1).astype(jnp.int32)


@partial(jax.jit, static_argnames=("k", "block"))
def topk_blocked(
    scores: Array, k: int, mask: Array | None = None, block: int | None = None
) -> tuple[Array, Array]:
    """Exact two-stage top-k: top-k inside each block, then top-k of the candidates.

    Any top-k item is also in the top-k of its own block, so the candidates contain the
    answer. Candidates are laid out block by block, each block's best-first with ties by
    index, so equal scores keep item-index order and the final selection matches
    ``lax.top_k``.

    Args:
        scores: float ``(batch, C)``.
        k: number of items to return (static).
        mask: optional bool ``(C,)`` or ``(batch, C)``.
        block: items per block (static, ``>= k``); default: a divisor of ``C`` near
            ``sqrt(C * k)`` (falls back to one ``lax.top_k`` when ``C`` has none).

    Returns:
        ``(values, indices)``, each ``(batch, k)``, best first, ties by lowest index.
    """
    batch, capacity = scores.shape
    _check_k(k, capacity)
    scores = apply_mask(scores, mask)
    if block is None:
        target = max(4 * k, round(math.sqrt(capacity * k)))
        block = _divisor_block(capacity, 2 * k, 8 * target, target)
    if block is None or block < k or capacity % block or capacity // block < 2:
        values, indices = jax.lax.top_k(scores, k)
        return values, indices.astype(jnp.int32)
    n_blocks = capacity // block
    block_values, block_idx = jax.lax.top_k(scores.reshape(batch, n_blocks, block), k)
    cand = block_idx + (jnp.arange(n_blocks, dtype=block_idx.dtype) * block)[:, None]
    values, pos = jax.lax.top_k(block_values.reshape(batch, n_blocks * k), k)
    indices = jnp.take_along_axis(cand.reshape(batch, n_blocks * k), pos, axis=1)
    return values, indices.astype(jnp.int32)


@partial(jax.jit, static_argnames=("k", "recall_target"))
def topk_approx(
    scores: Array, k: int, mask: Array | None = None, recall_target: float = 0.95
) -> tuple[Array, Array]:
    """Approximate top-k with ``jax.lax.approx_max_k`` (NOT exact; for measurement).

    Args:
        scores: float ``(batch, C)``.
        k: number of items to return (static).
        mask: optional bool ``(C,)`` or ``(batch, C)``.
        recall_target: the expected recall XLA is asked for.

    Returns:
        ``(values, indices)``, each ``(batch, k)``, best first.
    """
    _check_k(k, scores.shape[-1])
    values, indices = jax.lax.approx_max_k(apply_mask(scores, mask), k, recall_target=recall_target)
    return values, indices.astype(jnp.int32)


def topk_numpy(
    scores: np.ndarray, k: int, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k in numpy with ``argpartition`` (reference and baseline; not jittable).

    ``argpartition`` picks arbitrary members of a tie at the k-th value; rows where that
    matters are redone so the lowest indices win, as in ``lax.top_k``.

    Args:
        scores: float ``(batch, C)``.
        k: number of items to return.
        mask: optional bool ``(C,)`` or ``(batch, C)``.

    Returns:
        ``(values, indices)``, each ``(batch, k)``, best first, ties by lowest index.
    """
    scores = np.asarray(scores)
    _check_k(k, scores.shape[-1])
    if mask is not None:
        scores = np.where(mask, scores, np.asarray(-np.inf, scores.dtype))
    indices = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(scores, indices, axis=1)
    kth = values.min(axis=1)
    n_tied_total = (scores == kth[:, None]).sum(axis=1)
    n_tied_taken = (values == kth[:, None]).sum(axis=1)
    for row in np.flatnonzero(n_tied_total > n_tied_taken):
        # The k-th value is tied with items that were left out: take the lowest indices.
        above = np.flatnonzero(scores[row] > kth[row])
        tied = np.flatnonzero(scores[row] == kth[row])[: k - above.size]
        indices[row] = np.concatenate([above, tied])
        values[row] = scores[row, indices[row]]
    order = np.lexsort((indices, -values), axis=1)  # value desc, then index asc
    indices = np.take_along_axis(indices, order, axis=1).astype(np.int32)
    return np.take_along_axis(values, order, axis=1), indices


def _exclude(scores: Array, exclude: Array | None, offset: int | Array = 0) -> Array:
    """Set ``scores[b, exclude[b, j] - offset]`` to ``-inf``; out-of-range entries are dropped.

    A scatter of ``batch x L`` entries, far cheaper than a ``(batch, C)`` boolean mask.
    """
    if exclude is None:
        return scores
    rows = jnp.arange(scores.shape[0])[:, None]
    cols = exclude - offset
    cols = jnp.where((cols >= 0) & (cols < scores.shape[1]), cols, scores.shape[1])
    return scores.at[rows, cols].set(jnp.asarray(-jnp.inf, scores.dtype), mode="drop")


SELECTORS = {
    "lax": topk_lax,
    "blocked": topk_blocked,
    "threshold": topk_threshold,
    "approx": topk_approx,
}


@partial(jax.jit, static_argnames=("k", "method", "folded"))
def score_topk(
    states: Array,
    item_embeddings: Array,
    bias: Array | None,
    mask: Array | None,
    k: int,
    method: str = "threshold",
    exclude: Array | None = None,
    folded: bool = False,
) -> tuple[Array, Array]:
    """Score all items, then select with a named method (materialises ``(batch, C)``).

    Args:
        states: float ``(batch, H)``.
        item_embeddings: float ``(C, H)`` (or ``(C, H + 1)`` from :func:`fold_items`).
        bias: float ``(C,)`` or ``None``.
        mask: bool ``(C,)`` or ``(batch, C)``, or ``None``.
        k: number of items (static).
        method: ``"lax"``, ``"blocked"``, ``"threshold"`` or ``"approx"`` (static).
        exclude: int ``(batch, L)`` item indices to leave out per row (e.g. items already
            seen in the session), or ``None``; pad with 0 (never a valid item).
        folded: ``item_embeddings`` comes from :func:`fold_items` (static).

    Returns:
        ``(values, indices)``, each ``(batch, k)``, best first.
    """
    _check_k(k, item_embeddings.shape[0])
    scores = score_items(states, item_embeddings, bias, mask, folded=folded)
    return SELECTORS[method](_exclude(scores, exclude), k)


CHUNK_BYTES = 8 << 20  # scores of one fused chunk: stays in the 32 MiB L3 we measured on


def _chunk_size(capacity: int, batch: int) -> int:
    """Items scored per step of the fused loop: about 8 MiB of scores, a divisor of ``C``.

    The matmul writes a chunk's scores and the block-max pass reads them straight back,
    so a chunk should fit the last-level cache with room to spare (512 states x 4,096
    items of float32 is 8 MiB); chunks much smaller pay per-step overhead.
    """
    target = min(16384, max(2048, CHUNK_BYTES // (4 * max(batch, 1))))
    if capacity <= target:
        return capacity
    chunk = _divisor_block(capacity, target // 2, target * 2, target)
    return chunk if chunk is not None else target


def _merge_topk(
    first: tuple[Array, Array], second: tuple[Array, Array], k: int
) -> tuple[Array, Array]:
    """Exact top-k of two exact top lists whose items in ``first`` all have lower indices."""
    values = jnp.concatenate([first[0], second[0]], axis=1)
    indices = jnp.concatenate([first[1], second[1]], axis=1)
    top_values, pos = jax.lax.top_k(values, k)
    return top_values, jnp.take_along_axis(indices, pos, axis=1)


@partial(jax.jit, static_argnames=("k", "chunk", "block", "folded"))
def score_topk_fused(
    states: Array,
    item_embeddings: Array,
    bias: Array | None,
    mask: Array | None,
    k: int,
    chunk: int | None = None,
    exclude: Array | None = None,
    folded: bool = False,
    block: int | None = None,
) -> tuple[Array, Array]:
    """Score in chunks of items and select as it goes; never builds ``(batch, C)`` scores.

    Each chunk's scores are cut into blocks while still in cache; only the chunk's ``k``
    best blocks (by block maximum, as in :func:`topk_threshold`) are kept, with their
    maxima. Every top-k item of the catalogue is a top-k item of its chunk, so it lies in
    a kept block. After the loop the kept blocks, laid out in item-index order, form a
    small catalogue whose block maxima are known: one ``lax.top_k`` over those maxima
    picks ``k`` blocks, one over their ``k * block`` items gives the answer, ties by
    lowest item index. A ragged last chunk is selected on its own and merged.

    Args:
        states: float ``(batch, H)``.
        item_embeddings: float ``(C, H)`` (or ``(C, H + 1)`` from :func:`fold_items`).
        bias: float ``(C,)`` or ``None``.
        mask: bool ``(C,)`` or ``(batch, C)``, or ``None``.
        k: number of items (static).
        chunk: items per chunk (static); default about 8 MiB of scores (``CHUNK_BYTES``).
        exclude: int ``(batch, L)`` item indices to leave out per row, or ``None``.
        folded: ``item_embeddings`` comes from :func:`fold_items` (static).
        block: items per block inside a chunk (static, must divide the chunk); default
            :func:`pick_block` of the chunk.

    Returns:
        ``(values, indices)``, each ``(batch, k)``, best first, ties by lowest index.
    """
    batch = states.shape[0]
    capacity = item_embeddings.shape[0]
    _check_k(k, capacity)
    chunk = min(capacity, _chunk_size(capacity, batch) if chunk is None else chunk)
    block = pick_block(chunk, k) if block is None else block
    blocks_per_chunk = chunk // block
    if chunk % block or blocks_per_chunk <= k:
        # Too few blocks per chunk for pruning to pay: score everything, then select.
        return score_topk(
            states, item_embeddings, bias, mask, k, "threshold", exclude=exclude, folded=folded
        )
    row_mask = _late_mask(mask, bias, folded)
    if not folded:
        item_embeddings = fold_items(item_embeddings, bias, None if row_mask is not None else mask)
    states = _unfold_states(states)

    def chunk_scores(start: int | Array, size: int) -> Array:
        emb = jax.lax.dynamic_slice_in_dim(item_embeddings, start, size, axis=0)
        scores = states @ emb.T
        if row_mask is not None:
            scores = apply_mask(
                scores, jax.lax.dynamic_slice_in_dim(row_mask, start, size, row_mask.ndim - 1)
            )
        return _exclude(scores, exclude, start)

    def best_blocks(_: None, i: Array) -> tuple[None, tuple[Array, Array, Array]]:
        blocks = chunk_scores(i * chunk, chunk).reshape(batch, blocks_per_chunk, block)
        maxima, ids = jax.lax.top_k(blocks.max(axis=-1), k)
        order = jnp.argsort(ids, axis=1)  # index order, so ties resolve by item index
        ids = jnp.take_along_axis(ids, order, axis=1)
        kept = jnp.take_along_axis(blocks, ids[:, :, None], axis=1)
        return None, (kept, jnp.take_along_axis(maxima, order, axis=1), ids + i * blocks_per_chunk)

    n_full = capacity // chunk
    _, (kept, maxima, block_ids) = jax.lax.scan(
        best_blocks, None, jnp.arange(n_full, dtype=jnp.int32)
    )
    # (n_chunks, batch, k, ...) -> (batch, n_chunks * k, ...): chunk-major = index order.
    kept = kept.transpose(1, 0, 2, 3).reshape(batch, n_full * k, block)
    maxima = maxima.transpose(1, 0, 2).reshape(batch, n_full * k)
    block_ids = block_ids.transpose(1, 0, 2).reshape(batch, n_full * k)
    if n_full > 1:
        _, pos = jax.lax.top_k(maxima, k)
        pos = jnp.sort(pos, axis=1)
        kept = jnp.take_along_axis(kept, pos[:, :, None], axis=1)
        block_ids = jnp.take_along_axis(block_ids, pos, axis=1)
    items = (block_ids[:, :, None] * block + jnp.arange(block, dtype=jnp.int32)).reshape(
        batch, k * block
    )
    values, pos = jax.lax.top_k(kept.reshape(batch, k * block), k)
    result = values, jnp.take_along_axis(items, pos, axis=1).astype(jnp.int32)
    main = n_full * chunk
    if main < capacity:
        tail_values, tail_idx = jax.lax.top_k(
            chunk_scores(main, capacity - main), min(k, capacity - main)
        )
        result = _merge_topk(result, (tail_values, tail_idx.astype(jnp.int32) + main), k)
    return result


FUSED_MIN_CATALOGUE = 16384  # below this the fused loop has at most ~2 chunks: no gain


@partial(jax.jit, static_argnames=("k",))
def default_topk(
    states: Array,
    item_embeddings: Array,
    bias: Array | None,
    mask: Array | None,
    k: int,
    exclude: Array | None = None,
) -> tuple[Array, Array]:
    """Exact scoring plus top-k with the fastest exact method measured on our CPUs.

    The choice (bench/results/topk.md; 2 CPU cores shared with other jobs, so compared by
    CPU time per call): above ``FUSED_MIN_CATALOGUE`` items, :func:`score_topk_fused`,
    the fastest exact method at 40,000 and 100,000 items with batch 256-512 (16-27% less
    CPU than scoring + ``lax.top_k``; selection adds 13-41 ms over scoring alone at 512
    states where ``lax.top_k`` adds 37-101 ms). At or below it (the 6,400-item
    yoochoose-1pct catalogue), scoring then :func:`topk_threshold`: the fused loop would
    have at most two chunks there and measured no better. At batch 64 all exact methods
    except the blocked and numpy ones were within measurement noise.

    Args:
        states: float ``(batch, H)``.
        item_embeddings: float ``(C, H)``.
        bias: float ``(C,)`` or ``None``.
        mask: bool ``(C,)`` or ``(batch, C)``, or ``None``.
        k: number of items (static).
        exclude: int ``(batch, L)`` item indices to leave out per row, or ``None``.

    Returns:
        ``(values, indices)``, each ``(batch, k)``, best first, ties by lowest index.
    """
    if item_embeddings.shape[0] > FUSED_MIN_CATALOGUE:
        return score_topk_fused(states, item_embeddings, bias, mask, k, exclude=exclude)
    return score_topk(states, item_embeddings, bias, mask, k, "threshold", exclude=exclude)
