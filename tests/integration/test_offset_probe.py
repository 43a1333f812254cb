"""The offset probe's start lookup on the real broker.

Faust records offset 0 committed and nothing committed alike (None), so the worker
asks the broker where its group starts on a partition (`OffsetProbe.start_offset`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from stream_app.kafka_io import create_topics, produce
from stream_app.offset_probe import OffsetProbe
from tests.chaos.support import commit_offsets, end_offsets


def test_start_is_the_committed_offset_else_the_log_start(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic, group = unique_name("in"), unique_name("group")
    create_topics(kafka_bootstrap, [topic], partitions=2)
    # One key: all five records land on one partition.
    produce(kafka_bootstrap, topic, [(b"k", b"v%d" % i) for i in range(5)])
    full = next(p for p, end in end_offsets(kafka_bootstrap, topic, 2).items() if end == 5)
    probe = OffsetProbe(kafka_bootstrap, {}, group=group)

    def start(partition: int) -> int:
        return asyncio.run(probe.start_offset(topic, partition))

    try:
        # Nothing committed: the log start (the worker resets to earliest).
        assert [start(0), start(1)] == [0, 0]
        # The probe never joined the group: a tool can still commit (an active member
        # would make these commits fail).
        commit_offsets(kafka_bootstrap, group, topic, {full: 3})
        assert start(full) == 3
        commit_offsets(kafka_bootstrap, group, topic, {full: 0})
        assert start(full) == 0
        # A committed offset past the log end (topic recreated) resets to earliest.
        commit_offsets(kafka_bootstrap, group, topic, {full: 99})
        assert start(full) == 0
    finally:
        probe.close()
