"""Clickstream written by a transactional producer (Kafka Connect, Flink, Streams with
exactly-once upstream) on the real broker.

Every committed transaction leaves a commit marker: an offset that holds no record
for consumers. The worker's offset guard must step over those at once, mid-stream and
at the partition's end, and must not mistake them for records Faust failed to deliver
(which it would seek back for, stalling the partition on every transaction).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
from kafka import KafkaProducer

from tests.processes import tail
from tests.worker_harness import (
    WorkerSetup,
    click,
    make_setup,
    read_all,
    read_outputs,
    running_worker,
    scrape,
    value,
)

T0 = 1_600_000_000.0
TRANSACTIONS = 6
PER_TRANSACTION = 4


def metrics(setup: WorkerSetup) -> dict:
    return scrape(setup)


def sample(values: dict, name: str, **labels: str) -> float:
    return value(values, name, **labels)


def test_commit_markers_are_stepped_over_without_refetching(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    # One partition: every marker lands where the guard watches it.
    setup = make_setup(kafka_bootstrap, unique_name, tmp_path, partitions=1)
    with running_worker(setup) as proc:
        producer = KafkaProducer(
            bootstrap_servers=kafka_bootstrap, transactional_id=unique_name("tx")
        )
        producer.init_transactions()
        sent = []
        for t in range(TRANSACTIONS):
            producer.begin_transaction()
            for i in range(PER_TRANSACTION):
                n = t * PER_TRANSACTION + i
                key, value = click(f"u{n % 3}", f"e{n}", str(n % 7), T0 + n)
                producer.send(setup.topic("clickstream"), key=key, value=value)
                sent.append(f"e{n}")
            producer.commit_transaction()
        producer.close()

        outputs = read_outputs(setup, "recommendations", len(sent), proc)
        counts = Counter(orjson.loads(r.value)["event_id"] for r in outputs)
        assert counts == Counter(sent), "every event answered exactly once"

        # The last marker sits at the partition's end: stepped over after the stall time.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            values = metrics(setup)
            if sample(values, "rnnrec_offset_gaps_total") >= TRANSACTIONS:
                break
            time.sleep(0.5)
        assert sample(values, "rnnrec_offset_gaps_total") == TRANSACTIONS, tail(setup.log)
        assert sample(values, "rnnrec_offset_probes_total", result="absent") >= 1
        assert sample(values, "rnnrec_offset_probes_total", result="missing") == 0
        # No marker was taken for a lost record: nothing was fetched again.
        assert sample(values, "rnnrec_refetches_total") == 0, tail(setup.log)
        assert "were not delivered" not in setup.log.read_text()
    # The worker has stopped: nothing can arrive later than this read.
    everything = read_all(setup, "recommendations")
    assert Counter(orjson.loads(r.value)["event_id"] for r in everything) == Counter(sent)
