"""The offset probe's start lookup on the real broker.

Faust records offset 0 committed and nothing committed alike (None), so the worker
asks the broker where its group starts on a partition (`OffsetProbe.start_offset`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from stream_app.kafka_io import create_topics, produce
from stream_app.offset_probe import OffsetProbe


def commit(bootstrap: str, group: str, tp: TopicPartition, offset: int) -> None:
    """Commit as a tool does: no group membership (generation -1)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        consumer.assign([tp])
        consumer.commit({tp: OffsetAndMetadata(offset, "", -1)})
    finally:
        consumer.close()


def test_start_is_the_committed_offset_else_the_log_start(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic, group = unique_name("in"), unique_name("group")
    create_topics(kafka_bootstrap, [topic], partitions=2)
    produce(kafka_bootstrap, topic, [(b"k", b"v%d" % i) for i in range(5)])
    partitions = {p: TopicPartition(topic, p) for p in (0, 1)}
    probe = OffsetProbe(kafka_bootstrap, {}, group=group)

    async def starts() -> dict[int, int]:
        return {p: await probe.start_offset(topic, p) for p in partitions}

    try:
        # Nothing committed: the log start of each partition (the worker resets to
        # earliest); the key "k" puts all five records on one partition.
        assert asyncio.run(starts()) == {0: 0, 1: 0}
        full = next(p for p, t in partitions.items() if _end(kafka_bootstrap, t) == 5)
        tp = partitions[full]
        # The probe never joined the group: a tool can still commit (an active member
        # would make these commits fail).
        commit(kafka_bootstrap, group, tp, 3)
        assert asyncio.run(probe.start_offset(topic, full)) == 3
        commit(kafka_bootstrap, group, tp, 0)
        assert asyncio.run(probe.start_offset(topic, full)) == 0
        # A committed offset past the log end (topic recreated) resets to earliest.
        commit(kafka_bootstrap, group, tp, 99)
        assert asyncio.run(probe.start_offset(topic, full)) == 0
    finally:
        probe.close()


def _end(bootstrap: str, tp: TopicPartition) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        return int(consumer.end_offsets([tp])[tp])
    finally:
        consumer.close()
