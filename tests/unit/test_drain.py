"""The graceful-stop drain: when is every record Faust handed over done?

Faust's consumer is a recording double: the point is how `ClickstreamServer.drain`
reads Faust's bookkeeping (``_read_offset``, the high-water marks); the stop itself
runs against a broker in tests/integration/test_sigterm.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import NamedTuple

from stream_app.metrics import WorkerMetrics
from stream_app.settings import WorkerSettings
from stream_app.worker import ClickstreamServer
from tests.worker_scorers import RecentItemsScorer

TOPIC = "clickstream"


class TP(NamedTuple):
    topic: str
    partition: int


@dataclass
class Consumer:
    """``_read_offset`` and high-water marks as Faust and aiokafka keep them."""

    _read_offset: dict[TP, int | None] = field(default_factory=dict)
    highwaters: dict[TP, int] = field(default_factory=dict)
    paused: set[TP] = field(default_factory=set)

    def assignment(self) -> set[TP]:
        return {TP(TOPIC, 0), TP(TOPIC, 1), TP("other-topic", 0)}

    def pause_partitions(self, partitions: set[TP]) -> None:
        self.paused |= set(partitions)

    def highwater(self, partition: TP) -> int | None:
        return self.highwaters.get(partition)


def server() -> ClickstreamServer:
    settings = WorkerSettings(topic_clickstream=TOPIC)
    return ClickstreamServer(settings, RecentItemsScorer(), None, {}, WorkerMetrics())  # type: ignore[arg-type]


def drained(server: ClickstreamServer, consumer: Consumer, timeout_s: float = 0.6) -> bool:
    return asyncio.run(server.drain(consumer, timeout_s))


def test_an_idle_partition_after_the_recovery_seek_holds_nothing_in_flight() -> None:
    # After Faust's seek the read offset is the committed one (the next to read):
    # at the high-water mark no record is there, so nothing was handed over.
    s = server()
    consumer = Consumer(
        _read_offset={TP(TOPIC, 0): 8, TP(TOPIC, 1): 0},
        highwaters={TP(TOPIC, 0): 8, TP(TOPIC, 1): 0},
    )
    assert drained(s, consumer)
    assert consumer.paused == consumer.assignment()


def test_a_partition_not_fetched_yet_holds_nothing_in_flight() -> None:
    consumer = Consumer(_read_offset={TP(TOPIC, 0): 5})
    assert drained(server(), consumer)


def test_a_handed_over_record_not_acked_keeps_the_stop_waiting() -> None:
    s = server()
    consumer = Consumer(_read_offset={TP(TOPIC, 0): 7}, highwaters={TP(TOPIC, 0): 10})
    assert not drained(s, consumer)
    s.acked_upto[(TOPIC, 0)] = 6
    assert not drained(s, consumer)
    s.acked_upto[(TOPIC, 0)] = 7
    assert drained(s, consumer)


def test_the_committed_record_possibly_handed_over_must_be_acked() -> None:
    # Read offset 8 below the high-water mark is ambiguous (the seek's next offset,
    # or record 8 handed over): the stop waits for its ack.
    s = server()
    consumer = Consumer(_read_offset={TP(TOPIC, 0): 8}, highwaters={TP(TOPIC, 0): 9})
    assert not drained(s, consumer)
    s.acked_upto[(TOPIC, 0)] = 8
    assert drained(s, consumer)


def test_other_topics_do_not_hold_the_stop() -> None:
    consumer = Consumer(
        _read_offset={TP("other-topic", 0): 3}, highwaters={TP("other-topic", 0): 9}
    )
    assert drained(server(), consumer)
