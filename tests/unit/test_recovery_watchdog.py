"""The recovery watchdog finds changelog partitions that recovery never receives."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace
from typing import Any, NamedTuple

from stream_app.recovery_watchdog import RecoveryWatchdog, stalled_partitions


class TP(NamedTuple):
    """Like Faust's TP: hashable, with a topic and a partition."""

    topic: str
    partition: int


TP0 = TP("app-user-state-changelog", 0)
TP1 = TP("app-user-state-changelog", 1)


def recovery(
    started: float | None = 100.0,
    in_recovery: bool = True,
    offsets: dict[Any, int] | None = None,
    highwaters: dict[Any, int] | None = None,
    received: dict[Any, float] | None = None,
) -> SimpleNamespace:
    """A stand-in with the attributes of Faust's ``Recovery`` that the watchdog reads."""
    offsets = {TP0: -1, TP1: 41} if offsets is None else offsets
    highwaters = {TP0: 154, TP1: 60} if highwaters is None else highwaters
    return SimpleNamespace(
        in_recovery=in_recovery,
        _recovery_started_at=started,
        _active_events_received_at=received or {},
        active_offsets=Counter(offsets),
        active_remaining=lambda: Counter({tp: hw - offsets[tp] for tp, hw in highwaters.items()}),
    )


def test_nothing_is_stalled_before_the_wait_or_outside_recovery() -> None:
    assert stalled_partitions(recovery(), now=110.0, stall_s=15, last_seek={}) == {}
    assert stalled_partitions(recovery(in_recovery=False), 200.0, 15, {}) == {}
    assert stalled_partitions(recovery(started=None), 200.0, 15, {}) == {}


def test_a_quiet_partition_is_sought_to_the_offset_after_the_last_applied() -> None:
    # TP0 applied nothing (-1): from the start. TP1 applied up to 41: from 42.
    found = stalled_partitions(recovery(), now=116.0, stall_s=15, last_seek={})
    assert found == {TP0: 0, TP1: 42}


def test_a_partition_receiving_records_or_done_is_left_alone() -> None:
    busy = recovery(received={TP0: 110.0})
    assert stalled_partitions(busy, now=116.0, stall_s=15, last_seek={}) == {TP1: 42}
    done = recovery(offsets={TP0: 154, TP1: 41}, highwaters={TP0: 154, TP1: 60})
    assert stalled_partitions(done, now=116.0, stall_s=15, last_seek={}) == {TP1: 42}


def test_a_seek_restarts_the_wait() -> None:
    assert stalled_partitions(recovery(), 120.0, 15, last_seek={TP0: 110.0}) == {TP1: 42}


class FakeConsumer:
    """Records the seeks and resumes the watchdog asks for."""

    def __init__(self) -> None:
        self.seeks: list[dict[Any, int]] = []
        self.resumed: list[set[Any]] = []

    async def seek_wait(self, partitions: dict[Any, int]) -> None:
        self.seeks.append(dict(partitions))

    def resume_partitions(self, tps: set[Any]) -> None:
        self.resumed.append(set(tps))


def test_tick_seeks_resumes_counts_and_waits_before_seeking_again() -> None:
    now = [116.0]
    consumer = FakeConsumer()
    app = SimpleNamespace(tables=SimpleNamespace(recovery=recovery()), consumer=consumer)
    counted: list[int] = []
    dog = RecoveryWatchdog(app, 15.0, counted.append, clock=lambda: now[0])
    asyncio.run(dog.tick())
    assert consumer.seeks == [{TP0: 0, TP1: 42}]
    assert consumer.resumed == [{TP0, TP1}] and counted == [2]
    now[0] = 120.0  # within stall_s of the seek: no second seek yet
    asyncio.run(dog.tick())
    assert len(consumer.seeks) == 1
    now[0] = 132.0
    asyncio.run(dog.tick())
    assert len(consumer.seeks) == 2
