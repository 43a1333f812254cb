"""Read a partition directly to tell a lost record from offsets that hold none.

The worker's offset guard (`stream_app.worker.ClickstreamServer._contiguous`) sees a
hole when an event's offset jumps past the next one it expects. Two things make
such a jump: a record Faust fetched but failed to deliver (a race in
faust-streaming 0.15.3 around start-up and rebalances), which must be fetched
again, or offsets that hold no record for consumers at all: the commit and abort
markers a transactional producer writes after each transaction, and records removed
by compaction or retention. The stream itself cannot tell them apart, so the guard
asks a second, group-less consumer that reads from the missing offset: if the first
record it gets is the one the stream delivered, the offsets in between hold nothing
and are skipped at once, instead of after several seeks (a stall of about 15 s per
transaction marker for a transactional producer).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What a direct read from an offset found.

    ``first_record`` is the offset of the first record at or after the probed offset
    (None: none came before the end of the log or the timeout); ``position`` is
    where the read stopped: every offset below it and from the probed one on, other
    than ``first_record``, holds no record.
    """

    first_record: int | None
    position: int


class OffsetProbe:
    """A group-less kafka-python consumer that reads single records on demand.

    Created lazily and reused; calls are serialised and run in a thread, so the
    event loop keeps serving while a probe waits for the broker.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        security: dict[str, Any],
        timeout_s: float = 3.0,
        group: str | None = None,
    ) -> None:
        """Remember how to connect; nothing is opened until the first probe.

        ``group`` is the worker's consumer group, for `start_offset`.
        """
        self.bootstrap_servers = bootstrap_servers
        self.security = security
        self.timeout_s = timeout_s
        self.group = group
        self.lock = asyncio.Lock()
        self.consumer: KafkaConsumer | None = None
        # Reads the group's committed offsets only: it never subscribes, so it never
        # joins the group or commits.
        self.group_reader: KafkaConsumer | None = None

    async def read_from(self, topic: str, partition: int, offset: int) -> ProbeResult:
        """The first record at or after ``offset`` on one partition (see `ProbeResult`)."""
        async with self.lock:
            try:
                return await asyncio.to_thread(self._read_from, topic, partition, offset)
            except Exception:
                await asyncio.to_thread(self.close)  # start clean next time
                raise

    async def start_offset(self, topic: str, partition: int) -> int:
        """Where the group starts reading a partition: its committed offset, or the
        log start when nothing (or nothing still in the log) is committed, as the
        worker's consumer resets to earliest."""
        async with self.lock:
            try:
                return await asyncio.to_thread(self._start_offset, topic, partition)
            except Exception:
                await asyncio.to_thread(self.close)
                raise

    def _start_offset(self, topic: str, partition: int) -> int:
        if self.group is None:
            raise ValueError("the probe was made without the worker's group")
        if self.group_reader is None:
            self.group_reader = KafkaConsumer(
                bootstrap_servers=self.bootstrap_servers,
                group_id=self.group,
                enable_auto_commit=False,
                **self.security,
            )
        reader = self.group_reader
        tp = TopicPartition(topic, partition)
        timeout_ms = int(self.timeout_s * 1000)
        committed = reader.committed(tp, timeout_ms=timeout_ms)
        earliest = reader.beginning_offsets([tp], timeout_ms=timeout_ms)[tp]
        latest = reader.end_offsets([tp], timeout_ms=timeout_ms)[tp]
        if committed is None or not earliest <= committed <= latest:
            return int(earliest)  # out of range: the consumer resets to earliest
        return int(committed)

    def _read_from(self, topic: str, partition: int, offset: int) -> ProbeResult:
        if self.consumer is None:
            self.consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap_servers,
                group_id=None,
                enable_auto_commit=False,
                # The worker reads read_uncommitted (Faust without exactly-once), so
                # records of aborted transactions are records here too.
                isolation_level="read_uncommitted",
                # Below the log start (retention): read from the first record kept.
                auto_offset_reset="earliest",
                **self.security,
            )
        consumer = self.consumer
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            records = consumer.poll(timeout_ms=200, max_records=1).get(tp, [])
            if records:
                return ProbeResult(records[0].offset, records[0].offset + 1)
            # An empty fetch still moves the position past markers it skipped; at
            # the high-water mark nothing more is there to read.
            position = consumer.position(tp)
            highwater = consumer.highwater(tp)
            if highwater is not None and position >= highwater:
                return ProbeResult(None, position)
        return ProbeResult(None, consumer.position(tp))

    def close(self) -> None:
        """Close the consumer (a later probe opens a new one)."""
        for consumer in (self.consumer, self.group_reader):
            if consumer is not None:
                consumer.close()
        self.consumer = self.group_reader = None
