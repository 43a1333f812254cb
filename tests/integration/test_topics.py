"""`python -m stream_app.topics` against a real broker: creates, re-checks, refuses drift."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType


def run_topics(bootstrap: str, **settings: str) -> subprocess.CompletedProcess:
    """The topics Job's command, in a fresh interpreter with only these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNNREC_")}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env["RNNREC_KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    env.update({f"RNNREC_{k.upper()}": v for k, v in settings.items()})
    return subprocess.run(
        [sys.executable, "-m", "stream_app.topics", "--wait-s", "30"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


def test_creates_the_layout_then_is_idempotent_and_reports_drift(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    prefix = unique_name("topics") + "."
    first = run_topics(kafka_bootstrap, topic_prefix=prefix, partitions="3")
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("created ") == 7

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        described = {
            t["name"]: t
            for t in admin.describe_topics([f"{prefix}clickstream", f"{prefix}model-updates"])
        }
        assert len(described[f"{prefix}clickstream"]["partitions"]) == 3
        assert len(described[f"{prefix}model-updates"]["partitions"]) == 1
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, f"{prefix}model-updates")],
            config_filter="all",
        )["topic"][f"{prefix}model-updates"]
        assert configs["cleanup.policy"]["value"] == "compact"
        assert int(configs["max.message.bytes"]["value"]) >= 8 * 1024 * 1024
    finally:
        admin.close()

    again = run_topics(kafka_bootstrap, topic_prefix=prefix, partitions="3")
    assert again.returncode == 0, again.stderr
    assert "created" not in again.stdout and again.stdout.count("ok ") == 7

    drift = run_topics(kafka_bootstrap, topic_prefix=prefix, partitions="6")
    assert drift.returncode == 1
    assert f"{prefix}clickstream: 3 partitions, rnnrec needs 6" in drift.stderr


def test_a_refused_creation_is_one_line_with_the_brokers_reason(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    # Before: a traceback in the Job's log.
    result = run_topics(
        kafka_bootstrap, topic_prefix=f"{unique_name('rf')}-", replication_factor="3"
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "replication factor of 3 cannot be reached" in lines[0]
