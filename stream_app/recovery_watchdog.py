"""Restart the fetch of a changelog partition that Faust's table recovery never receives.

With faust-streaming 0.15.3 a worker that gets a changelog partition back after
another worker leaves sometimes receives none of its records during table recovery:
Faust logs "No event received for active tp ... since recovery start" every 5 s and
the worker never leaves recovery, so it stops serving (``tests/chaos/test_rebalance.py``
stalled in 3 of 23 runs). The records are still on the broker, and a seek back
fetches them at once (seen in that test: recovery done 0.2 s after the seek). So they
were most likely fetched and then dropped in one of Faust's early exits (a
generation check, a suspended flow), with the fetch position already past them. A
small partition has no later records that could start the fetch again.

`RecoveryWatchdog.tick` runs on a timer. It looks for active changelog partitions
that still have records to recover and have received nothing for ``stall_s``
seconds, and seeks each one to the offset after the last record that recovery
applied. Seeking there never skips a record. A record that arrives twice is ignored
by Faust's recovery, which keeps only offsets above the last one it applied.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def stalled_partitions(
    recovery: Any, now: float, stall_s: float, last_seek: dict[Any, float]
) -> dict[Any, int]:
    """Active changelog partitions with nothing received for ``stall_s``, and where to seek.

    Args:
        recovery: Faust's ``Recovery`` service (``app.tables.recovery``).
        now: the current ``time.monotonic()``, the clock Faust's recovery uses.
        stall_s: how long a partition with records left may receive nothing.
        last_seek: when this watchdog last sought each partition (a seek restarts
            the partition's wait).

    Returns:
        ``{partition: offset to seek to}``; empty outside recovery.
    """
    started = getattr(recovery, "_recovery_started_at", None)
    if not getattr(recovery, "in_recovery", False) or started is None:
        return {}
    received = recovery._active_events_received_at
    stalled: dict[Any, int] = {}
    for tp, left in recovery.active_remaining().items():
        if left <= 0:
            continue
        quiet_since = max(received.get(tp, started), started, last_seek.get(tp, started))
        if now - quiet_since < stall_s:
            continue
        applied = recovery.active_offsets.get(tp)
        # -1 (or nothing): nothing applied yet, read the partition from its start.
        stalled[tp] = applied + 1 if applied is not None and applied >= 0 else 0
    return stalled


class RecoveryWatchdog:
    """Seeks stalled changelog partitions again while the table recovers."""

    def __init__(
        self,
        app: Any,
        stall_s: float,
        on_reseek: Callable[[int], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Watch ``app``'s recovery; ``on_reseek(n)`` counts the partitions sought."""
        self.app = app
        self.stall_s = stall_s
        self.on_reseek = on_reseek
        self.clock = clock
        self.last_seek: dict[Any, float] = {}

    async def tick(self) -> None:
        """Seek stalled partitions to where recovery stands, and fetch them again."""
        recovery = self.app.tables.recovery
        now = self.clock()
        stalled = stalled_partitions(recovery, now, self.stall_s, self.last_seek)
        if not getattr(recovery, "in_recovery", False):
            self.last_seek.clear()
        if not stalled:
            return
        for tp, offset in stalled.items():
            log.warning(
                "table recovery received nothing from %s[%d] for %.0f s with records left; "
                "fetching it again from offset %d",
                tp.topic, tp.partition, self.stall_s, offset,
            )  # fmt: skip
            self.last_seek[tp] = now
        consumer = self.app.consumer
        try:
            await consumer.seek_wait(stalled)
        except Exception as exc:  # a rebalance took the partition meanwhile: next tick
            log.warning("seeking stalled changelog partitions failed: %r", exc)
            return
        consumer.resume_partitions(set(stalled))
        self.on_reseek(len(stalled))
