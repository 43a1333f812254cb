"""State survives restarts (changelog), redeliveries never step twice, /ready tracks recovery."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson

from stream_app.kafka_io import create_topics, produce
from stream_app.state import LastResult, UserState, encode_state
from tests.chaos.support import commit_offsets
from tests.processes import running_process, tail
from tests.worker_harness import (
    WORKER_ARGS,
    click,
    get_json,
    make_setup,
    read_outputs,
    running_worker,
    wait_ready,
)

T0 = 1_600_000_000.0


def session_events(n_users: int, per_user: int, new_session_at: int) -> list[tuple[bytes, bytes]]:
    """Interleaved events; every user changes session at step ``new_session_at``."""
    events = []
    for step in range(per_user):
        for u in range(n_users):
            session = f"s{u}-{int(step >= new_session_at)}"
            events.append(
                click(f"u{u}", f"u{u}-{step}", str(u * 100 + step), T0 + step, session_id=session)
            )
    return events


def outputs_without_time(records: list) -> dict[str, dict]:
    out = {}
    for record in records:
        document = orjson.loads(record.value)
        document.pop("produced_ts")
        out[document["event_id"]] = document
    return out


def test_restart_continues_each_users_state_from_the_changelog(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    # The restart falls inside each user's first session (steps 0-4 before it, 5-6
    # after): the events after it are served right only with the state from before.
    events = session_events(n_users=4, per_user=10, new_session_at=7)
    half = len(events) // 2

    straight = make_setup(kafka_bootstrap, unique_name, tmp_path / "straight")
    with running_worker(straight) as proc:
        produce(kafka_bootstrap, straight.topic("clickstream"), events)
        expected = outputs_without_time(read_outputs(straight, "recommendations", 40, proc))

    restarted = make_setup(kafka_bootstrap, unique_name, tmp_path / "restarted")
    with running_worker(restarted) as proc:
        produce(kafka_bootstrap, restarted.topic("clickstream"), events[:half])
        read_outputs(restarted, "recommendations", half, proc)
    assert proc.returncode == 0, tail(restarted.log)
    # A fresh local data dir: the state can only come back from the changelog topic.
    restarted.data_dir = tmp_path / "restarted" / "other-data-dir"
    with running_worker(restarted) as proc:
        produce(kafka_bootstrap, restarted.topic("clickstream"), events[half:])
        got = outputs_without_time(read_outputs(restarted, "recommendations", 40, proc))

    assert got == expected
    assert got["u0-6"]["items"] == ["6", "5", "4", "3", "2", "1"]  # across the restart
    assert got["u0-9"]["items"] == ["9", "8", "7"]  # second session only


def test_redelivered_events_are_recognised_by_offset_and_not_stepped_twice(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    setup = make_setup(kafka_bootstrap, unique_name, tmp_path)
    first = [click(f"u{u}", f"u{u}-{i}", str(10 * u + i), T0 + i) for i in range(4) for u in (0, 1)]
    with running_worker(setup) as proc:
        produce(kafka_bootstrap, setup.topic("clickstream"), first)
        before = read_outputs(setup, "recommendations", 8, proc)
    # As if the worker died after writing state (2) but before committing offsets (3):
    # the whole input is delivered again.
    commit_offsets(
        kafka_bootstrap, setup.app_id, setup.topic("clickstream"),
        dict.fromkeys(range(setup.partitions), 0),
    )  # fmt: skip
    setup.data_dir = tmp_path / "second-data-dir"
    with running_worker(setup) as proc:
        produce(
            kafka_bootstrap,
            setup.topic("clickstream"),
            [click(f"u{u}", f"u{u}-new", "77", T0 + 10) for u in (0, 1)],
        )
        recs = read_outputs(setup, "recommendations", 12, proc)
        preds = read_outputs(setup, "purchase_predictions", 12, proc)

    values = [orjson.loads(r.value) for r in recs]
    # Only each user's last applied event is re-sent, byte for byte as stored.
    resent = [r.value for r in recs[len(before) :] if b"-new" not in r.value]
    originals = {orjson.loads(r.value)["event_id"]: r.value for r in before}
    assert sorted(orjson.loads(v)["event_id"] for v in resent) == ["u0-3", "u1-3"]
    assert all(v == originals[orjson.loads(v)["event_id"]] for v in resent)
    assert len(values) == 12
    # The new events are each user's 5th step, not the 9th.
    p_new = [orjson.loads(r.value)["p_purchase"] for r in preds if b"-new" in r.value]
    assert np.allclose(p_new, [0.5, 0.5])
    new = [v for v in values if v["event_id"].endswith("-new")]
    assert all(v["items"][:2] == ["77", str(int(v["user_id"][1]) * 10 + 3)] for v in new)


def test_ready_is_false_during_table_recovery_then_true(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    setup = make_setup(kafka_bootstrap, unique_name, tmp_path)
    changelog = f"{setup.app_id}-user-state-changelog"
    create_topics(
        kafka_bootstrap, [changelog], partitions=setup.partitions,
        configs={"cleanup.policy": "compact"},
    )  # fmt: skip
    result = LastResult("e-last", "s", ["1", "2"], [0.9, 0.1], 0.3, "test-1", T0, T0 + 1)
    state = UserState(
        carry=np.zeros(7, np.float32), recent_items=["1"], session_id="s", event_count=1,
        model_version="test-1", source_partition=0, source_offset=0, last_result=result,
    )  # fmt: skip
    value = encode_state(state)
    # Enough changelog records that recovery takes a visible while. Faust serialises
    # str table keys as JSON strings.
    records = [(orjson.dumps(f"user-{i}"), value) for i in range(60_000)]
    produce(kafka_bootstrap, changelog, records)

    user_view: list[int] = []
    done = threading.Event()

    def poll_user() -> None:
        # A user whose state is not recovered yet must not be reported as unknown.
        while not done.is_set():
            status, _ = get_json(setup.url("/users/user-123/recommendations"), timeout_s=1.0)
            if status:
                user_view.append(status)
            time.sleep(0.05)

    with running_process(WORKER_ARGS, setup.env(), setup.log) as proc:
        poller = threading.Thread(target=poll_user, daemon=True)
        poller.start()
        seen = wait_ready(setup, proc, timeout_s=120)
        done.set()
        poller.join()
        status, body = get_json(setup.url("/users/user-123/recommendations"))
        metrics = get_json(setup.url("/health"))
    assert seen[-1]["ready"] and seen[-1]["recovery_complete"]
    recovering = [s for s in seen if s["status"] == 503 and not s["recovery_complete"]]
    assert recovering, f"never saw recovery in progress: {seen[:3]}"
    assert status == 200 and body["items"] == ["1", "2"] and body["event_id"] == "e-last"
    assert 404 not in user_view, user_view  # 503 (retry) while recovering, never "unknown"
    assert metrics == (200, {"status": "ok"})
