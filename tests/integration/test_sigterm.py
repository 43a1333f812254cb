"""SIGTERM (what Kubernetes sends on a rollout) stops the worker cleanly mid-stream.

A graceful stop must finish the batch in hand, flush its outputs and the changelog,
and commit the acked offsets, so that a restart continues exactly where the stop
left off: every input event then has exactly one recommendation, none lost and none
repeated (repeats are only allowed after a crash, not after a graceful stop).
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
from kafka import KafkaConsumer, TopicPartition

from stream_app.kafka_io import drain, produce
from tests.processes import running_process, tail
from tests.worker_harness import WORKER_ARGS, click, make_setup, read_outputs, wait_ready

T0 = 1_600_000_000.0
USERS = 12
PER_USER = 30
RATE_PER_S = 90.0
GRACE_S = 30.0


def steady_stream(bootstrap: str, topic: str, stop: threading.Event) -> None:
    """Produce USERS x PER_USER events at about RATE_PER_S, in small acknowledged chunks."""
    events = [
        click(f"u{u}", f"u{u}-{step}", str(u * 1000 + step), T0 + step, session_id=f"s{u}")
        for step in range(PER_USER)
        for u in range(USERS)
    ]
    chunk = 9
    for start in range(0, len(events), chunk):
        if stop.is_set():
            return
        produce(bootstrap, topic, events[start : start + chunk])
        time.sleep(chunk / RATE_PER_S)


def committed_total(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    """Sum of the group's committed offsets on ``topic`` (events it will not see again)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        offsets = [consumer.committed(TopicPartition(topic, p)) for p in range(partitions)]
    finally:
        consumer.close()
    return sum(o or 0 for o in offsets)


def test_sigterm_mid_stream_exits_zero_then_restart_gives_each_event_exactly_one_output(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    setup = make_setup(kafka_bootstrap, unique_name, tmp_path, partitions=2)
    total = USERS * PER_USER
    rec_topic = setup.topic("recommendations")
    # Small batches and a long commit interval: the stop must commit by itself,
    # the timer alone would leave the last seconds uncommitted. A slow step keeps
    # a batch in the executor most of the time, so SIGTERM lands mid-batch.
    env = setup.env(
        RNNREC_MAX_BATCH="16",
        RNNREC_COMMIT_INTERVAL_S="30",
        RNNREC_SCORER_FACTORY="tests.worker_scorers:slow_recent_items_scorer",
        RNNREC_TEST_SCORER_DELAY_S="0.15",
    )
    stop_producing = threading.Event()
    producer = threading.Thread(
        target=steady_stream,
        args=(kafka_bootstrap, setup.topic("clickstream"), stop_producing),
        daemon=True,
    )
    try:
        with running_process(WORKER_ARGS, env, setup.log, stop_timeout_s=GRACE_S) as proc:
            wait_ready(setup, proc)
            producer.start()
            # Mid-stream: some outputs are out, the producer is still going.
            deadline = time.monotonic() + 60
            seen = 0
            while seen < total // 5 and time.monotonic() < deadline:
                seen = len(drain(kafka_bootstrap, rec_topic, expected=total // 5, timeout_s=2))
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=GRACE_S)  # raises if it did not stop within the grace period
        assert proc.returncode == 0, f"exit {proc.returncode}:\n{tail(setup.log)}"
        # Everything committed has its output, and nothing has an output that is not
        # committed (that one would be processed again after the restart).
        after_stop = drain(kafka_bootstrap, rec_topic, idle_s=1.0)
        committed = committed_total(
            kafka_bootstrap, setup.app_id, setup.topic("clickstream"), setup.partitions
        )
        assert 0 < committed < total, "SIGTERM did not land mid-stream: raise PER_USER"
        assert len(after_stop) == committed, tail(setup.log)
        producer.join(timeout=60)

        with running_process(WORKER_ARGS, env, setup.log, stop_timeout_s=GRACE_S) as proc:
            wait_ready(setup, proc)
            records = read_outputs(setup, "recommendations", total, proc, timeout_s=90)
            time.sleep(1.0)  # a duplicate would arrive right behind the last output
            records = drain(kafka_bootstrap, rec_topic, idle_s=1.0)
    finally:
        stop_producing.set()

    counts = Counter(orjson.loads(r.value)["event_id"] for r in records)
    expected = {f"u{u}-{step}" for u in range(USERS) for step in range(PER_USER)}
    assert set(counts) == expected, f"missing {sorted(expected - set(counts))[:5]}"
    duplicated = {k: n for k, n in counts.items() if n > 1}
    assert not duplicated, f"{len(duplicated)} events with several outputs: {list(duplicated)[:5]}"
    # Each user's state carried over the stop: its last output lists its recent items.
    last = {orjson.loads(r.value)["event_id"]: orjson.loads(r.value) for r in records}
    assert last[f"u0-{PER_USER - 1}"]["items"][:2] == [str(PER_USER - 1), str(PER_USER - 2)]
