"""``rnnrec item block | unblock | list``: item availability on the ``item-updates`` topic.

Workers follow the compacted topic (`stream_app.item_updates`): a blocked item is
absent from every recommendation of the next batch on. Broker, topic and bounds
come from the ``RNNREC_*`` settings; errors are one line, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager

import click

from stream_app.settings import SettingsError, WorkerSettings, load_settings


def _settings() -> WorkerSettings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


@contextmanager
def _kafka_errors(what: str) -> Iterator[None]:
    from kafka.errors import KafkaError

    try:
        yield
    except KafkaError as exc:
        text = str(exc).removeprefix(f"{type(exc).__name__}: ")
        raise click.ClickException(f"{what}: Kafka: {type(exc).__name__}: {text}") from None
    except TimeoutError as exc:
        raise click.ClickException(f"{what}: {exc}") from None


def _check_item_id(settings: WorkerSettings, item_id: str) -> None:
    if not item_id or len(item_id) > settings.max_id_length:
        raise click.UsageError(f"ITEM_ID must be 1-{settings.max_id_length} characters")


def _ensure_topic(settings: WorkerSettings) -> str:
    """The item-updates topic, created (compacted) when missing and allowed."""
    from kafka import KafkaConsumer

    from stream_app.kafka_io import create_topics
    from stream_app.kafka_security import kafka_python_kwargs
    from stream_app.topics import COMPACTED, min_insync_replicas

    topic = settings.topic("item_updates")
    security = kafka_python_kwargs(settings)
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, **security)
    try:
        exists = topic in consumer.topics()
    finally:
        consumer.close()
    if exists:
        return topic
    if not settings.create_topics:
        raise click.ClickException(
            f"topic {topic} does not exist: run the topics Job (python -m stream_app.topics) "
            "or set RNNREC_CREATE_TOPICS=true"
        )
    create_topics(
        settings.bootstrap_servers,
        [topic],
        partitions=settings.partitions,
        configs={
            "cleanup.policy": COMPACTED,
            "min.insync.replicas": str(min_insync_replicas(settings.replication_factor)),
        },
        security=security,
        replication_factor=settings.replication_factor,
    )
    return topic


def _send(settings: WorkerSettings, item_id: str, value: bytes | None) -> str:
    from stream_app.kafka_io import produce
    from stream_app.kafka_security import kafka_python_kwargs

    topic = _ensure_topic(settings)
    produce(
        settings.bootstrap_servers,
        topic,
        [(item_id.encode("utf-8"), value)],  # type: ignore[list-item]  # None: a tombstone
        security=kafka_python_kwargs(settings),
    )
    return topic


def _when(epoch: float) -> str:
    try:
        return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    except (OverflowError, OSError, ValueError):  # a producer's odd ts: show it raw
        return str(epoch)


@click.group()
def item() -> None:
    """Item availability on item-updates: block, unblock, list."""


@item.command("block")
@click.argument("item_id")
@click.option("--reason", default="", help="Why (kept on the topic, shown by 'item list').")
def block(item_id: str, reason: str) -> None:
    """Never recommend ITEM_ID (from the workers' next batch on)."""
    from stream_app.item_updates import ItemUpdate

    settings = _settings()
    _check_item_id(settings, item_id)
    if len(reason) > 256:
        raise click.UsageError("--reason must be at most 256 characters")
    update = ItemUpdate(item_id, available=False, blocked=True, reason=reason, ts=time.time())
    with _kafka_errors("item block"):
        topic = _send(settings, item_id, update.to_json())
    click.echo(f"blocked {item_id} on {topic}")


@item.command("unblock")
@click.argument("item_id")
def unblock(item_id: str) -> None:
    """Make ITEM_ID available again (a tombstone: compaction forgets the item)."""
    settings = _settings()
    _check_item_id(settings, item_id)
    with _kafka_errors("item unblock"):
        topic = _send(settings, item_id, None)
    click.echo(f"unblocked {item_id} on {topic}")


@item.command("list")
def list_items() -> None:
    """List the items that are unavailable now, with their flags and reasons."""
    from stream_app.item_updates import read_catalogue

    settings = _settings()
    with _kafka_errors("item list"):
        catalogue = read_catalogue(settings)
    topic = settings.topic("item_updates")
    if catalogue is None:
        click.echo(f"no unavailable items ({topic} does not exist)")
        return
    if not catalogue.entries:
        click.echo(f"no unavailable items on {topic}")
        return
    rows = [("ITEM", "FLAGS", "SINCE", "REASON")]
    for item_id in sorted(catalogue.entries):
        update = catalogue.entries[item_id]
        flags = [
            name
            for name, on in (
                ("unavailable", not update.available),
                ("blocked", update.blocked),
                ("out_of_stock", update.out_of_stock),
            )
            if on
        ]
        since = _when(update.ts)
        rows.append((item_id, ",".join(flags), since, update.reason or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        click.echo(
            "  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True))
            + "  "
            + row[3]
        )
    click.echo(f"{len(catalogue.entries)} unavailable items on {topic}")
