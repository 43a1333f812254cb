"""kill -9 of the worker in the middle of a batch, three times, then a clean finish.

Checked record by record against the known stream (`tests.chaos.support`): every
input event has its recommendation and purchase prediction, with exactly the values
a single pass would give (a state stepped twice or lost changes them), every user's
stored state counts each of its events once, and an output is repeated only for an
event that was in flight at a kill: delivered again because its offset was not yet
committed when the process died. The repeats are counted and printed.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from stream_app.kafka_io import produce
from tests.chaos.support import (
    FAST_GROUP_ENV,
    KnownStream,
    TopicWatcher,
    changelog_states,
    check_states,
    committed_offsets,
    duplicates,
    missing,
    output_counts,
    positions,
    wait_for_lag_zero,
)
from tests.processes import running_process, tail
from tests.worker_harness import WORKER_ARGS, make_setup, read_outputs, wait_ready

KILL_AT = (0.2, 0.45, 0.7)
"""Kill when this fraction of the events has outputs."""


@pytest.mark.slow
def test_kill_9_mid_batch_three_times_loses_nothing_and_steps_each_event_once(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    stream = KnownStream(users=12, per_user=50)
    setup = make_setup(kafka_bootstrap, unique_name, tmp_path, partitions=2)
    clickstream = setup.topic("clickstream")
    # A slow step keeps a batch in the executor most of the time (the kill lands
    # mid-batch), and a 1 s commit interval leaves a real in-flight window.
    env = setup.env(
        RNNREC_MAX_BATCH="16",
        RNNREC_COMMIT_INTERVAL_S="1.0",
        RNNREC_SCORER_FACTORY="tests.worker_scorers:slow_recent_items_scorer",
        RNNREC_TEST_SCORER_DELAY_S="0.1",
        **FAST_GROUP_ENV,
    )
    produce(kafka_bootstrap, clickstream, stream.records())
    where = positions(kafka_bootstrap, clickstream, stream.total)
    rng = random.Random(7)
    in_flight: list[set[str]] = []
    watcher: TopicWatcher | None = None
    try:
        for fraction in KILL_AT:
            with running_process(WORKER_ARGS, env, setup.log, stop_signal=signal.SIGKILL) as proc:
                wait_ready(setup, proc, timeout_s=120)
                watcher = watcher or TopicWatcher(kafka_bootstrap, setup.topic("recommendations"))
                deadline = time.monotonic() + 90
                while len(watcher.event_ids()) < fraction * stream.total:
                    assert proc.poll() is None, f"worker died:\n{tail(setup.log)}"
                    assert time.monotonic() < deadline, f"no progress:\n{tail(setup.log)}"
                    watcher.poll(0.1)
                time.sleep(rng.uniform(0.0, 0.3))  # anywhere inside a batch
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
            committed = committed_offsets(
                kafka_bootstrap, setup.app_id, clickstream, setup.partitions
            )
            assert 0 < sum(committed.values()) < stream.total, "the kill missed the stream"
            # Outputs already out for events the group will deliver again.
            out_now = watcher.settle()
            in_flight.append(
                {eid for eid in watcher.event_ids() if where[eid][1] >= committed[where[eid][0]]}
            )
            print(
                f"kill at {fraction:.0%}: {len(out_now)} outputs, committed "
                f"{sum(committed.values())}/{stream.total}, in flight {len(in_flight[-1])}"
            )

        with running_process(WORKER_ARGS, env, setup.log) as proc:
            wait_ready(setup, proc, timeout_s=120)
            recs = read_outputs(setup, "recommendations", stream.total, proc, timeout_s=120)
            wait_for_lag_zero(setup, proc)
            recs = watcher.settle() if watcher else recs
            preds = read_outputs(setup, "purchase_predictions", stream.total, proc)
            states = changelog_states(setup)
        assert proc.returncode == 0, tail(setup.log)
    finally:
        if watcher is not None:
            watcher.close()

    rec_counts = output_counts(stream, recs)
    pred_counts = output_counts(stream, preds)
    assert not missing(stream, rec_counts), f"no recommendation: {missing(stream, rec_counts)[:5]}"
    assert not missing(stream, pred_counts), f"no prediction: {missing(stream, pred_counts)[:5]}"
    check_states(stream, states)
    # A repeat only for an event in flight at a kill, at most once per such kill.
    for counts in (rec_counts, pred_counts):
        for eid, n in counts.items():
            allowed = 1 + sum(eid in window for window in in_flight)
            assert n <= allowed, f"{eid}: {n} outputs, in flight at {allowed - 1} kills"
    assert any(in_flight), "no kill found work in flight: the test proved nothing"
    print(
        f"kill -9 x{len(KILL_AT)}: {stream.total} events, in flight at the kills "
        f"{[len(w) for w in in_flight]}, duplicated recommendations {duplicates(rec_counts)}, "
        f"predictions {duplicates(pred_counts)}"
    )
