"""A batch that fails while being served loses nothing and does not stop the stream.

Real broker, real worker process, the test scorer with injected faults
(`tests.worker_scorers.FailingRecentItemsScorer`). A poison event (one whose step
always raises) goes to the DLQ as ``processing_error`` while every other event of its
batch, and every later one, is answered exactly once and committed; a passing fault
(the first step raises) costs no event at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson

from stream_app.dlq import headers_as_dict
from stream_app.kafka_io import produce
from tests.chaos.support import wait_for_lag_zero
from tests.worker_harness import (
    click,
    make_setup,
    read_all,
    read_outputs,
    running_worker,
    scrape,
    value,
)

T0 = 1_700_000_000.0
FACTORY = "tests.worker_scorers:failing_recent_items_scorer"
USERS = ["u-a", "u-b", "u-c", "u-d"]
EVENTS_PER_USER = 5


def clicks(poison_at: tuple[str, int] | None, start: int = 0) -> list[tuple[bytes, bytes]]:
    """Each user's events in turn; item 666 at ``poison_at`` (user, index)."""
    records = []
    for i in range(start, start + EVENTS_PER_USER):
        for user in USERS:
            item = "666" if (user, i) == poison_at else str(10 + i)
            records.append(click(user, f"{user}-{i}", item, T0 + i))
    return records


def answered(records: list) -> Counter[str]:
    return Counter(orjson.loads(r.value)["event_id"] for r in records)


def test_a_poison_event_goes_to_the_dlq_and_the_rest_of_its_batch_is_served(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    setup = make_setup(kafka_bootstrap, unique_name, tmp_path)
    first, later = clicks(("u-b", 2)), clicks(None, start=EVENTS_PER_USER)
    n = len(first) + len(later)
    with running_worker(
        setup, RNNREC_SCORER_FACTORY=FACTORY, RNNREC_TEST_SCORER_FAIL_ITEMS="666"
    ) as proc:
        # One produce call: the poison shares its batch with other users' events.
        produce(kafka_bootstrap, setup.topic("clickstream"), first)
        (letter,) = read_outputs(setup, "dlq", 1, proc)
        produce(kafka_bootstrap, setup.topic("clickstream"), later)
        recommendations = read_outputs(setup, "recommendations", n - 1, proc)
        predictions = read_outputs(setup, "purchase_predictions", n - 1, proc)
        # Nothing blocks the commit: every input offset, the poison's included.
        wait_for_lag_zero(setup, proc)
        samples = scrape(setup)

    # The worker has stopped: the whole topics, late duplicates included.
    recommendations = read_all(setup, "recommendations")
    predictions = read_all(setup, "purchase_predictions")
    headers = headers_as_dict(letter.headers)
    assert headers["rnnrec.error.kind"] == "processing_error"
    assert "RuntimeError: poison item 666" in headers["rnnrec.error.message"]
    assert letter.key == b"u-b" and orjson.loads(letter.value)["event_id"] == "u-b-2"
    expected = {f"{u}-{i}" for u in USERS for i in range(2 * EVENTS_PER_USER)} - {"u-b-2"}
    for outputs in (recommendations, predictions):
        counts = answered(outputs)
        assert set(counts) == expected and set(counts.values()) == {1}, counts
    # The poison never stepped its user's state: u-b's steps count 1..9 (the test
    # scorer's purchase probability is steps / 10), and 666 is never recommended.
    steps = sorted(
        round(orjson.loads(r.value)["p_purchase"] * 10)
        for r in predictions
        if orjson.loads(r.value)["user_id"] == "u-b"
    )
    assert steps == list(range(1, 2 * EVENTS_PER_USER))
    assert all("666" not in orjson.loads(r.value)["items"] for r in recommendations)
    assert value(samples, "rnnrec_batch_failures_total", scope="event") == 1
    assert value(samples, "rnnrec_batch_failures_total", scope="batch") >= 1
    assert value(samples, "rnnrec_dead_letters_total", reason="processing_error") == 1


def test_a_passing_fault_costs_no_event(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    setup = make_setup(kafka_bootstrap, unique_name, tmp_path)
    records = clicks(None)
    with running_worker(
        setup, RNNREC_SCORER_FACTORY=FACTORY, RNNREC_TEST_SCORER_FAIL_CALLS="1"
    ) as proc:
        produce(kafka_bootstrap, setup.topic("clickstream"), records)
        read_outputs(setup, "recommendations", len(records), proc)  # every event answered
        wait_for_lag_zero(setup, proc)
        samples = scrape(setup)
        dead = read_outputs(setup, "dlq", 0, proc, timeout_s=3)

    counts = answered(read_all(setup, "recommendations"))  # the worker has stopped
    assert len(counts) == len(records) and set(counts.values()) == {1}, counts
    assert dead == [] and read_all(setup, "dlq") == []
    assert value(samples, "rnnrec_batch_failures_total", scope="batch") == 1
    assert value(samples, "rnnrec_batch_failures_total", scope="event") == 0
