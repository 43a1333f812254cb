"""The jitted serving step: advance users' carries by one event each and recommend.

`ServingModel.step` takes a batch of users' carries (a numpy pytree with a leading
batch axis), one item index per row and a row mask, and returns the new carries, the
exact top-K items and scores, the calibrated purchase probability and (optionally)
occlusion explanations. Design points:

* **No recompilation in steady state.** Inputs are padded to the smallest of a few
  fixed bucket sizes (default 8, 32, 128, 512) and every input has a fixed shape:
  the exclusion list is padded to ``exclude_width`` columns, the explanation window
  to ``explain_window``, times are always passed (zeros when absent). The catalogue
  masks (valid items, unavailable items) are *input arrays* over the fixed vocabulary
  capacity, so a growing vocabulary or a new availability list changes values, never
  shapes. One jitted function per method serves every bucket: its cache holds one
  entry per bucket (two when explanations are switched on and off), see
  `compile_count`.
* **Rows whose mask is False keep their carry** (padding rows, or rows a caller
  wants scored without stepping).
* **Out-of-vocabulary input (index 0) keeps the carry unchanged** and still returns
  recommendations: the serving carry stores the last representation and purchase
  logit next to the model's carry, so an OOV event is recommended from the user's
  previous state (for a user with no state yet: a zero representation, i.e. by the
  item bias alone, a popularity-like list).
* **Times.** Event times are float epoch seconds; in float32 they would be rounded
  to 128 s, which destroys the purchase head's dwell features. The serving carry
  therefore keeps the last event time as two float32 halves (``t_hi + t_lo``, exact
  to well below a millisecond) and the gap since the previous event is computed on
  the host in float64; the model receives ``time = gap`` with its ``last_time``
  set to 0, so ``time - last_time`` is the exact gap.
* **Exact top-K** with `rnnrec_jax.topk.default_topk`; excluded (per row) and
  unavailable (catalogue) items are masked to -inf before selection.
* **Several events per user in one call.** `ServingModel.step_events` equals one
  `step` per round (each user's r-th event together) but runs the recurrence in one
  jitted loop over lanes (each lane steps through whole users back to back, the way
  session-parallel training packs sessions) and scores the catalogue once for all
  events. The worker's micro-batches hold many events per user (a replayed
  clickstream batch of 256 events held about 19 rounds), so this is what it calls.

The offline evaluator (`evaluate.make_eval_chunk`) and this step compute the same
representation; `ServingModel.score_all` returns the evaluator's full score rows
(`models.score_items`) for parity tests.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnrec_jax import explain as explain_lib
from rnnrec_jax import models
from rnnrec_jax.config import ModelConfig
from rnnrec_jax.data.vocabulary import ItemVocabulary
from rnnrec_jax.model_io import TrainedModel, load_trained_model
from rnnrec_jax.topk import default_topk

Carry = dict[str, Any]
PurchaseFn = Callable[[Carry, jax.Array, jax.Array], jax.Array]
"""Hook for a separate purchase model: ``(model carry, representation, head logit) ->
probability (B,)``, traced inside the jitted step. `rnnrec_jax.purchase.PurchaseModel`
needs per-session statistics in the carry before it can plug in here."""

DEFAULT_BUCKETS = (8, 32, 128, 512)

__all__ = [
    "DEFAULT_BUCKETS",
    "EventsOutput",
    "PendingEvents",
    "ServingModel",
    "StepOutput",
    "compile_events",
    "load_serving_model",
]


class StepOutput(NamedTuple):
    """What `ServingModel.step` returns for the ``n`` rows it was given.

    Attributes:
        carry: the new carries (numpy pytree, leading axis n).
        top_items: int32 (n, k) item indices, best first; 0 marks an empty slot (fewer
            than k recommendable items).
        top_scores: float32 (n, k) their scores (-inf in empty slots).
        p_purchase: float32 (n,) calibrated purchase probability in [0, 1].
        attributions: `explain_lib.Attributions` (numpy arrays) when ``history`` was
            given, else None.
    """

    carry: Carry
    top_items: np.ndarray
    top_scores: np.ndarray
    p_purchase: np.ndarray
    attributions: explain_lib.Attributions | None


class EventsOutput(NamedTuple):
    """What `ServingModel.step_events` returns for U users and N events.

    Attributes:
        carry: the users' carries after their last event, leading axis U: a numpy
            pytree from `step_events`, flat float32 (U, carry_size) from
            `step_events_flat`.
        top_items, top_scores, p_purchase, attributions: per event (leading axis N),
            as in `StepOutput`.
    """

    carry: Carry | np.ndarray
    top_items: np.ndarray
    top_scores: np.ndarray
    p_purchase: np.ndarray
    attributions: explain_lib.Attributions | None


class PendingEvents:
    """A `ServingModel.dispatch_events_flat` call whose XLA computation may still run."""

    def __init__(self, packed: jax.Array, unpack: Callable[[np.ndarray], EventsOutput]) -> None:
        """Wrap the jitted loop's (possibly unfinished) output and its unpacker."""
        self._packed = packed
        self._unpack = unpack

    def ready(self) -> bool:
        """Whether the result is computed (`result` will not wait)."""
        return bool(self._packed.is_ready())

    def wait(self) -> None:
        """Block until the result is computed (the GIL is released meanwhile)."""
        self._packed.block_until_ready()

    def result(self) -> EventsOutput:
        """The outputs (waits for the computation if it still runs)."""
        return self._unpack(np.asarray(self._packed))


# ----------------------------------------------------------------- compile counter

_compile_lock = threading.Lock()
_compile_count = 0
_listener_installed = False


def _on_event(event: str, *_: Any, **__: Any) -> None:
    global _compile_count
    if event == "/jax/core/compile/backend_compile_duration":
        with _compile_lock:
            _compile_count += 1


def compile_events() -> int:
    """XLA compilations in this process since the first call (all JAX code, not only ours).

    The first call installs a `jax.monitoring` listener; the worker exposes the count
    in ``/metrics`` so a steady-state recompilation is visible.

    Returns:
        The number of backend compilations seen so far.
    """
    global _listener_installed
    with _compile_lock:
        if not _listener_installed:
            jax.monitoring.register_event_duration_secs_listener(_on_event)
            _listener_installed = True
        return _compile_count


# ----------------------------------------------------------------------- the model


class _EventsPlan(NamedTuple):
    """`ServingModel.step_events`' inputs, unpacked inside the jitted function."""

    grid: jax.Array  # (size, lanes) event per loop step and lane (size = empty)
    users: jax.Array  # (size + 1,) the user row of each event
    items: jax.Array  # (size + 1,) item indices
    reset: jax.Array  # (size + 1,) bool: a new session starts at the event
    first: jax.Array  # (size + 1,) bool: the user's first event in this batch
    steps: jax.Array  # () loop steps
    gap: jax.Array  # (size + 1,) seconds since the user's previous event
    t_hi: jax.Array  # (size + 1,) event time, float32 high part
    t_lo: jax.Array  # (size + 1,) and low part


class ServingModel:
    """A trained model ready to serve: fixed buckets, one jitted step, numpy in and out.

    Attributes:
        vocab: the item vocabulary (index 0 = OOV/padding, fixed capacity).
        version: the model version.
        k: recommendations per row.
        buckets: padded batch sizes, increasing.
        model_cfg: the model configuration.
        explain_window: L, history positions the explanation looks at.
        exclude_width: E, columns of the padded exclusion list.
    """

    def __init__(
        self,
        params: dict[str, Any],
        model_cfg: ModelConfig,
        vocab: ItemVocabulary,
        version: str,
        *,
        buckets: Sequence[int] = DEFAULT_BUCKETS,
        k: int = 20,
        purchase_calibration: tuple[float, float] = (1.0, 0.0),
        explain_window: int = 5,
        explain_top: int = 3,
        exclude_width: int = 64,
        purchase_fn: PurchaseFn | None = None,
    ) -> None:
        """Build a serving model (nothing is compiled until `warm_up` or the first step).

        Args:
            params: model params.
            model_cfg: the config that built them.
            vocab: the item vocabulary (its capacity must equal the model's).
            version: model version string.
            buckets: padded batch sizes, strictly increasing.
            k: recommendations per row (<= capacity).
            purchase_calibration: Platt (scale, shift) of the purchase head.
            explain_window: L, history length of explanations (>= 1).
            explain_top: M, contributing positions returned per recommendation.
            exclude_width: E, most excluded items per row (more: the last E are kept).
            purchase_fn: optional separate purchase model (see `PurchaseFn`).
        """
        if vocab.capacity != model_cfg.item_capacity:
            raise ValueError(f"vocab capacity {vocab.capacity} != {model_cfg.item_capacity}")
        if not buckets or list(buckets) != sorted(set(buckets)) or buckets[0] < 1:
            raise ValueError(f"buckets must be positive and increasing, got {buckets}")
        if not 0 < k <= model_cfg.item_capacity:
            raise ValueError(f"k={k} must be in 1..{model_cfg.item_capacity}")
        self.model_cfg = model_cfg
        self.vocab = vocab
        self.version = str(version)
        self.k = int(k)
        self.buckets = tuple(int(b) for b in buckets)
        self.explain_window = int(explain_window)
        self.explain_top = int(explain_top)
        self.exclude_width = int(exclude_width)
        self._params = jax.device_put(params)
        self._calibration = np.asarray(purchase_calibration, np.float32)
        self._purchase_fn = purchase_fn
        # Shapes only (eval_shape compiles nothing): fresh carries are built in numpy,
        # so init_carry(n) for a new n never triggers an XLA compilation.
        self._carry_template = jax.eval_shape(lambda: models.initial_carry(model_cfg, 1))
        self._timed = "last_time" in self._carry_template
        self._no_unavailable = np.zeros(model_cfg.item_capacity, bool)
        self._valid_cache: tuple[int, np.ndarray] = (-1, self._no_unavailable)
        # One jitted function for all buckets; `explain` picks the traced variant.
        self._step_fn = jax.jit(self._step_impl, static_argnames=("explain",))
        self._scores_fn = jax.jit(self._scores_impl)
        self._events_fn = jax.jit(self._events_impl, static_argnames=("size", "lanes", "explain"))
        self._calibration_device = jax.device_put(self._calibration)
        self._allowed_cache: tuple[np.ndarray, jax.Array] | None = None
        template = self.init_carry(1)
        leaves, self._carry_treedef = jax.tree_util.tree_flatten(template)
        self._carry_layout = [(leaf.shape[1:], int(np.prod(leaf.shape[1:])), leaf.dtype)
                              for leaf in leaves]  # fmt: skip
        self._carry_size = sum(width for _, width, _ in self._carry_layout)
        self._time_columns = (0, 0)
        if self._timed:
            # Flat columns of t_hi and t_lo (one value each), for `_event_times`.
            columns, start = {}, 0
            for (path, _), (_, width, _) in zip(
                jax.tree_util.tree_flatten_with_path(template)[0], self._carry_layout, strict=True
            ):
                columns[jax.tree_util.keystr(path)] = start
                start += width
            self._time_columns = (columns["['t_hi']"], columns["['t_lo']"])

    @classmethod
    def from_trained(cls, trained: TrainedModel, **kwargs: Any) -> ServingModel:
        """Serve a loaded `TrainedModel`.

        Args:
            trained: the model artifact (`model_io.load_trained_model`).
            **kwargs: `ServingModel` options (buckets, k, explain_window, ...).

        Returns:
            The serving model.
        """
        kwargs.setdefault("purchase_calibration", trained.purchase_calibration)
        return cls(trained.params, trained.model_cfg, trained.vocab, trained.version, **kwargs)

    # ------------------------------------------------------------------ carries

    def init_carry(self, n: int) -> Carry:
        """Carries of ``n`` fresh sessions.

        Args:
            n: rows.

        Returns:
            Numpy pytree: ``model`` (the cell's carry), ``rep`` and ``logit`` (the last
            outputs, used for OOV events), and ``t_hi``/``t_lo`` (last event time)
            when the model reads times.
        """
        carry: Carry = {
            "model": jax.tree_util.tree_map(
                lambda leaf: np.zeros((n, *leaf.shape[1:]), leaf.dtype), self._carry_template
            ),
            "rep": np.zeros((n, self.model_cfg.output_dim), np.float32),
            "logit": np.zeros((n,), np.float32),
        }
        if self._timed:
            carry["t_hi"] = np.zeros((n,), np.float32)
            carry["t_lo"] = np.zeros((n,), np.float32)
        return carry

    def valid_mask(self) -> np.ndarray:
        """(capacity,) bool: the vocabulary's real items (recomputed when it grows)."""
        n = len(self.vocab)
        if self._valid_cache[0] != n:
            idx = np.arange(self.model_cfg.item_capacity)
            self._valid_cache = (n, (idx >= 1) & (idx <= n))
        return self._valid_cache[1]

    def bucket_for(self, n: int) -> int:
        """The smallest bucket holding ``n`` rows.

        Raises:
            ValueError: ``n`` exceeds the largest bucket.
        """
        for size in self.buckets:
            if size >= n:
                return size
        raise ValueError(f"{n} rows exceed the largest bucket {self.buckets[-1]}")

    @property
    def compile_count(self) -> int:
        """Compiled variants of this model's steps (one per method, bucket and explain
        flag used)."""
        return int(self._step_fn._cache_size()) + int(self._events_fn._cache_size())

    def warm_up(
        self, explain: bool | None = None, methods: Sequence[str] = ("step", "step_events")
    ) -> None:
        """Compile the step for every bucket now, so the first events are not slow.

        Args:
            explain: compile only the variant with (True) or without (False)
                explanations; None compiles both.
            methods: which of `step` and `step_events` to compile (the worker calls
                only `step_events`).
        """
        variants = (False, True) if explain is None else (explain,)
        for size in self.buckets:
            carry = self.init_carry(size)
            items = np.zeros(size, np.int32)
            mask = np.zeros(size, bool)
            for with_history in variants:
                history = np.zeros((size, 1), np.int32) if with_history else None
                if "step" in methods:
                    self.step(carry, items, mask, history=history)
                if "step_events" in methods:
                    self.step_events(carry, np.arange(size), items, history=history)

    # --------------------------------------------------------------------- step

    def step(
        self,
        carry: Carry,
        item_idx: np.ndarray,
        mask: np.ndarray,
        *,
        times: np.ndarray | None = None,
        excluded: np.ndarray | None = None,
        unavailable: np.ndarray | None = None,
        history: np.ndarray | None = None,
    ) -> StepOutput:
        """Advance each masked row by its item and recommend.

        Any ``n`` up to the largest bucket is accepted; rows are padded to a bucket
        internally and the outputs cut back to ``n``.

        Args:
            carry: numpy pytree with leading axis n (from `init_carry` or a previous
                step).
            item_idx: int (n,) item indices of the events; 0 = OOV (carry unchanged,
                recommendations from the stored last representation).
            mask: bool (n,) rows to step; False rows keep their carry (their
                recommendations are still computed from it).
            times: float (n,) event times in epoch seconds (float64 is exact), or None.
            excluded: int (n, E) item indices not to recommend per row (0 = none).
            unavailable: bool (capacity,) items never to recommend.
            history: int (n, L) the last L item indices of each row *including the
                current event*, oldest first, 0 = padding; enables explanations.
                Widths other than ``explain_window`` keep the most recent columns.

        Returns:
            `StepOutput` for the n rows.
        """
        n = int(np.shape(item_idx)[0])
        size = self.bucket_for(n)
        carry = _pad_tree(carry, size)
        items = _pad(np.asarray(item_idx, np.int32), size)
        mask = _pad(np.asarray(mask, bool), size)
        gap, t_hi, t_lo = self._times(carry, times, size)
        excl = _fit_width(excluded, size, self.exclude_width)
        allowed = self._allowed(unavailable)
        explain_on = history is not None
        hist = _fit_width(history, size, self.explain_window) if explain_on else None
        out = self._step_fn(
            self._params, self._calibration, carry, items, mask, gap, t_hi, t_lo,
            excl, allowed, hist, explain=explain_on,
        )  # fmt: skip
        new_carry, top_items, top_scores, p, attributions = jax.device_get(out)
        new_carry = jax.tree_util.tree_map(lambda x: np.asarray(x)[:n], new_carry)
        if attributions is not None:
            attributions = explain_lib.Attributions(*(np.asarray(a)[:n] for a in attributions))
        return StepOutput(
            new_carry, np.asarray(top_items)[:n], np.asarray(top_scores)[:n],
            np.asarray(p)[:n], attributions,
        )  # fmt: skip

    def step_events(
        self,
        carry: Carry,
        users: np.ndarray,
        item_idx: np.ndarray,
        *,
        reset: np.ndarray | None = None,
        times: np.ndarray | None = None,
        excluded: np.ndarray | None = None,
        unavailable: np.ndarray | None = None,
        history: np.ndarray | None = None,
    ) -> EventsOutput:
        """Apply several events per user in one call: sequential per user, batched across.

        Equals calling `step` once per event in each user's order (a user's r-th events
        together), but the recurrence runs in one jitted loop over "lanes" (each lane
        steps through whole users one after another, like session-parallel training)
        and the catalogue is scored once for all events. A micro-batch in which users
        click several times thus costs one call instead of one per round, each paying
        the dispatch, the padding to a bucket and the handover of the GIL.

        Args:
            carry: numpy pytree with leading axis U (each user's carry before its events).
            users: int (N,) the user row of each event; a user's events in order.
            item_idx: int (N,) item indices; 0 = OOV (carry unchanged, as in `step`).
            reset: bool (N,) start the user's carry afresh before this event (a new
                session), or None.
            times: float (N,) event times in epoch seconds, or None.
            excluded: int (N, E) item indices not to recommend per event, or None.
            unavailable: bool (capacity,) items never to recommend.
            history: int (N, L) per event, as in `step`; enables explanations.

        Returns:
            `EventsOutput`: the U final carries and the N events' outputs.

        Raises:
            ValueError: more events or users than the largest bucket.
        """
        out = self.step_events_flat(
            self.flatten_carry(carry), users, item_idx, reset=reset, times=times,
            excluded=excluded, unavailable=unavailable, history=history,
        )  # fmt: skip
        return out._replace(carry=self.unflatten_carry(out.carry))

    def step_events_flat(self, carries: np.ndarray, *args: Any, **kwargs: Any) -> EventsOutput:
        """`dispatch_events_flat` and wait for its result."""
        return self.dispatch_events_flat(carries, *args, **kwargs).result()

    def dispatch_events_flat(
        self,
        carries: np.ndarray | Sequence[np.ndarray],
        users: np.ndarray,
        item_idx: np.ndarray,
        *,
        reset: np.ndarray | None = None,
        times: np.ndarray | None = None,
        excluded: np.ndarray | None = None,
        unavailable: np.ndarray | None = None,
        history: np.ndarray | None = None,
    ) -> PendingEvents:
        """Start `step_events` on flat carries (`flatten_carry`): float32 (U,
        carry_size) in, or U rows of carry_size, the same layout out
        (``EventsOutput.carry``).

        Returns at once (XLA computes on its own threads): `PendingEvents.ready` says
        when the result is there, `PendingEvents.result` waits for it. A caller on an
        event loop can thus await the computation without a thread of its own.

        The inputs travel to the jitted loop as two arrays (one int32, one float32)
        and the outputs come back as one: each array handed to or fetched from XLA
        releases and re-takes the GIL, which costs up to a switch interval (5 ms) per
        array when another thread (an event loop) is running Python meanwhile.
        """
        users = np.asarray(users, np.int64)
        n = int(users.shape[0])
        n_users = len(carries)
        size = self.bucket_for(max(n, n_users, 1))
        lanes = self.lanes_for(size)
        rows, width = size + 1, self._carry_size
        # The float input is written once, in place: padding it and concatenating
        # copied the carries (3.6 MB for the default model's 256 bucket) twice, into
        # freshly mapped pages each time, 5 ms of the event loop's time per batch.
        floats = np.zeros(rows * width + 3 * rows, np.float32)
        block = floats[: n_users * width].reshape(n_users, width)
        if isinstance(carries, np.ndarray):
            block[:] = carries
        else:
            for row, carry in zip(block, carries, strict=True):
                row[:] = carry
        items = np.asarray(item_idx, np.int32)
        fresh = np.zeros(n, bool) if reset is None else np.asarray(reset, bool)
        grid, first, steps = _lane_plan(users, n_users, size, lanes)
        gap, t_hi, t_lo = self._event_times(block, users, items, fresh, times)
        for column, values in enumerate((gap, t_hi, t_lo)):
            floats[rows * (width + column) : rows * (width + column) + n] = values
        explain_on = history is not None
        user_rows = np.full(size + 1, size, np.int32)  # empty slots: the spare last row
        user_rows[:n] = users
        ints = np.concatenate([
            user_rows, _pad(items, size + 1), _pad(fresh, size + 1).astype(np.int32),
            _pad(first, size + 1).astype(np.int32), grid.ravel(), np.asarray([steps], np.int32),
            _fit_width(excluded, size, self.exclude_width).ravel(),
            _fit_width(history, size, self.explain_window).ravel() if explain_on
            else np.zeros(0, np.int32),
        ])  # fmt: skip
        packed = self._events_fn(
            self._params, self._calibration_device, self._allowed_device(unavailable),
            ints, floats, size=size, lanes=lanes, explain=explain_on,
        )  # fmt: skip
        return PendingEvents(
            packed, lambda out: self._unpack_events(out, size, n, n_users, explain_on)
        )

    def _unpack_events(
        self, packed: np.ndarray, size: int, n: int, n_users: int, explain_on: bool
    ) -> EventsOutput:
        """Split the jitted loop's one float32 output (int parts are bit copies)."""
        k, width = self.k, self._carry_size
        m = min(self.explain_top, self.explain_window)
        shapes = [((size + 1, width), False), ((size, k), True), ((size, k), False),
                  ((size,), False)]  # fmt: skip
        if explain_on:
            shapes += [((size, k, self.explain_window), False), ((size, k, m), True),
                       ((size, k, m), False)]  # fmt: skip
        parts, start = [], 0
        for shape, is_int in shapes:
            count = int(np.prod(shape))
            part = packed[start : start + count].reshape(shape)
            parts.append(part.view(np.int32) if is_int else part)
            start += count
        attributions = None
        if explain_on:
            attributions = explain_lib.Attributions(*(a[:n] for a in parts[4:7]))
        return EventsOutput(
            parts[0][:n_users], parts[1][:n], parts[2][:n], parts[3][:n], attributions
        )

    def flatten_carry(self, carry: Carry) -> np.ndarray:
        """float32 (n, carry_size): the carry's leaves side by side, in pytree order."""
        leaves = jax.tree_util.tree_leaves(carry)
        n = int(np.shape(leaves[0])[0])
        return np.concatenate(
            [np.asarray(leaf, np.float32).reshape(n, -1) for leaf in leaves], axis=1
        )

    def unflatten_carry(self, flat: np.ndarray) -> Carry:
        """The inverse of `flatten_carry` (integer leaves get their dtype back)."""
        leaves, start = [], 0
        n = int(flat.shape[0])
        for shape, width, dtype in self._carry_layout:
            leaves.append(flat[:, start : start + width].reshape((n, *shape)).astype(dtype))
            start += width
        return jax.tree_util.tree_unflatten(self._carry_treedef, leaves)

    def lanes_for(self, size: int) -> int:
        """Lanes of `step_events` for a bucket: users are packed onto this many rows."""
        return max(1, min(size, max(8, size // 8)))

    def _event_times(
        self,
        carries: np.ndarray,
        users: np.ndarray,
        items: np.ndarray,
        reset: np.ndarray,
        times: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per event (gap, t_hi, t_lo) as `_times` makes them round by round.

        The previous time of an event is that of its user's last event that stepped
        (an OOV event keeps the carry's time), 0 after a reset."""
        n = len(users)
        zeros = np.zeros(n, np.float32)
        if not self._timed:
            return zeros, zeros, zeros.copy()
        hi_u = carries[:, self._time_columns[0]]
        lo_u = carries[:, self._time_columns[1]]
        if times is None:
            # No times: every event keeps its user's stored time (0 after a reset).
            hi, lo = hi_u[users].copy(), lo_u[users].copy()
            for j in np.flatnonzero(reset).tolist():
                later = (users == users[j]) & (np.arange(n) >= j)
                hi[later] = lo[later] = 0.0
            return zeros, hi, lo
        t = np.asarray(times, np.float64)
        hi = t.astype(np.float32)
        lo = (t - hi.astype(np.float64)).astype(np.float32)
        exact = hi.astype(np.float64) + lo.astype(np.float64)
        last = (hi_u.astype(np.float64) + lo_u.astype(np.float64)).tolist()
        prev = [0.0] * n
        # Sequential per user, but only Python floats: about 0.1 us per event.
        for j, (u, r, stepped, tj) in enumerate(
            zip(users.tolist(), reset.tolist(), (items > 0).tolist(), exact.tolist(), strict=True)
        ):
            if r:
                last[u] = 0.0
            prev[j] = last[u]
            if stepped:
                last[u] = tj
        gap = np.clip(t - np.asarray(prev, np.float64), 0.0, 1e7).astype(np.float32)
        return gap, hi, lo

    def _allowed_device(self, unavailable: np.ndarray | None) -> jax.Array:
        """`_allowed` as a device array, transferred again only when it changes."""
        allowed = self._allowed(unavailable)
        if self._allowed_cache is None or not np.array_equal(self._allowed_cache[0], allowed):
            self._allowed_cache = (allowed.copy(), jax.device_put(allowed))
        return self._allowed_cache[1]

    def _allowed(self, unavailable: np.ndarray | None) -> np.ndarray:
        allowed = self.valid_mask()
        if unavailable is not None:
            allowed = allowed & ~np.asarray(unavailable, bool)
        return allowed

    def _times(
        self, carry: Carry, times: np.ndarray | None, size: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(gap since the row's last event, new t_hi, new t_lo), float32 each."""
        if not self._timed:
            zeros = np.zeros(size, np.float32)
            return zeros, zeros, zeros
        if times is None:
            return np.zeros(size, np.float32), carry["t_hi"], carry["t_lo"]
        t = _pad(np.asarray(times, np.float64), size)
        prev = carry["t_hi"].astype(np.float64) + carry["t_lo"].astype(np.float64)
        # Fresh rows have prev = 0 and a huge gap: the model ignores a session's
        # first gap, and clips the others to [0, 3600] itself.
        gap = np.clip(t - prev, 0.0, 1e7).astype(np.float32)
        hi = t.astype(np.float32)
        lo = (t - hi.astype(np.float64)).astype(np.float32)
        return gap, hi, lo

    def _step_impl(
        self,
        params: dict[str, Any],
        calibration: jax.Array,
        carry: Carry,
        items: jax.Array,
        mask: jax.Array,
        gap: jax.Array,
        t_hi: jax.Array,
        t_lo: jax.Array,
        excluded: jax.Array,
        allowed: jax.Array,
        history: jax.Array | None,
        *,
        explain: bool,
    ) -> tuple:
        new_carry, p = self._advance(params, calibration, carry, items, mask, gap, t_hi, t_lo)
        top, values, attributions = self._recommend(
            params, new_carry["rep"], items, excluded, allowed, history, explain=explain
        )
        return new_carry, top, values, p, attributions

    def _advance(
        self,
        params: dict[str, Any],
        calibration: jax.Array,
        carry: Carry,
        items: jax.Array,
        mask: jax.Array,
        gap: jax.Array,
        t_hi: jax.Array,
        t_lo: jax.Array,
    ) -> tuple[Carry, jax.Array]:
        """The recurrent part of a step: (new serving carry, purchase probability)."""
        new_carry, _, _ = self._step_carry(
            params, carry, items, mask, gap, t_hi, t_lo, readout=True
        )
        rep, logit = new_carry["rep"], new_carry["logit"]
        if self._purchase_fn is not None:
            p = self._purchase_fn(new_carry["model"], rep, logit)
        else:
            p = jax.nn.sigmoid(calibration[0] * logit + calibration[1])
        return new_carry, p

    def _recommend(
        self,
        params: dict[str, Any],
        rep: jax.Array,
        inputs: jax.Array,
        excluded: jax.Array,
        allowed: jax.Array,
        history: jax.Array | None,
        *,
        explain: bool,
    ) -> tuple[jax.Array, jax.Array, explain_lib.Attributions | None]:
        """Exact top-K of each representation and, with ``explain``, its attributions.

        ``inputs``: each row's item just clicked, never recommended when the model says
        so (`ModelConfig.exclude_input_item`), exactly as the evaluator ranks.
        """
        if self.model_cfg.exclude_input_item:
            excluded = jnp.concatenate([excluded, inputs[:, None].astype(excluded.dtype)], axis=1)
        table = _scoring_table(params)
        values, top = default_topk(
            rep, table, params["item_bias"], allowed, self.k, exclude=excluded
        )
        top = jnp.where(jnp.isneginf(values), 0, top)
        attributions = None
        if explain:
            attributions = explain_lib.occlusion(
                self.model_cfg, params, history, top, self.explain_top
            )
        return top, values, attributions

    def _events_impl(
        self,
        params: dict[str, Any],
        calibration: jax.Array,
        allowed: jax.Array,
        ints: jax.Array,
        floats: jax.Array,
        *,
        size: int,
        lanes: int,
        explain: bool,
    ) -> jax.Array:
        # Unpack what `step_events_flat` packed. Per-event rows and users' carries
        # have size + 1 rows: the last is where empty lane slots read and write.
        rows, width = size + 1, self._carry_size
        sizes = [rows, rows, rows, rows, size * lanes, 1, size * self.exclude_width]
        if explain:
            sizes.append(size * self.explain_window)
        split = jnp.split(ints, np.cumsum(sizes)[:-1])
        users, items, reset, first, grid, steps, excluded = split[:7]
        reset, first = reset > 0, first > 0
        grid = grid.reshape(size, lanes)
        excluded = excluded.reshape(size, self.exclude_width)
        history = split[7].reshape(size, self.explain_window) if explain else None
        flat, gap, t_hi, t_lo = jnp.split(floats, np.cumsum([rows * width, rows, rows]))
        carries = self._unflatten_traced(flat.reshape(rows, width))
        plan = _EventsPlan(grid, users, items, reset, first, steps[0], gap, t_hi, t_lo)
        # A separate purchase model reads every step's representation: the readout
        # then stays inside the loop.
        loop = self._events_loop if self._purchase_fn is None else self._events_loop_readouts
        final, rep, p = loop(params, calibration, carries, plan, size=size)
        top, values, attributions = self._recommend(
            params, rep[:size], items[:size], excluded, allowed, history, explain=explain
        )
        # One output array (integer parts as bit copies): see `step_events_flat`.
        parts = [self._flatten_traced(final), top, values, p[:size]]
        if attributions is not None:
            parts += [attributions.weights, attributions.positions, attributions.top_weights]
        flat = [
            (jax.lax.bitcast_convert_type(x, jnp.float32) if x.dtype == jnp.int32
             else x.astype(jnp.float32)).ravel()
            for x in parts
        ]  # fmt: skip
        # Written piece by piece into one buffer, not concatenated: XLA fuses a
        # concatenate with its operands' producers (the top-K gather) into a loop that
        # picks the source operand per element, 5 ms for the carries of a 256 bucket
        # against a copy of a fraction of that.
        out = jnp.zeros(sum(x.shape[0] for x in flat), jnp.float32)
        start = 0
        for x in flat:
            out = jax.lax.dynamic_update_slice(out, x, (start,))
            start += x.shape[0]
        return out

    def _events_loop(
        self,
        params: dict[str, Any],
        calibration: jax.Array,
        carries: Carry,
        plan: _EventsPlan,
        *,
        size: int,
    ) -> tuple[Carry, jax.Array, jax.Array]:
        """The events' loop: (final carries, representation and purchase probability
        per event).

        The loop steps the recurrent state only and keeps, per event, what the readout
        reads; the representations are read out once after it, for all events at
        once (the readout feeds nothing back into the state). A loop step runs at a
        batch of ``lanes`` rows, so a readout inside it (the attention keys over the
        whole window) cost as much per step as the one batched readout does in all.
        ``src`` is the event whose readout gives a row its representation: the row's
        own when it stepped, an earlier event of the same user when it did not (an
        unknown item), -1 when the user has not stepped in this batch (the stored or,
        after a reset, zero representation, as the per-step loop gives).
        """
        cfg = self.model_cfg
        grid, users, items, reset, first, steps, gap, t_hi, t_lo = plan
        rows = size + 1
        lane_carry = jax.tree_util.tree_map(
            lambda c: jnp.zeros((grid.shape[1], *c.shape[1:]), c.dtype), carries
        )
        rep_out = jnp.zeros((rows, self.model_cfg.output_dim), jnp.float32)
        p_out = jnp.zeros((rows,), jnp.float32)
        ev_state = jax.tree_util.tree_map(jnp.zeros_like, models.readout_carry(carries["model"]))
        ev_input = jnp.zeros((rows, models.input_dim(cfg)), jnp.float32)
        src_out = jnp.full((rows,), -1, jnp.int32)
        user_src = jnp.full((rows,), -1, jnp.int32)
        lane_src = jnp.full(grid.shape[1:], -1, jnp.int32)

        def body(t: jax.Array, state: tuple) -> tuple:
            lane_carry, lane_src, final, ev_state, ev_input, outs = state
            rep_out, p_out, src_out, user_src = outs
            event = grid[t]
            user = users[event]
            fresh = first[event] | reset[event]
            lane_carry = _enter_lanes(lane_carry, final, user, first[event], reset[event])
            lane_carry, emb, stepping = self._step_carry(
                params, lane_carry, items[event], event < size, gap[event], t_hi[event],
                t_lo[event], readout=False,
            )  # fmt: skip
            lane_src = jnp.where(stepping, event, jnp.where(fresh, -1, lane_src))
            p = jax.nn.sigmoid(calibration[0] * lane_carry["logit"] + calibration[1])
            final = jax.tree_util.tree_map(lambda f, c: f.at[user].set(c), final, lane_carry)
            ev_state = jax.tree_util.tree_map(
                lambda e, c: e.at[event].set(c), ev_state,
                models.readout_carry(lane_carry["model"]),
            )  # fmt: skip
            outs = (
                rep_out.at[event].set(lane_carry["rep"]),
                p_out.at[event].set(p),
                src_out.at[event].set(lane_src),
                user_src.at[user].set(lane_src),
            )
            return lane_carry, lane_src, final, ev_state, ev_input.at[event].set(emb), outs

        state = (lane_carry, lane_src, carries, ev_state, ev_input,
                 (rep_out, p_out, src_out, user_src))  # fmt: skip
        _, _, final, ev_state, ev_input, outs = jax.lax.fori_loop(0, steps, body, state)
        rep_out, p, src_out, user_src = outs
        rep_all = models.readout(cfg, params, ev_state, ev_input)  # (rows, D)

        def pick(src: jax.Array, fallback: jax.Array) -> jax.Array:
            return jnp.where((src >= 0)[:, None], rep_all[jnp.maximum(src, 0)], fallback)

        final = {**final, "rep": pick(user_src, final["rep"])}
        return final, pick(src_out, rep_out), p

    def _step_carry(
        self,
        params: dict[str, Any],
        carry: Carry,
        items: jax.Array,
        mask: jax.Array,
        gap: jax.Array,
        t_hi: jax.Array,
        t_lo: jax.Array,
        *,
        readout: bool,
    ) -> tuple[Carry, jax.Array | None, jax.Array]:
        """One event per row on serving carries: (new carry, the events' input vectors,
        which rows stepped).

        Rows step where ``mask`` is set and the item is known; the others keep their
        carry. With ``readout`` the carry's ``rep`` becomes the new representation (and
        no input vectors are returned); without, ``rep`` is left as it was and the
        input vectors come back for a later `models.readout`.
        """
        cfg = self.model_cfg
        stepping = mask & (items > 0)
        model_carry = carry["model"]
        if self._timed:
            # The exact gap arrives as the time; last_time 0 makes time - last_time = gap.
            model_carry = {**model_carry, "last_time": jnp.zeros_like(model_carry["last_time"])}
        if readout:
            stepped, rep, logit = models.encode_step(cfg, params, model_carry, items, gap)
            emb = None
        else:
            stepped, emb, logit = models.recurrent_step(cfg, params, model_carry, items, gap)

        def keep(new: jax.Array, old: jax.Array) -> jax.Array:
            return jnp.where(stepping.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)

        new_carry = {
            **carry,
            "model": jax.tree_util.tree_map(keep, stepped, carry["model"]),
            "logit": keep(logit, carry["logit"]),
        }
        if readout:
            new_carry["rep"] = keep(rep, carry["rep"])
        if self._timed:
            new_carry["t_hi"] = keep(t_hi, carry["t_hi"])
            new_carry["t_lo"] = keep(t_lo, carry["t_lo"])
        return new_carry, emb, stepping

    def _events_loop_readouts(
        self,
        params: dict[str, Any],
        calibration: jax.Array,
        carries: Carry,
        plan: _EventsPlan,
        *,
        size: int,
    ) -> tuple[Carry, jax.Array, jax.Array]:
        """The events' loop with each step's readout inside (for a separate purchase
        model, which reads the representation of every step)."""
        grid, users, items, reset, first, steps, gap, t_hi, t_lo = plan
        rows = size + 1
        lane_carry = jax.tree_util.tree_map(
            lambda c: jnp.zeros((grid.shape[1], *c.shape[1:]), c.dtype), carries
        )
        rep_out = jnp.zeros((rows, self.model_cfg.output_dim), jnp.float32)
        p_out = jnp.zeros((rows,), jnp.float32)

        def body(t: jax.Array, state: tuple) -> tuple:
            lane_carry, final, (rep_out, p_out) = state
            event = grid[t]
            user = users[event]

            lane_carry = _enter_lanes(lane_carry, final, user, first[event], reset[event])
            lane_carry, p = self._advance(
                params, calibration, lane_carry, items[event], event < size,
                gap[event], t_hi[event], t_lo[event],
            )  # fmt: skip
            final = jax.tree_util.tree_map(lambda f, c: f.at[user].set(c), final, lane_carry)
            return lane_carry, final, (rep_out.at[event].set(lane_carry["rep"]),
                                       p_out.at[event].set(p))  # fmt: skip

        _, final, (rep, p) = jax.lax.fori_loop(
            0, steps, body, (lane_carry, carries, (rep_out, p_out))
        )
        return final, rep, p

    def _unflatten_traced(self, flat: jax.Array) -> Carry:
        leaves, start = [], 0
        for shape, width, dtype in self._carry_layout:
            block = flat[:, start : start + width].reshape((flat.shape[0], *shape))
            leaves.append(block.astype(dtype))
            start += width
        return jax.tree_util.tree_unflatten(self._carry_treedef, leaves)

    def _flatten_traced(self, carry: Carry) -> jax.Array:
        leaves = jax.tree_util.tree_leaves(carry)
        return jnp.concatenate(
            [leaf.astype(jnp.float32).reshape(leaf.shape[0], -1) for leaf in leaves], axis=1
        )

    # ------------------------------------------------------------- parity path

    def score_all(self, carry: Carry) -> np.ndarray:
        """Full score rows of each carry's last representation, as the evaluator makes them.

        `models.score_items` with the vocabulary's validity mask: the exact scores
        `evaluate.make_eval_chunk` ranks targets against (for parity tests and
        debugging; not used on the hot path).

        Args:
            carry: numpy pytree with leading axis n.

        Returns:
            float32 (n, capacity) scores (invalid items at `models.MASKED_SCORE`).
        """
        return np.asarray(self._scores_fn(self._params, carry["rep"], self.valid_mask()))

    def _scores_impl(self, params: dict, rep: jax.Array, valid: jax.Array) -> jax.Array:
        return models.score_items(params, rep, valid)


def load_serving_model(
    path: str, *, buckets: Sequence[int] = DEFAULT_BUCKETS, k: int = 20, **kwargs: Any
) -> ServingModel:
    """Load and verify a checkpoint written by `rnnrec train`, ready to serve.

    Args:
        path: checkpoint root (follows LATEST) or one checkpoint directory.
        buckets: padded batch sizes.
        k: recommendations per row.
        **kwargs: other `ServingModel` options.

    Returns:
        The serving model (not yet compiled: call `ServingModel.warm_up`).
    """
    return ServingModel.from_trained(load_trained_model(path), buckets=buckets, k=k, **kwargs)


# ------------------------------------------------------------------------ helpers


def _scoring_table(params: dict[str, Any]) -> jax.Array:
    table = params["item_out"]
    if models.uses_score_norm(params):
        # As models.score_items: cosine scores normalise the item rows.
        table = table * jax.lax.rsqrt(jnp.sum(jnp.square(table), axis=-1, keepdims=True) + 1e-6)
    return table


def _lane_plan(
    users: np.ndarray, n_users: int, size: int, lanes: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Pack users' event sequences onto ``lanes`` rows for `ServingModel.step_events`.

    Longest users first, each onto the least loaded lane (greedy), so the loop runs
    about max(longest user, events / lanes) steps.

    Returns:
        ``(grid, first, steps)``: int32 (size, lanes) event index per step and lane
        (``size`` = empty slot), bool (N,) whether an event is its user's first, and
        the number of loop steps.
    """
    n = len(users)
    grid = np.full((size, lanes), size, np.int32)
    first = np.zeros(n, bool)
    if n == 0:
        return grid, first, 0
    order = np.argsort(users, kind="stable")  # grouped by user, each in its order
    counts = np.bincount(users, minlength=n_users)
    starts = np.concatenate([[0], np.cumsum(counts)])
    first[order[starts[:-1][counts > 0]]] = True
    loads = [(0, lane) for lane in range(lanes)]
    for user in np.argsort(-counts, kind="stable").tolist():
        count = int(counts[user])
        if count == 0:
            break
        load, lane = heapq.heappop(loads)
        grid[load : load + count, lane] = order[starts[user] : starts[user] + count]
        heapq.heappush(loads, (load + count, lane))
    return grid, first, max(load for load, _ in loads)


def _enter_lanes(lanes: Carry, carries: Carry, user: jax.Array, first: jax.Array,
                 reset: jax.Array) -> Carry:  # fmt: skip
    """The lanes' carries at their next events: a lane's first event of a user reads
    that user's carry from ``carries``; a reset (new session) starts from zeros, as
    `ServingModel.init_carry` does; otherwise the lane goes on with its own."""

    def enter(lane: jax.Array, stored: jax.Array) -> jax.Array:
        shape = (-1,) + (1,) * (lane.ndim - 1)
        lane = jnp.where(first.reshape(shape), stored[user], lane)
        return jnp.where(reset.reshape(shape), jnp.zeros_like(lane), lane)

    return jax.tree_util.tree_map(enter, lanes, carries)


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    if x.shape[0] == size:
        return x
    out = np.zeros((size, *x.shape[1:]), x.dtype)
    out[: x.shape[0]] = x
    return out


def _pad_tree(tree: Carry, size: int) -> Carry:
    return jax.tree_util.tree_map(lambda x: _pad(np.asarray(x), size), tree)


def _fit_width(x: np.ndarray | None, size: int, width: int) -> np.ndarray:
    """(size, width) int32: rows padded with 0, columns cut to the last ``width``
    (the most recent) or left-padded with 0."""
    out = np.zeros((size, width), np.int32)
    if x is None:
        return out
    x = np.asarray(x, np.int32)
    x = x[:, -width:] if x.shape[1] > width else x
    out[: x.shape[0], width - x.shape[1] :] = x
    return out
