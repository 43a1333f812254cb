"""The worker's output batches on the real broker: partitioning, order, overflow."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable

from aiokafka import AIOKafkaProducer

from stream_app.kafka_io import create_topics, drain
from stream_app.output_batch import OutputBatch

PARTITIONS = 3


def test_output_batches_land_where_single_sends_do_in_order_and_split_when_full(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    batched, single = unique_name("batched"), unique_name("single")
    create_topics(kafka_bootstrap, [batched, single], partitions=PARTITIONS)
    keys = [f"user-{i}".encode() for i in range(12)]
    # 5 records per key, interleaved as a micro-batch's users are; every 7th is large
    # enough that a 2 kB batch cannot hold two of them.
    records = [
        (key, b"%s-%d" % (key, n) + (b"x" * 1500 if (n * len(keys) + i) % 7 == 0 else b""))
        for n in range(5)
        for i, key in enumerate(keys)
    ]

    async def run() -> int:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_batch_size=2048)
        await producer.start()
        try:
            batch = OutputBatch()
            for key, value in records:
                batch.add(batched, key, value)
            assert len(batch) == len(records)
            futures = await batch.send(producer)
            assert len(batch) == 0  # emptied for the next micro-batch
            await asyncio.gather(*futures)
            # The reference: the producer's own per-record path and default partitioner.
            await asyncio.gather(
                *[await producer.send(single, value, key=key) for key, value in records]
            )
            return len(futures)
        finally:
            await producer.stop()

    batches = asyncio.run(run())
    assert batches > PARTITIONS  # full batches were submitted and new ones started

    def per_key(topic: str) -> dict[bytes, list[tuple[int, bytes]]]:
        got: dict[bytes, list[tuple[int, bytes]]] = defaultdict(list)
        for record in sorted(
            drain(kafka_bootstrap, topic, expected=len(records)),
            key=lambda r: (r.partition, r.offset),
        ):
            got[record.key].append((record.partition, record.value))
        return got

    by_batch, by_single = per_key(batched), per_key(single)
    # Same partition per key as single sends, every record once, in the order added.
    assert by_batch == by_single
    assert len({partition for values in by_batch.values() for partition, _ in values}) > 1
    for key in keys:
        assert [value for _, value in by_batch[key]] == [v for k, v in records if k == key]


def test_output_batches_do_not_wait_for_the_producer_linger(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    # A micro-batch's record batch is complete when it is submitted; waiting out the
    # producer's linger for more records only delays every event's outputs. With a
    # linger far longer than the wait below, an open batch would time out here.
    topic = unique_name("nolinger")
    create_topics(kafka_bootstrap, [topic], partitions=PARTITIONS)

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=60_000)
        await producer.start()
        try:
            batch = OutputBatch()
            for i in range(10):
                batch.add(topic, f"user-{i}".encode(), b"v%d" % i)
            futures = await batch.send(producer)
            await asyncio.wait_for(asyncio.gather(*futures), timeout=20)
        finally:
            await producer.stop()

    asyncio.run(run())
    assert len(drain(kafka_bootstrap, topic, expected=10)) == 10
