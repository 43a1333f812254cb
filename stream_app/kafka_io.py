"""Small kafka-python helpers shared by the tools, the demo and the tests."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError


@dataclass(frozen=True)
class Record:
    """One consumed record, with the broker's timestamp (ms)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...] = ()


def create_topics(
    bootstrap: str,
    names: Sequence[str],
    partitions: int = 1,
    configs: dict[str, str] | None = None,
    security: Mapping[str, Any] | None = None,
    replication_factor: int = 1,
) -> None:
    """Create topics (existing ones are left as they are).

    ``security`` is `stream_app.kafka_security.kafka_python_kwargs` output (None: PLAINTEXT),
    here and in the other helpers.
    """
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="rnnrec-admin", **dict(security or {})
    )
    try:
        new = [
            NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=replication_factor,
                topic_configs=configs or {},
            )
            for name in names
        ]
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics(new)
    finally:
        admin.close()


def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes]],
    headers: list[tuple[str, bytes]] | None = None,
    security: Mapping[str, Any] | None = None,
) -> int:
    """Send ``(key, value)`` pairs and wait for every acknowledgement.

    Returns:
        The number of records acknowledged.
    """
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, **dict(security or {})
    )
    try:
        futures = [producer.send(topic, key=k, value=v, headers=headers) for k, v in records]
        producer.flush()
        for fut in futures:
            fut.get(timeout=30)
        return len(futures)
    finally:
        producer.close()


def drain(
    bootstrap: str,
    topic: str,
    expected: int | None = None,
    timeout_s: float = 30.0,
    idle_s: float = 2.0,
    security: Mapping[str, Any] | None = None,
) -> list[Record]:
    """Read a topic from the beginning (no consumer group, nothing committed).

    Stops when ``expected`` records were read, when ``timeout_s`` passed, or (when
    ``expected`` is None) after ``idle_s`` without a new record.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=int(idle_s * 1000) if expected is None else 500,
        **dict(security or {}),
    )
    try:
        from kafka import TopicPartition

        deadline = time.monotonic() + timeout_s
        parts: set[int] | None = None
        # kafka-python answers None or an empty set while it has no metadata yet.
        while not parts and time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                time.sleep(0.2)
        if not parts:
            return []
        consumer.assign([TopicPartition(topic, p) for p in sorted(parts)])
        consumer.seek_to_beginning()
        out: list[Record] = []
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=300)
            for tp_records in batch.values():
                for r in tp_records:
                    out.append(
                        Record(
                            r.topic,
                            r.partition,
                            r.offset,
                            r.key,
                            r.value,
                            r.timestamp,
                            tuple((h[0], h[1]) for h in (r.headers or ())),
                        )
                    )
            if batch:
                last_new = time.monotonic()
            if expected is not None and len(out) >= expected:
                break
            if expected is None and time.monotonic() - last_new > idle_s:
                break
        return out
    finally:
        consumer.close()
