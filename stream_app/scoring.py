"""The worker's view of the model: the `Scorer` protocol and batched-per-round scoring.

The worker never does model maths. It hands a `Scorer` one row per user: the user's
flat float32 carry and the raw item id of the event, and gets back the new carries,
the top-K item ids and scores, the purchase probability and an optional explanation.
`score_in_rounds` turns a micro-batch in which a user may have several events into
calls that are batched across users and sequential per user: one call per micro-batch
for a scorer that implements `EventScorer` (``ServingModelScorer`` does), else one per
round. `ServingModelScorer` adapts ``rnnrec_jax.serving`` (jitted, fixed padded
buckets) to the protocol.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from stream_app.settings import WorkerSettings
from stream_app.state import OcclusionExplanation, to_millionths


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one scorer call returns for ``n`` rows.

    Attributes:
        carries: float32 [n, carry_size], the carry after each row's item.
        top_items: n lists of at most K raw item ids, best first.
        top_scores: n lists of scores, one per item in ``top_items``.
        p_purchase: float [n], calibrated purchase probabilities in [0, 1].
        explanations: n explanation objects (JSON-ready dicts) or None.
    """

    carries: np.ndarray
    top_items: list[list[str]]
    top_scores: list[list[float]]
    p_purchase: np.ndarray
    explanations: list[dict[str, Any] | None]


@runtime_checkable
class Scorer(Protocol):
    """A model the worker can serve. Implementations must be safe to call from one
    executor thread while the event loop runs (the worker never calls concurrently).
    """

    @property
    def version(self) -> str:
        """The model version, published with every output and stored with each carry."""
        ...

    def initial_carry(self) -> np.ndarray:
        """The carry of a user starting a session: float32 [carry_size]."""
        ...

    def step(
        self,
        carries: np.ndarray,
        item_ids: Sequence[str],
        excluded: Sequence[Sequence[str]] | None,
        k: int,
        *,
        times: Sequence[float] | None = None,
        histories: Sequence[Sequence[str]] | None = None,
    ) -> StepResult:
        """Advance each row's carry by its item and score the catalogue.

        Args:
            carries: float32 [n, carry_size]; n is at most the largest bucket.
            item_ids: n raw item ids (unknown ids are out-of-vocabulary, never errors).
            excluded: per row, item ids that must not be recommended, or None.
            k: items to return per row.
            times: per row, the event time (epoch seconds), or None.
            histories: per row, the session's last item ids including this event,
                oldest first (what explanations look at), or None: no explanations.

        Returns:
            The `StepResult` for the n rows, in order.
        """
        ...


@runtime_checkable
class EventScorer(Protocol):
    """A `Scorer` that also applies several events per user in one call (optional).

    `score_in_rounds` prefers it: one call per micro-batch instead of one per round;
    the worker awaits `submit_users` on its event loop instead of using a thread.
    """

    def score_users(
        self, users: Sequence[UserSteps], k: int
    ) -> tuple[list[list[StepOutput | None]], list[np.ndarray]]:
        """All events of ``users`` (at most the largest bucket), as `score_in_rounds`."""
        ...

    def submit_users(self, users: Sequence[UserSteps], k: int) -> PendingScores:
        """`score_users` started: returns before the model has computed the result."""
        ...


class PendingScores:
    """A micro-batch handed to the model whose result may not be computed yet."""

    def __init__(
        self,
        ready: Callable[[], bool],
        finish: Callable[[], tuple[list[list[StepOutput | None]], list[np.ndarray]]],
        wait: Callable[[], None],
    ) -> None:
        """``ready`` says whether ``finish`` would return without waiting; ``wait``
        blocks until it would (for a helper thread, never the event loop)."""
        self.ready = ready
        self.wait = wait
        self._finish = finish

    def result(self) -> tuple[list[list[StepOutput | None]], list[np.ndarray]]:
        """``(outputs, carries)`` as `score_in_rounds` returns them (waits if needed)."""
        return self._finish()


@dataclass(slots=True)
class UserSteps:
    """One user's work in a micro-batch: items to step through, in order.

    Attributes:
        carry: the stored carry, or None to start from the initial carry.
        items: raw item ids to apply in order.
        emit: per item, whether its outputs are wanted (False for the silent steps
            that rebuild a carry under new model params).
        reset: per item, whether the carry restarts from the initial carry first
            (a new session).
        excluded: per item, ids that must not be recommended (or None).
        times: per item, the event time (epoch seconds).
        history: per item, the session's last item ids including it (explanations),
            or None.
    """

    carry: np.ndarray | None
    items: list[str] = field(default_factory=list)
    emit: list[bool] = field(default_factory=list)
    reset: list[bool] = field(default_factory=list)
    excluded: list[list[str] | None] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    history: list[list[str] | None] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class StepOutput:
    """The outputs of one emitted step."""

    items: list[str]
    scores: list[float]
    p_purchase: float
    explanation: dict[str, Any] | None


def score_in_rounds(
    scorer: Scorer, users: Sequence[UserSteps], max_rows: int, k: int
) -> tuple[list[list[StepOutput | None]], list[np.ndarray]]:
    """Score a micro-batch: batched across users, sequential per user.

    An `EventScorer` gets all events in one call (groups of at most ``max_rows``
    events). Any other `Scorer` is called once per round: round r steps every user's
    r-th item together, so a user's events are applied in arrival order and each
    call is as wide as the number of users still active; rounds wider than
    ``max_rows`` are split. The outputs are the same either way (a replayed clickstream
    batch of 256 events held about 19 rounds, hence the one call).

    Args:
        scorer: the model.
        users: one `UserSteps` per user.
        max_rows: rows per scorer call (the largest bucket of the jitted step).
        k: items per recommendation.

    Returns:
        ``(outputs, carries)``: per user, one `StepOutput` per item (None where
        ``emit`` is False), and per user the final carry.
    """
    if isinstance(scorer, EventScorer):
        return _score_in_groups(scorer, users, max_rows, k)
    initial = scorer.initial_carry()
    carries = [u.carry if u.carry is not None else initial for u in users]
    outputs: list[list[StepOutput | None]] = [[None] * len(u.items) for u in users]
    rounds = max((len(u.items) for u in users), default=0)
    for r in range(rounds):
        active = [i for i, u in enumerate(users) if len(u.items) > r]
        for start in range(0, len(active), max_rows):
            chunk = active[start : start + max_rows]
            for i in chunk:
                if users[i].reset[r]:
                    carries[i] = initial
            any_excluded = any(users[i].excluded and users[i].excluded[r] for i in chunk)
            # Callers may leave times/history empty: then none are passed.
            has_times = all(len(users[i].times) > r for i in chunk)
            has_history = any(
                len(users[i].history) > r and users[i].history[r] is not None for i in chunk
            )
            context: dict[str, Any] = {}
            # Only passed when present, so scorers written before them keep working.
            if has_times:
                context["times"] = [users[i].times[r] for i in chunk]
            if has_history:
                context["histories"] = [_history_at(users[i], r) for i in chunk]
            result = scorer.step(
                np.stack([carries[i] for i in chunk]).astype(np.float32, copy=False),
                [users[i].items[r] for i in chunk],
                [users[i].excluded[r] or [] for i in chunk] if any_excluded else None,
                k,
                **context,
            )
            for row, i in enumerate(chunk):
                carries[i] = result.carries[row]
                if users[i].emit[r]:
                    outputs[i][r] = StepOutput(
                        items=result.top_items[row],
                        scores=[float(s) for s in result.top_scores[row]],
                        p_purchase=float(result.p_purchase[row]),
                        explanation=result.explanations[row],
                    )
    return outputs, carries


def _score_in_groups(
    scorer: EventScorer, users: Sequence[UserSteps], max_rows: int, k: int
) -> tuple[list[list[StepOutput | None]], list[np.ndarray]]:
    """`score_in_rounds` through `EventScorer.score_users`: users grouped so that each
    call holds at most ``max_rows`` events; a user with more is cut into consecutive
    parts, each part starting from the carry the previous one left."""
    outputs: list[list[StepOutput | None]] = [[] for _ in users]
    carries: list[np.ndarray] = [np.empty(0, np.float32)] * len(users)
    group: list[tuple[int, UserSteps]] = []
    size = 0

    def flush() -> None:
        nonlocal group, size
        if group:
            outs, ends = scorer.score_users([part for _, part in group], k)
            for (i, _), out, end in zip(group, outs, ends, strict=True):
                outputs[i].extend(out)
                carries[i] = end
        group, size = [], 0

    for i, user in enumerate(users):
        n = len(user.items)
        if n <= max_rows:
            if size + max(n, 1) > max_rows:
                flush()
            group.append((i, user))
            size += max(n, 1)
            continue
        carry = user.carry
        for start in range(0, n, max_rows):
            flush()
            end = start + max_rows
            group.append((i, _part(user, carry, start, end)))
            flush()
            carry = carries[i]
    flush()
    return outputs, carries


def _part(user: UserSteps, carry: np.ndarray | None, start: int, end: int) -> UserSteps:
    """Events ``start:end`` of ``user``, starting from ``carry``."""
    return UserSteps(
        carry=carry,
        items=user.items[start:end],
        emit=user.emit[start:end],
        reset=user.reset[start:end],
        excluded=user.excluded[start:end],
        times=user.times[start:end],
        history=user.history[start:end],
    )


def _history_at(user: UserSteps, r: int) -> list[str]:
    return (user.history[r] or []) if len(user.history) > r else []


def load_scorer(settings: WorkerSettings) -> Scorer:
    """Build the scorer the settings name.

    Args:
        settings: ``scorer_factory`` ("module:callable", called with the settings)
            wins; otherwise ``model_source`` is a checkpoint served through
            `ServingModelScorer`.

    Returns:
        A ready `Scorer` (the jitted step compiled for every bucket).

    Raises:
        ValueError: neither setting is given, or the factory does not make a Scorer.
    """
    if settings.scorer_factory:
        module_name, _, attribute = settings.scorer_factory.partition(":")
        factory: Callable[[WorkerSettings], Scorer] = getattr(
            importlib.import_module(module_name), attribute
        )
        scorer = factory(settings)
    elif settings.model_source:
        from rnnrec_jax.model_io import load_trained_model  # imported late: JAX is heavy

        scorer = scorer_from_trained(load_trained_model(settings.model_source), settings)
    else:
        raise ValueError("set RNNREC_MODEL_SOURCE (a checkpoint) or RNNREC_SCORER_FACTORY")
    if not isinstance(scorer, Scorer):
        raise ValueError(f"{settings.scorer_factory or settings.model_source} is not a Scorer")
    return scorer


def scorer_from_trained(model: Any, settings: WorkerSettings) -> ServingModelScorer:
    """A warmed-up scorer for a loaded model (a checkpoint or a model-updates version).

    Compiles every bucket before returning, so swapping it in costs nothing on the
    hot path; call it off the event loop.

    Args:
        model: a ``rnnrec_jax.model_io.TrainedModel``.
        settings: buckets, K, explanation window, exclusion width.

    Returns:
        The scorer.
    """
    from rnnrec_jax.serving import ServingModel  # imported late: JAX is heavy

    serving_model = ServingModel.from_trained(
        model,
        buckets=settings.bucket_sizes,
        k=settings.top_k,
        explain_window=max(1, settings.explain_window),
        exclude_width=settings.history_length + 1,
    )
    scorer = ServingModelScorer(serving_model, settings.bucket_sizes)
    # Compile every bucket (only the variant used) before it serves anything.
    serving_model.warm_up(explain=settings.explain_window > 0, methods=("step_events",))
    return scorer


_EXACT_KEYS = ("time", "t_hi", "t_lo", "dwell", "repeat")
"""Float leaves float16 cannot hold: epoch times (overflow above 65,504) and the
purchase head's running session sums (dwell seconds reach that in long sessions)."""


def exact_positions(
    names: Sequence[str], dtypes: Sequence[np.dtype], sizes: Sequence[int]
) -> np.ndarray:
    """Flat carry positions that need float32: integer leaves, times, session sums.

    Args:
        names: each leaf's path in the carry pytree (``jax.tree_util.keystr``).
        dtypes: each leaf's dtype.
        sizes: each leaf's number of values per row.

    Returns:
        int32 positions, ascending.
    """
    out, start = [], 0
    for name, dtype, size in zip(names, dtypes, sizes, strict=True):
        if not np.issubdtype(dtype, np.floating) or any(key in name for key in _EXACT_KEYS):
            out.extend(range(start, start + size))
        start += size
    return np.asarray(out, np.int32)


class ServingModelScorer:
    """Adapts ``rnnrec_jax.serving.ServingModel`` to `Scorer`.

    The serving model's carry is a pytree with a leading batch axis (the cell's state,
    the last representation and logit, the last event time); here it is flattened
    to one float32 vector per user so the worker stores plain bytes, and cast back to
    each leaf's dtype on the way in (integer leaves such as counts and recent item
    indices are exact in float32 below 2**24). `exact_carry_positions` names the
    positions of integer leaves, event times and the purchase head's session sums,
    which the float16 carry option keeps in float32: float16 holds integers exactly only up to 2,048 and overflows above
    65,504, so an epoch time became infinite and item indices were rounded.
    The serving model pads rows to its buckets, so the jitted step compiles once per
    bucket and never in steady state (`compile_count`).
    """

    def __init__(self, model: Any, buckets: Sequence[int] | None = None) -> None:
        """Wrap ``model`` (its own buckets are used; ``buckets`` is kept for callers)."""
        import jax

        self._model = model
        self._buckets = tuple(buckets) if buckets is not None else tuple(model.buckets)
        template = model.init_carry(1)
        with_paths, _ = jax.tree_util.tree_flatten_with_path(template)
        leaves = [leaf for _, leaf in with_paths]
        self.exact_carry_positions = exact_positions(
            [jax.tree_util.keystr(path) for path, _ in with_paths],
            [np.asarray(leaf).dtype for leaf in leaves],
            [int(np.prod(np.shape(leaf)[1:])) for leaf in leaves],
        )
        # The model's flat layout (leaves side by side, pytree order) is the state's.
        self._initial = model.flatten_carry(template)[0]
        self._unavailable = np.zeros(model.vocab.capacity, dtype=bool)
        self._unavailable_ids: tuple[str, ...] = ()
        self._ids: tuple[int, np.ndarray] | None = None

    @property
    def version(self) -> str:
        """The served model version."""
        return str(self._model.version)

    @property
    def compile_count(self) -> int:
        """XLA compilations in this process so far (constant in steady state)."""
        from rnnrec_jax.serving import compile_events

        return compile_events()

    def initial_carry(self) -> np.ndarray:
        """A fresh session's carry, flattened."""
        return self._initial.copy()

    def unknown_items(self, item_ids: Sequence[str]) -> int:
        """How many of ``item_ids`` the model does not know (served as out-of-vocabulary)."""
        if not item_ids:
            return 0
        return int((np.asarray(self._model.vocab.encode(list(item_ids))) == 0).sum())

    def set_unavailable(self, item_ids: Sequence[str]) -> None:
        """Mark items never to recommend (from ``item-updates``)."""
        self._unavailable_ids = tuple(str(i) for i in item_ids)
        mask = np.zeros_like(self._unavailable)
        encoded = self._model.vocab.encode(list(self._unavailable_ids))
        indices = np.asarray(encoded, dtype=np.int64)
        mask[indices[indices > 0]] = True
        self._unavailable = mask

    @property
    def unavailable_items(self) -> tuple[str, ...]:
        """The ids last passed to `set_unavailable` (carried over to a swapped-in model)."""
        return self._unavailable_ids

    def _unflatten(self, carries: np.ndarray) -> Any:
        return self._model.unflatten_carry(carries)

    def _encode_rows(self, rows: Sequence[Sequence[str]], width: int) -> np.ndarray:
        """Right-aligned (n, width) indices of each row's last ``width`` ids (0 = none).

        One vocabulary lookup for the whole batch (a lookup per row cost more than
        the jitted step)."""
        out = np.zeros((len(rows), width), np.int32)
        flat: list[str] = []
        where_rows: list[int] = []
        where_cols: list[int] = []
        for row, ids in enumerate(rows):
            ids = list(ids)[-width:]
            flat.extend(ids)
            where_rows.extend([row] * len(ids))
            where_cols.extend(range(width - len(ids), width))
        if flat:
            out[where_rows, where_cols] = self._model.vocab.encode(flat)
        return out

    def _id_table(self) -> np.ndarray:
        """Object array: index -> raw item id ('' for 0), cached per vocabulary size.

        ``ItemVocabulary.decode`` rebuilds its table on every call (about 1 ms at
        6,400 items, twice per row); the hot path decodes through this cached copy."""
        vocab = self._model.vocab
        n = len(vocab)
        if self._ids is None or self._ids[0] != n:
            table = np.empty(n + 1, object)
            table[:] = [str(x) for x in vocab.decode(np.arange(n + 1))]
            self._ids = (n, table)
        return self._ids[1]

    def step(
        self,
        carries: np.ndarray,
        item_ids: Sequence[str],
        excluded: Sequence[Sequence[str]] | None,
        k: int,
        *,
        times: Sequence[float] | None = None,
        histories: Sequence[Sequence[str]] | None = None,
    ) -> StepResult:
        """Run the serving step on ``n`` rows and decode item ids and explanations."""
        n = len(item_ids)
        model = self._model
        item_idx = np.asarray(model.vocab.encode(list(item_ids)), np.int32)
        excluded_idx = None
        if excluded is not None:
            excluded_idx = self._encode_rows(excluded, model.exclude_width)
        history_idx = None
        if histories is not None:
            history_idx = self._encode_rows(histories, model.explain_window)
        out = model.step(
            self._unflatten(np.asarray(carries, np.float32)),
            item_idx,
            np.ones(n, bool),
            times=None if times is None else np.asarray(times, np.float64),
            excluded=excluded_idx,
            unavailable=self._unavailable,
            history=history_idx,
        )
        items, scores, explanations = self._decode(out, history_idx, k)
        return StepResult(
            carries=model.flatten_carry(out.carry),
            top_items=items,
            top_scores=scores,
            p_purchase=np.asarray(out.p_purchase, np.float32),
            explanations=explanations,
        )

    def score_users(
        self, users: Sequence[UserSteps], k: int
    ) -> tuple[list[list[StepOutput | None]], list[np.ndarray]]:
        """All events of ``users`` in one call of the model's ``step_events``.

        The same outputs as `score_in_rounds` over `step`, round by round, but the
        recurrence runs in one jitted loop and the catalogue is scored once. The
        events (silent ones included) must fit the largest bucket; so must the users.

        Args:
            users: one `UserSteps` per user.
            k: items per recommendation.

        Returns:
            As `score_in_rounds`.
        """
        return self.submit_users(users, k).result()

    def submit_users(self, users: Sequence[UserSteps], k: int) -> PendingScores:
        """Start `score_users`: encode and dispatch now, decode when the result is asked.

        XLA computes off the calling thread, so an event loop can await
        `PendingScores.ready` instead of handing the whole call to a thread.
        """
        model = self._model
        initial = self._initial
        # Rows, not one stacked array: the model writes them straight into its input.
        carries = [u.carry if u.carry is not None else initial for u in users]
        counts = [len(u.items) for u in users]
        owner = np.repeat(np.arange(len(users)), counts)
        item_ids = [item for u in users for item in u.items]
        excluded = [(u.excluded[r] if len(u.excluded) > r else None) or []
                    for u in users for r in range(len(u.items))]  # fmt: skip
        # As in rounds: times only when every event has one, explanations when any
        # event has a history (only then are the per-event histories gathered).
        has_times = all(len(u.times) >= len(u.items) for u in users)
        history_idx = None
        if any(h is not None for u in users for h in u.history):
            histories = [_history_at(u, r) for u in users for r in range(len(u.items))]
            history_idx = self._encode_rows(histories, model.explain_window)
        pending = model.dispatch_events_flat(
            carries,
            owner,
            np.asarray(model.vocab.encode(item_ids), np.int32),
            reset=np.asarray([x for u in users for x in u.reset[: len(u.items)]], bool),
            times=np.asarray([t for u in users for t in u.times[: len(u.items)]], np.float64)
            if has_times else None,
            excluded=self._encode_rows(excluded, model.exclude_width)
            if any(excluded) else None,
            unavailable=self._unavailable,
            history=history_idx,
        )  # fmt: skip

        def finish() -> tuple[list[list[StepOutput | None]], list[np.ndarray]]:
            out = pending.result()
            items, scores, explanations = self._decode(out, history_idx, k)
            p_purchase = np.asarray(out.p_purchase, np.float32).tolist()
            outputs: list[list[StepOutput | None]] = []
            row = 0
            for u in users:
                mine: list[StepOutput | None] = []
                for emit in u.emit[: len(u.items)]:
                    mine.append(StepOutput(items[row], scores[row], p_purchase[row],
                                           explanations[row]) if emit else None)  # fmt: skip
                    row += 1
                outputs.append(mine)
            return outputs, list(out.carry)

        return PendingScores(pending.ready, finish, pending.wait)

    def _decode(
        self, out: Any, history_idx: np.ndarray | None, k: int
    ) -> tuple[list[list[str]], list[list[float]], list[dict[str, Any] | None]]:
        """Raw item ids, scores (empty slots dropped) and explanations of a step's rows."""
        top_items = np.asarray(out.top_items)[:, :k]
        n = len(top_items)
        top_scores = np.asarray(out.top_scores, np.float32)[:, :k]
        ids = self._id_table()
        names = ids[top_items].tolist()
        score_rows = top_scores.tolist()
        keep_rows = (top_items > 0).tolist()  # index 0 marks an empty slot, never an item
        decoded, scores = [], []
        for row in range(n):
            keep = keep_rows[row]
            if all(keep):
                decoded.append(names[row])
                scores.append(score_rows[row])
            else:
                decoded.append([x for x, ok in zip(names[row], keep, strict=True) if ok])
                scores.append([x for x, ok in zip(score_rows[row], keep, strict=True) if ok])
        explanations: list[dict[str, Any] | None] = [None] * n
        if out.attributions is not None and history_idx is not None:
            explanations = self._explanations(history_idx, decoded, out.attributions, ids)
        return decoded, scores, explanations

    @staticmethod
    def _explanations(
        history: np.ndarray, items: list[list[str]], attributions: Any, ids: np.ndarray
    ) -> list[dict[str, Any] | None]:
        """JSON explanation of each row: the user's recent items (oldest first) and the
        occlusion weight matrix, ``weights[k][j]`` = how much ``recent_items[j]`` raised
        the score of the k-th recommended item (negative: it lowered it).

        One list per row cut from whole-batch arrays: per-recommendation objects (the
        format before schema version 2) cost a dict and two lists per slot, about
        14 us per event on the event loop, and tripled the explanation's bytes.
        """
        n = len(items)
        hist = np.asarray(history)[:n]
        length = hist.shape[1]
        # Rounded as sent (6 places); + 0.0 turns the -0.0 of tiny negatives into 0.0.
        weights = np.round(np.asarray(attributions.weights, np.float64)[:n], 6) + 0.0
        # The same weights as the state codec stores them, once for the whole batch
        # (None if any is not exact: then the codec converts each row's lists).
        millionths = to_millionths(weights)
        real = hist > 0
        count = real.sum(axis=1)
        # Histories are right-aligned, so the real positions are usually the last
        # `count`: a slice. An out-of-vocabulary event (index 0) inside the window
        # leaves a gap: those rows take their real columns by mask.
        suffix = np.cumprod(real[:, ::-1], axis=1).sum(axis=1) == count
        window = ids[hist].tolist()
        counts, suffixes = count.tolist(), suffix.tolist()
        out: list[dict[str, Any] | None] = []
        for row, row_items in enumerate(items):
            c, k = counts[row], len(row_items)
            if suffixes[row]:
                columns: slice | np.ndarray = slice(length - c, None)
                recent = window[row][length - c :]
            else:
                columns = real[row]
                recent = [w for w in window[row] if w]
            matrix = weights[row, :k][:, columns].tolist()
            row_micro = None if millionths is None else millionths[row, :k][:, columns]
            out.append(OcclusionExplanation("occlusion", recent, matrix, row_micro))
        return out
