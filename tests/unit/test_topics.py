"""stream_app.topics: the topic layout rnnrec needs, and idempotent creation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from stream_app.settings import load_settings
from stream_app.topics import (
    MODEL_UPDATES_PARTITIONS,
    TopicAdminSettings,
    TopicSpec,
    ensure_topics,
    min_insync_replicas,
    topic_specs,
)
from tests.tls_broker import make_ca, openssl_available

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("RNNREC_") or name == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(name)


def specs_by_name(**overrides: Any) -> dict[str, TopicSpec]:
    admin_fields = {k: overrides.pop(k) for k in list(overrides) if k.startswith("model_updates")}
    specs = topic_specs(load_settings(**overrides), TopicAdminSettings(**admin_fields))
    return {s.name: s for s in specs}


def test_default_layout_matches_the_design() -> None:
    specs = specs_by_name()
    assert list(specs) == [
        "clickstream",
        "recommendations",
        "purchase-predictions",
        "clickstream-dlq",
        "clickstream-repartition",
        "model-updates",
        "item-updates",
    ]
    assert specs["clickstream"].partitions == 6
    # Co-partitioned with clickstream: a re-keyed user lands on its state's partition.
    assert specs["clickstream-repartition"].partitions == specs["clickstream"].partitions
    assert all(s.replication_factor == 1 for s in specs.values())
    by_user = ("clickstream", "recommendations", "purchase-predictions", "clickstream-dlq")
    for name in (*by_user, "clickstream-repartition"):
        assert not specs[name].compacted
        assert "max.message.bytes" not in specs[name].configs
    models = specs["model-updates"]
    assert models.compacted and models.partitions == MODEL_UPDATES_PARTITIONS == 1
    assert int(models.configs["max.message.bytes"]) == 8 * 1024 * 1024
    assert specs["item-updates"].compacted and specs["item-updates"].partitions == 6


def test_settings_drive_names_partitions_replication_and_chunk_size() -> None:
    specs = specs_by_name(
        topic_prefix="shop1.",
        partitions=12,
        replication_factor=3,
        model_updates_max_message_bytes=16 * 1024 * 1024,
    )
    assert "shop1.clickstream" in specs and "shop1.model-updates" in specs
    assert specs["shop1.clickstream"].partitions == 12
    assert specs["shop1.model-updates"].partitions == 1
    assert {s.replication_factor for s in specs.values()} == {3}
    assert {s.configs["min.insync.replicas"] for s in specs.values()} == {"2"}
    assert specs["shop1.model-updates"].configs["max.message.bytes"] == str(16 * 1024 * 1024)


@pytest.mark.parametrize(("rf", "expected"), [(1, 1), (2, 1), (3, 2), (5, 2)])
def test_min_insync_replicas_tolerates_one_broker_down(rf: int, expected: int) -> None:
    assert min_insync_replicas(rf) == expected


def test_create_request_is_kafka_pythons_dict_form() -> None:
    spec = specs_by_name()["model-updates"]
    assert spec.create_request() == {
        "num_partitions": 1,
        "replication_factor": 1,
        "configs": {
            "min.insync.replicas": "1",
            "cleanup.policy": "compact",
            "max.message.bytes": str(8 * 1024 * 1024),
        },
    }


def test_sasl_needs_credentials_and_maps_to_kafka_python_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="RNNREC_KAFKA_SASL_USERNAME"):
        TopicAdminSettings(kafka_security_protocol="SASL_SSL")
    if not openssl_available():
        pytest.skip("openssl is not installed (needed to make a throwaway CA)")
    cafile = make_ca(tmp_path, "ca").ca_cert  # the CA must exist: the settings check it
    admin = TopicAdminSettings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="rnnrec-admin",
        kafka_sasl_password="s3cret",
        kafka_ssl_cafile=str(cafile),
    )
    assert admin.client_config() == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "rnnrec-admin",
        "sasl_plain_password": "s3cret",
        "ssl_cafile": str(cafile),
    }
    assert "s3cret" not in repr(admin)
    assert TopicAdminSettings().client_config() == {"security_protocol": "PLAINTEXT"}


class FakeAdmin:
    """The admin calls ensure_topics makes, answered like kafka-python 3 answers them."""

    def __init__(self) -> None:
        self.topics: dict[str, dict[str, Any]] = {}
        self.create_calls = 0

    def list_topics(self) -> list[str]:
        return list(self.topics)

    def create_topics(self, new_topics: dict[str, dict[str, Any]], **_: Any) -> None:
        from kafka.errors import TopicAlreadyExistsError

        for name, request in new_topics.items():
            self.create_calls += 1
            if name in self.topics:
                raise TopicAlreadyExistsError(name)
            self.topics[name] = {
                "partitions": request["num_partitions"],
                "rf": request["replication_factor"],
                "configs": {"cleanup.policy": "delete", **request["configs"]},
            }

    def describe_topics(self, topics: list[str] | None = None) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "error_code": 0,
                "partitions": [
                    {"partition_index": i, "replica_nodes": list(range(t["rf"]))}
                    for i in range(t["partitions"])
                ],
            }
            for name, t in self.topics.items()
            if topics is None or name in topics
        ]

    def describe_configs(self, config_resources: list[Any], **_: Any) -> dict[str, Any]:
        return {
            "topic": {
                r.name: {k: {"value": v} for k, v in self.topics[r.name]["configs"].items()}
                for r in config_resources
            }
        }


def test_ensure_creates_missing_then_is_idempotent() -> None:
    admin = FakeAdmin()
    specs = list(specs_by_name().values())
    first = ensure_topics(admin, specs)
    assert first.created == [s.name for s in specs] and not first.problems
    assert admin.topics["clickstream"]["partitions"] == 6
    assert admin.topics["model-updates"]["configs"]["cleanup.policy"] == "compact"
    second = ensure_topics(admin, specs)
    assert second.created == [] and second.ok == [s.name for s in specs]
    assert not second.problems and not second.warnings
    assert admin.create_calls == len(specs)


def test_existing_topics_are_checked_never_altered() -> None:
    admin = FakeAdmin()
    admin.topics["clickstream"] = {"partitions": 3, "rf": 1, "configs": {}}
    admin.topics["model-updates"] = {
        "partitions": 1,
        "rf": 1,
        "configs": {"cleanup.policy": "delete", "max.message.bytes": "1048588"},
    }
    report = ensure_topics(admin, list(specs_by_name().values()))
    assert "clickstream" not in report.created and "model-updates" not in report.created
    assert admin.topics["clickstream"]["partitions"] == 3  # untouched
    joined = "\n".join(report.problems)
    assert "clickstream: 3 partitions, rnnrec needs 6" in joined
    assert "model-updates: cleanup.policy=delete" in joined
    assert "model-updates: max.message.bytes=1048588" in joined
    assert "item-updates" in report.created


def test_low_replication_is_a_warning_not_a_failure() -> None:
    admin = FakeAdmin()
    specs = list(specs_by_name(replication_factor=3).values())
    for spec in specs:
        admin.topics[spec.name] = {
            "partitions": spec.partitions,
            "rf": 1,
            "configs": dict(spec.configs),
        }
    report = ensure_topics(admin, specs)
    assert not report.problems and len(report.warnings) == len(specs)
    assert "replication factor 1 < 3" in report.warnings[0]
