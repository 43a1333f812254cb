"""``rnnrec trainer`` as a real process on the real broker: publish, frozen, reject.

The trainer starts from the tiny model (tests/serving_models.py) in RNNREC_MODEL_SOURCE
and reads a synthetic stream replayed onto a test clickstream topic. Its cadence is
daily in event time; the stream spans the midnight after its first event, so exactly
one round is due.
"""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from subprocess import Popen
from typing import Any

import numpy as np
import orjson
import pytest

from rnnrec_jax.data.events import SessionEvents
from rnnrec_jax.data.synthetic import SyntheticConfig, generate_sessions
from rnnrec_jax.model_io import TrainedModel, load_trained_model
from stream_app.events import COMMAND_HEADER, DELETE_USER
from stream_app.kafka_io import create_topics, produce
from stream_app.model_registry import load_version, read_registry
from stream_app.settings import WorkerSettings, load_settings
from stream_app.tools_replay import clickstream_records
from tests import prom
from tests.processes import running_process, stop, tail
from tests.serving_models import cached_tiny_model
from tests.worker_harness import free_port

TRAINER_ARGS = ["-m", "stream_app.cli", "trainer", "-l", "info"]
DAY = 86_400.0
START = 1_700_000_000.0 - (1_700_000_000.0 % DAY) + 0.6 * DAY  # 2023-11-14 14:24 UTC


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainedModel]:
    model_dir, _, _ = cached_tiny_model(tmp_path_factory)
    return model_dir, load_trained_model(model_dir)


def _stream(seed: int) -> SessionEvents:
    # 0.8 days from 14:24 (users' later sessions pushed a little beyond): one midnight
    # inside, about half of the events before it.
    events, _ = generate_sessions(
        900, 300, seed=seed, start_time=START, config=SyntheticConfig(span_days=0.8)
    )
    assert 0.3 < (events.times < START + 0.4 * DAY).mean() < 0.7
    assert events.times.max() < START + 1.4 * DAY
    return events


@pytest.fixture(scope="module")
def shifted_stream() -> SessionEvents:
    """Another generator seed than the tiny model's data: fine-tuning clearly helps."""
    return _stream(99)


@pytest.fixture(scope="module")
def familiar_stream() -> SessionEvents:
    """The tiny model's own generator: the served model is already good on it."""
    return _stream(11)


class TrainerRun:
    """Topics, environment and helpers of one test's trainer."""

    def __init__(self, bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path) -> None:
        self.bootstrap = bootstrap
        self.prefix = unique_name("tr")
        self.port = free_port()
        self.log = tmp_path / "trainer.log"
        self.clickstream = f"{self.prefix}-clickstream"
        create_topics(bootstrap, [self.clickstream], partitions=2)

    def env(self, model_dir: Path, **extra: str) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "RNNREC_TOPIC_PREFIX": f"{self.prefix}-",
            "RNNREC_MODEL_SOURCE": str(model_dir),
            "RNNREC_TRAINER_GROUP_ID": f"{self.prefix}-trainer",
            "RNNREC_TRAINER_METRICS_PORT": str(self.port),
            "RNNREC_TRAINER_METRICS_BIND": "127.0.0.1",
            "RNNREC_TRAINER_INTERVAL_EVENT_TIME_S": str(DAY),
            "RNNREC_TRAINER_FINETUNE_EPOCHS": "2",
            "RNNREC_MODEL_CHUNK_BYTES": str(64 * 1024),
            **extra,
        }

    def settings(self) -> WorkerSettings:
        return load_settings(
            bootstrap_servers=self.bootstrap,
            topic_prefix=f"{self.prefix}-",
            model_chunk_bytes=64 * 1024,
        )

    def replay(self, events: SessionEvents) -> int:
        records = [(key, value) for _, key, value in clickstream_records(events)]
        return produce(self.bootstrap, self.clickstream, records)

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the trainer's /metrics: 0 when absent or not answering yet; an
        error when the trainer answers without exporting the metric at all."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return 0.0
        return prom.value(prom.parse(text), name, **labels)

    def view(self, path: str) -> tuple[int, dict]:
        """``(status, JSON body)`` of one of the trainer's views (0 when not answering)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.status, orjson.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, orjson.loads(exc.read() or b"{}")
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return 0, {}

    def wait_for(self, check: Callable[[], bool], what: str, proc: Popen, timeout_s=150.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"trainer exited early:\n{tail(self.log)}"
            if check():
                return
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}:\n{tail(self.log)}")

    @contextmanager
    def running(self, model_dir: Path, **extra: str) -> Iterator[Popen]:
        with running_process(TRAINER_ARGS, self.env(model_dir, **extra), self.log) as proc:
            yield proc


def _decisions(settings: WorkerSettings) -> dict[str, dict[str, Any]]:
    registry = read_registry(settings)
    return {v: e.decision for v, e in registry.versions.items() if e.decision is not None}


def test_trainer_publishes_a_fine_tuned_version_that_validates(
    kafka_bootstrap, unique_name, tmp_path, tiny, shifted_stream
):
    model_dir, model = tiny
    stream = shifted_stream
    run = TrainerRun(kafka_bootstrap, unique_name, tmp_path)
    with run.running(model_dir) as proc:
        run.replay(stream)
        run.wait_for(
            lambda: run.metric("rnnrec_trainer_decisions_total", outcome="published") >= 1,
            "a published decision",
            proc,
        )
        # The window gauges are refreshed once per poll loop, after the events of the
        # loop are counted as consumed (the metrics are read from another thread).
        run.wait_for(
            lambda: (
                run.metric("rnnrec_trainer_events_consumed_total") == stream.n_events
                and run.metric("rnnrec_trainer_window_events") == stream.n_events
            ),
            "every event read and in the window",
            proc,
        )
        assert run.metric("rnnrec_trainer_fine_tunes_total") == 1
        exit_code = stop(proc, signal.SIGTERM)
    assert exit_code == 0, tail(run.log)

    settings = run.settings()
    registry = read_registry(settings)
    assert registry.serving is not None
    version = registry.serving.version
    published = load_version(settings, version)  # full validation, as a worker does
    assert version.startswith("ft-")
    assert published.parent_version == model.version
    assert published.vocab.capacity == model.vocab.capacity
    assert not all(
        np.array_equal(np.asarray(published.params[k]), np.asarray(model.params[k]))
        for k in ("item_out", "item_bias")
    )
    decision = _decisions(settings)[version]
    assert decision["decision"] == "published"
    assert decision["parent_version"] == model.version
    assert decision["trigger"] == "event_time"
    boundary = decision["boundary_ts"]
    assert boundary % DAY == 0 and stream.times.min() < boundary <= stream.times.max()
    # The round saw exactly the events timed before the boundary.
    assert decision["window"]["events"] == int((stream.times < boundary).sum())
    assert decision["window"]["last_ts"] < boundary
    metric = decision["metric"]
    assert decision["candidate"][metric] >= decision["serving"][metric] - decision["margin"]
    assert "decision round=1" in run.log.read_text()


def test_a_frozen_trainer_publishes_nothing(
    kafka_bootstrap, unique_name, tmp_path, tiny, shifted_stream
):
    model_dir, _ = tiny
    run = TrainerRun(kafka_bootstrap, unique_name, tmp_path)
    with run.running(model_dir, RNNREC_ONLINE_TRAINING_FROZEN="true") as proc:
        # The probes Kubernetes uses: alive, then ready once model and consumer are up.
        run.wait_for(lambda: run.view("/ready")[0] == 200, "/ready", proc)
        assert run.view("/health") == (200, {"status": "ok"})
        assert run.view("/nope")[0] == 404
        run.replay(shifted_stream)
        run.wait_for(
            lambda: run.metric("rnnrec_trainer_decisions_total", outcome="frozen") >= 1,
            "a frozen round",
            proc,
        )
        # It still judged the serving model on the fresh slice.
        assert run.metric("rnnrec_trainer_serving_metric", metric="mrr@20") > 0
        assert run.metric("rnnrec_trainer_fine_tunes_total") == 0
        # `rnnrec user delete`: the user's events leave the window.
        records = list(clickstream_records(shifted_stream))
        user = records[0][1]
        n_user = sum(1 for _, key, _ in records if key == user)
        run.wait_for(
            lambda: run.metric("rnnrec_trainer_window_events") == len(records),
            "every event in the window",
            proc,
        )
        produce(run.bootstrap, run.clickstream, [(user, b"{}")],
                headers=[(COMMAND_HEADER, DELETE_USER)])  # fmt: skip
        run.wait_for(
            lambda: run.metric("rnnrec_trainer_window_events") == len(records) - n_user,
            "the deleted user's events gone",
            proc,
        )
        assert run.metric("rnnrec_trainer_users_deleted_total") == 1
        assert stop(proc, signal.SIGTERM) == 0, tail(run.log)
    registry = read_registry(run.settings())
    assert registry.serving is None
    assert registry.versions == {}


def test_a_worse_candidate_is_rejected_and_the_decision_recorded(
    kafka_bootstrap, unique_name, tmp_path, tiny, familiar_stream
):
    model_dir, model = tiny
    run = TrainerRun(kafka_bootstrap, unique_name, tmp_path)
    # Adam at a huge step size wrecks the params without making them non-finite.
    bad = {
        "RNNREC_TRAINER_FINETUNE_OPTIMISER": "adam",
        "RNNREC_TRAINER_FINETUNE_LR": "3",
        "RNNREC_TRAINER_MARGIN": "0.01",
    }
    with run.running(model_dir, **bad) as proc:
        run.replay(familiar_stream)
        run.wait_for(
            lambda: run.metric("rnnrec_trainer_decisions_total", outcome="rejected") >= 1,
            "a rejected decision",
            proc,
        )
        assert run.metric("rnnrec_trainer_decisions_total", outcome="published") == 0
        assert run.metric("rnnrec_trainer_model_version_info", version=model.version) == 1
        assert stop(proc, signal.SIGTERM) == 0, tail(run.log)
    settings = run.settings()
    registry = read_registry(settings)
    assert registry.serving is None  # nothing was ever served
    decisions = _decisions(settings)
    assert len(decisions) == 1
    ((version, decision),) = decisions.items()
    assert decision["decision"] == "rejected"
    assert not registry.versions[version].has_manifest  # the candidate was not published
    metric = decision["metric"]
    assert decision["candidate"][metric] < decision["serving"][metric] - 0.01
    assert decision["parent_version"] == model.version
    assert "outcome=rejected" in run.log.read_text()


def test_sigterm_during_a_fine_tune_abandons_it_commits_and_exits_0(
    kafka_bootstrap, unique_name, tmp_path, tiny, shifted_stream
):
    from kafka import KafkaConsumer, TopicPartition

    model_dir, _ = tiny
    run = TrainerRun(kafka_bootstrap, unique_name, tmp_path)
    # All events are on the topic before the trainer starts, so its round reads them
    # all first; many passes keep the fine-tune running when the signal comes.
    run.replay(shifted_stream)
    with run.running(model_dir, RNNREC_TRAINER_FINETUNE_EPOCHS="100") as proc:
        run.wait_for(
            lambda: run.metric("rnnrec_trainer_fine_tune_running") == 1, "a fine-tune", proc
        )
        # Behaviour, not speed: it exits 0 with the fine-tune abandoned (stop() fails
        # the test if it has not exited after 60 s).
        exit_code = stop(proc, signal.SIGTERM, timeout_s=60)
    assert exit_code == 0, tail(run.log)
    text = run.log.read_text()
    assert "outcome=abandoned" in text and "trainer stopped after 1 rounds" in text
    assert read_registry(run.settings()).versions == {}  # nothing half-published
    # Everything read was committed (the window is rebuilt from new events on restart).
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=f"{run.prefix}-trainer")
    try:
        tps = [TopicPartition(run.clickstream, p) for p in (0, 1)]
        ends = consumer.end_offsets(tps)
        assert {tp: consumer.committed(tp) for tp in tps} == ends
    finally:
        consumer.close()
