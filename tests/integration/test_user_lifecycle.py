"""A user's state leaves the worker: on request (``rnnrec user delete``) and after the TTL.

Real broker, real worker process, the test scorer (tests/worker_scorers.py): its
``p_purchase`` is the number of steps in the carry / 10, so a user that starts
afresh is recognisable by ``p_purchase == 0.1``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from stream_app.kafka_io import Record, drain, produce
from tests.processes import tail
from tests.worker_harness import (
    WorkerSetup,
    click,
    get_json,
    make_setup,
    metric,
    read_outputs,
    running_worker,
)

T0 = 1_600_000_000.0


def wait_for(check: Callable[[], bool], what: str, setup: WorkerSetup, timeout_s: float = 30):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}:\n{tail(setup.log)}")


def last_changelog_records(setup: WorkerSetup) -> dict[str, Record]:
    """Each user's last record on the table's changelog (value None: a tombstone)."""
    topic = f"{setup.app_id}-user-state-changelog"
    records = drain(setup.bootstrap, topic, idle_s=1.5, timeout_s=30)
    out = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        out[orjson.loads(record.key or b'""')] = record  # Faust writes str keys as JSON
    return out


def input_partition(setup: WorkerSetup, user: str) -> int:
    partitions = {r.partition for r in drain(setup.bootstrap, setup.topic("clickstream"))
                  if r.key == user.encode()}  # fmt: skip
    assert len(partitions) == 1
    return partitions.pop()


def user_status(setup: WorkerSetup, user: str) -> int:
    return get_json(setup.url(f"/users/{user}/recommendations"))[0]


def outputs_of(records: list[Record], event_id: str) -> dict:
    return next(
        orjson.loads(r.value) for r in records if orjson.loads(r.value)["event_id"] == event_id
    )


def test_user_delete_removes_the_state_everywhere_and_the_next_event_starts_fresh(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    setup = make_setup(kafka_bootstrap, unique_name, tmp_path)
    first = [click(u, f"{u}-{i}", str(10 * n + i), T0 + i, session_id="s")
             for i in range(3) for n, u in enumerate(("gone", "kept"))]  # fmt: skip
    with running_worker(setup) as proc:
        produce(kafka_bootstrap, setup.topic("clickstream"), first)
        read_outputs(setup, "recommendations", 6, proc)
        assert user_status(setup, "gone") == 200

        command = [sys.executable, "-m", "stream_app.cli", "user", "delete", "gone"]
        done = subprocess.run(command, env={**os.environ, **setup.env()}, capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        wait_for(lambda: user_status(setup, "gone") == 404, "the deletion", setup)
        assert user_status(setup, "kept") == 200
        assert metric(setup, "rnnrec_users_in_state") == 1

    # The changelog holds a tombstone, in the partition of the user's events.
    changelog = last_changelog_records(setup)
    assert changelog["gone"].value is None
    assert changelog["gone"].partition == input_partition(setup, "gone")
    assert changelog["kept"].value is not None

    # A new process restores the table from the changelog only: the user stays gone.
    setup.data_dir = tmp_path / "fresh-data-dir"
    with running_worker(setup) as proc:
        assert user_status(setup, "gone") == 404 and user_status(setup, "kept") == 200
        later = [click(u, f"{u}-later", "99", T0 + 10, session_id="s") for u in ("gone", "kept")]
        produce(kafka_bootstrap, setup.topic("clickstream"), later)
        recs = read_outputs(setup, "recommendations", 8, proc)
        preds = read_outputs(setup, "purchase_predictions", 8, proc)
    assert outputs_of(recs, "gone-later")["items"] == ["99"]  # nothing from before
    assert abs(outputs_of(preds, "gone-later")["p_purchase"] - 0.1) < 1e-6  # the first step
    assert outputs_of(recs, "kept-later")["items"] == ["99", "12", "11", "10"]
    assert abs(outputs_of(preds, "kept-later")["p_purchase"] - 0.4) < 1e-6


def test_idle_users_are_swept_after_the_ttl_in_event_time(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    setup = make_setup(
        kafka_bootstrap, unique_name, tmp_path,
        RNNREC_USER_TTL_S="100", RNNREC_USER_TTL_SWEEP_S="0.3",
    )  # fmt: skip
    early = [
        click("old", "old-0", "1", T0, session_id="s"),
        click("old", "old-1", "2", T0 + 10, session_id="s"),
        click("mid", "mid-0", "3", T0 + 60, session_id="s"),
    ]
    with running_worker(setup) as proc:
        produce(kafka_bootstrap, setup.topic("clickstream"), early)
        read_outputs(setup, "recommendations", 3, proc)
        # Event time has reached T0 + 60 only: nobody is idle for 100 s yet, however
        # long the wall clock runs (several sweeps pass here).
        wait_for(lambda: metric(setup, "rnnrec_ttl_sweep_users_examined_total") >= 4,
                 "a few sweeps", setup)  # fmt: skip
        assert metric(setup, "rnnrec_users_expired_total") == 0
        assert user_status(setup, "old") == 200

        # An event at T0 + 150: "old" (last seen T0 + 10) is now idle for 140 s.
        produce(kafka_bootstrap, setup.topic("clickstream"), [click("new", "new-0", "4", T0 + 150)])
        read_outputs(setup, "recommendations", 4, proc)
        wait_for(lambda: metric(setup, "rnnrec_users_expired_total") == 1, "the sweep", setup)
        assert user_status(setup, "old") == 404
        assert user_status(setup, "mid") == 200 and user_status(setup, "new") == 200
        assert metric(setup, "rnnrec_users_in_state") == 2

    changelog = last_changelog_records(setup)
    assert changelog["old"].value is None
    assert changelog["old"].partition == input_partition(setup, "old")
    assert changelog["mid"].value is not None and changelog["new"].value is not None
