"""The repeat throttle on the Kafka client libraries' loggers."""

from __future__ import annotations

import logging

import pytest

from stream_app.log_throttle import RepeatThrottle, throttle_library_logs


def record(msg: str, *args: object, name: str = "aiokafka.client") -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_repeats_within_the_window_are_dropped_and_counted_on_the_next_line() -> None:
    now = [0.0]
    throttle = RepeatThrottle(window_s=10.0, clock=lambda: now[0])
    template = "Unable connect to node with id %s: %s"
    assert throttle.filter(record(template, 1, "refused"))
    kept = []
    for i in range(80):
        now[0] += 0.1
        kept.append(throttle.filter(record(template, i, "refused")))
    assert not any(kept)
    # Another template, or another logger, is not held back by the first one.
    assert throttle.filter(record("Failed fetch messages from %s: %s", 1, "x"))
    assert throttle.filter(record(template, 1, "refused", name="aiokafka.consumer.fetcher"))
    now[0] = 10.5
    line = record(template, 7, "refused")
    assert throttle.filter(line)
    assert line.getMessage() == (
        "Unable connect to node with id 7: refused [repeated 80 more times in the last 10 s]"
    )
    # Messages formatted before logging count as one template whatever their numbers.
    assert throttle.filter(record("producer buffer full size 120"))
    assert not throttle.filter(record("producer buffer full size 135"))
    now[0] = 30.0
    quiet = record(template, 7, "refused")
    assert throttle.filter(quiet)
    assert "repeated" not in quiet.getMessage()


def test_only_the_libraries_loggers_are_throttled(caplog: pytest.LogCaptureFixture) -> None:
    library = logging.getLogger("aiokafka.test_throttle_module")
    ours = logging.getLogger("stream_app.test_throttle_module")
    throttle = throttle_library_logs(window_s=60.0)
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(5):
                library.warning("broker down")
                ours.warning("ours")
        texts = [r.getMessage() for r in caplog.records]
        assert texts.count("broker down") == 1
        assert texts.count("ours") == 5
    finally:
        for logger in logging.root.manager.loggerDict.values():
            if isinstance(logger, logging.Logger):
                logger.removeFilter(throttle)
        logging.getLogger("aiokafka").removeFilter(throttle)
