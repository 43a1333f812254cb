"""The worker's start-up check of its topics (least privilege: describe, never create)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from kafka import KafkaConsumer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from stream_app.kafka_io import create_topics
from tests.worker_harness import WORKER_ARGS, make_setup, running_worker


def _run_worker(env: dict[str, str], timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *WORKER_ARGS],
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )


def test_worker_without_create_permission_names_the_missing_topics_and_creates_none(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    setup = make_setup(kafka_bootstrap, unique_name, tmp_path, partitions=2)  # clickstream only
    result = _run_worker(setup.env(RNNREC_CREATE_TOPICS="false"))
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("rnnrec: error: missing topics "), result.stderr[-2000:]
    listed = lines[-1].removeprefix("rnnrec: error: missing topics ").split(":")[0]
    named = set(listed.split(", "))
    expected = {
        setup.topic(r)
        for r in ("clickstream_repartition", "recommendations", "purchase_predictions", "dlq")
    }
    assert named == expected, lines[-1]
    assert "Traceback" not in result.stderr
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    try:
        ours = {t for t in consumer.topics() if t.startswith(setup.prefix)}
        assert ours == {setup.topic("clickstream")}
    finally:
        consumer.close()


def test_a_changelog_with_another_partition_count_stops_the_worker_in_one_line(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    # Inputs re-partitioned to 2 while the state's changelog kept 3: before, every
    # state write failed after its outputs were sent (each event output twice, then
    # sent to the DLQ, its state never stored).
    setup = make_setup(kafka_bootstrap, unique_name, tmp_path, partitions=2)
    changelog = f"{setup.app_id}-user-state-changelog"
    create_topics(kafka_bootstrap, [changelog], partitions=3, configs={"cleanup.policy": "compact"})
    result = _run_worker(setup.env())
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(f"rnnrec: error: {changelog} has 3 partitions"), lines[-1:]
    assert "Traceback" not in result.stderr


def test_the_changelog_faust_creates_sets_min_insync_replicas_itself(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    # The topics Job sets min.insync.replicas on its topics; Faust creates the state's
    # changelog, which took the broker's default (1 on most clusters) until the table
    # passed the setting along.
    setup = make_setup(kafka_bootstrap, unique_name, tmp_path, partitions=2)
    with running_worker(setup):
        pass
    changelog = f"{setup.app_id}-user-state-changelog"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        found = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, changelog)])
    finally:
        admin.close()
    entry = found["topic"][changelog]["min.insync.replicas"]
    assert entry["config_source"] == "DYNAMIC_TOPIC_CONFIG", entry
    assert entry["value"] == "1"  # replication factor 1 here: min_insync_replicas(1)
