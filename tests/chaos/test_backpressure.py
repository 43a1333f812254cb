"""Offered load above capacity: lag grows, worker memory stays bounded, then it catches up.

A slow step caps the worker's capacity at a few hundred events/s; a backlog of large
events (about 4 KiB each, mostly an unknown extra field: 64 MiB in all) is produced much faster than
that while the worker runs. Consumer lag must grow, the worker's RSS must stay far
below what holding the backlog would take, and once producing stops the group must
commit everything (lag 0) with every event answered. Figures are printed; nothing is
asserted about speed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.support import (
    KnownStream,
    duplicates,
    lag,
    output_counts,
    rss_bytes,
)
from tests.processes import running_process, tail
from tests.worker_harness import WORKER_ARGS, make_setup, read_outputs, wait_ready

PAD_BYTES = 4 * 1024
RSS_LIMIT_BYTES = 48 * 1024 * 1024
"""Allowed growth over the idle worker: generous, and below the backlog's bytes."""


@pytest.mark.slow
def test_overload_grows_lag_with_bounded_memory_then_catches_up(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    stream = KnownStream(users=200, per_user=80)
    records = stream.records(pad="x" * PAD_BYTES)
    backlog_bytes = sum(len(v) for _, v in records)
    assert backlog_bytes > RSS_LIMIT_BYTES, "backlog too small to tell bounded from not"
    setup = make_setup(kafka_bootstrap, unique_name, tmp_path, partitions=2)
    env = setup.env(
        RNNREC_MAX_BATCH="128",
        RNNREC_SCORER_FACTORY="tests.worker_scorers:slow_recent_items_scorer",
        RNNREC_TEST_SCORER_DELAY_S="0.2",
    )
    samples: list[tuple[float, int, int]] = []  # (seconds, lag, rss)
    request.addfinalizer(lambda: delete_topics_with_prefix(kafka_bootstrap, setup.prefix))
    with running_process(WORKER_ARGS, env, setup.log) as proc:
        wait_ready(setup, proc)
        idle_rss = rss_bytes(proc.pid)
        started = time.monotonic()
        done = threading.Event()

        failed: list[BaseException] = []

        def load() -> None:
            try:
                fast_produce(kafka_bootstrap, setup.topic("clickstream"), records)
            except BaseException as exc:  # reported by the test thread
                failed.append(exc)
            done.set()

        producer = threading.Thread(target=load, daemon=True)
        producer.start()
        load_stopped = None
        deadline = started + 300
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"worker died:\n{tail(setup.log)}"
            assert not failed, f"producing failed: {failed[0]!r}"
            current = lag(setup)
            samples.append((time.monotonic() - started, current, rss_bytes(proc.pid)))
            if done.is_set() and load_stopped is None:
                load_stopped = samples[-1][0]
            if load_stopped is not None and current == 0:
                break
            time.sleep(0.5)
        recs = read_outputs(setup, "recommendations", stream.total, proc, timeout_s=60)
        assert proc.poll() is None, tail(setup.log)

    peak_lag = max(s[1] for s in samples)
    peak_rss = max(s[2] for s in samples)
    caught_up = samples[-1][0]
    print(
        f"backpressure: {stream.total} events, {backlog_bytes / 2**20:.1f} MiB offered in "
        f"{load_stopped:.1f} s; peak lag {peak_lag}; RSS idle {idle_rss / 2**20:.0f} MiB, peak "
        f"{peak_rss / 2**20:.0f} MiB (+{(peak_rss - idle_rss) / 2**20:.0f}); lag 0 after "
        f"{caught_up:.1f} s; {len(samples)} samples"
    )
    assert load_stopped is not None, "the load never finished"
    assert samples[-1][1] == 0, f"never caught up: lag {samples[-1][1]}"
    assert peak_lag >= stream.total // 3, f"offered load never exceeded capacity: {peak_lag}"
    assert peak_rss - idle_rss < RSS_LIMIT_BYTES, "memory grew with the backlog"
    counts = output_counts(stream, recs)
    assert duplicates(counts) == 0


def fast_produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Produce as fast as the client goes: large batches, acks from the leader."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks=1, linger_ms=20, batch_size=1024 * 1024,
        max_request_size=4 * 1024 * 1024,
        max_in_flight_requests_per_connection=1,
    )  # fmt: skip
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value)
        producer.flush()
    finally:
        producer.close()


def delete_topics_with_prefix(bootstrap: str, prefix: str) -> None:
    """Delete this test's topics (64 MiB of input must not stay on the shared broker)."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="rnnrec-test-cleanup")
    try:
        names = [t for t in admin.list_topics() if t.startswith(prefix)]
        if names:
            admin.delete_topics(names)
    finally:
        admin.close()
