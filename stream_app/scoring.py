"""The worker's view of the model: the `Scorer` protocol and batched-per-round scoring.

The worker never does model maths. It hands a `Scorer` one row per user: the user's
flat float32 carry and the raw item id of the event, and gets back the new carries,
the top-K item ids and scores, the purchase probability and an optional explanation.
`score_in_rounds` turns a micro-batch in which a user may have several events into
calls that are batched across users and sequential per user. `ServingModelScorer`
adapts ``rnnrec_jax.serving`` (jitted, fixed padded buckets) to the protocol.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from stream_app.settings import WorkerSettings


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
    ) -> StepResult:
        """Advance each row's carry by its item and score the catalogue.

        Args:
            carries: float32 [n, carry_size]; n is at most the largest bucket.
            item_ids: n raw item ids (unknown ids are out-of-vocabulary, never errors).
            excluded: per row, item ids that must not be recommended, or None.
            k: items to return per row.

        Returns:
            The `StepResult` for the n rows, in order.
        """
        ...


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
    """

    carry: np.ndarray | None
    items: list[str] = field(default_factory=list)
    emit: list[bool] = field(default_factory=list)
    reset: list[bool] = field(default_factory=list)
    excluded: list[list[str] | None] = field(default_factory=list)


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

    Round r steps every user's r-th item together, so a user's events are applied
    in arrival order and each call is as wide as the number of users still active.
    Rounds wider than ``max_rows`` are split.

    Args:
        scorer: the model.
        users: one `UserSteps` per user.
        max_rows: rows per scorer call (the largest bucket of the jitted step).
        k: items per recommendation.

    Returns:
        ``(outputs, carries)``: per user, one `StepOutput` per item (None where
        ``emit`` is False), and per user the final carry.
    """
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
            result = scorer.step(
                np.stack([carries[i] for i in chunk]).astype(np.float32, copy=False),
                [users[i].items[r] for i in chunk],
                [users[i].excluded[r] or [] for i in chunk] if any_excluded else None,
                k,
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
        from rnnrec_jax import serving  # type: ignore[attr-defined]  # imported late: JAX is heavy

        model = serving.load_serving_model(
            settings.model_source, buckets=settings.bucket_sizes, k=settings.top_k
        )
        scorer = ServingModelScorer(model, settings.bucket_sizes)
    else:
        raise ValueError("set RNNREC_MODEL_SOURCE (a checkpoint) or RNNREC_SCORER_FACTORY")
    if not isinstance(scorer, Scorer):
        raise ValueError(f"{settings.scorer_factory or settings.model_source} is not a Scorer")
    return scorer


class ServingModelScorer:
    """Adapts ``rnnrec_jax.serving.ServingModel`` to `Scorer`.

    The serving model's carry is a pytree with a leading batch axis (``h`` for a GRU,
    ``(h, c)`` for an LSTM, plus an attention window); here it is flattened to one
    float32 vector per user so the worker stores plain bytes. Rows are padded to the
    smallest bucket that fits, with ``mask`` marking real rows, so the jitted step
    compiles once per bucket and never in steady state.

    Note: written against the serving API described in the issue
    (``vocab``, ``version``, ``init_carry(n)``, ``step(carry, item_idx, mask,
    excluded, unavailable)``); not yet exercised by a test because
    ``rnnrec_jax/serving.py`` does not exist at the time of writing.
    """

    def __init__(self, model: Any, buckets: Sequence[int]) -> None:
        """Wrap ``model``; ``buckets`` are the padded batch sizes, increasing."""
        import jax

        self._model = model
        self._buckets = tuple(buckets)
        template = model.init_carry(1)
        leaves, self._treedef = jax.tree_util.tree_flatten(template)
        self._shapes = [np.shape(leaf)[1:] for leaf in leaves]
        self._sizes = [int(np.prod(shape)) for shape in self._shapes]
        self._initial = np.concatenate(
            [np.asarray(leaf, np.float32).reshape(-1) for leaf in leaves]
        )
        self._unavailable = np.zeros(model.vocab.capacity, dtype=bool)

    @property
    def version(self) -> str:
        """The served model version."""
        return str(self._model.version)

    def initial_carry(self) -> np.ndarray:
        """A fresh session's carry, flattened."""
        return self._initial.copy()

    def set_unavailable(self, item_ids: Sequence[str]) -> None:
        """Mark items never to recommend (from ``item-updates``)."""
        mask = np.zeros_like(self._unavailable)
        indices = np.asarray(self._model.vocab.encode(list(item_ids)), dtype=np.int64)
        mask[indices[indices > 0]] = True
        self._unavailable = mask

    def _bucket(self, n: int) -> int:
        for size in self._buckets:
            if size >= n:
                return size
        raise ValueError(f"{n} rows exceed the largest bucket {self._buckets[-1]}")

    def step(
        self,
        carries: np.ndarray,
        item_ids: Sequence[str],
        excluded: Sequence[Sequence[str]] | None,
        k: int,
    ) -> StepResult:
        """Pad to a bucket, run the jitted step, unpad and decode item ids."""
        import jax

        n = len(item_ids)
        size = self._bucket(n)
        padded = np.zeros((size, carries.shape[1]), np.float32)
        padded[:n] = carries
        leaves, start = [], 0
        for shape, width in zip(self._shapes, self._sizes, strict=True):
            leaves.append(padded[:, start : start + width].reshape((size, *shape)))
            start += width
        carry = jax.tree_util.tree_unflatten(self._treedef, leaves)
        item_idx = np.zeros(size, np.int32)
        item_idx[:n] = self._model.vocab.encode(list(item_ids))
        mask = np.zeros(size, bool)
        mask[:n] = True
        excluded_idx = None
        if excluded is not None:
            width = max(1, max(len(e) for e in excluded))
            excluded_idx = np.zeros((size, width), np.int32)
            for row, ids in enumerate(excluded):
                if ids:
                    excluded_idx[row, : len(ids)] = self._model.vocab.encode(list(ids))
        new_carry, top_items, top_scores, p_purchase, attributions = self._model.step(
            carry, item_idx, mask, excluded_idx, self._unavailable
        )
        flat = np.concatenate(
            [
                np.asarray(leaf, np.float32).reshape(size, -1)
                for leaf in jax.tree_util.tree_leaves(new_carry)
            ],
            axis=1,
        )[:n]
        top_items = np.asarray(top_items)[:n, :k]
        top_scores = np.asarray(top_scores, np.float32)[:n, :k]
        decoded, scores = [], []
        for row in range(n):
            keep = top_items[row] > 0  # index 0 is padding/OOV, never a recommendation
            decoded.append([str(x) for x in self._model.vocab.decode(top_items[row][keep])])
            scores.append(top_scores[row][keep].tolist())
        explanations: list[dict[str, Any] | None] = [None] * n
        if attributions is not None:
            weights = np.asarray(attributions, np.float32)[:n]
            explanations = [{"weights": w.tolist()} for w in weights]
        return StepResult(
            carries=flat,
            top_items=decoded,
            top_scores=scores,
            p_purchase=np.asarray(p_purchase, np.float32)[:n],
            explanations=explanations,
        )
