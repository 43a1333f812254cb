"""A dedicated broker stopped and restarted in mid-stream: the worker reconnects and
resumes with no loss, and every user's state still counts each event once.

The broker is a `LocalBroker` on free ports with its state folder in the test's
tmp_path, never the shared test broker (DESIGN.md, Testing against a broker).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stream_app.kafka_io import produce
from stream_app.kafka_local import LocalBroker, external_bootstrap, port_is_free
from tests.chaos.support import (
    FAST_GROUP_ENV,
    KnownStream,
    TopicWatcher,
    changelog_states,
    check_states,
    duplicates,
    missing,
    output_counts,
    wait_for_lag_zero,
)
from tests.processes import running_process, tail
from tests.worker_harness import WORKER_ARGS, free_port, make_setup, read_outputs, wait_ready

pytestmark = pytest.mark.skipif(
    external_bootstrap() is not None,
    reason="KAFKA_BOOTSTRAP_SERVERS names an external cluster: this test stops and "
    "restarts a broker of its own, which it can only do locally",
)
DOWN_S = 12.0  # longer than the log throttle's 10 s window: its repeat count shows
"""How long the broker stays down (longer than a metadata refresh and a heartbeat)."""


@dataclass
class TmpBroker(LocalBroker):
    """A `LocalBroker` whose config, data, pid and log live in a folder of the test."""

    root: Path = Path("/nonexistent")

    @property
    def state_dir(self) -> Path:
        """The test's folder (not the shared cache)."""
        return self.root


def free_port_pair() -> int:
    """A port ``p`` with ``p`` and ``p + 1`` (the controller) free."""
    for _ in range(50):
        port = free_port()
        if port < 65535 and port_is_free(port + 1):
            return port
    raise RuntimeError("no two adjacent free ports")


@pytest.fixture
def dedicated_broker(tmp_path: Path) -> Iterator[TmpBroker]:
    broker = TmpBroker(port=free_port_pair(), heap="384m", root=tmp_path / "broker")
    broker.up()
    try:
        yield broker
    finally:
        broker.down()


@pytest.mark.slow
def test_broker_stopped_and_restarted_mid_stream_worker_resumes_without_loss(
    dedicated_broker: TmpBroker, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    broker = dedicated_broker
    bootstrap = broker.bootstrap
    stream = KnownStream(users=8, per_user=40)
    records = stream.records()
    # Three quarters before the stop (a backlog the outage interrupts), the rest after.
    first = len(records) * 3 // 4
    setup = make_setup(bootstrap, unique_name, tmp_path / "worker", partitions=2)
    env = setup.env(
        RNNREC_MAX_BATCH="16",
        RNNREC_SCORER_FACTORY="tests.worker_scorers:slow_recent_items_scorer",
        RNNREC_TEST_SCORER_DELAY_S="0.1",
        **FAST_GROUP_ENV,
    )
    with running_process(WORKER_ARGS, env, setup.log) as proc:
        wait_ready(setup, proc, timeout_s=120)
        produce(bootstrap, setup.topic("clickstream"), records[:first])
        watcher = TopicWatcher(bootstrap, setup.topic("recommendations"))
        try:
            deadline = time.monotonic() + 60
            while len(watcher.event_ids()) < first // 4:
                assert time.monotonic() < deadline, tail(setup.log)
                watcher.poll(0.1)
            answered_at_stop = len(watcher.event_ids())
        finally:
            watcher.close()
        assert answered_at_stop < first, "the stop missed the backlog: raise per_user"
        stopped = time.monotonic()
        assert broker.down(), "the dedicated broker was not running"
        time.sleep(DOWN_S)
        assert proc.poll() is None, f"worker died while the broker was down:\n{tail(setup.log)}"
        broker.up()
        restarted = time.monotonic()
        produce(bootstrap, setup.topic("clickstream"), records[first:])
        recs = read_outputs(setup, "recommendations", stream.total, proc, timeout_s=180)
        resumed = time.monotonic()
        wait_for_lag_zero(setup, proc, timeout_s=90)
        recs = read_outputs(setup, "recommendations", stream.total, proc)
        preds = read_outputs(setup, "purchase_predictions", stream.total, proc)
        states = changelog_states(setup)
        assert proc.poll() is None, tail(setup.log)

    # Each failed connection attempt (hundreds a second in all) is logged once per
    # 10 s window (stream_app/log_throttle.py), then with the count of repeats.
    attempts = [line for line in setup.log.read_text().splitlines()
                if "Unable connect to node with id" in line]  # fmt: skip
    assert attempts, "no connection error logged while the broker was down"
    assert len(attempts) <= (restarted - stopped) / 10 + 2, attempts
    assert any("more times in the last" in line for line in attempts), attempts
    rec_counts = output_counts(stream, recs)
    pred_counts = output_counts(stream, preds)
    assert not missing(stream, rec_counts), missing(stream, rec_counts)[:5]
    assert not missing(stream, pred_counts), missing(stream, pred_counts)[:5]
    check_states(stream, states)
    print(
        f"broker restart: stopped with {answered_at_stop}/{first} produced events answered, "
        f"down {restarted - stopped:.1f} s (stop + {DOWN_S:.0f} s + start), "
        f"all {stream.total} events answered {resumed - restarted:.1f} s after it answered "
        f"again; duplicated recommendations {duplicates(rec_counts)}"
    )
