"""Create rnnrec's Kafka topics with the layout the service relies on.

``python -m stream_app.topics`` (the Kubernetes topics Job runs it) creates every
missing topic and checks the ones that exist. It never changes an existing topic:
adding partitions to ``clickstream`` would move users to other partitions, away
from their state, so a mismatch is reported with what to fix and the exit status is
1. Running it again is harmless (idempotent).

Layout (names and counts come from `WorkerSettings`, ``RNNREC_*``):

* ``clickstream``, ``recommendations``, ``purchase-predictions``,
  ``clickstream-dlq``, ``clickstream-repartition``: ``RNNREC_PARTITIONS`` partitions
  (default 6), keyed by user.
* ``item-updates``: compacted (latest availability per item), same partitions.
* ``model-updates``: compacted, one partition so manifest, chunks and serving
  pointer are read in the order the trainer wrote them, and ``max.message.bytes``
  large enough for a model chunk.
* Replication ``RNNREC_REPLICATION_FACTOR``; ``min.insync.replicas`` 2 when there
  are at least 3 replicas (one broker may fail and writes are still acknowledged by
  two), else 1.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import click
from pydantic import Field, ValidationError
from pydantic_settings import SettingsConfigDict

from stream_app.kafka_security import KafkaSecuritySettings, kafka_python_kwargs
from stream_app.settings import SettingsError, WorkerSettings, load_settings

MODEL_UPDATES_PARTITIONS = 1
"""One partition: consumers must see a version's manifest and chunks before the
serving pointer that names it, and Kafka orders records only within a partition."""

COMPACTED = "compact"


class TopicAdminSettings(KafkaSecuritySettings):
    """Settings of the topic tool beyond `WorkerSettings` (environment prefix ``RNNREC_``).

    The Kafka security fields are `KafkaSecuritySettings`, the same definition
    `WorkerSettings` and every other rnnrec client use.
    """

    model_config = SettingsConfigDict(env_prefix="RNNREC_", extra="ignore", frozen=True)

    model_updates_max_message_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024 * 1024,
        le=256 * 1024 * 1024,
        description="max.message.bytes of model-updates: the largest model chunk record.",
    )

    def client_config(self) -> dict[str, Any]:
        """kafka-python connection options for these settings (no secrets logged).

        Returns:
            Keyword arguments for `KafkaAdminClient` and the other kafka-python clients.
        """
        return kafka_python_kwargs(self)


@dataclass(frozen=True)
class TopicSpec:
    """One topic as rnnrec needs it."""

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str] = field(default_factory=dict)

    @property
    def compacted(self) -> bool:
        """True when old values per key are compacted away rather than expired."""
        return self.configs.get("cleanup.policy") == COMPACTED

    def create_request(self) -> dict[str, Any]:
        """This spec in kafka-python's ``create_topics`` dict form (``NewTopic`` is deprecated there)."""
        return {
            "num_partitions": self.partitions,
            "replication_factor": self.replication_factor,
            "configs": dict(self.configs),
        }


def min_insync_replicas(replication_factor: int) -> int:
    """Replicas that must acknowledge a write (``acks=all``).

    Args:
        replication_factor: replicas per partition.

    Returns:
        2 from 3 replicas up (tolerates one broker down), else 1.
    """
    return 2 if replication_factor >= 3 else 1


def topic_specs(settings: WorkerSettings, admin: TopicAdminSettings) -> list[TopicSpec]:
    """The seven topics rnnrec uses, with partitions, replication and configs.

    Args:
        settings: topic names (with ``topic_prefix``), partitions, replication factor.
        admin: the model chunk size bound.

    Returns:
        Specs in a stable order: clickstream, recommendations, purchase-predictions,
        clickstream-dlq, clickstream-repartition, model-updates, item-updates.
    """
    rf = settings.replication_factor
    durable = {"min.insync.replicas": str(min_insync_replicas(rf))}
    by_user = settings.partitions
    return [
        TopicSpec(settings.topic("clickstream"), by_user, rf, dict(durable)),
        TopicSpec(settings.topic("recommendations"), by_user, rf, dict(durable)),
        TopicSpec(settings.topic("purchase_predictions"), by_user, rf, dict(durable)),
        TopicSpec(settings.topic("dlq"), by_user, rf, dict(durable)),
        TopicSpec(settings.topic("clickstream_repartition"), by_user, rf, dict(durable)),
        TopicSpec(
            settings.topic("model_updates"),
            MODEL_UPDATES_PARTITIONS,
            rf,
            {
                **durable,
                "cleanup.policy": COMPACTED,
                "max.message.bytes": str(admin.model_updates_max_message_bytes),
            },
        ),
        TopicSpec(
            settings.topic("item_updates"), by_user, rf, {**durable, "cleanup.policy": COMPACTED}
        ),
    ]


class TopicAdmin(Protocol):
    """The part of kafka-python's `KafkaAdminClient` this module uses (a fake in tests)."""

    def list_topics(self) -> list[str]: ...

    def describe_topics(self, topics: list[str] | None = None) -> list[dict[str, Any]]: ...

    def describe_configs(
        self, config_resources: list[Any], include_synonyms: bool = False, config_filter: str = ...
    ) -> dict[str, Any]: ...

    def create_topics(self, new_topics: Any, **kwargs: Any) -> Any: ...


@dataclass
class TopicReport:
    """What `ensure_topics` did and found."""

    created: list[str] = field(default_factory=list)
    ok: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Existing topics that differ in a way rnnrec cannot work with; each says what to do."""
    warnings: list[str] = field(default_factory=list)


def ensure_topics(admin: TopicAdmin, specs: Sequence[TopicSpec]) -> TopicReport:
    """Create the missing topics and check the existing ones against their specs.

    Existing topics are never altered; differences that matter become `problems`.

    Args:
        admin: a connected admin client.
        specs: what to ensure (`topic_specs`).

    Returns:
        The report; ``problems`` empty means every topic is usable as is.
    """
    from kafka.errors import TopicAlreadyExistsError

    report = TopicReport()
    existing = set(admin.list_topics())
    for spec in specs:
        if spec.name in existing:
            continue
        try:
            admin.create_topics({spec.name: spec.create_request()}, wait_for_metadata=True)
            report.created.append(spec.name)
        except TopicAlreadyExistsError:
            existing.add(spec.name)  # created concurrently (a second Job): check it below
    to_check = [s for s in specs if s.name in existing]
    if to_check:
        _check_existing(admin, to_check, report)
    return report


def _check_existing(admin: TopicAdmin, specs: Sequence[TopicSpec], report: TopicReport) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType

    described = {t["name"]: t for t in admin.describe_topics([s.name for s in specs])}
    configs = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, s.name) for s in specs], config_filter="all"
    ).get("topic", {})
    for spec in specs:
        partitions = described.get(spec.name, {}).get("partitions", [])
        values = {k: (v or {}).get("value") for k, v in configs.get(spec.name, {}).items()}
        found = len(partitions)
        before = len(report.problems)
        if found != spec.partitions:
            report.problems.append(
                f"{spec.name}: {found} partitions, rnnrec needs {spec.partitions}. Changing the "
                "count moves keys between partitions (and users away from their state): "
                "recreate the topic, or set RNNREC_PARTITIONS to match it everywhere."
            )
        replicas = min((len(p.get("replica_nodes") or []) for p in partitions), default=0)
        if partitions and replicas < spec.replication_factor:
            report.warnings.append(
                f"{spec.name}: replication factor {replicas} < {spec.replication_factor} "
                "(RNNREC_REPLICATION_FACTOR); reassign partitions to add replicas."
            )
        if spec.compacted and values.get("cleanup.policy") != COMPACTED:
            report.problems.append(
                f"{spec.name}: cleanup.policy={values.get('cleanup.policy')}, must be "
                f"'{COMPACTED}' (old versions would expire instead of the latest staying): "
                f"kafka-configs --alter --entity-type topics --entity-name {spec.name} "
                f"--add-config cleanup.policy={COMPACTED}"
            )
        wanted_size = spec.configs.get("max.message.bytes")
        found_size = values.get("max.message.bytes")
        if wanted_size and (found_size is None or int(found_size) < int(wanted_size)):
            report.problems.append(
                f"{spec.name}: max.message.bytes={found_size}, needs at least {wanted_size} "
                f"for model chunks: kafka-configs --alter --entity-type topics --entity-name "
                f"{spec.name} --add-config max.message.bytes={wanted_size}"
            )
        if len(report.problems) == before:
            report.ok.append(spec.name)


def connect(
    settings: WorkerSettings, admin_settings: TopicAdminSettings, wait_s: float
) -> Any:  # KafkaAdminClient
    """An admin client, retrying while the brokers are not reachable yet (bounded).

    Args:
        settings: the bootstrap servers.
        admin_settings: security options.
        wait_s: give up after this many seconds.

    Returns:
        A connected `KafkaAdminClient`.

    Raises:
        click.ClickException: no broker answered within ``wait_s``.
    """
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError, RetriableError

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return KafkaAdminClient(
                bootstrap_servers=settings.bootstrap_servers.split(","),
                client_id="rnnrec-topics",
                request_timeout_ms=30_000,
                bootstrap_timeout_ms=10_000,
                **admin_settings.client_config(),
            )
        except RetriableError as exc:
            if time.monotonic() >= deadline:
                raise click.ClickException(
                    f"no Kafka broker answered at {settings.bootstrap_servers} within "
                    f"{wait_s:.0f} s ({type(exc).__name__})"
                ) from None
            time.sleep(5)
        except KafkaError as exc:  # authentication, TLS, configuration: retrying will not help
            raise click.ClickException(f"cannot connect to Kafka: {exc}") from None


def _load() -> tuple[WorkerSettings, TopicAdminSettings]:
    try:
        settings = load_settings()
        admin_settings = TopicAdminSettings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        if not first["loc"]:  # a check across fields: its message names the variables
            raise click.ClickException(message) from None
        name = f"RNNREC_{str(first['loc'][0]).upper()}"
        raise click.ClickException(f"{name}: {message}") from None
    return settings, admin_settings


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--dry-run", is_flag=True, help="Print the topics that would be ensured; connect to nothing."
)
@click.option(
    "--wait-s",
    type=click.FloatRange(0, 3600),
    default=60.0,
    show_default=True,
    help="How long to retry while no broker answers (a Job may start before Kafka).",
)
def main(dry_run: bool, wait_s: float) -> None:
    """Create rnnrec's Kafka topics from the RNNREC_* settings; check the existing ones."""
    settings, admin_settings = _load()
    specs = topic_specs(settings, admin_settings)
    if dry_run:
        for spec in specs:
            configs = ",".join(f"{k}={v}" for k, v in sorted(spec.configs.items()))
            click.echo(
                f"{spec.name}\tpartitions={spec.partitions}\t"
                f"replication={spec.replication_factor}\t{configs}"
            )
        return
    from kafka.errors import KafkaError

    admin = connect(settings, admin_settings, wait_s)
    try:
        report = ensure_topics(admin, specs)
    except KafkaError as exc:
        # Refusals an operator fixes (replication above the broker count, no create
        # permission): one line in the Job's log, not a traceback.
        detail = re.search(r"error_message='([^']+)'", str(exc))  # the broker's own words
        raise click.ClickException(
            f"Kafka refused: {type(exc).__name__}: {detail.group(1) if detail else exc}"
        ) from None
    finally:
        admin.close()
    for name in report.created:
        click.echo(f"created {name}")
    for name in report.ok:
        click.echo(f"ok      {name}")
    for line in report.warnings:
        click.echo(f"warning {line}", err=True)
    for line in report.problems:
        click.echo(f"problem {line}", err=True)
    if report.problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
