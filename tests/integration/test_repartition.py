"""Events not keyed by their user are repartitioned, and served as if they had been.

A producer that sends no key, or keys by something else, still gets each event
answered exactly once, from the user's own state: the worker re-sends the event
keyed by user_id to ``clickstream-repartition`` and serves it from there. Where a
user's events came through one input partition (a constant wrong key) the outputs
equal those of the same events produced with the right keys. Events without a key
are spread over the partitions by the producer, so their order per user is not
kept, but each is still applied once to the user's state.
"""

from __future__ import annotations

import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

import orjson

from stream_app.dlq import headers_as_dict
from stream_app.kafka_io import produce
from tests.chaos.support import parse_metrics
from tests.worker_harness import (
    WorkerSetup,
    click,
    make_setup,
    read_all,
    read_outputs,
    running_worker,
)

T0 = 1_700_000_000.0
KEYS = {
    "u-keyed": None,  # the right key: user_id
    "u-nokey": b"",  # replaced by no key at all below
    "u-other": b"someone-else",
    "u-badutf8": b"\xff\xfe-u",
}
EVENTS_PER_USER = 8


def stream(right_keys: bool) -> list[tuple[bytes | None, bytes]]:
    """The users' events interleaved; with the producer's keys or the right ones."""
    records = []
    for i in range(EVENTS_PER_USER):
        for user, key in KEYS.items():
            right, value = click(user, f"{user}-{i}", str(10 + (i * 7 + len(user)) % 13), T0 + i)
            if right_keys or key is None:
                records.append((right, value))
            else:
                records.append((key or None, value))
    return records


def served(setup: WorkerSetup, proc: Popen, n: int) -> dict[str, tuple[list, list]]:
    """Each event's recommended items and scores; exactly one output per event."""
    recs = read_outputs(setup, "recommendations", n, proc)
    out: dict[str, tuple[list, list]] = {}
    counts: Counter[str] = Counter()
    for record in recs:
        doc = orjson.loads(record.value)
        counts[doc["event_id"]] += 1
        assert record.key == doc["user_id"].encode()  # outputs keyed by user
        out[doc["event_id"]] = (doc["items"], doc["scores"])
    assert set(counts.values()) == {1}, {k: c for k, c in counts.items() if c > 1}
    return out


def test_unkeyed_and_miskeyed_events_are_served_as_if_keyed_by_user(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    n = len(KEYS) * EVENTS_PER_USER
    miskeyed = (len(KEYS) - 1) * EVENTS_PER_USER

    # Two workers, two sets of topics and groups.
    reference = make_setup(
        kafka_bootstrap, lambda role: unique_name(f"{role}-ref"), tmp_path / "reference",
        partitions=3,
    )  # fmt: skip
    with running_worker(reference) as proc:
        produce(kafka_bootstrap, reference.topic("clickstream"), stream(right_keys=True))
        expected = served(reference, proc, n)

    setup = make_setup(kafka_bootstrap, unique_name, tmp_path / "rekeyed", partitions=3)
    with running_worker(setup) as proc:
        produce(kafka_bootstrap, setup.topic("clickstream"), stream(right_keys=False))
        got = served(setup, proc, n)
        predictions = [
            orjson.loads(r.value) for r in read_outputs(setup, "purchase_predictions", n, proc)
        ]
        # A wrong key on the repartition topic itself is not re-sent again: DLQ.
        _, value = click("u-keyed", "loop-0", "1", T0 + 99)
        produce(kafka_bootstrap, setup.topic("clickstream_repartition"), [(b"not-him", value)])
        (letter,) = read_outputs(setup, "dlq", 1, proc)
        with urllib.request.urlopen(setup.url("/metrics"), timeout=5) as response:
            metrics = parse_metrics(response.read().decode())

    assert set(got) == set(expected)
    # The worker has stopped: exactly one answer per event in the whole topics.
    for role in ("recommendations", "purchase_predictions"):
        counts = Counter(orjson.loads(r.value)["event_id"] for r in read_all(setup, role))
        assert len(counts) == n and set(counts.values()) == {1}, role
    # A constant wrong key keeps a user's events on one partition, in order: same
    # items and scores, event by event, as with the right key.
    for user in ("u-keyed", "u-other", "u-badutf8"):
        mine = {e: out for e, out in got.items() if e.startswith(f"{user}-")}
        assert mine == {e: out for e, out in expected.items() if e.startswith(f"{user}-")}
    # Without a key the order across partitions is lost, not the events: the test
    # scorer's purchase probability is the user's step count / 10, so the user's
    # predictions are 0.1 ... 0.8 exactly when each event stepped the state once.
    steps = sorted(round(doc["p_purchase"] * 10) for doc in predictions if
                   doc["user_id"] == "u-nokey")  # fmt: skip
    assert steps == list(range(1, EVENTS_PER_USER + 1))
    rekeyed = read_outputs(setup, "clickstream_repartition", miskeyed + 1)
    by_user = Counter(r.key for r in rekeyed if r.key != b"not-him")
    assert by_user == {u.encode(): EVENTS_PER_USER for u in KEYS if u != "u-keyed"}
    headers = headers_as_dict(letter.headers)
    assert headers["rnnrec.error.kind"] == "key_mismatch"
    assert headers["rnnrec.source.topic"] == setup.topic("clickstream_repartition")
    assert metrics[("rnnrec_repartitioned_total", frozenset())] == miskeyed
    assert metrics[("rnnrec_dead_letters_total", frozenset({("reason", "key_mismatch")}))] == 1
    # Each user's state counted its own events once, whichever path they took.
    assert metrics[("rnnrec_events_applied_total", frozenset())] == n


def test_a_miskeyed_event_too_large_with_its_headers_goes_to_the_dlq(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    # The re-keyed copy keeps the headers; over the size limit it could not be sent
    # (the whole batch then failed), so it is refused as too_large instead.
    setup = make_setup(kafka_bootstrap, unique_name, tmp_path, partitions=1)
    _, big = click("u-big", "big-0", "1", T0)
    _, fine = click("u-fine", "fine-0", "2", T0)
    with running_worker(
        setup, RNNREC_MAX_MESSAGE_BYTES="4096", RNNREC_DLQ_MAX_PAYLOAD_BYTES="4096"
    ) as proc:
        produce(kafka_bootstrap, setup.topic("clickstream"), [(b"x", big)],
                headers=[("trace", b"t" * 5000)])  # fmt: skip
        produce(kafka_bootstrap, setup.topic("clickstream"), [(b"y", fine)])
        (letter,) = read_outputs(setup, "dlq", 1, proc)
        (answer,) = read_outputs(setup, "recommendations", 1, proc)
    headers = headers_as_dict(letter.headers)
    assert headers["rnnrec.error.kind"] == "too_large"
    assert "headers" in headers["rnnrec.error.message"]
    assert letter.value == big
    assert orjson.loads(answer.value)["event_id"] == "fine-0"
