"""Test-only scorers for the worker's non-model behaviour.

`RecentItemsScorer` is a test double, not a model: it "recommends" the most recent
distinct items of the session. It is deterministic and its carry encodes the
history, so tests of DLQ routing, commit order, redelivery, session policy and
state recovery can compare exact outputs. It says nothing about recommendation
quality; tests of model behaviour use ``rnnrec_jax.serving``.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from stream_app.scoring import StepResult
from stream_app.settings import WorkerSettings

WINDOW = 6
"""Items the carry remembers."""


def _item_code(item_id: str) -> float:
    # Decimal ids below 2**24 are exact in float32; others are hashed into that range
    # (tests use small decimal ids, so decoding is exact there).
    if item_id.isdigit() and int(item_id) < 2**24:
        return float(int(item_id))
    return float(zlib.crc32(item_id.encode()) % 2**24)


class RecentItemsScorer:
    """Test double: carry = [steps, last WINDOW item codes]; recommends them, newest first."""

    def __init__(self, version: str = "test-1") -> None:
        """A scorer reporting ``version``."""
        self._version = version

    @property
    def version(self) -> str:
        """The fake model version."""
        return self._version

    def initial_carry(self) -> np.ndarray:
        """No steps, empty window (-1)."""
        carry = np.full(WINDOW + 1, -1.0, np.float32)
        carry[0] = 0.0
        return carry

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
        """Shift each row's window by its item and read the window back (times and
        histories are ignored)."""
        new = carries.copy()
        new[:, 0] += 1.0
        new[:, 2:] = carries[:, 1:-1]
        new[:, 1] = [_item_code(i) for i in item_ids]
        top_items, top_scores, explanations = [], [], []
        for row in range(len(item_ids)):
            skip = {str(int(_item_code(i))) for i in (excluded[row] if excluded else ())}
            items: list[str] = []
            for code in new[row, 1:]:
                item = str(int(code))
                if code >= 0 and item not in items and item not in skip:
                    items.append(item)
            items = items[:k]
            top_items.append(items)
            top_scores.append([1.0 / (1 + j) for j in range(len(items))])
            recent = items[:3]
            explanations.append({"method": "recent", "recent_items": recent,
                                 "weights": [[1.0] * len(recent) for _ in items]})  # fmt: skip
        p_purchase = np.minimum(1.0, new[:, 0] / 10.0).astype(np.float32)
        return StepResult(new, top_items, top_scores, p_purchase, explanations)


def recent_items_scorer(settings: WorkerSettings) -> RecentItemsScorer:
    """Factory for ``RNNREC_SCORER_FACTORY=tests.worker_scorers:recent_items_scorer``.

    The version comes from ``RNNREC_TEST_SCORER_VERSION`` (default ``test-1``).
    """
    return RecentItemsScorer(os.environ.get("RNNREC_TEST_SCORER_VERSION", "test-1"))


class SlowRecentItemsScorer(RecentItemsScorer):
    """`RecentItemsScorer` whose step takes ``delay_s`` (a batch is "in hand" for a while)."""

    def __init__(self, version: str = "test-1", delay_s: float = 0.2) -> None:
        """A scorer reporting ``version`` that sleeps ``delay_s`` in every step."""
        super().__init__(version)
        self._delay_s = delay_s

    def step(
        self,
        carries: np.ndarray,
        item_ids: Sequence[str],
        excluded: Sequence[Sequence[str]] | None,
        k: int,
        **kwargs: Any,
    ) -> StepResult:
        """Sleep (the step runs in the worker's executor thread), then step."""
        time.sleep(self._delay_s)
        return super().step(carries, item_ids, excluded, k, **kwargs)


def slow_recent_items_scorer(settings: WorkerSettings) -> SlowRecentItemsScorer:
    """Factory for ``tests.worker_scorers:slow_recent_items_scorer``.

    The delay comes from ``RNNREC_TEST_SCORER_DELAY_S`` (default 0.2 s).
    """
    return SlowRecentItemsScorer(
        os.environ.get("RNNREC_TEST_SCORER_VERSION", "test-1"),
        float(os.environ.get("RNNREC_TEST_SCORER_DELAY_S", "0.2")),
    )


class FailingRecentItemsScorer(RecentItemsScorer):
    """`RecentItemsScorer` whose step raises on chosen items, or on its first calls.

    A stand-in for a scorer fault: a poison item fails every step it is in; a passing
    fault fails the first ``fail_calls`` steps whatever they hold.
    """

    def __init__(self, fail_items: set[str], fail_calls: int = 0) -> None:
        """Fail every step holding one of ``fail_items``, and the first ``fail_calls``."""
        super().__init__()
        self._fail_items = fail_items
        self._calls_left_to_fail = fail_calls

    def step(
        self,
        carries: np.ndarray,
        item_ids: Sequence[str],
        excluded: Sequence[Sequence[str]] | None,
        k: int,
        **kwargs: Any,
    ) -> StepResult:
        """Raise `RuntimeError` as configured, else step."""
        if self._calls_left_to_fail > 0:
            self._calls_left_to_fail -= 1
            raise RuntimeError("passing fault")
        poison = self._fail_items.intersection(item_ids)
        if poison:
            raise RuntimeError(f"poison item {sorted(poison)[0]}")
        return super().step(carries, item_ids, excluded, k, **kwargs)


def failing_recent_items_scorer(settings: WorkerSettings) -> FailingRecentItemsScorer:
    """Factory for ``tests.worker_scorers:failing_recent_items_scorer``.

    ``RNNREC_TEST_SCORER_FAIL_ITEMS``: comma-separated poison items;
    ``RNNREC_TEST_SCORER_FAIL_CALLS``: how many first steps fail (default 0).
    """
    items = os.environ.get("RNNREC_TEST_SCORER_FAIL_ITEMS", "")
    return FailingRecentItemsScorer(
        {i for i in items.split(",") if i},
        int(os.environ.get("RNNREC_TEST_SCORER_FAIL_CALLS", "0")),
    )
