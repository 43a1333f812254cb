"""Session-parallel training of the session recommender (GRU4Rec protocol).

The host precomputes the whole epoch's schedule (which event each of the B slots
reads at each step, where a slot's state resets, the sampled negatives), and a
jit-compiled loop (`lax.fori_loop`) runs `steps_per_call` optimiser steps per call, so there is
no per-step Python dispatch. With sampled negatives, the gradients of the item
tables are taken with respect to the gathered rows only and applied with row-wise
optimisers (`sparse_optim.py`); with a full softmax (`n_sample=-1`) every row is
touched anyway and a dense optax optimiser updates everything.

Library entry point: `train_and_evaluate`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from rnnrec_jax import losses, models, sampling, sparse_optim
from rnnrec_jax.config import ModelConfig, TrainConfig
from rnnrec_jax.data.events import SessionEvents

Events = SessionEvents | pd.DataFrame


# --------------------------------------------------------------------------- data

logger = logging.getLogger(__name__)


class EncodedEvents(NamedTuple):
    """Events as model indices, grouped by session, sessions in time order.

    Attributes:
      items: (N,) int32 item index (0 = OOV).
      times: (N,) float64 epoch seconds.
      offsets: (S+1,) int64 session boundaries.
      session_ids: (S,) session id strings.
      buy_label: (N,) float32, 1 if the event's session has a buy.
      before_buy: (N,) bool, true where the event precedes the session's first buy
        (all events of sessions without a buy, or when buy times are unknown).
    """

    items: np.ndarray
    times: np.ndarray
    offsets: np.ndarray
    session_ids: np.ndarray
    buy_label: np.ndarray
    before_buy: np.ndarray

    @property
    def n_targets(self) -> int:
        """Next-item targets: events minus the first event of each session."""
        return int(len(self.items) - (len(self.offsets) - 1))


def as_session_events(events: Events) -> SessionEvents:
    """Accepts a SessionEvents or a DataFrame with SessionId/ItemId/Time columns."""
    if isinstance(events, SessionEvents):
        return events
    return SessionEvents.from_frame(events)


def build_vocabulary(events: Events) -> dict[str, int]:
    """Maps each item id of `events` to 1..n (sorted ids; 0 is OOV/padding).

    Args:
      events: training events.

    Returns:
      Dict item id -> index.
    """
    ids = np.unique(as_session_events(events).item_ids)
    return {str(k): i + 1 for i, k in enumerate(ids)}


def encode_items(vocab: Any, item_ids: np.ndarray) -> np.ndarray:
    """Item ids -> int32 indices (0 for unknown); works with a dict or a vocabulary object."""
    if hasattr(vocab, "encode"):
        return np.asarray(vocab.encode(item_ids), np.int32)
    lookup = pd.Series(vocab, dtype=np.int64)
    idx = lookup.reindex(pd.Index(np.asarray(item_ids).astype(str))).to_numpy()
    return np.nan_to_num(idx, nan=0).astype(np.int32)


def vocab_size(vocab: Any) -> int:
    """Number of real items of a dict or vocabulary object."""
    if hasattr(vocab, "n_items"):
        return int(vocab.n_items)
    return len(vocab)


def encode_events(
    events: Events,
    vocab: Any,
    buy_times: Mapping[str, float] | None = None,
    buy_labels: Mapping[str, int] | None = None,
) -> EncodedEvents:
    """Encodes events for training or evaluation; sessions ordered by start time.

    Args:
      events: session events.
      vocab: item vocabulary (dict id -> index, or an object with `encode`).
      buy_times: session id -> time of the session's first buy (purchase cut-off).
      buy_labels: session id -> 0/1 (used when buy_times is not given).

    Returns:
      EncodedEvents.
    """
    ev = as_session_events(events)
    offsets = ev.session_offsets()
    keys = ev.session_keys()
    # Deal sessions in order of their start (stable on ties): the streaming order.
    order = np.argsort(ev.session_start_times(), kind="stable")
    lengths = np.diff(offsets)
    ev_idx = (
        np.concatenate([np.arange(offsets[s], offsets[s + 1]) for s in order])
        if len(order)
        else np.zeros(0, np.int64)
    )
    new_offsets = np.concatenate([[0], np.cumsum(lengths[order])]).astype(np.int64)
    sess = keys[order]
    items = encode_items(vocab, ev.item_ids[ev_idx])
    times = ev.times[ev_idx]
    sess_of_event = np.repeat(sess, lengths[order])
    if buy_times is not None:
        bt = pd.Series(buy_times, dtype=np.float64)
        bt.index = bt.index.astype(str)
        first_buy = bt.reindex(sess_of_event).to_numpy()
        label = np.isfinite(first_buy).astype(np.float32)
        before = ~(times >= np.nan_to_num(first_buy, nan=np.inf))
    elif buy_labels is not None:
        bl = pd.Series(buy_labels)
        bl.index = bl.index.astype(str)
        label = bl.reindex(sess_of_event).fillna(0).to_numpy(np.float32)
        before = np.ones(len(items), bool)
    else:
        label = np.zeros(len(items), np.float32)
        before = np.ones(len(items), bool)
    return EncodedEvents(items, times, new_offsets, sess, label, before)


def item_counts(encoded: EncodedEvents, capacity: int) -> np.ndarray:
    """(capacity,) float32 occurrences of each item index (index 0 forced to 0)."""
    counts = np.bincount(encoded.items, minlength=capacity)[:capacity].astype(np.float32)
    counts[0] = 0.0
    return counts


# --------------------------------------------------------------------- optimisers


def make_dense_optimiser(tc: TrainConfig) -> optax.GradientTransformation:
    """Optimiser for the dense parameters (and all params with a full softmax).

    Args:
      tc: training configuration.

    Returns:
      optax transformation (with global-norm clipping first when grad_clip > 0).
    """
    if tc.optimiser == "adagrad":
        opt = sparse_optim.adagrad_momentum(tc.learning_rate, tc.momentum)
        if tc.weight_decay > 0:
            opt = optax.chain(optax.add_decayed_weights(tc.weight_decay), opt)
    elif tc.optimiser == "adam":
        opt = optax.adam(tc.learning_rate, b2=tc.adam_b2)
        if tc.weight_decay > 0:
            opt = optax.chain(optax.add_decayed_weights(tc.weight_decay), opt)
    elif tc.optimiser == "adamw":
        opt = optax.adamw(tc.learning_rate, b2=tc.adam_b2, weight_decay=tc.weight_decay)
    else:
        opt = optax.rmsprop(tc.learning_rate, momentum=tc.momentum)
    if tc.grad_clip > 0:
        opt = optax.chain(optax.clip_by_global_norm(tc.grad_clip), opt)
    return opt


def make_row_optimiser(
    tc: TrainConfig, unique_indices: bool = False
) -> optax.GradientTransformation:
    """Row-wise optimiser for the item tables under sampled training.

    Args:
      tc: training configuration.
      unique_indices: the updates it gets are already coalesced (see sparse_optim).

    Returns:
      A sparse_optim transformation over SparseRows.
    """
    if tc.optimiser == "adagrad":
        return sparse_optim.row_adagrad(
            tc.learning_rate, tc.momentum, unique_indices=unique_indices
        )
    if tc.optimiser in ("adam", "adamw"):
        wd = tc.weight_decay if tc.optimiser == "adamw" else 0.0
        return sparse_optim.row_adam(
            tc.learning_rate, b2=tc.adam_b2, weight_decay=wd, unique_indices=unique_indices
        )
    raise ValueError("rmsprop has no row-wise variant; use n_sample=-1 (full softmax)")


TABLES = ("item_in", "item_out", "item_bias")
IN_BOUNDS = "promise_in_bounds"


class TrainState(NamedTuple):
    """Everything the compiled loop carries from step to step."""

    params: dict[str, Any]
    opt_state: Any
    carry: dict[str, Any]
    rng: jax.Array
    # Moving average of params (TrainConfig.param_ema > 0), else None.
    ema: dict[str, Any] | None = None


class StepBatch(NamedTuple):
    """One session-parallel step (leading axis = steps when stacked for scan)."""

    inputs: jax.Array  # (B,) int32 input item (0 for idle slots)
    targets: jax.Array  # (B,) int32 target item (0 = none)
    reset: jax.Array  # (B,) bool: slot starts a new session here
    weight: jax.Array  # (B,) float32: 1 where there is a target
    times: jax.Array  # (B,) float32 seconds since the data's first event
    buy_label: jax.Array  # (B,) float32
    buy_weight: jax.Array  # (B,) float32: 1 where the input is before the first buy
    negatives: jax.Array  # (S,) int32 extra negatives (S may be 0)


def init_train_state(
    mc: ModelConfig, tc: TrainConfig, key: jax.Array | None = None
) -> tuple[TrainState, Callable]:
    """Initialises params, optimiser state and carry; returns the optimiser bundle.

    Args:
      mc: model configuration.
      tc: training configuration.
      key: PRNG key (default from tc.seed).

    Returns:
      (state, optimisers) where optimisers is (dense, row or None).
    """
    key = jax.random.PRNGKey(tc.seed) if key is None else key
    k_init, k_rng = jax.random.split(key)
    params = models.init_params(mc, k_init)
    dense_opt = make_dense_optimiser(tc)
    if tc.full_softmax:
        opt_state = dense_opt.init(params)
        opts = (dense_opt, None)
    else:
        row_opt = make_row_optimiser(tc)
        dense = {k: v for k, v in params.items() if k not in TABLES}
        opt_state = {
            "dense": dense_opt.init(dense),
            **{k: row_opt.init(params[k]) for k in TABLES if k in params},
        }
        opts = (dense_opt, row_opt)
    carry = models.initial_carry(mc, tc.batch_size)
    ema = jax.tree_util.tree_map(jnp.copy, params) if tc.param_ema > 0 else None
    return TrainState(params, opt_state, carry, k_rng, ema), opts


def make_train_chunk(
    mc: ModelConfig,
    tc: TrainConfig,
    opts: tuple[optax.GradientTransformation, optax.GradientTransformation | None],
    counts: np.ndarray,
    n_items: int,
) -> Callable[[TrainState, StepBatch], tuple[TrainState, jax.Array]]:
    """Builds the jitted function that runs a chunk of steps in one compiled loop.

    Args:
      mc: model configuration.
      tc: training configuration.
      opts: (dense optimiser, row optimiser or None) from `init_train_state`.
      counts: (capacity,) training item counts (for the logQ correction).
      n_items: real items in the vocabulary (for the validity mask).

    Returns:
      chunk(state, batches) -> (state, per-step summed loss), jitted; the state
      argument is donated.
    """
    dense_opt, row_opt = opts
    bsz = tc.batch_size
    counts_j = jnp.asarray(counts)
    valid = models.valid_item_mask(mc.item_capacity, n_items)
    in_table = models.input_table_name(mc)

    def purchase_term(logit: jax.Array, b: StepBatch) -> jax.Array:
        if not mc.purchase_head:
            return jnp.zeros(())
        w = b.buy_weight * (b.inputs > 0)
        return mc.purchase_loss_weight * losses.purchase_bce(logit, b.buy_label, w) / bsz

    def full_step(state: TrainState, b: StepBatch) -> tuple[TrainState, jax.Array]:
        carry = models.reset_carry(state.carry, b.reset)
        rng, k = jax.random.split(state.rng)

        def loss_fn(params: dict) -> tuple[jax.Array, tuple]:
            new_carry, rep, logit = models.encode_step(
                mc, params, carry, b.inputs, b.times, train=True, rng=k
            )
            scores = models.score_items(params, rep, valid)
            rec = losses.full_cross_entropy(scores, b.targets, b.weight, tc.label_smoothing, valid)
            return rec / bsz + purchase_term(logit, b), (new_carry, rec)

        grads, (new_carry, rec) = jax.grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = dense_opt.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, opt_state, new_carry, rng, state.ema), rec

    # Updates of the output table arrive coalesced (see sampled_step).
    unique_opt = make_row_optimiser(tc, unique_indices=True) if row_opt is not None else None
    tied = mc.embedding_mode == "tied"

    def sampled_step(state: TrainState, b: StepBatch) -> tuple[TrainState, jax.Array]:
        carry = models.reset_carry(state.carry, b.reset)
        rng, k = jax.random.split(state.rng)
        params = state.params
        n_rows = params["item_out"].shape[0]
        columns = jnp.concatenate([b.targets, b.negatives])  # (M,)
        m = columns.shape[0]
        correction = None
        if tc.loss == "cross-entropy" and tc.logq > 0:
            correction = losses.logq_correction(counts_j, columns, bsz, tc.sample_alpha, tc.logq)
        dense = {k_: v for k_, v in params.items() if k_ not in TABLES}
        # Rows of item_out this step touches: the score columns, plus the inputs when
        # the tables are tied. Repeats (a popular item sampled twice) are summed into
        # the position of their first occurrence by routing every score column to
        # that position's row: the sum then happens on the narrow (M, B) score
        # gradient, the (K, D) row gradient comes out coalesced, and the optimiser
        # needs no sort or segment sum over wide rows.
        out_idx = jnp.concatenate([columns, b.inputs]) if tied else columns  # (K,)
        owner = sparse_optim.first_occurrence(out_idx, n_rows)
        col_owner = owner[:m]
        # Indices are in range by construction: skip the out-of-bounds fill pass.
        in_rows = params[in_table].at[b.inputs].get(mode=IN_BOUNDS)
        out_rows = params["item_out"].at[out_idx].get(mode=IN_BOUNDS)
        out_bias = params["item_bias"].at[columns].get(mode=IN_BOUNDS)

        def loss_fn(dense: dict, in_rows: jax.Array, out_rows: jax.Array, out_bias: jax.Array):
            new_carry, rep, logit = models.encode_step(
                mc, dense, carry, b.inputs, b.times, input_rows=in_rows, train=True, rng=k
            )
            # Scores as (B, K) rows x items, gathered through its transpose: the product
            # and its two gradients then run in the orientations the CPU's matmul
            # kernels do best (the 480-unit step 1.11x faster than the (K, B) product,
            # bench/bench_train_speed.py --baseline-rev).
            scores_t = (rep @ out_rows.T).T.at[col_owner].get(mode=IN_BOUNDS)  # (M, B)
            scores = scores_t.T + out_bias.at[col_owner].get(mode=IN_BOUNDS)[None, :]
            if tc.loss == "cross-entropy":
                rec = losses.sampled_cross_entropy(scores, columns, b.weight, correction)
            else:
                rec = losses.bpr_max(scores, columns, b.weight, tc.bpreg, tc.elu_param)
            return rec / bsz + purchase_term(logit, b), (new_carry, rec)

        grads, (new_carry, rec) = jax.grad(loss_fn, argnums=(0, 1, 2, 3), has_aux=True)(
            dense, in_rows, out_rows, out_bias
        )
        g_dense, g_in, g_out, g_bias = grads
        updates, dense_state = dense_opt.update(g_dense, state.opt_state["dense"], dense)
        new_params = dict(optax.apply_updates(dense, updates))
        new_opt = {"dense": dense_state}
        if tied:
            # The input rows' gradients join their item's first occurrence.
            g_out = g_out.at[owner[m:]].add(g_in)
        first = owner == jnp.arange(out_idx.shape[0])
        table_rows = {
            "item_out": sparse_optim.SparseRows(jnp.where(first, out_idx, n_rows), g_out),
            "item_bias": sparse_optim.SparseRows(jnp.where(first[:m], columns, n_rows), g_bias),
        }
        for name, rows in table_rows.items():
            upd, new_opt[name] = unique_opt.update(rows, state.opt_state[name], params[name])
            new_params[name] = sparse_optim.apply_row_updates(params[name], upd)
        if not tied:
            rows = sparse_optim.SparseRows(b.inputs, g_in)
            upd, new_opt["item_in"] = row_opt.update(
                rows, state.opt_state["item_in"], params["item_in"]
            )
            new_params["item_in"] = sparse_optim.apply_row_updates(params["item_in"], upd)
        return TrainState(new_params, new_opt, new_carry, rng, state.ema), rec

    step = full_step if tc.full_softmax else sampled_step

    def chunk(state: TrainState, batches: StepBatch) -> tuple[TrainState, jax.Array]:
        # Padding steps (no input at all) only ever trail the plan, in the last chunk;
        # they must not move the optimiser. Rather than a `lax.cond` per step (whose
        # branches copy the state on the CPU), the loop stops after the last real step.
        n = batches.inputs.shape[0]
        active = jnp.any(batches.inputs > 0, axis=1)
        n_run = jnp.max(jnp.where(active, jnp.arange(1, n + 1), 0))

        def body(i: jax.Array, carry: tuple) -> tuple:
            st, step_losses = carry
            b = jax.tree_util.tree_map(lambda x: x[i], batches)
            st, rec = step(st, b)
            if st.ema is not None:
                d = tc.param_ema
                ema = jax.tree_util.tree_map(lambda e, p: d * e + (1.0 - d) * p, st.ema, st.params)
                st = st._replace(ema=ema)
            return st, step_losses.at[i].set(rec)

        return jax.lax.fori_loop(0, n_run, body, (state, jnp.zeros((n,), jnp.float32)))

    return jax.jit(chunk, donate_argnums=0)


def plan_batches(
    plan: sampling.SessionParallelPlan,
    enc: EncodedEvents,
    t0: float,
    start: int,
    n_steps: int,
    negatives: np.ndarray,
) -> StepBatch:
    """Slices `n_steps` steps of the plan from `start` into a padded StepBatch stack.

    Args:
      plan: the epoch's session-parallel plan.
      enc: encoded events.
      t0: time origin (keeps float32 times precise).
      start: first step.
      n_steps: chunk length (steps past the plan's end are idle padding).
      negatives: (n_steps, S) sampled negatives.

    Returns:
      StepBatch with a leading steps axis.
    """
    inp = plan.input_event[start : start + n_steps]
    tgt = plan.target_event[start : start + n_steps]
    rst = plan.reset[start : start + n_steps]
    pad = n_steps - inp.shape[0]
    if pad:
        inp = np.concatenate([inp, np.full((pad, inp.shape[1]), -1)])
        tgt = np.concatenate([tgt, np.full((pad, tgt.shape[1]), -1)])
        rst = np.concatenate([rst, np.zeros((pad, rst.shape[1]), bool)])
    has_in = inp >= 0
    has_tgt = tgt >= 0
    safe_in = np.where(has_in, inp, 0)
    safe_tgt = np.where(has_tgt, tgt, 0)
    return StepBatch(
        inputs=np.where(has_in, enc.items[safe_in], 0).astype(np.int32),
        targets=np.where(has_tgt, enc.items[safe_tgt], 0).astype(np.int32),
        reset=rst,
        weight=(has_tgt & (enc.items[safe_tgt] > 0)).astype(np.float32),
        times=np.where(has_in, enc.times[safe_in] - t0, 0.0).astype(np.float32),
        buy_label=np.where(has_in, enc.buy_label[safe_in], 0.0).astype(np.float32),
        buy_weight=(has_in & enc.before_buy[safe_in]).astype(np.float32),
        negatives=negatives.astype(np.int32),
    )


# ------------------------------------------------------------------------ driver


@dataclasses.dataclass
class TrainResult:
    """What `train_and_evaluate` returns.

    Attributes:
      params: trained params (the best epoch's when early stopping on valid).
      model_cfg: the model config (n_items filled in).
      train_cfg: the training config.
      vocab: item vocabulary used (dict id -> index, or the given object).
      history: one dict per epoch: loss, targets_per_s, seconds, valid metrics.
      best_epoch: 1-based epoch whose params are returned.
      valid_report: evaluation report of the returned params on valid (or None).
      purchase_calibration: (scale, shift) Platt parameters for the purchase head.
      item_counts: (capacity,) training event counts by item index.
    """

    params: dict[str, Any]
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    vocab: Any
    history: list[dict[str, float]]
    best_epoch: int
    valid_report: dict[str, Any] | None
    purchase_calibration: tuple[float, float] = (1.0, 0.0)
    item_counts: np.ndarray | None = None


def train_and_evaluate(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    train_events: Events,
    valid_events: Events | None = None,
    *,
    vocab: Any = None,
    buy_times: Mapping[str, float] | None = None,
    valid_buy_times: Mapping[str, float] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> TrainResult:
    """Trains on `train_events`, evaluating on `valid_events` after every epoch.

    Args:
      model_cfg: model configuration (item_capacity must exceed the item count).
      train_cfg: training configuration.
      train_events: training sessions (SessionEvents or a SessionId/ItemId/Time frame).
      valid_events: optional validation sessions; enables early stopping on MRR@20
        (patience > 0) and the per-epoch valid metrics.
      vocab: item vocabulary; built from train_events when None.
      buy_times: session id -> first buy time of training sessions (purchase head).
      valid_buy_times: same for valid sessions (purchase AUC and calibration).
      progress: show a tqdm bar per epoch.
      log: where to write one line per epoch (None = silent).

    Returns:
      TrainResult.
    """
    from rnnrec_jax import evaluate  # local: evaluate imports train helpers

    tc = train_cfg
    if model_cfg.score_norm and tc.n_sample > 0:
        # The sampled step scores raw dot products; evaluation and serving would score
        # cosines: a model trained on one score and served on another.
        raise ValueError("score_norm (cosine scores) needs the full softmax: set n_sample=-1")
    vocab = build_vocabulary(train_events) if vocab is None else vocab
    n_items = vocab_size(vocab)
    if n_items + 1 > model_cfg.item_capacity:
        raise ValueError(f"item_capacity {model_cfg.item_capacity} < {n_items} items + 1")
    mc = dataclasses.replace(model_cfg, n_items=n_items)
    if buy_times is None and mc.purchase_head and mc.purchase_loss_weight > 0:
        # Without purchases every label would be 0: the head would learn "never buys"
        # and pull the shared encoder with it. Left untrained, as the fine-tune does.
        logger.warning("no purchase labels: the purchase head is not trained")
        mc = dataclasses.replace(mc, purchase_loss_weight=0.0)
    enc = encode_events(train_events, vocab, buy_times=buy_times)
    t0 = float(enc.times.min()) if len(enc.times) else 0.0
    counts = item_counts(enc, mc.item_capacity)
    state, opts = init_train_state(mc, tc)
    chunk_fn = make_train_chunk(mc, tc, opts, counts, n_items)
    sampler = None
    if tc.n_sample > 0:
        sampler = sampling.NegativeSampler(
            counts, tc.n_sample, tc.sample_alpha, tc.seed + 1, tc.sample_cache_steps
        )
    plan = sampling.session_parallel_plan(enc.offsets, tc.batch_size)
    n_targets = enc.n_targets
    k = tc.steps_per_call
    n_chunks = math.ceil(plan.n_steps / k)
    valid_enc = None
    if valid_events is not None:
        valid_enc = encode_events(valid_events, vocab, buy_times=valid_buy_times)
    history: list[dict[str, float]] = []
    best = (-1.0, 0, None)
    bad_epochs = 0
    for epoch in range(1, tc.epochs + 1):
        state = state._replace(carry=models.initial_carry(mc, tc.batch_size))
        t_start = time.perf_counter()
        total = jnp.zeros(())
        bar = _progress_bar(n_targets, epoch, progress)
        for c in range(n_chunks):
            s0 = c * k
            negs = sampler.draw(k) if sampler is not None else np.zeros((k, 0), np.int32)
            batch = plan_batches(plan, enc, t0, s0, k, negs)
            state, step_losses = chunk_fn(state, batch)
            total = total + step_losses.sum()
            if bar is not None:
                done = int(batch.weight.sum())
                bar.update(done)
        loss = float(total) / max(n_targets, 1)  # blocks until the epoch is done
        seconds = time.perf_counter() - t_start
        if bar is not None:
            bar.close()
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at epoch {epoch}")
        rec = {
            "epoch": epoch,
            "loss": loss,
            "seconds": seconds,
            "targets_per_s": n_targets / seconds,
        }
        if valid_enc is not None:
            rep = evaluate.evaluate_encoded(
                mc,
                served(state),
                valid_enc,
                n_items,
                batch_size=tc.eval_batch_size,
                ks=(20,),
                with_purchase=False,
            )
            rec["valid_recall@20"] = rep["recall@20"]
            rec["valid_mrr@20"] = rep["mrr@20"]
            if rep["mrr@20"] > best[0]:
                best = (rep["mrr@20"], epoch, jax.tree_util.tree_map(np.asarray, served(state)))
                bad_epochs = 0
            else:
                bad_epochs += 1
        history.append(rec)
        if log is not None:
            log(_log_line(rec))
        if valid_enc is not None and tc.patience > 0 and bad_epochs >= tc.patience:
            break
    params = served(state)
    best_epoch = len(history)
    if best[2] is not None and tc.patience > 0:
        params = jax.tree_util.tree_map(jnp.asarray, best[2])
        best_epoch = best[1]
    if tc.recency_days > 0:
        params, recency = recency_pass(mc, tc, params, vocab, train_events, buy_times)
        history.append({"epoch": len(history) + 1, "phase": "recency", **recency})
        if log is not None:
            log(_log_line(history[-1]))
    valid_report = None
    calibration = (1.0, 0.0)
    if valid_enc is not None:
        valid_report = evaluate.evaluate_encoded(
            mc,
            params,
            valid_enc,
            n_items,
            batch_size=tc.eval_batch_size,
            with_purchase=mc.purchase_head and valid_buy_times is not None,
        )
        if tc.recency_days > 0:  # the pass's point on the training curve
            history[-1]["valid_recall@20"] = valid_report["recall@20"]
            history[-1]["valid_mrr@20"] = valid_report["mrr@20"]
        if mc.purchase_head and valid_buy_times is not None:
            calibration = evaluate.fit_platt(
                np.asarray(valid_report.pop("_purchase_logits")),
                np.asarray(valid_report.pop("_purchase_labels")),
            )
    return TrainResult(
        params, mc, tc, vocab, history, best_epoch, valid_report, calibration, counts
    )


def recency_pass(
    mc: ModelConfig,
    tc: TrainConfig,
    params: dict[str, Any],
    vocab: Any,
    train_events: Events,
    buy_times: Mapping[str, float] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One fine-tuning pass over the last ``tc.recency_days`` of the training sessions.

    SGD with momentum at ``tc.recency_lr`` from a fresh optimiser state, seeded with
    ``tc.seed`` (`rnnrec_jax.finetune.fine_tune`); ``params`` are not modified.

    Returns:
        The new params and the pass's figures (sessions, events, steps, loss, seconds,
        learning rate).
    """
    from rnnrec_jax.finetune import fine_tune  # local: finetune imports this module
    from rnnrec_jax.model_io import TrainedModel, as_item_vocabulary

    events = as_session_events(train_events)
    starts = events.session_start_times()
    recent = events.filter_sessions(starts >= float(events.times.max()) - tc.recency_days * 86400)
    model = TrainedModel(
        params=params,
        model_cfg=mc,
        vocab=as_item_vocabulary(vocab, mc.item_capacity),
        version="offline",
        train_cfg=tc,
    )
    tuned = fine_tune(model, recent, learning_rate=tc.recency_lr, seed=tc.seed, buy_times=buy_times)
    figures = tuned.metrics["fine_tune"]
    keep = ("sessions", "events", "steps", "loss", "seconds", "learning_rate")
    return tuned.params, {k: figures[k] for k in keep}


def _log_line(record: Mapping[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
    )


def served(state: TrainState) -> dict[str, Any]:
    """The params a model is evaluated and saved with: the moving average when on."""
    return state.params if state.ema is None else state.ema


def _progress_bar(total: int, epoch: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"epoch {epoch}", unit="tgt", unit_scale=True, leave=False)
