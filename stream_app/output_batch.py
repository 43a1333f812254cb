"""One micro-batch's output records, handed to the producer as one record batch per partition.

`AIOKafkaProducer.send` costs a future, a partition lookup and an accumulator append per
record; with three records produced per event that path was the largest single share of
the worker's event-loop time after Faust itself. Here the records of a micro-batch are
grouped by topic partition, appended to aiokafka's `BatchBuilder` (C code) and submitted
with `send_batch`: one delivery future per partition instead of one per record. Keys are
partitioned as the producer's default partitioner does (murmur2, Java compatible), so
consumers see the same partitioning as before.
"""

from __future__ import annotations

import asyncio
import functools
from collections import defaultdict
from typing import Any

from aiokafka.partitioner import murmur2


class OutputBatch:
    """Collects keyed records per topic and sends them as per-partition record batches."""

    def __init__(self) -> None:
        self._records: dict[str, list[tuple[bytes, bytes]]] = defaultdict(list)

    def add(self, topic: str, key: bytes, value: bytes) -> None:
        """Queue one record for `topic`, keyed (and partitioned) by `key`."""
        self._records[topic].append((key, value))

    def __len__(self) -> int:
        return sum(len(records) for records in self._records.values())

    async def send(self, producer: Any) -> list[asyncio.Future[Any]]:
        """Hand every queued record to `producer` (an `AIOKafkaProducer`); returns the
        delivery futures, one per record batch, and empties the batch.

        A partition's records keep their order; a batch that reaches the producer's
        `max_batch_size` is submitted and the next one started.
        """
        futures: list[asyncio.Future[Any]] = []
        records, self._records = self._records, defaultdict(list)
        for topic, keyed in records.items():
            partitions = sorted(await producer.partitions_for(topic))
            by_partition: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
            for key, value in keyed:
                by_partition[partitions[key_hash(key) % len(partitions)]].append((key, value))
            for partition, items in by_partition.items():
                futures.extend(await _send_partition(producer, topic, partition, items))
        return futures


@functools.lru_cache(maxsize=1 << 17)
def key_hash(key: bytes) -> int:
    """The producer's default partitioner's hash of a key (murmur2, Java compatible;
    partition = hash % partition count), remembered for recent keys.

    aiokafka's murmur2 is pure Python (about 3 % of the event loop's samples in a
    drain, two outputs per event); a user's outputs share the key, and active users
    recur, so most keys were hashed a moment before.
    """
    return murmur2(key) & 0x7FFFFFFF


async def app_producer(app: Any) -> Any:
    """The `AIOKafkaProducer` of a Faust app (started if it was not), for `OutputBatch.send`.

    The same producer as Faust's own sends (tables' changelog, `Topic.send`), so the
    commit timer's flush covers these records too. Faust's wrapper exposes it only
    through the private ``_ensure_producer()`` (faust-streaming 0.15.3): this is the one
    place that relies on it.
    """
    producer = await app.maybe_start_producer()
    return producer._ensure_producer()


async def _send_partition(
    producer: Any, topic: str, partition: int, records: list[tuple[bytes, bytes]]
) -> list[asyncio.Future[Any]]:
    """Submit `records` to one partition in as few record batches as fit.

    Each builder is closed before it is submitted: the producer then sends it at once.
    An open builder waits out the producer's linger for records that will never come
    (nothing else appends to it), which added up to ``producer_linger`` to every
    event's latency.
    """
    futures: list[asyncio.Future[Any]] = []
    builder = producer.create_batch()
    for key, value in records:
        if builder.append(key=key, value=value, timestamp=None) is None:
            # Full: submit it; an empty builder always takes its first record.
            futures.append(await _submit(producer, builder, topic, partition))
            builder = producer.create_batch()
            builder.append(key=key, value=value, timestamp=None)
    futures.append(await _submit(producer, builder, topic, partition))
    return futures


async def _submit(producer: Any, builder: Any, topic: str, partition: int) -> Any:
    builder.close()
    return await producer.send_batch(builder, topic, partition=partition)
