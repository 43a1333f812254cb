"""item-updates on the real broker: a blocked item leaves every recommendation, then returns.

The worker serves the tiny trained model (tests/serving_models.py), so the blocked
item is one the model really ranks in the top K. The same sessions are replayed
under fresh user ids before, during and after the block: with identical inputs the
only difference in the outputs can be the block.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from stream_app.kafka_io import produce
from tests.processes import tail
from tests.serving_models import cached_tiny_model
from tests.worker_harness import (
    WorkerSetup,
    click,
    get_json,
    make_setup,
    metric,
    read_outputs,
    running_worker,
)

MODEL_ENV = {
    "RNNREC_SCORER_FACTORY": "",
    "RNNREC_BUCKET_SIZES": "8,64",  # few buckets: a fast warm-up on a shared machine
    "RNNREC_EXPLAIN_WINDOW": "0",
}
SESSIONS = 12


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    return cached_tiny_model(tmp_path_factory)


def sessions_as(test_df: object, prefix: str) -> list[tuple[bytes, bytes]]:
    """The first test sessions as clickstream records of users ``<prefix><session>``."""
    records = []
    for session, group in list(test_df.groupby("SessionId", sort=False))[:SESSIONS]:  # type: ignore[attr-defined]
        user = f"{prefix}{session}"
        for pos, (item, ts) in enumerate(zip(group.ItemId, group.Time, strict=True)):
            records.append(click(user, f"{user}-{pos}", str(item), float(ts), session_id=user))
    return records


def rnnrec(setup: WorkerSetup, *args: str) -> subprocess.CompletedProcess:
    """Run the CLI with the worker's settings."""
    return subprocess.run(
        [sys.executable, "-m", "stream_app.cli", *args],
        env={**os.environ, **setup.env()},
        capture_output=True,
        text=True,
        timeout=120,
    )


def wait_for(check: Callable[[], bool], what: str, setup: WorkerSetup, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}:\n{tail(setup.log)}")


def lists_by_position(records: list, prefix: str) -> dict[str, list[str]]:
    """``"<session>-<pos>" -> items`` of the outputs for users with ``prefix``."""
    out = {}
    for record in records:
        document = orjson.loads(record.value)
        if document["user_id"].startswith(prefix):
            out[document["event_id"].removeprefix(prefix)] = document["items"]
    return out


def test_a_blocked_item_never_appears_until_unblocked_also_after_a_restart(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path, tiny: tuple
) -> None:
    model_dir, _, test_df = tiny
    first = sessions_as(test_df, "a")
    n = len(first)
    setup = make_setup(kafka_bootstrap, unique_name, tmp_path, RNNREC_MODEL_SOURCE=str(model_dir))
    # No item-updates topic yet: the worker starts, serves and waits for it.
    with running_worker(setup, **MODEL_ENV) as proc:
        produce(kafka_bootstrap, setup.topic("clickstream"), first)
        before = lists_by_position(read_outputs(setup, "recommendations", n, proc), "a")
        counts = Counter(item for items in before.values() for item in items)
        blocked, in_lists = counts.most_common(1)[0]
        assert in_lists >= 2

        done = rnnrec(setup, "item", "block", blocked, "--reason", "recalled")
        assert done.returncode == 0, done.stderr
        listed = rnnrec(setup, "item", "list")
        assert listed.returncode == 0 and blocked in listed.stdout and "recalled" in listed.stdout
        wait_for(lambda: metric(setup, "rnnrec_unavailable_items") == 1, "the block", setup)

        produce(kafka_bootstrap, setup.topic("clickstream"), sessions_as(test_df, "b"))
        during = lists_by_position(read_outputs(setup, "recommendations", 2 * n, proc), "b")
    assert during.keys() == before.keys()
    assert not [key for key, items in during.items() if blocked in items]
    for key, items in before.items():
        # Same inputs: the same ranking without the blocked item.
        rest = [item for item in items if item != blocked]
        assert during[key][: len(rest)] == rest and len(during[key]) == len(items)

    # Restart with input already waiting: the first batch must know the block too.
    # Malformed records are skipped, counted by reason and logged once per reason.
    bad = [(b"x", b"{nope"), (b"y", b"{nope"), (b"z", b"[1]")]
    produce(kafka_bootstrap, f"{setup.prefix}-item-updates", bad)
    produce(kafka_bootstrap, setup.topic("clickstream"), sessions_as(test_df, "d"))
    with running_worker(setup, **MODEL_ENV) as proc:
        # Ready only once the history is read: the block is known before any traffic.
        assert metric(setup, "rnnrec_unavailable_items") == 1
        assert get_json(setup.url("/ready"))[1]["catalogue_read"] is True
        restarted = lists_by_position(read_outputs(setup, "recommendations", 3 * n, proc), "d")
        assert restarted == during
        assert metric(setup, "rnnrec_unavailable_items") == 1
        assert metric(setup, "rnnrec_item_updates_malformed_total", reason="invalid_json") == 2
        assert metric(setup, "rnnrec_item_updates_malformed_total", reason="not_an_object") == 1

        done = rnnrec(setup, "item", "unblock", blocked)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: metric(setup, "rnnrec_unavailable_items") == 0, "the unblock", setup)
        produce(kafka_bootstrap, setup.topic("clickstream"), sessions_as(test_df, "c"))
        after = lists_by_position(read_outputs(setup, "recommendations", 4 * n, proc), "c")
        assert metric(setup, "rnnrec_item_updates_applied_total") == 2  # block, tombstone
    assert after == before
    listed = rnnrec(setup, "item", "list")
    assert listed.returncode == 0 and "no unavailable items" in listed.stdout, listed
    log = setup.log.read_text()
    assert log.count("malformed record (invalid_json") == 1 and "(not_an_object" in log


def test_item_commands_answer_in_one_line(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    setup = make_setup(kafka_bootstrap, unique_name, tmp_path)
    listed = rnnrec(setup, "item", "list")
    assert listed.returncode == 0 and "does not exist" in listed.stdout
    refused = rnnrec(setup, "item", "block", "")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    # Where a topics Job owns the topics, a missing one is named, never created.
    env = {**setup.env(), "RNNREC_CREATE_TOPICS": "false"}
    done = subprocess.run(
        [sys.executable, "-m", "stream_app.cli", "item", "block", "i1"],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1 and done.stderr.strip().count("\n") == 0
    assert "item-updates does not exist" in done.stderr and "Traceback" not in done.stderr
    assert "does not exist" in rnnrec(setup, "item", "list").stdout


class CountingConsumer:
    """A real kafka-python consumer that counts the polls made before ``read()`` says yes."""

    def __init__(self, consumer: object, read: Callable[[], bool]) -> None:
        self._consumer = consumer
        self._read = read
        self.polls_while_reading = 0

    def poll(self, *args: object, **kwargs: object) -> object:
        self.polls_while_reading += not self._read()
        return self._consumer.poll(*args, **kwargs)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._consumer, name)


@pytest.mark.parametrize("history", [0, 3], ids=["empty", "three-records"])
def test_the_follower_reads_the_history_and_an_empty_one_without_polling(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    history: int,
) -> None:
    from prometheus_client import CollectorRegistry

    import stream_app.item_updates as item_updates
    from stream_app.kafka_io import create_topics
    from stream_app.settings import load_settings

    settings = load_settings(bootstrap_servers=kafka_bootstrap, topic_prefix=unique_name("iu"))
    topic = settings.topic("item_updates")
    create_topics(kafka_bootstrap, [topic], partitions=2, configs={"cleanup.policy": "compact"})
    blocked = [f"i{n}" for n in range(history)]
    document = {"schema_version": 1, "available": False, "ts": 1_700_000_000.0}
    produce(
        kafka_bootstrap,
        topic,
        [(item.encode(), orjson.dumps({**document, "item_id": item})) for item in blocked],
    )
    consumers: list[CountingConsumer] = []
    real_consumer = item_updates.item_updates_consumer

    def counting(settings: object) -> CountingConsumer:
        consumers.append(CountingConsumer(real_consumer(settings), lambda: follower.caught_up))
        return consumers[-1]

    monkeypatch.setattr(item_updates, "item_updates_consumer", counting)
    follower = item_updates.ItemFollower(
        settings, item_updates.ItemMetrics(CollectorRegistry()), retry_s=0.2
    )
    follower.start()
    try:
        deadline = time.monotonic() + 60
        while not follower.settled and time.monotonic() < deadline:
            time.sleep(0.02)
        assert follower.caught_up
        assert follower.unavailable == frozenset(blocked)
        # An empty history needs no poll, whose timeout the first batch would wait out.
        assert (consumers[0].polls_while_reading == 0) == (history == 0)
    finally:
        follower.stop(timeout_s=5)
