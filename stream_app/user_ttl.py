"""The idle-user sweep: users idle longer than ``RNNREC_USER_TTL_S`` leave the table.

Without it a user's TTL is only checked on that user's next event, so users who
never come back stay in the table (and its changelog) for ever. A Faust timer runs
`IdleUserSweeper.tick` every ``RNNREC_USER_TTL_SWEEP_S`` on every worker; each tick
examines at most ``RNNREC_USER_TTL_SWEEP_USERS`` users, continuing through a
snapshot of the table's keys, and deletes those idle for longer than the TTL.

* **Event time.** "Now" is the newest event time this worker has seen: events it
  decoded, and the last event time of every state it examined (so a restarted
  worker that recovered old state can sweep before new events arrive). Replayed
  data therefore expires as it would have live, whatever the replay speed. An event
  time in the future (accepted up to ``RNNREC_MAX_FUTURE_S`` past the clock) moves
  "now" only as far as the wall clock.
* **Only owned users.** A user is deleted only by the worker that has its partition
  as an active assignment (the memory store also holds standby and revoked
  partitions' keys), and nothing is swept during a rebalance or recovery.
* **Tombstones through the table.** ``del table[user]`` writes a tombstone to the
  changelog partition of the user's events (the table is partitioned like
  clickstream), so compaction drops the user there too.
* **No race with the hot path.** A tick runs while no batch is in flight (the
  caller holds the batch lock) and has no await between reading a state and
  deleting it.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from faust.streams import _current_event  # the context Faust's tables read the partition from
from prometheus_client import CollectorRegistry, Counter

from stream_app.state import READABLE_FORMATS

log = logging.getLogger(__name__)


def sweep_view(data: bytes) -> tuple[float, int, int] | None:
    """``(last event time, event count, source partition)`` of an encoded user state.

    Reads only what the sweep needs from `stream_app.state.encode_state` records:
    about a quarter of the cost of `decode_state` (no carry, ids or digests are
    decoded), which bounds how long a tick holds the hot path.

    Returns:
        The fields, or None for a record of another format or a corrupt one (the hot
        path counts and replaces those on the user's next event).
    """
    try:
        record = orjson.loads(data)
        if record.get("v") not in READABLE_FORMATS:
            return None
        return float(record["t"]), int(record["n"]), int(record["p"])
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None


class _Message:
    __slots__ = ("partition", "topic")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition


class _PartitionEvent:
    """Stands in for a Faust event so the table sends a tombstone to ``partition``."""

    __slots__ = ("__weakref__", "message")

    def __init__(self, topic: str, partition: int) -> None:
        self.message = _Message(topic, partition)


class IdleUserSweeper:
    """Deletes users idle longer than the TTL, a bounded number of users per tick."""

    def __init__(
        self,
        table: Any,
        source_topic: str,
        ttl_s: float,
        users_per_tick: int,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Set up the sweep.

        Args:
            table: the worker's Faust table of encoded user states.
            source_topic: clickstream's name (the table's partitions are its partitions).
            ttl_s: idle time (event time) after which a user is deleted.
            users_per_tick: most users examined by one `tick`.
            registry: where the sweep's counters go.
            clock: the wall clock, which caps "now" (see `observe`).
        """
        self.table = table
        self.clock = clock
        self.source_topic = source_topic
        self.ttl_s = ttl_s
        self.users_per_tick = users_per_tick
        self.newest_event_ts = 0.0
        self._pending: list[str] = []
        self._cycle_expired = 0
        self.expired = Counter(
            "rnnrec_users_expired",
            "Users deleted by the idle-user sweep (idle longer than RNNREC_USER_TTL_S).",
            registry=registry,
        )
        self.examined = Counter(
            "rnnrec_ttl_sweep_users_examined",
            "Users the idle-user sweep looked at.",
            registry=registry,
        )

    def observe(self, ts: float) -> None:
        """Note an event time (the sweep's "now" is the newest one, at most the clock).

        An event from a producer whose clock runs ahead is accepted up to
        ``RNNREC_MAX_FUTURE_S`` past the clock; as "now" it would make users active a
        minute ago look idle for that long, and a short TTL would delete them all.
        """
        if ts > self.newest_event_ts:
            self.newest_event_ts = min(ts, self.clock())

    def tick(self, active_partitions: Iterable[int]) -> int:
        """Examine the next users of the current pass and delete the idle ones.

        Synchronous on purpose: no other coroutine touches the table meanwhile.

        Args:
            active_partitions: the source partitions this worker owns now.

        Returns:
            How many users were deleted.
        """
        owned = set(active_partitions)
        if not owned:
            return 0
        if not self._pending:
            # A new pass over a snapshot of the keys: the table may change between ticks.
            self._pending = list(self.table.keys())
            self._pending.reverse()  # popped from the end: oldest keys first
            self._cycle_expired = 0
        started = time.perf_counter()
        deleted = examined = 0
        while self._pending and examined < self.users_per_tick:
            user_id = self._pending.pop()
            examined += 1
            data = self.table.get(user_id)
            if data is None:
                continue  # deleted since the snapshot
            view = sweep_view(data)
            if view is None:
                continue
            last_ts, event_count, partition = view
            if partition not in owned:
                continue
            self.observe(last_ts)
            # As `stream_app.state.is_expired`, which the next event would apply.
            if event_count > 0 and self.newest_event_ts - last_ts > self.ttl_s:
                self._delete(user_id, partition)
                deleted += 1
        self.examined.inc(examined)
        self.expired.inc(deleted)
        self._cycle_expired += deleted
        if not self._pending and self._cycle_expired:
            log.info(
                "idle-user sweep: pass done, %d users expired (last tick %d users in %.1f ms)",
                self._cycle_expired,
                examined,
                1000 * (time.perf_counter() - started),
            )
        return deleted

    def _delete(self, user_id: str, partition: int) -> None:
        event = _PartitionEvent(self.source_topic, partition)
        token = _current_event.set(weakref.ref(event))  # type: ignore[arg-type]
        try:
            del self.table[user_id]
        finally:
            _current_event.reset(token)


def active_source_partitions(app: Any, source_topic: str) -> Callable[[], set[int]]:
    """A function giving the source partitions ``app`` owns now (empty while rebalancing)."""

    def partitions() -> set[int]:
        if app.rebalancing or not app.tables.recovery.completed.is_set():
            return set()
        try:
            actives = app.assignor.assigned_actives()
        except Exception:  # not started yet
            return set()
        return {tp.partition for tp in actives if tp.topic == source_topic}

    return partitions
