"""``rnnrec model list | publish | rollback | keygen``: model versions on ``model-updates``.

Every command reads its broker, topic and model name from the ``RNNREC_*`` settings
(`WorkerSettings`); errors are one line (``rnnrec: error: ...``), never a traceback.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from stream_app.settings import SettingsError, WorkerSettings, load_settings


def _settings() -> WorkerSettings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


@contextmanager
def _operator_errors(what: str) -> Iterator[None]:
    """Turn the failures an operator can fix into one-line click errors."""
    from kafka.errors import KafkaError

    from rnnrec_jax.artifact import rejection_reason
    from rnnrec_jax.checkpoint import CheckpointError
    from rnnrec_jax.signing import KeyFileError
    from stream_app.model_registry import RegistryError

    try:
        yield
    except (RegistryError, KeyFileError) as exc:
        raise click.ClickException(str(exc)) from None
    except CheckpointError as exc:
        message = " ".join(str(exc).split())
        raise click.ClickException(
            f"{what}: refused ({rejection_reason(exc)}): {message}"
        ) from None
    except KafkaError as exc:
        raise click.ClickException(f"{what}: Kafka: {type(exc).__name__}: {exc}") from None


@click.group()
def model() -> None:
    """Model versions on the model-updates topic: list, publish, roll back, keys."""


def _when(epoch: float | None) -> str:
    if not epoch:
        return "-"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _numeric_leaves(obj: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    if isinstance(obj, dict):
        for key in sorted(obj):
            yield from _numeric_leaves(obj[key], f"{prefix}{key}.")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield prefix.rstrip("."), float(obj)


def metrics_summary(metrics: Any, limit: int = 3) -> str:
    """A few metrics in one short string, ranking metrics (recall, mrr) first."""
    leaves = list(_numeric_leaves(metrics or {}))
    ranked = sorted(
        leaves, key=lambda kv: (not any(t in kv[0].lower() for t in ("recall", "mrr")), kv[0])
    )
    return " ".join(f"{k}={v:.4g}" for k, v in ranked[:limit]) or "-"


def decision_summary(decision: dict[str, Any] | None) -> str:
    """The trainer's decision record in a few words (``decision: reason``)."""
    if not decision:
        return "-"
    verdict = decision.get("decision", decision.get("action", "recorded"))
    reason = decision.get("reason")
    return f"{verdict}: {reason}" if reason else str(verdict)


def registry_rows(registry: Any) -> list[dict[str, Any]]:
    """One row per version (published, partial or decision-only), oldest first."""
    serving = registry.serving.version if registry.serving else None
    published = registry.published()
    others = sorted(
        (e for e in registry.versions.values() if not e.has_manifest),
        key=lambda e: e.last_timestamp_ms,
    )
    rows = []
    for entry in [*published, *others]:
        manifest = entry.manifest or {}
        count = entry.chunk_count
        present = sum(1 for i in entry.chunks if count is None or i < count)
        if entry.has_manifest:
            state = "complete" if entry.complete else "incomplete"
        else:
            state = "partial" if entry.chunks else "decision only"
        rows.append(
            {
                "version": entry.version,
                "serving": entry.version == serving,
                "created": manifest.get("created"),
                "parent": manifest.get("parent_version"),
                "chunks": f"{present}/{count if count is not None else '?'}",
                "state": state,
                "signed": entry.signed,
                "metrics": manifest.get("metrics") or {},
                "decision": entry.decision,
            }
        )
    return rows


@model.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (rows and pointer).")
def list_versions(as_json: bool) -> None:
    """List the versions on model-updates, which one is served, and decisions."""
    from stream_app.model_registry import read_registry

    settings = _settings()
    with _operator_errors("model list"):
        registry = read_registry(settings)
    if not registry.exists:
        raise click.ClickException(
            f"topic {registry.topic} does not exist: nothing was published yet "
            "(`rnnrec model publish PATH`)"
        )
    rows = registry_rows(registry)
    pointer = registry.serving
    if as_json:
        click.echo(
            json.dumps(
                {
                    "model": registry.model,
                    "topic": registry.topic,
                    "serving": None
                    if pointer is None
                    else {
                        "version": pointer.version,
                        "updated": pointer.updated,
                        "reason": pointer.reason,
                    },
                    "versions": rows,
                },
                sort_keys=True,
            )
        )
        return
    header = f"  {'VERSION':<16} {'CREATED':<20} {'PARENT':<14} {'CHUNKS':<9} {'STATE':<13} {'SIGNED':<6} {'METRICS':<40} DECISION"
    click.echo(header)
    for row in rows:
        click.echo(
            f"{'*' if row['serving'] else ' '} {row['version']:<16} {_when(row['created']):<20} "
            f"{row['parent'] or '-':<14} {row['chunks']:<9} {row['state']:<13} "
            f"{'yes' if row['signed'] else 'no':<6} {metrics_summary(row['metrics']):<40} "
            f"{decision_summary(row['decision'])}"
        )
    if pointer is None:
        click.echo(f"model {registry.model}: no serving version on {registry.topic}")
    else:
        click.echo(
            f"* serving {registry.model}/{pointer.version} since {_when(pointer.updated)} "
            f"({pointer.reason or 'no reason given'})"
        )


@model.command("publish")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--no-serve", is_flag=True, help="Publish without pointing workers at it.")
@click.option(
    "--signing-key",
    type=click.Path(path_type=Path),
    help="Ed25519 private key PEM (default: RNNREC_MODEL_SIGNING_KEY).",
)
def publish(path: Path, no_serve: bool, signing_key: Path | None) -> None:
    """Publish the checkpoint at PATH (written by `rnnrec train`) as a new version."""
    from tqdm import tqdm

    from rnnrec_jax.model_io import load_trained_model
    from stream_app.model_registry import publish_model

    settings = _settings()
    if not path.exists():
        raise click.ClickException(f"{path}: no such checkpoint directory")
    with _operator_errors(f"checkpoint {path}"):
        trained = load_trained_model(path)
    bar = tqdm(desc="chunks", unit="chunk", leave=False, disable=None)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        with _operator_errors("model publish"):
            version = publish_model(
                settings, trained, serve=not no_serve, signing_key=signing_key, progress=progress
            )
    finally:
        bar.close()
    note = "" if version == trained.version else f" (version {trained.version} was taken)"
    served = "not served (--no-serve)" if no_serve else "serving"
    click.echo(
        f"published {settings.model_name}/{version}{note} on "
        f"{settings.topic('model_updates')}: {served}"
    )


@model.command("rollback")
@click.option("--to", "version", required=True, help="The version to serve.")
@click.option("--reason", default="rollback", show_default=True, help="Kept in the pointer.")
def rollback(version: str, reason: str) -> None:
    """Point workers at an earlier version (validated first, as a worker would)."""
    from stream_app.model_registry import set_serving

    settings = _settings()
    with _operator_errors(f"version {version}"):
        set_serving(settings, version, reason)
    click.echo(f"serving {settings.model_name}/{version} ({reason})")


@model.command("keygen")
@click.argument("directory", type=click.Path(path_type=Path))
def keygen(directory: Path) -> None:
    """Write a new Ed25519 key pair for signing manifests into DIRECTORY."""
    from rnnrec_jax.signing import KeyFileError, write_keypair

    try:
        private, public = write_keypair(directory)
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"signing key (publishers, keep secret, 0600): {private}")
    click.echo(f"verify key (workers, RNNREC_MODEL_VERIFY_KEY): {public}")
