"""`OutputBatch` partitions keys as the producer's default partitioner does."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner

from stream_app.output_batch import key_hash


def test_key_hash_picks_the_default_partitioners_partition_for_every_count() -> None:
    rng = random.Random(3)
    keys = [rng.randbytes(rng.randrange(0, 40)) for _ in range(2_000)]
    keys += [f"user-{i}".encode() for i in range(2_000)]
    for count in (1, 2, 3, 12, 64):
        partitions = list(range(count))
        for key in keys + keys:  # the second pass is answered from the cache
            expected = DefaultPartitioner()(key, partitions, partitions)
            assert partitions[key_hash(key) % count] == expected, (key, count)
