"""Print the records of a topic as they arrive (``rnnrec tail``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from kafka import KafkaConsumer, TopicPartition


def format_record(record: object) -> str:
    """One record as readable text: position, key, headers and pretty JSON value."""
    key = getattr(record, "key", None)
    value = getattr(record, "value", None)
    headers = getattr(record, "headers", None) or ()
    where = f"{record.topic}[{record.partition}]@{record.offset}"  # type: ignore[attr-defined]
    lines = [f"{where} key={key.decode('utf-8', 'replace') if key else None!r}"]
    for name, raw in headers:
        lines.append(f"  {name}: {'(null)' if raw is None else raw.decode('utf-8', 'replace')}")
    if value is None:
        lines.append("  (tombstone)")
    else:
        try:
            # The standard library keeps integers of any size exact (orjson: 64 bits).
            lines.append(json.dumps(json.loads(value), indent=2, ensure_ascii=False))
        except (ValueError, RecursionError):
            lines.append(f"  (not JSON, {len(value)} bytes) {value[:200]!r}")
    return "\n".join(lines)


def tail_topic(
    bootstrap: str,
    topic: str,
    emit: Callable[[str], None],
    from_beginning: bool = False,
    count: int | None = None,
    idle_timeout_s: float | None = None,
    security: Mapping[str, Any] | None = None,
) -> int:
    """Print a topic's records (no consumer group: nothing is committed).

    Args:
        bootstrap: Kafka bootstrap servers.
        topic: the topic to read.
        emit: called with each formatted record.
        from_beginning: start at the earliest offsets instead of the end.
        count: stop after this many records.
        idle_timeout_s: stop after this long without a record (None: never).
        security: kafka-python security options (`kafka_python_kwargs`; None: PLAINTEXT).

    Returns:
        The number of records printed.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        **dict(security or {}),
    )
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ValueError(f"topic {topic!r} does not exist")
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        if from_beginning:
            consumer.seek_to_beginning()
        else:
            consumer.seek_to_end()
        printed = 0
        last = time.monotonic()
        while count is None or printed < count:
            batch = consumer.poll(timeout_ms=300)
            for records in batch.values():
                for record in records:
                    emit(format_record(record))
                    printed += 1
                    last = time.monotonic()
                    if count is not None and printed >= count:
                        return printed
            if idle_timeout_s is not None and time.monotonic() - last > idle_timeout_s:
                break
        return printed
    finally:
        consumer.close()
