"""Online fine-tuning: grow the catalogue, fine-tune from served params, judge on fresh data.

Three pieces the trainer process (`stream_app/trainer.py`) strings together, all pure
JAX/numpy (no Kafka):

* `grow_vocabulary` gives new items rows inside the model's FIXED capacity
  (`ModelConfig.item_capacity`), so the served arrays never change shape and the
  jitted serving step never recompiles. When the capacity is full it evicts by a
  stated policy (see its docstring).
* `fine_tune` continues training from the given params (fresh optimiser state, seeded,
  reproducible) with the offline training loop (`train.make_train_chunk`), and
  returns a new `TrainedModel` whose ``parent_version`` is the model it started from.
* `evaluate_slice` scores a held-back slice the way the stream worker serves it:
  consecutive repeats removed, targets on items the model does not know counted as
  misses, an unknown input item leaves the session's state as it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnrec_jax import evaluate, models, sampling
from rnnrec_jax.config import TrainConfig
from rnnrec_jax.data.events import SessionEvents, as_str_array
from rnnrec_jax.data.vocabulary import ItemVocabulary
from rnnrec_jax.model_io import TrainedModel
from rnnrec_jax.train import (
    TABLES,
    Events,
    as_session_events,
    encode_events,
    init_train_state,
    item_counts,
    make_dense_optimiser,
    make_row_optimiser,
    make_train_chunk,
    plan_batches,
)

__all__ = [
    "FineTuneAbandoned",
    "VocabularyGrowth",
    "browsing_events",
    "drop_consecutive_repeats",
    "evaluate_slice",
    "fine_tune",
    "grow_vocabulary",
]

SGD_MOMENTUM = 0.9
NEW_ITEM_BIAS_PERCENTILE = 10.0
"""New rows get this percentile of the known items' output biases: low enough that an
untrained item does not enter everyone's top K, high enough to be learned quickly."""


class FineTuneAbandoned(RuntimeError):
    """`fine_tune` stopped early because its ``should_stop`` callback said so."""


# ------------------------------------------------------------------ vocabulary


@dataclasses.dataclass(frozen=True)
class VocabularyGrowth:
    """What `grow_vocabulary` did.

    Attributes:
        added: new item ids given a row, in the order they were admitted.
        evicted: item ids removed to make room (their rows were re-initialised and
            handed to items of ``added``).
        deferred: new item ids that found no row (they stay out of vocabulary).
        n_items: items in the vocabulary afterwards.
        capacity: the fixed capacity (rows, padding included).
    """

    added: tuple[str, ...] = ()
    evicted: tuple[str, ...] = ()
    deferred: tuple[str, ...] = ()
    n_items: int = 0
    capacity: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Counts and a few examples, for logs, metrics and decision records."""
        return {
            "added": len(self.added),
            "evicted": len(self.evicted),
            "deferred": len(self.deferred),
            "n_items": self.n_items,
            "capacity": self.capacity,
            "examples_added": list(self.added[:5]),
            "examples_evicted": list(self.evicted[:5]),
        }


def grow_vocabulary(
    model: TrainedModel,
    item_ids: Sequence[str] | np.ndarray,
    times: Sequence[float] | np.ndarray | None = None,
    *,
    last_seen: Mapping[str, float] | None = None,
    protect: Sequence[str] | np.ndarray | None = None,
    min_count: int = 1,
    seed: int = 0,
) -> tuple[TrainedModel, VocabularyGrowth]:
    """Give the window's new items rows of the fixed-capacity item tables.

    New items are the ids of ``item_ids`` (the trainer window's events, repeated as
    they occur) that the vocabulary lacks and that occur at least ``min_count``
    times. They are admitted most frequent first (ties: first appearance) into the
    free slots after the last index, so existing indices never move.

    Eviction policy, when there are more new items than free slots: an item that
    occurs in the window (``item_ids`` or ``protect``) is never evicted. The other items are evicted in order of
    the oldest last sighting first (``last_seen``, else the latest of ``times`` where
    the item occurs; never seen counts as oldest), ties broken by the lowest count
    in the vocabulary (training count, or count at admission), then by the highest
    index. Each evicted item's slot goes to the next new item; new items left over
    when no candidate remains are reported as ``deferred`` and stay out of
    vocabulary (the worker counts and serves them as OOV) until a later round.

    Rows of admitted items (and so of evicted slots) are re-initialised: the output
    embedding gets a random direction with the median norm of the known rows (for
    tied embeddings it is also the input row), a separate input table gets the mean
    of the known rows (a neutral input), and the output bias gets the
    `NEW_ITEM_BIAS_PERCENTILE`-th percentile of known biases, so an untrained item
    does not flood the top K. Fine-tuning then learns them.

    Args:
        model: the model to grow (not modified).
        item_ids: item ids of the window's events.
        times: event time of each id (for the eviction order), or None.
        last_seen: item id -> last event time the caller saw it (wins over ``times``).
        protect: more item ids never to evict (e.g. those of held-back events, which
            must not give new items rows but are in the window).
        min_count: occurrences a new item needs to get a row.
        seed: seed of the new rows' random directions.

    Returns:
        ``(grown model, growth report)``; the model is the same object when nothing
        changed. Shapes are always unchanged.
    """
    vocab = model.vocab
    ids = as_str_array(np.asarray(item_ids) if not isinstance(item_ids, np.ndarray) else item_ids)
    unique, first, counts = np.unique(ids, return_index=True, return_counts=True)
    known = vocab.encode(unique) > 0
    wanted = ~known & (counts >= min_count)
    order = np.lexsort((first[wanted], -counts[wanted]))
    new_ids = unique[wanted][order]
    new_counts = counts[wanted][order]
    capacity = vocab.capacity
    if new_ids.size == 0:
        return model, VocabularyGrowth(n_items=len(vocab), capacity=capacity)

    items = list(vocab.items)
    item_counts_now = np.asarray(vocab.item_counts[1 : len(items) + 1], np.int64).copy()
    free = capacity - 1 - len(items)
    n_append = min(free, new_ids.size)
    slots: list[int] = list(range(len(items) + 1, len(items) + 1 + n_append))
    evicted: list[str] = []
    if new_ids.size > n_append:
        kept = unique[known]
        if protect is not None and len(protect):
            kept = np.concatenate([kept, as_str_array(np.asarray(protect))])
        victims = _eviction_order(vocab, kept, ids, times, last_seen)
        take = min(new_ids.size - n_append, victims.size)
        for index in victims[:take].tolist():
            evicted.append(items[index - 1])
            slots.append(int(index))
    admitted = new_ids[: len(slots)]
    deferred = new_ids[len(slots) :]
    for slot, item, count in zip(slots, admitted.tolist(), new_counts[: len(slots)], strict=True):
        if slot <= len(items):
            items[slot - 1] = item
            item_counts_now[slot - 1] = count
        else:
            items.append(item)
            item_counts_now = np.append(item_counts_now, count)
    new_vocab = ItemVocabulary(items, capacity=capacity, counts=item_counts_now)
    params = _init_rows(model, np.asarray(slots, np.int64), len(vocab), seed)
    grown = dataclasses.replace(
        model,
        params=params,
        vocab=new_vocab,
        model_cfg=dataclasses.replace(model.model_cfg, n_items=len(new_vocab)),
    )
    report = VocabularyGrowth(
        added=tuple(admitted.tolist()),
        evicted=tuple(evicted),
        deferred=tuple(deferred.tolist()),
        n_items=len(new_vocab),
        capacity=capacity,
    )
    return grown, report


def _eviction_order(
    vocab: ItemVocabulary,
    in_window: np.ndarray,
    ids: np.ndarray,
    times: Sequence[float] | np.ndarray | None,
    last_seen: Mapping[str, float] | None,
) -> np.ndarray:
    """Indices of evictable items (not in the window), first to evict first."""
    n = len(vocab)
    index = np.arange(1, n + 1)
    protected = np.zeros(n + 1, bool)
    protected[vocab.encode(in_window)] = True
    seen = np.full(n + 1, -np.inf)
    if times is not None and len(ids):
        t = np.asarray(times, np.float64)
        np.maximum.at(seen, vocab.encode(ids), t)
    if last_seen:
        keys = list(last_seen)
        np.maximum.at(seen, vocab.encode(keys), np.asarray([last_seen[k] for k in keys], float))
    candidates = index[~protected[1:]]
    counts = np.asarray(vocab.item_counts)[candidates]
    # lexsort: the last key is the primary one.
    order = np.lexsort((-candidates, counts, seen[candidates]))
    return candidates[order]


def _init_rows(model: TrainedModel, slots: np.ndarray, n_known: int, seed: int) -> dict:
    """Params with ``slots`` rows re-initialised (see `grow_vocabulary`)."""
    params = jax.tree_util.tree_map(np.asarray, model.params)
    params = dict(params)
    if slots.size == 0:
        return params
    known = np.zeros(model.model_cfg.item_capacity, bool)
    known[1 : n_known + 1] = True
    known[slots] = False  # evicted rows are not examples of a trained row
    if not known.any():
        known[1 : n_known + 1] = True
    rng = np.random.default_rng(seed)
    out = np.array(params["item_out"], np.float32, copy=True)
    norms = np.linalg.norm(out[known], axis=1)
    direction = rng.standard_normal((slots.size, out.shape[1])).astype(np.float32)
    direction /= np.linalg.norm(direction, axis=1, keepdims=True) + 1e-12
    out[slots] = direction * np.float32(np.median(norms))
    params["item_out"] = out
    bias = np.array(params["item_bias"], np.float32, copy=True)
    bias[slots] = np.float32(np.percentile(bias[known], NEW_ITEM_BIAS_PERCENTILE))
    params["item_bias"] = bias
    if "item_in" in params:
        table = np.array(params["item_in"], np.float32, copy=True)
        table[slots] = table[known].mean(axis=0)
        params["item_in"] = table
    return params


# ------------------------------------------------------------------ fine-tuning


def fine_tune(
    model: TrainedModel,
    sessions: Events,
    *,
    steps: int | None = None,
    epochs: int = 1,
    learning_rate: float = 0.1,
    encoder_lr_scale: float = 1.0,
    optimiser: str = "sgd",
    batch_size: int | None = None,
    seed: int = 0,
    buy_times: Mapping[str, float] | None = None,
    version: str | None = None,
    steps_per_call: int = 32,
    should_stop: Callable[[], bool] | None = None,
) -> TrainedModel:
    """Continue training ``model`` on ``sessions`` and return the candidate.

    Training starts from ``model.params`` with a fresh optimiser state. The default
    is SGD with momentum (`SGD_MOMENTUM`): its steps are proportional to the gradient,
    so the rows of items the window never shows barely move. Adam, Adagrad and
    RMSprop normalise each weight's step, so from a fresh state every row of a full
    softmax moves by about the learning rate whatever its gradient; on the
    prequential YooChoose stream they gained a third as much or less (BENCHMARKS.md).
    Everything else (loss, negatives, dropout, batch layout) follows the model's own
    training configuration. The result depends only on the arguments.

    Items of ``sessions`` that the vocabulary lacks are out of vocabulary here: call
    `grow_vocabulary` first to learn them. Without ``buy_times`` the purchase head's
    loss is switched off (no labels is not the same as "no purchase").

    Args:
        model: the serving model to start from (not modified).
        sessions: training sessions (SessionEvents or a SessionId/ItemId/Time frame).
        steps: at most this many optimiser steps (None: ``epochs`` full passes).
        epochs: passes over the sessions (each in session-parallel order).
        learning_rate: step size of the item tables (embeddings and biases).
        encoder_lr_scale: the recurrent encoder's step size relative to the tables'
            (1: same; 0: the encoder is frozen and only the item rows learn).
        optimiser: 'sgd' (with momentum; a sampled-softmax model, whose tables are
            updated row by row, fine-tunes with its own optimiser instead), 'adam',
            'adamw', 'adagrad' or 'rmsprop' (needs a full softmax).
        batch_size: parallel sessions (default: the model's training batch size,
            capped by the number of sessions with a target).
        seed: seed of dropout, negatives and order; equal arguments, equal result.
        buy_times: session id -> first purchase time (keeps the purchase head trained).
        version: the candidate's version (default ``ft-`` and a digest of the params).
        steps_per_call: optimiser steps per compiled call.
        should_stop: polled between compiled calls; True abandons the fine-tune.

    Returns:
        A new `TrainedModel` with ``parent_version = model.version`` and the fine-tune
        figures under ``metrics["fine_tune"]``.

    Raises:
        FineTuneAbandoned: ``should_stop`` returned True.
        FloatingPointError: the loss became NaN or infinite.
    """
    started = time.perf_counter()
    mc = dataclasses.replace(model.model_cfg, n_items=len(model.vocab))
    if buy_times is None and mc.purchase_head:
        mc = dataclasses.replace(mc, purchase_loss_weight=0.0)
    base_tc = model.train_cfg
    if base_tc is None:
        base_tc = TrainConfig(n_sample=-1)
    events = browsing_events(as_session_events(sessions))
    n_sessions = int((events.session_lengths() >= 2).sum()) if events.n_events else 0
    bsz = batch_size or base_tc.batch_size
    bsz = max(1, min(bsz, max(n_sessions, 1)))
    tc = dataclasses.replace(
        base_tc,
        optimiser=base_tc.optimiser if optimiser == "sgd" else optimiser,
        learning_rate=learning_rate,
        batch_size=bsz,
        epochs=epochs,
        seed=seed,
        steps_per_call=steps_per_call,
        # A fine-tune returns its last params: no moving average to carry along.
        param_ema=0.0,
    )
    if optimiser == "sgd" and not tc.full_softmax:
        # There is no row-wise SGD for the sampled tables; the model's own optimiser
        # (`tc.optimiser` already is) keeps the trainer's default working for them.
        optimiser = tc.optimiser
    enc = encode_events(events, model.vocab, buy_times=buy_times)
    counts = item_counts(enc, mc.item_capacity)
    state, _ = init_train_state(mc, tc, jax.random.PRNGKey(seed))
    # A private copy: the compiled loop donates its state, and the caller's model
    # must stay usable.
    start_params = jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), model.params)
    opts, opt_state = _optimisers(tc, optimiser, start_params, encoder_lr_scale)
    state = state._replace(params=start_params, opt_state=opt_state)
    n_targets_done = 0
    losses: list[float] = []
    steps_done = 0
    if n_sessions > 0 and (steps is None or steps > 0):
        chunk_fn = make_train_chunk(mc, tc, opts, counts, len(model.vocab))
        sampler = None
        if tc.n_sample > 0:
            sampler = sampling.NegativeSampler(
                counts, tc.n_sample, tc.sample_alpha, seed + 1, tc.sample_cache_steps
            )
        t0 = float(enc.times.min())
        rng = np.random.default_rng(seed)
        budget = math.inf if steps is None else int(steps)
        for _ in range(max(1, epochs)):
            if steps_done >= budget:
                break
            # A seeded shuffle of the session order: the window is time-ordered, and
            # several passes in one order would bias the last steps to the newest.
            n_all = len(enc.offsets) - 1
            order = rng.permutation(n_all) if epochs > 1 else None
            plan = sampling.session_parallel_plan(enc.offsets, tc.batch_size, order)
            plan = _truncate(plan, int(min(plan.n_steps, budget - steps_done)))
            state = state._replace(carry=models.initial_carry(mc, tc.batch_size))
            total = jnp.zeros(())
            k = tc.steps_per_call
            for s0 in range(0, plan.n_steps, k):
                if should_stop is not None and should_stop():
                    raise FineTuneAbandoned("fine-tune abandoned on request")
                negs = sampler.draw(k) if sampler is not None else np.zeros((k, 0), np.int32)
                batch = plan_batches(plan, enc, t0, s0, k, negs)
                state, step_losses = chunk_fn(state, batch)
                total = total + step_losses.sum()
                n_targets_done += int(batch.weight.sum())
            steps_done += plan.n_steps
            losses.append(float(total))
        loss = sum(losses) / max(n_targets_done, 1)
        if not math.isfinite(loss):
            raise FloatingPointError(f"fine-tune loss is {loss}")
    params = jax.device_get(state.params)
    params = jax.tree_util.tree_map(np.asarray, params)
    figures = {
        "steps": steps_done,
        "targets": n_targets_done,
        "loss": (sum(losses) / n_targets_done) if n_targets_done else None,
        "sessions": n_sessions,
        "events": events.n_events,
        "seconds": time.perf_counter() - started,
        "learning_rate": learning_rate,
        "optimiser": optimiser,
        "batch_size": tc.batch_size,
        "seed": seed,
    }
    return dataclasses.replace(
        model,
        params=params,
        model_cfg=dataclasses.replace(model.model_cfg, n_items=len(model.vocab)),
        version=version or "ft-" + params_digest(params)[:12],
        parent_version=model.version,
        metrics={"fine_tune": figures},
        created=time.time(),
        sha256="",
        path=None,
    )


def _optimisers(
    tc: TrainConfig, optimiser: str, params: dict[str, Any], encoder_lr_scale: float
) -> tuple[tuple[optax.GradientTransformation, optax.GradientTransformation | None], Any]:
    """The training loop's (dense, row) optimisers and their state, with the encoder's
    step size scaled (`train.init_train_state` has one step size for everything)."""

    def dense_opt(lr: float) -> optax.GradientTransformation:
        if lr <= 0:
            return optax.set_to_zero()
        if optimiser == "sgd":
            return optax.sgd(lr, momentum=SGD_MOMENTUM)
        return make_dense_optimiser(dataclasses.replace(tc, learning_rate=lr))

    encoder_opt = dense_opt(tc.learning_rate * encoder_lr_scale)
    if tc.full_softmax:
        # One dense optimiser over all params: tables at the full rate, the rest scaled.
        labels = {name: "table" if name in TABLES else "encoder" for name in params}
        dense = optax.multi_transform(
            {"table": dense_opt(tc.learning_rate), "encoder": encoder_opt}, labels
        )
        return (dense, None), dense.init(params)
    if optimiser == "sgd":
        raise ValueError("optimiser 'sgd' needs a full-softmax model (n_sample=-1)")
    row_opt = make_row_optimiser(tc)
    dense_params = {k: v for k, v in params.items() if k not in TABLES}
    state = {
        "dense": encoder_opt.init(dense_params),
        **{k: row_opt.init(params[k]) for k in TABLES if k in params},
    }
    return (encoder_opt, row_opt), state


def params_digest(params: dict[str, Any]) -> str:
    """sha256 over the params' names, shapes and bytes (a content-derived version)."""
    digest = hashlib.sha256()
    for path, leaf in sorted(
        jax.tree_util.tree_flatten_with_path(params)[0], key=lambda kv: str(kv[0])
    ):
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(str(path).encode())
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def browsing_events(events: SessionEvents) -> SessionEvents:
    """Browsing events only (purchases are labels, not items to predict), consecutive
    repeats removed: what fine-tuning trains on and `evaluate_slice` judges."""
    if events.event_types is not None:
        events = events.filter_mask(events.event_types != "purchase")
    return drop_consecutive_repeats(events)


def _truncate(plan: sampling.SessionParallelPlan, n: int) -> sampling.SessionParallelPlan:
    if n >= plan.n_steps:
        return plan
    return sampling.SessionParallelPlan(plan.input_event[:n], plan.target_event[:n], plan.reset[:n])


# ------------------------------------------------------------------ evaluation


def drop_consecutive_repeats(events: SessionEvents) -> SessionEvents:
    """Drop every event whose item equals the previous event's item in its session.

    Args:
        events: grouped sessions.

    Returns:
        The events without consecutive repeats (the first of each run is kept).
    """
    if events.n_events < 2:
        return events
    same_session = events.session_ids[1:] == events.session_ids[:-1]
    repeat = same_session & (events.item_ids[1:] == events.item_ids[:-1])
    if not repeat.any():
        return events
    return events.filter_mask(np.concatenate(([True], ~repeat)))


def evaluate_slice(
    model: TrainedModel,
    sessions: Events,
    *,
    ks: Sequence[int] = (20,),
    batch_size: int = 256,
) -> dict[str, Any]:
    """Next-item Recall@K and MRR@K of ``model`` on a held-back slice, as served.

    The protocol of the stream worker: consecutive repeats are removed; every next
    event of a session is a target; a target on an item the model does not know is
    a miss; an event on an unknown item leaves the session's state unchanged (the
    worker serves it from the previous state), so the next target is ranked from
    that state, and from the empty state (scores = item bias, as served) when the
    session has no known item yet. Ties are conservative (`metrics.target_ranks`).

    Args:
        model: the model to judge.
        sessions: the slice (SessionEvents or a SessionId/ItemId/Time frame);
            purchase events, if typed, are ignored.
        ks: cut-offs.
        batch_size: parallel sessions of the evaluation.

    Returns:
        ``recall@K`` and ``mrr@K`` per cut-off over all targets, ``n_targets`` (all),
        ``n_oov_targets`` (misses by construction), ``n_cold_targets`` (ranked from
        the empty state) and ``n_sessions``.
    """
    events = browsing_events(as_session_events(sessions))
    n_targets = events.n_targets
    report: dict[str, Any] = {"n_targets": int(n_targets), "n_sessions": events.n_sessions}
    if n_targets == 0:
        report.update({f"recall@{k}": 0.0 for k in ks} | {f"mrr@{k}": 0.0 for k in ks})
        report.update(n_oov_targets=0, n_cold_targets=0)
        return report
    vocab = model.vocab
    idx = vocab.encode(events.item_ids)
    known = idx > 0
    session = events.session_index()
    first = np.zeros(events.n_events, bool)
    first[events.session_offsets()[:-1]] = True
    is_target = ~first
    n_oov = int((is_target & ~known).sum())
    # A known target whose session had no known item before it: ranked from the
    # empty state. Count known items seen so far in the session, before each event.
    known_before = np.cumsum(known) - known
    session_start_known = (np.cumsum(known) - known)[events.session_offsets()[:-1]]
    known_before_in_session = known_before - session_start_known[session]
    cold = is_target & known & (known_before_in_session == 0)
    ranks_cold = _bias_ranks(model, idx[cold])
    # The rest: known targets after a known item = the evaluator on the known events.
    warm = events.filter_mask(known)
    mc = dataclasses.replace(model.model_cfg, n_items=len(vocab))
    warm_report = evaluate.evaluate_encoded(
        mc,
        model.params,
        encode_events(warm, vocab),
        len(vocab),
        batch_size=batch_size,
        ks=tuple(ks),
        with_purchase=False,
    )
    n_warm = int(warm_report["n_targets"])
    total = n_warm + ranks_cold.size + n_oov
    for k in ks:
        hits = warm_report[f"recall@{k}"] * n_warm + float((ranks_cold <= k).sum())
        rr = warm_report[f"mrr@{k}"] * n_warm + float(
            np.where(ranks_cold <= k, 1.0 / np.maximum(ranks_cold, 1), 0.0).sum()
        )
        report[f"recall@{k}"] = hits / total
        report[f"mrr@{k}"] = rr / total
    report["n_oov_targets"] = n_oov
    report["n_cold_targets"] = int(ranks_cold.size)
    return report


def _bias_ranks(model: TrainedModel, targets: np.ndarray) -> np.ndarray:
    """Conservative ranks of targets under the empty state's scores (the item bias)."""
    if targets.size == 0:
        return np.zeros(0, np.int64)
    bias = np.asarray(model.params["item_bias"], np.float64)
    valid = np.asarray(models.valid_item_mask(model.model_cfg.item_capacity, len(model.vocab)))
    valid_bias = np.sort(bias[valid])
    # rank = number of valid items scoring >= the target's score.
    return (valid_bias.size - np.searchsorted(valid_bias, bias[targets], side="left")).astype(
        np.int64
    )
