"""Model versions on the compacted ``model-updates`` topic: publish, read, validate, serve.

Keys (UTF-8), values:

* ``<model>/<version>/chunk/<i>``: raw param bytes, chunk ``i`` (`rnnrec_jax.artifact`).
* ``<model>/<version>/manifest``: the manifest JSON, Ed25519-signed when a signing key
  is configured (`rnnrec_jax.signing`).
* ``<model>/<version>/decision``: the trainer's publish/reject decision (JSON, optional;
  kept when versions are pruned, shown by ``rnnrec model list``).
* ``<model>/serving``: ``{"version", "updated", "reason"}``, the version to serve.

**Write order** (`publish_model`): all chunks, flush, then the manifest, flush, then
the serving pointer, flush; each flush waits for every acknowledgement. The topic has
one partition, so readers see records in that order. A publisher killed at any point
therefore leaves either nothing new served (chunks or chunks and manifest without a
pointer) or a complete version served. Readers also never trust the order: a version
is served only when its manifest and every chunk it lists are present and verify.

**Version names**: `publish_model` keeps ``model.version`` when no manifest with that
name is on the topic (leftover chunks of a killed publication do not count: they are
overwritten and stale extra chunks tombstoned). Otherwise it names the version
``v<unix ms>`` (bumped until unused), so a version name always identifies one set of
params, which is what workers compare carries by.

**Pruning**: after publishing, versions beyond ``model_keep_versions`` (oldest by
manifest ``created``) are tombstoned (manifest first, then chunks), never the served
one nor the versions its pointer names as ``previous``.

**Fallbacks**: the pointer record also names the versions it named before
(``previous``, newest first, at most ``model_keep_versions``), so a worker that starts
while the pointed version is refused serves the newest earlier one that validates:
the version its running peers kept serving when they refused the same record. Chunks left by killed publications are tombstoned after an hour. Decisions stay.

The serving pointer is not signed: whoever may write the topic can point workers at
any version that is on it; every such version still has to verify (signature when a
verify key is set, checksums, shapes, finite values, vocabulary).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnrec_jax.artifact import (
    ArtifactError,
    MalformedManifest,
    canonical_json,
    pack_model,
    unpack_model,
)
from rnnrec_jax.checkpoint import CheckpointError
from rnnrec_jax.model_io import TrainedModel
from stream_app.kafka_security import kafka_python_kwargs
from stream_app.settings import WorkerSettings

__all__ = [
    "MissingManifest",
    "Registry",
    "RegistryError",
    "ServingPointer",
    "UnknownVersion",
    "VersionEntry",
    "ensure_model_topic",
    "load_serving_model_from_topic",
    "load_verify_key",
    "load_version",
    "model_updates_consumer",
    "publish_decision",
    "publish_model",
    "read_registry",
    "set_serving",
    "validate_version",
]

log = logging.getLogger(__name__)

SERVING = "serving"
MANIFEST = "manifest"
CHUNK = "chunk"
DECISION = "decision"
_FETCH_BYTES = 64 * 1024 * 1024
_STALE_PARTIAL_MS = 3600 * 1000  # chunks without a manifest older than this are leftovers
_ACK_TIMEOUT_S = 60.0
_MAX_PREVIOUS = 32  # previous versions a pointer record may name


class RegistryError(Exception):
    """The registry cannot do what was asked; the message says what to fix (one line)."""


class UnknownVersion(RegistryError):
    """No manifest of this version is on the topic."""


class MissingManifest(ArtifactError):
    """The serving pointer names a version whose manifest is not on the topic (never
    published completely, or pruned)."""

    kind = "missing_manifest"


# --------------------------------------------------------------------------- state


@dataclass
class VersionEntry:
    """Everything the topic holds for one version."""

    version: str
    manifest: dict[str, Any] | None = None
    manifest_invalid: bool = False
    chunks: dict[int, bytes] = field(default_factory=dict)
    decision: dict[str, Any] | None = None
    offsets: dict[str, int] = field(default_factory=dict)
    """Live record offsets by key suffix: together they identify this content."""
    last_timestamp_ms: int = 0

    @property
    def has_manifest(self) -> bool:
        """A manifest record (valid JSON or not) is on the topic."""
        return self.manifest is not None or self.manifest_invalid

    @property
    def chunk_count(self) -> int | None:
        """Chunks the manifest lists (None without a usable manifest)."""
        count = (self.manifest or {}).get("chunk_count")
        return count if isinstance(count, int) and 0 <= count <= 10_000_000 else None

    def chunk_list(self) -> list[bytes | None]:
        """Chunk ``i`` at position ``i`` for the manifest's count (None where absent)."""
        return [self.chunks.get(i) for i in range(self.chunk_count or 0)]

    @property
    def complete(self) -> bool:
        """Manifest and every chunk it lists are present (not yet verified)."""
        count = self.chunk_count
        return count is not None and all(i in self.chunks for i in range(count))

    @property
    def fingerprint(self) -> tuple[tuple[str, int], ...]:
        """Changes whenever a record of this version is written or tombstoned."""
        return tuple(sorted(self.offsets.items()))

    @property
    def created(self) -> float:
        """The manifest's creation time (0 without one)."""
        return _seconds((self.manifest or {}).get("created"))

    @property
    def signed(self) -> bool:
        """The manifest carries a signature (not verified here)."""
        return isinstance((self.manifest or {}).get("signature"), Mapping)

    @property
    def empty(self) -> bool:
        """Nothing of this version is left on the topic."""
        return not self.offsets


@dataclass(frozen=True)
class ServingPointer:
    """The ``<model>/serving`` record."""

    version: str
    updated: float
    reason: str
    offset: int
    previous: tuple[str, ...] = ()
    """Versions the pointer named before, newest first (the fallbacks of a worker that
    starts while ``version`` is refused: the versions its peers still serve)."""

    def candidates(self) -> list[str]:
        """``version``, then ``previous``: the order a starting worker tries them in."""
        return [self.version, *(v for v in self.previous if v != self.version)]


@dataclass
class Registry:
    """One model's view of the topic, built by applying its records in order."""

    model: str
    topic: str
    exists: bool = True
    versions: dict[str, VersionEntry] = field(default_factory=dict)
    serving: ServingPointer | None = None

    def apply(self, key: bytes | None, value: bytes | None, offset: int, ts_ms: int = 0) -> None:
        """Apply one record (a ``None`` value is a tombstone). Other models' keys and
        keys of an unknown shape are ignored."""
        if key is None:
            return
        text = key.decode("utf-8", "replace")
        prefix = self.model + "/"
        if not text.startswith(prefix):
            return
        rest = text[len(prefix) :]
        if rest == SERVING:
            self.serving = _parse_pointer(value, offset)
            return
        parts = rest.split("/")
        if len(parts) == 2 and parts[1] in (MANIFEST, DECISION):
            version, suffix = parts
        # isdecimal() alone accepts other scripts' digits that int() reads differently.
        elif len(parts) == 3 and parts[1] == CHUNK and parts[2].isascii() and parts[2].isdigit():
            version, suffix = parts[0], f"{CHUNK}/{int(parts[2])}"
        else:
            return
        entry = self.versions.setdefault(version, VersionEntry(version))
        if value is None:
            entry.offsets.pop(suffix, None)
        else:
            entry.offsets[suffix] = offset
            entry.last_timestamp_ms = max(entry.last_timestamp_ms, ts_ms)
        if suffix == MANIFEST:
            entry.manifest, entry.manifest_invalid = _parse_object(value)
        elif suffix == DECISION:
            entry.decision = _parse_object(value)[0]
        elif value is None:
            entry.chunks.pop(int(parts[2]), None)
        else:
            entry.chunks[int(parts[2])] = value
        if entry.empty:
            del self.versions[version]

    def published(self) -> list[VersionEntry]:
        """Versions with a manifest, oldest first (by manifest ``created``, then offset)."""
        entries = [e for e in self.versions.values() if e.has_manifest]
        return sorted(entries, key=lambda e: (e.created, e.offsets.get(MANIFEST, -1)))


def _parse_object(value: bytes | None) -> tuple[dict[str, Any] | None, bool]:
    if value is None:
        return None, False
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return None, True
    return (parsed, False) if isinstance(parsed, dict) else (None, True)


def _seconds(value: Any) -> float:
    """A JSON time in seconds, 0.0 unless a finite number (ints too large for a float
    included: every reader of the topic must survive any record)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return 0.0
    try:
        seconds = float(value)
    except OverflowError:
        return 0.0
    return seconds if math.isfinite(seconds) else 0.0


def _parse_pointer(value: bytes | None, offset: int) -> ServingPointer | None:
    parsed, _ = _parse_object(value)
    if parsed is None or not isinstance(parsed.get("version"), str):
        return None  # a tombstone or garbage pointer: nothing is designated
    previous = parsed.get("previous")
    return ServingPointer(
        version=parsed["version"],
        updated=_seconds(parsed.get("updated")),
        reason=str(parsed.get("reason", "")),
        offset=offset,
        # Bounded: any record must be harmless to every reader.
        previous=tuple(v for v in previous[:_MAX_PREVIOUS] if isinstance(v, str))
        if isinstance(previous, list)
        else (),
    )


# ---------------------------------------------------------------------- validation


def load_verify_key(settings: WorkerSettings) -> Any:
    """The Ed25519 public key versions must be signed with, or None (no verification).

    The configured verify key; without one, the public half of the signing key. A
    process that signs (the online trainer) must not load an unsigned or foreign
    version and publish a signed child of it: that would turn anything written to
    model-updates into a version every verifying worker accepts.

    Raises:
        rnnrec_jax.signing.KeyFileError: the key file is unreadable or not a key.
    """
    from rnnrec_jax.signing import load_private_key, load_public_key

    if settings.model_verify_key is not None:
        return load_public_key(settings.model_verify_key)
    if settings.model_signing_key is not None:
        return load_private_key(settings.model_signing_key).public_key()
    return None


def validate_version(registry: Registry, version: str, public_key: Any = None) -> TrainedModel:
    """Fully validate one version held in ``registry`` and rebuild the model.

    Checks the signature first (when ``public_key`` is given), then that the manifest
    was published under its own model name and version, then everything
    `rnnrec_jax.artifact.unpack_model` checks.

    Raises:
        rnnrec_jax.checkpoint.CheckpointError: an `ArtifactError` with a ``kind``.
    """
    entry = registry.versions.get(version)
    if entry is None or not entry.has_manifest:
        raise MissingManifest(f"version {version!r} has no manifest on {registry.topic}")
    if entry.manifest is None:
        raise MalformedManifest(f"the manifest of {version!r} is not a JSON object")
    manifest = entry.manifest
    if public_key is not None:
        from rnnrec_jax.signing import verify_manifest

        verify_manifest(manifest, public_key)
    if manifest.get("version") != version or manifest.get("model") != registry.model:
        # A (signed) manifest copied under another key must not pass as that version.
        raise MalformedManifest(
            f"record {registry.model}/{version} holds the manifest of "
            f"{manifest.get('model')!r}/{manifest.get('version')!r}"
        )
    return unpack_model(manifest, entry.chunk_list())


# ------------------------------------------------------------------------- reading


def model_updates_consumer(settings: WorkerSettings) -> Any:
    """A kafka-python consumer without a group, sized for model chunks (not assigned)."""
    from kafka import KafkaConsumer

    return KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers.split(","),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=_FETCH_BYTES,
        fetch_max_bytes=_FETCH_BYTES,
        **kafka_python_kwargs(settings),
    )


def read_registry(settings: WorkerSettings, *, timeout_s: float = 60.0) -> Registry:
    """Read ``model-updates`` from the beginning to its current end (no consumer group).

    Args:
        settings: broker, topic name, model name.
        timeout_s: give up after this long.

    Returns:
        The registry (``exists`` False when the topic does not exist).

    Raises:
        RegistryError: the end was not reached within ``timeout_s``.
    """
    from kafka import TopicPartition

    topic = settings.topic("model_updates")
    registry = Registry(settings.model_name, topic)
    consumer = model_updates_consumer(settings)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            registry.exists = False
            return registry
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise RegistryError(f"could not read {topic} to its end within {timeout_s:.0f} s")
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    registry.apply(r.key, r.value, r.offset, r.timestamp)
        return registry
    finally:
        consumer.close()


def load_version(settings: WorkerSettings, version: str) -> TrainedModel:
    """Load and fully validate one version from the topic.

    Raises:
        UnknownVersion: no manifest of ``version`` on the topic.
        rnnrec_jax.checkpoint.CheckpointError: the version does not validate.
    """
    registry = read_registry(settings)
    _require_version(registry, version)
    return validate_version(registry, version, load_verify_key(settings))


def load_serving_model_from_topic(settings: WorkerSettings) -> TrainedModel | None:
    """The version the serving pointer names, validated; if it is refused, the newest
    of its ``previous`` versions that validates (what the workers serve then). None
    when there is no pointer.

    Raises:
        rnnrec_jax.checkpoint.CheckpointError: no version the pointer names validates
            (the pointed version's error).
    """
    registry = read_registry(settings)
    if registry.serving is None:
        return None
    public_key = load_verify_key(settings)
    first_error: Exception | None = None
    for version in registry.serving.candidates():
        try:
            return validate_version(registry, version, public_key)
        except CheckpointError as exc:
            first_error = first_error or exc
            log.warning("model version %s refused: %s", version, exc)
    assert first_error is not None
    raise first_error


def _require_version(registry: Registry, version: str) -> VersionEntry:
    entry = registry.versions.get(version)
    if entry is None or not entry.has_manifest:
        known = ", ".join(e.version for e in registry.published()) or "none"
        raise UnknownVersion(
            f"unknown version {version!r} of model {registry.model!r} on {registry.topic} "
            f"(published: {known})"
        )
    return entry


# ------------------------------------------------------------------------- writing


def ensure_model_topic(settings: WorkerSettings) -> int:
    """Create ``model-updates`` (compacted, one partition) if missing; check it if not.

    Returns:
        The topic's ``max.message.bytes`` rnnrec sizes records against.

    Raises:
        RegistryError: the existing topic is unusable (not compacted, too small).
    """
    import click

    from stream_app.topics import TopicAdminSettings, connect, ensure_topics, topic_specs

    admin_settings = TopicAdminSettings()
    topic = settings.topic("model_updates")
    spec = next(s for s in topic_specs(settings, admin_settings) if s.name == topic)
    try:
        admin = connect(settings, admin_settings, wait_s=10.0)
    except click.ClickException as exc:
        raise RegistryError(exc.format_message()) from None
    from kafka.errors import KafkaError

    try:
        report = ensure_topics(admin, [spec])
    except KafkaError as exc:
        # Least privilege: a trainer may write the topic without DescribeConfigs or
        # Create (the topics Job made it); a missing topic then fails the write itself.
        log.warning("cannot check %s (%s); writing to it as it is", topic, exc)
        return admin_settings.model_updates_max_message_bytes
    finally:
        admin.close()
    if report.problems:
        raise RegistryError(report.problems[0])
    return admin_settings.model_updates_max_message_bytes


def _producer(settings: WorkerSettings, max_bytes: int) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=settings.bootstrap_servers.split(","),
        acks="all",
        linger_ms=5,
        max_request_size=max_bytes,
        **kafka_python_kwargs(settings),
    )


def _send_all(producer: Any, topic: str, records: list[tuple[str, bytes | None]]) -> None:
    """Send and wait until the broker acknowledged every record (raises on failure)."""
    futures = [producer.send(topic, key=k.encode("utf-8"), value=v) for k, v in records]
    producer.flush()
    for future in futures:
        future.get(timeout=_ACK_TIMEOUT_S)


def _send_chunks(
    producer: Any,
    topic: str,
    records: list[tuple[str, bytes | None]],
    progress: Callable[[int, int], None] | None = None,
) -> None:
    # In groups, so a progress callback sees a big model's upload advance.
    step = 16
    for start in range(0, len(records), step):
        _send_all(producer, topic, records[start : start + step])
        if progress is not None:
            progress(min(start + step, len(records)), len(records))


def _send_manifest(producer: Any, topic: str, key: str, manifest: bytes) -> None:
    _send_all(producer, topic, [(key, manifest)])


def _send_pointer(producer: Any, topic: str, key: str, pointer: bytes) -> None:
    _send_all(producer, topic, [(key, pointer)])


def _previous_versions(registry: Registry, version: str, keep: int) -> list[str]:
    """The versions a new pointer to ``version`` names as ``previous``: the current
    pointer's version, then its own previous ones; at most ``keep``."""
    current = registry.serving
    if current is None:
        return []
    chain = [v for v in current.candidates() if v != version]
    return list(dict.fromkeys(chain))[: max(0, min(keep, _MAX_PREVIOUS))]


def _pointer_value(version: str, reason: str, previous: list[str]) -> bytes:
    return canonical_json(
        {"version": version, "updated": time.time(), "reason": reason, "previous": previous}
    )


def _unused_version(registry: Registry, wanted: str) -> str:
    from rnnrec_jax.checkpoint import _VERSION_RE

    def taken(name: str) -> bool:
        entry = registry.versions.get(name)
        return entry is not None and entry.has_manifest

    if wanted and _VERSION_RE.match(wanted) and not taken(wanted):
        return wanted
    stamp = int(time.time() * 1000)
    while taken(f"v{stamp}"):
        stamp += 1
    return f"v{stamp}"


def publish_model(
    settings: WorkerSettings,
    model: TrainedModel,
    *,
    serve: bool = True,
    signing_key: Path | None = None,
    reason: str = "publish",
    progress: Callable[[int, int], None] | None = None,
) -> str:
    """Publish a model version on ``model-updates`` and (by default) serve it.

    Order: chunks, then the manifest (signed when a key is configured), then the
    serving pointer, each acknowledged before the next (see the module docstring);
    then older versions beyond ``model_keep_versions`` are tombstoned. The artifact is
    validated exactly as a worker would before anything is written.

    Args:
        settings: broker, topic, ``model_name``, ``model_chunk_bytes``,
            ``model_keep_versions``, ``model_signing_key``.
        model: the model; its ``version`` is kept unless already published.
        serve: write the serving pointer (workers swap to it).
        signing_key: private key PEM; overrides ``settings.model_signing_key``.
        reason: recorded in the serving pointer.
        progress: called with (chunks written, chunks) while uploading.

    Returns:
        The published version name.

    Raises:
        RegistryError: the topic is unusable or a record is too large.
        rnnrec_jax.signing.KeyFileError: the signing key cannot be loaded.
        rnnrec_jax.checkpoint.CheckpointError: the model itself would be refused.
        kafka.errors.KafkaError: the broker did not acknowledge a write.
    """
    key_path = signing_key or settings.model_signing_key
    private_key = None
    if key_path is not None:
        from rnnrec_jax.signing import load_private_key

        private_key = load_private_key(key_path)
    max_bytes = ensure_model_topic(settings)
    topic = settings.topic("model_updates")
    registry = read_registry(settings)
    version = _unused_version(registry, str(model.version))
    manifest, chunks = pack_model(
        dataclasses.replace(model, version=version),
        chunk_bytes=settings.model_chunk_bytes,
        name=settings.model_name,
    )
    public_key = None
    if private_key is not None:
        from rnnrec_jax.signing import sign_manifest

        manifest = sign_manifest(manifest, private_key)
        public_key = private_key.public_key()
    # Never publish what a worker would refuse.
    unpack_model(manifest, chunks, public_key=public_key)
    manifest_bytes = canonical_json(manifest)
    largest = max(len(manifest_bytes), settings.model_chunk_bytes)
    if largest + 1024 > max_bytes:
        raise RegistryError(
            f"a {largest}-byte record does not fit {topic}'s max.message.bytes {max_bytes}: "
            "lower RNNREC_MODEL_CHUNK_BYTES or raise RNNREC_MODEL_UPDATES_MAX_MESSAGE_BYTES"
        )
    base = f"{settings.model_name}/{version}"
    chunk_records: list[tuple[str, bytes | None]] = [
        (f"{base}/{CHUNK}/{i}", chunk) for i, chunk in enumerate(chunks)
    ]
    leftover = registry.versions.get(version)
    if leftover is not None:  # chunks of a killed publication under the same name
        chunk_records += [
            (f"{base}/{CHUNK}/{i}", None) for i in sorted(leftover.chunks) if i >= len(chunks)
        ]
    keep_versions = settings.model_keep_versions
    if serve:
        previous = _previous_versions(registry, version, keep_versions)
        serving_chain = [version, *previous]
    else:
        serving_chain = registry.serving.candidates() if registry.serving else []
    producer = _producer(settings, max_bytes)
    try:
        _send_chunks(producer, topic, chunk_records, progress)
        _send_manifest(producer, topic, f"{base}/{MANIFEST}", manifest_bytes)
        if serve:
            _send_pointer(
                producer,
                topic,
                f"{settings.model_name}/{SERVING}",
                _pointer_value(version, reason, previous),
            )
        # This process's view now includes the new version (pruning counts it).
        registry.apply(f"{base}/{MANIFEST}".encode(), manifest_bytes, -1, int(time.time() * 1000))
        # Never prune what a worker may serve: the pointed version and its fallbacks.
        _prune(producer, settings, registry, keep={version, *serving_chain})
    finally:
        producer.close()
    log.info(
        "published %s/%s (%d chunks, served=%s)", settings.model_name, version, len(chunks), serve
    )
    return version


def _prune(producer: Any, settings: WorkerSettings, registry: Registry, keep: set[str]) -> None:
    published = registry.published()
    newest = {e.version for e in published[-settings.model_keep_versions :]}
    tombstones: list[tuple[str, bytes | None]] = []
    now_ms = int(time.time() * 1000)
    for entry in registry.versions.values():
        if entry.version in keep or entry.version in newest:
            continue
        if not entry.has_manifest and now_ms - entry.last_timestamp_ms < _STALE_PARTIAL_MS:
            continue  # maybe a publication in progress elsewhere
        base = f"{settings.model_name}/{entry.version}"
        if MANIFEST in entry.offsets:
            tombstones.append((f"{base}/{MANIFEST}", None))  # first: the version is gone
        tombstones += [(f"{base}/{CHUNK}/{i}", None) for i in sorted(entry.chunks)]
    if tombstones:
        _send_all(producer, registry.topic, tombstones)
        log.info("tombstoned %d records of old model versions", len(tombstones))


def set_serving(settings: WorkerSettings, version: str, reason: str) -> None:
    """Point workers at ``version`` (rollback), after validating it as a worker would.

    Raises:
        UnknownVersion: no manifest of ``version`` on the topic.
        rnnrec_jax.checkpoint.CheckpointError: the version does not validate.
    """
    registry = read_registry(settings)
    _require_version(registry, version)
    validate_version(registry, version, load_verify_key(settings))
    producer = _producer(settings, 1024 * 1024)
    try:
        _send_pointer(
            producer,
            registry.topic,
            f"{settings.model_name}/{SERVING}",
            _pointer_value(
                version, reason, _previous_versions(registry, version, settings.model_keep_versions)
            ),
        )
    finally:
        producer.close()
    log.info("serving pointer of %s set to %s (%s)", settings.model_name, version, reason)


def publish_decision(settings: WorkerSettings, version: str, decision: Mapping[str, Any]) -> None:
    """Record a trainer decision about ``version`` (``<model>/<version>/decision``).

    Args:
        settings: broker, topic, model name.
        version: the candidate's version name.
        decision: JSON-able; ``rnnrec model list`` shows its ``decision`` and
            ``reason`` fields (e.g. ``{"decision": "reject", "reason": "worse"}``).
    """
    from rnnrec_jax.checkpoint import _VERSION_RE

    if not _VERSION_RE.match(version):
        raise RegistryError(f"version {version!r} must match {_VERSION_RE.pattern}")
    max_bytes = ensure_model_topic(settings)
    producer = _producer(settings, max_bytes)
    try:
        key = f"{settings.model_name}/{version}/{DECISION}"
        _send_all(producer, settings.topic("model_updates"), [(key, canonical_json(decision))])
    finally:
        producer.close()
