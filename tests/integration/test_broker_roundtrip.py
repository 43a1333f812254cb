"""The stack works against the real broker: kafka-python, aiokafka, and Faust."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka.partitioner.default import murmur2

from stream_app.kafka_io import create_topics, drain, produce
from tests.processes import running_process, tail


def test_kafka_python_round_trip(kafka_bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory("kp", partitions=3)
    sent = [(f"user-{i % 5}".encode(), orjson.dumps({"n": i})) for i in range(50)]
    assert produce(kafka_bootstrap, topic, sent) == 50
    got = drain(kafka_bootstrap, topic, expected=50, timeout_s=30)
    assert sorted(orjson.loads(r.value)["n"] for r in got) == list(range(50))
    # Same key, same partition, order kept within it.
    by_key: dict[bytes, list[int]] = {}
    for r in sorted(got, key=lambda r: (r.partition, r.offset)):
        by_key.setdefault(r.key, []).append(orjson.loads(r.value)["n"])
        assert len({x.partition for x in got if x.key == r.key}) == 1
    for values in by_key.values():
        assert values == sorted(values)


def test_aiokafka_round_trip(
    kafka_bootstrap: str, topic_factory: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    topic = topic_factory("aio", partitions=2)
    group = unique_name("group")

    async def scenario() -> list[int]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for i in range(20):
                await producer.send_and_wait(topic, orjson.dumps({"n": i}), key=b"k%d" % (i % 4))
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=kafka_bootstrap, group_id=group,
            auto_offset_reset="earliest", enable_auto_commit=False,
        )  # fmt: skip
        await consumer.start()
        seen: list[int] = []
        try:
            deadline = time.monotonic() + 30
            while len(seen) < 20 and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    seen.extend(orjson.loads(r.value)["n"] for r in records)
            await consumer.commit()
        finally:
            await consumer.stop()
        return seen

    assert sorted(asyncio.run(scenario())) == list(range(20))


def _wait_for_ready(log: Path, starts: int, proc) -> None:
    """Wait for the ``starts``-th "Worker: Ready" line in the (shared) log.

    Records already in the topic when Faust 0.15.3 seeks to the committed offsets can
    be dropped by its start-up race (a fetch in flight runs the read offset ahead).
    The serving worker guards against that (`ClickstreamServer._contiguous`, tested in
    test_worker_recovery and test_sigterm); this minimal app does not, and this test is
    about the changelog, so it produces only once the worker is ready.
    """
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"worker exited early:\n{tail(log)}"
        if log.exists() and log.read_text(errors="replace").count("[^Worker]: Ready") >= starts:
            return
        time.sleep(0.1)
    raise AssertionError(f"worker not ready in 90 s:\n{tail(log)}")


def _wait_for_outputs(bootstrap: str, topic: str, n: int, proc, log: Path) -> list[dict]:
    deadline = time.monotonic() + 90
    records: list = []
    while len(records) < n and time.monotonic() < deadline:
        assert proc.poll() is None, f"worker exited early:\n{tail(log)}"
        records = drain(bootstrap, topic, expected=n, timeout_s=3)
    assert len(records) == n, f"got {len(records)} of {n} outputs:\n{tail(log)}"
    return [orjson.loads(r.value) for r in records]


def _wait_for_committed(bootstrap: str, group: str, topic: str, total: int) -> None:
    from kafka import KafkaConsumer, TopicPartition

    # A consumer that never subscribes only reads the group's committed offsets.
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        parts = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])
        ]
        deadline = time.monotonic() + 30
        committed = 0
        while time.monotonic() < deadline:
            committed = sum(consumer.committed(tp) or 0 for tp in parts)
            if committed >= total:
                return
            time.sleep(0.2)
        raise AssertionError(f"only {committed} of {total} offsets committed")
    finally:
        consumer.close()


def test_faust_worker_counts_and_recovers_table_from_changelog(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    prefix = unique_name("faust")
    env = {
        "RNNREC_ROUNDTRIP_PREFIX": prefix,
        "RNNREC_ROUNDTRIP_PARTITIONS": "2",
        "RNNREC_DATA_DIR": str(tmp_path / "faust-data"),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
    }
    args = ["-m", "stream_app.roundtrip", "worker", "-l", "info"]
    log = tmp_path / "worker.log"
    # Users on both partitions (kafka-python's murmur2: u0 on 0, u5 on 1), so both
    # changelog partitions have to come back.
    users = ["u0", "u5", "u1"]
    partitions = {(murmur2(u.encode()) & 0x7FFFFFFF) % 2 for u in users}
    assert partitions == {0, 1}
    first = [(users[i % 3].encode(), orjson.dumps({"i": i})) for i in range(9)]
    # Created up front with the app's partition count: the table's changelog must match.
    create_topics(kafka_bootstrap, [f"{prefix}-in", f"{prefix}-out"], partitions=2)

    with running_process(args, env, log) as proc:
        _wait_for_ready(log, 1, proc)
        produce(kafka_bootstrap, f"{prefix}-in", first)
        outs = _wait_for_outputs(kafka_bootstrap, f"{prefix}-out", 9, proc, log)
        # This test is about the changelog, not about stopping mid-commit: let the
        # commit timer record all 9 offsets before the worker is stopped.
        _wait_for_committed(kafka_bootstrap, f"{prefix}-app", f"{prefix}-in", 9)
    assert proc.returncode == 0, tail(log)
    assert sorted((o["key"], o["count"]) for o in outs) == sorted(
        (u, c) for u in users for c in (1, 2, 3)
    )

    # A new process with an empty local data dir must get the counts back from
    # the changelog topic, so counting continues at 4 rather than restarting at 1.
    env["RNNREC_DATA_DIR"] = str(tmp_path / "faust-data-2")
    second = [(u.encode(), orjson.dumps({"i": 100 + k})) for k, u in enumerate(users)]
    with running_process(args, env, log) as proc:
        _wait_for_ready(log, 2, proc)
        produce(kafka_bootstrap, f"{prefix}-in", second)
        outs = _wait_for_outputs(kafka_bootstrap, f"{prefix}-out", 12, proc, log)
    # Whatever order the two partitions' outputs come back in: each user's count goes
    # on at 4.
    counts = sorted((o["key"], o["count"]) for o in outs)
    assert counts == sorted((u, c) for u in users for c in (1, 2, 3, 4)), tail(log)


@pytest.mark.parametrize("n_events", [5])
def test_demo_roundtrip_runs_to_the_end(kafka_bootstrap: str, n_events: int, monkeypatch) -> None:
    from stream_app.demo_roundtrip import run_roundtrip_demo

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    outputs = run_roundtrip_demo(n_events=n_events)
    assert [o["count"] for o in outputs if o["key"] == "user-0"] == [1, 2]
    assert len(outputs) == n_events
