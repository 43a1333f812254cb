"""The worker's guard against records Faust fails to deliver (holes in a partition).

Faust's consumer is replaced by a recording double here because the point is the
guard's bookkeeping for each delivery order; the real race is exercised end to end
by tests/integration/test_sigterm.py against a broker.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pytest

from stream_app.metrics import WorkerMetrics
from stream_app.offset_probe import ProbeResult
from stream_app.settings import WorkerSettings
from stream_app.worker import _REFETCH_TRIES, _REFETCH_WAIT_S, _TAIL_STALL_S, ClickstreamServer
from tests.worker_scorers import RecentItemsScorer

TOPIC = "clickstream"


class TP(NamedTuple):
    topic: str
    partition: int


@dataclass(eq=False)  # hashable by identity, as Faust's messages are in its unacked set
class Message:
    topic: str
    partition: int
    offset: int

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


@dataclass
class Event:
    message: Message


@dataclass
class Consumer:
    """Records seeks; ``_committed_offset`` as Faust's recovery seek leaves it."""

    _committed_offset: dict[TP, int] = field(default_factory=dict)
    seeks: list[tuple[TP, int]] = field(default_factory=list)
    # The high-water mark of each partition's last fetch (None: not fetched yet).
    highwaters: dict[TP, int] = field(default_factory=dict)
    # Faust's set of delivered records not acked yet (``wait_empty`` waits on it).
    _unacked_messages: set[Message] = field(default_factory=set)

    async def seek(self, partition: TP, offset: int) -> None:
        self.seeks.append((partition, offset))

    def assignment(self) -> set[TP]:
        return {TP(TOPIC, 0), TP(TOPIC, 1), TP("other-topic", 0)}

    def highwater(self, partition: TP) -> int | None:
        return self.highwaters.get(partition)


def events(partition: int, *offsets: int) -> list[Event]:
    return [Event(Message(TOPIC, partition, o)) for o in offsets]


def offsets(kept: list[Any]) -> list[tuple[int, int]]:
    return [(e.message.partition, e.message.offset) for e in kept]


@pytest.fixture
def guarded() -> tuple[ClickstreamServer, Consumer]:
    settings = WorkerSettings(topic_clickstream=TOPIC)
    server = ClickstreamServer(settings, RecentItemsScorer(), None, {}, WorkerMetrics())  # type: ignore[arg-type]
    consumer = Consumer({TP(TOPIC, 0): 10})
    server.consumer_of = lambda: consumer
    return server, consumer


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_contiguous_offsets_from_the_committed_one_pass_untouched(guarded) -> None:
    server, consumer = guarded
    assert offsets(run(server._contiguous(events(0, 10, 11, 12)))) == [(0, 10), (0, 11), (0, 12)]
    assert offsets(run(server._contiguous(events(0, 13)))) == [(0, 13)]
    assert consumer.seeks == []


def test_a_missing_first_record_is_fetched_again_and_later_ones_wait_for_it(guarded) -> None:
    server, consumer = guarded
    # Offset 10 (the committed one) never came: nothing of partition 0 may run ahead.
    kept = run(server._contiguous(events(0, 11, 12) + events(1, 3)))
    assert offsets(kept) == [(1, 3)]  # other partitions go on
    assert consumer.seeks == [(TP(TOPIC, 0), 10)]
    assert server.metrics.refetches._value.get() == 1
    # Stale copies of later records still in the queue are dropped, unacked.
    assert run(server._contiguous(events(0, 13))) == []
    # The refetch delivers 10 first, then the rest in order.
    assert offsets(run(server._contiguous(events(0, 10, 11, 12, 13)))) == [
        (0, 10), (0, 11), (0, 12), (0, 13)
    ]  # fmt: skip


def test_records_delivered_twice_in_one_process_are_dropped(guarded) -> None:
    server, _ = guarded
    run(server._contiguous(events(0, 10, 11, 12)))
    assert offsets(run(server._contiguous(events(0, 11, 12, 13)))) == [(0, 13)]
    assert server.metrics.duplicate_deliveries._value.get() == 2


def test_dropped_records_no_longer_hold_faust_shutdown_but_kept_ones_await_their_ack(
    guarded,
) -> None:
    server, consumer = guarded
    first = events(0, 10, 11)
    consumer._unacked_messages.update(e.message for e in first)
    run(server._contiguous(first))
    # A duplicate (11 again), a hole (12 missing: 13 held for the refetch), a stale copy.
    later = events(0, 11, 13) + events(0, 14)
    consumer._unacked_messages.update(e.message for e in later)
    assert run(server._contiguous(later)) == []
    # Only the kept records still wait: they are acked after their batch.
    assert consumer._unacked_messages == {e.message for e in first}


def test_seek_is_repeated_on_the_timer_and_a_real_gap_is_finally_accepted(
    guarded, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, consumer = guarded
    clock = [1000.0]
    monkeypatch.setattr("stream_app.worker.time.monotonic", lambda: clock[0])
    run(server._contiguous(events(0, 15)))  # 10..14 absent (e.g. transaction markers)
    for _ in range(_REFETCH_TRIES + 1):
        clock[0] += _REFETCH_TRIES * _REFETCH_WAIT_S
        run(server.retry_refetches())
        assert offsets(run(server._contiguous(events(0, 15)))) in ([], [(0, 15)])
        if not server.refetching:
            break
    assert not server.refetching, "the gap was never accepted"
    assert len(consumer.seeks) == _REFETCH_TRIES + 1
    assert all(seek == (TP(TOPIC, 0), 10) for seek in consumer.seeks)
    assert server.metrics.offset_gaps._value.get() == 5
    assert offsets(run(server._contiguous(events(0, 16)))) == [(0, 16)]


def test_a_rebalance_forgets_what_was_expected(guarded) -> None:
    server, consumer = guarded
    run(server._contiguous(events(0, 10, 11)))
    server.forget_offsets()
    consumer._committed_offset[TP(TOPIC, 0)] = 12  # the new owner's committed offset
    assert offsets(run(server._contiguous(events(0, 12)))) == [(0, 12)]
    assert consumer.seeks == []


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr("stream_app.worker.time.monotonic", lambda: now[0])
    return now


def test_last_records_never_delivered_are_fetched_again_after_the_stall_time(
    guarded, clock: list[float]
) -> None:
    server, consumer = guarded
    run(server._contiguous(events(0, 10, 11)))
    # 12..14 were fetched (high-water 15) but dropped on the way; nothing follows them.
    consumer.highwaters = {TP(TOPIC, 0): 15, TP("other-topic", 0): 99}
    run(server.fetch_tail_holes())
    clock[0] += _TAIL_STALL_S - 0.5
    run(server.fetch_tail_holes())
    assert consumer.seeks == []  # records may still be on their way
    clock[0] += 1.0
    run(server.fetch_tail_holes())
    assert consumer.seeks == [(TP(TOPIC, 0), 12)]  # other topics are not watched
    # Copies of later records still queued wait for 12, which then comes first.
    assert run(server._contiguous(events(0, 13))) == []
    assert offsets(run(server._contiguous(events(0, 12, 13, 14)))) == [(0, 12), (0, 13), (0, 14)]
    clock[0] += 10 * _TAIL_STALL_S
    run(server.fetch_tail_holes())
    assert len(consumer.seeks) == 1  # caught up: nothing more to fetch


def test_a_partition_that_keeps_advancing_or_is_unknown_is_left_alone(
    guarded, clock: list[float]
) -> None:
    server, consumer = guarded
    consumer.highwaters = {TP(TOPIC, 0): 100, TP(TOPIC, 1): 50}  # partition 1: nothing committed
    for offset in range(10, 20):
        run(server._contiguous(events(0, offset)))
        run(server.fetch_tail_holes())
        clock[0] += _TAIL_STALL_S / 2
    assert consumer.seeks == []


def test_no_tail_fetch_while_a_batch_is_in_hand_or_the_worker_drains(
    guarded, clock: list[float]
) -> None:
    server, consumer = guarded
    consumer.highwaters = {TP(TOPIC, 0): 15}

    async def with_lock() -> None:
        async with server.batch_lock:
            await server.fetch_tail_holes()

    run(server.fetch_tail_holes())  # starts the wait at the committed offset 10
    clock[0] += 2 * _TAIL_STALL_S
    run(with_lock())
    server.draining = True
    run(server.fetch_tail_holes())
    assert consumer.seeks == []
    server.draining = False
    run(server.fetch_tail_holes())
    assert consumer.seeks == [(TP(TOPIC, 0), 10)]


@dataclass
class Probe:
    """The direct read, over a partition log given as the offsets that hold records."""

    logs: dict[tuple[str, int], list[int]]
    highwater: int
    fail: bool = False
    reads: list[tuple[str, int, int]] = field(default_factory=list)
    # Where the group starts on a partition (committed, else log start); absent: unknown.
    starts: dict[tuple[str, int], int] = field(default_factory=dict)
    start_lookups: list[tuple[str, int]] = field(default_factory=list)

    async def start_offset(self, topic: str, partition: int) -> int:
        self.start_lookups.append((topic, partition))
        return self.starts[(topic, partition)]  # KeyError: the broker did not answer

    async def read_from(self, topic: str, partition: int, offset: int) -> ProbeResult:
        self.reads.append((topic, partition, offset))
        if self.fail:
            raise ConnectionError("broker unreachable")
        later = [o for o in self.logs[(topic, partition)] if o >= offset]
        return ProbeResult(later[0], later[0] + 1) if later else ProbeResult(None, self.highwater)


def probes(server: ClickstreamServer, result: str) -> float:
    return server.metrics.offset_probes.labels(result)._value.get()


def test_transaction_markers_mid_stream_are_stepped_over_without_seeking(guarded) -> None:
    server, consumer = guarded
    # Two transactions: records 10-11, commit marker 12, records 13-14, marker 15.
    server.probe = Probe({(TOPIC, 0): [10, 11, 13, 14, 16]}, highwater=17)
    assert offsets(run(server._contiguous(events(0, 10, 11, 13)))) == [(0, 10), (0, 11), (0, 13)]
    assert offsets(run(server._contiguous(events(0, 14, 16)))) == [(0, 14), (0, 16)]
    assert consumer.seeks == []
    assert server.metrics.offset_gaps._value.get() == 2
    assert probes(server, "absent") == 2
    assert server.probe.reads == [(TOPIC, 0, 12), (TOPIC, 0, 15)]


def test_a_record_the_direct_read_finds_is_fetched_again(guarded) -> None:
    server, consumer = guarded
    server.probe = Probe({(TOPIC, 0): [10, 11, 12, 13]}, highwater=14)
    assert offsets(run(server._contiguous(events(0, 10, 11, 13)))) == [(0, 10), (0, 11)]
    assert consumer.seeks == [(TP(TOPIC, 0), 12)]
    assert probes(server, "missing") == 1
    assert server.metrics.offset_gaps._value.get() == 0


def test_a_failed_direct_read_falls_back_to_seeking(guarded) -> None:
    server, consumer = guarded
    server.probe = Probe({(TOPIC, 0): [10, 12]}, highwater=13, fail=True)
    assert offsets(run(server._contiguous(events(0, 10, 12)))) == [(0, 10)]
    assert consumer.seeks == [(TP(TOPIC, 0), 11)]
    assert probes(server, "failed") == 1


def test_markers_at_a_partitions_end_are_stepped_over_after_the_stall_time(
    guarded, clock: list[float]
) -> None:
    server, consumer = guarded
    server.probe = Probe({(TOPIC, 0): [10, 11]}, highwater=13)  # 12: the last commit marker
    run(server._contiguous(events(0, 10, 11)))
    consumer.highwaters = {TP(TOPIC, 0): 13}
    run(server.fetch_tail_holes())
    clock[0] += _TAIL_STALL_S + 0.5
    run(server.fetch_tail_holes())
    assert consumer.seeks == []
    assert server.metrics.offset_gaps._value.get() == 1
    clock[0] += 10 * _TAIL_STALL_S
    run(server.fetch_tail_holes())
    assert server.probe.reads == [(TOPIC, 0, 12)]  # caught up: no second read
    assert offsets(run(server._contiguous(events(0, 13)))) == [(0, 13)]


def test_a_record_lost_at_a_partitions_end_is_still_fetched_again_with_a_probe(
    guarded, clock: list[float]
) -> None:
    server, consumer = guarded
    server.probe = Probe({(TOPIC, 0): [10, 11, 12]}, highwater=13)
    run(server._contiguous(events(0, 10, 11)))
    consumer.highwaters = {TP(TOPIC, 0): 13}
    run(server.fetch_tail_holes())
    clock[0] += _TAIL_STALL_S + 0.5
    run(server.fetch_tail_holes())
    assert consumer.seeks == [(TP(TOPIC, 0), 12)]
    assert probes(server, "missing") == 1


def test_records_dropped_before_the_first_one_delivered_are_fetched_when_faust_knows_no_start(
    guarded,
) -> None:
    # Partition 1: offset 0 committed (or nothing), which Faust records as None. The
    # start-up race dropped 0..7; only 8 and 9 arrive.
    server, consumer = guarded
    server.probe = Probe({(TOPIC, 1): list(range(10))}, highwater=10, starts={(TOPIC, 1): 0})
    assert run(server._contiguous(events(1, 8, 9))) == []
    assert consumer.seeks == [(TP(TOPIC, 1), 0)]
    assert offsets(run(server._contiguous(events(1, *range(10))))) == [(1, o) for o in range(10)]
    # Looked up once per partition and assignment.
    run(server._contiguous(events(1, 10)))
    assert server.probe.start_lookups == [(TOPIC, 1)]


def test_a_first_record_at_the_groups_start_is_served_without_seeking(guarded) -> None:
    server, consumer = guarded
    # Retention removed 0..7: the consumer starts at the log start, 8.
    server.probe = Probe({(TOPIC, 1): [8, 9]}, highwater=10, starts={(TOPIC, 1): 8})
    assert offsets(run(server._contiguous(events(1, 8, 9)))) == [(1, 8), (1, 9)]
    assert consumer.seeks == [] and server.probe.reads == []


def test_an_unknown_start_trusts_what_faust_delivers(guarded) -> None:
    server, consumer = guarded
    server.probe = Probe({(TOPIC, 1): list(range(10))}, highwater=10)  # lookup fails
    assert offsets(run(server._contiguous(events(1, 8, 9)))) == [(1, 8), (1, 9)]
    assert consumer.seeks == []


def test_records_never_delivered_on_a_partition_without_commit_are_fetched_after_the_stall(
    guarded, clock: list[float]
) -> None:
    # Nothing committed on partition 1 and nothing delivered: without the group's
    # start the tail check had no offset to compare the high-water mark with.
    server, consumer = guarded
    server.probe = Probe({(TOPIC, 1): list(range(8))}, highwater=8, starts={(TOPIC, 1): 0})
    consumer.highwaters = {TP(TOPIC, 1): 8}
    run(server.fetch_tail_holes())
    clock[0] += _TAIL_STALL_S + 0.5
    run(server.fetch_tail_holes())
    assert consumer.seeks == [(TP(TOPIC, 1), 0)]
    # A partition whose group is at its end is left alone.
    server.forget_offsets()
    consumer.seeks.clear()
    server.probe.starts[(TOPIC, 1)] = 8
    run(server.fetch_tail_holes())
    clock[0] += _TAIL_STALL_S + 0.5
    run(server.fetch_tail_holes())
    assert consumer.seeks == []
