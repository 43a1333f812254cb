"""`rnnrec replay` and `rnnrec tail` against the real broker: results checked, odd records shown."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kafka.errors import KafkaError

from rnnrec_jax.data.synthetic import generate_sessions
from stream_app.kafka_io import drain
from stream_app.tools_replay import replay
from stream_app.tools_tail import format_record


def test_replay_counts_what_the_broker_acknowledged(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    events, _ = generate_sessions(40, 30, seed=3)
    topic = topic_factory("replay-ok")
    sent = replay(events, kafka_bootstrap, topic, progress=False)
    assert sent == events.n_events
    assert len(drain(kafka_bootstrap, topic, expected=sent, timeout_s=20)) == sent


def test_replay_fails_when_the_broker_refuses_the_records(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    # Before, flush() swallowed the refusals: "replayed N events", exit 0, nothing there.
    events, _ = generate_sessions(20, 30, seed=3)
    topic = topic_factory("replay-refused", configs={"max.message.bytes": "64"})
    # kafka-python's flush only says "Future not done"; the send's own error says why.
    with pytest.raises(KafkaError, match="MessageSizeTooLarge"):
        replay(events, kafka_bootstrap, topic, progress=False)


class Record:
    topic, partition, offset, key = "t", 0, 5, b"u1"

    def __init__(self, value: bytes | None, headers: list) -> None:
        self.value, self.headers = value, headers


def test_tail_shows_null_headers_and_exact_big_integers() -> None:
    text = format_record(Record(b'{"n": 12345678901234567890123}', [("x", None), ("y", b"v")]))
    assert "x: (null)" in text and "y: v" in text
    assert "12345678901234567890123" in text
    assert "(not JSON, 3 bytes)" in format_record(Record(b"\xff\xfe{", []))
