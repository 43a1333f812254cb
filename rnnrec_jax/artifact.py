"""A trained model as a self-describing, chunked artifact (no Kafka, no files).

`pack_model` turns a `TrainedModel` into a *manifest* (a JSON object) and the
*chunks* of its serialised params; `unpack_model` reverses it and refuses anything a
worker must not serve. The distribution layer (``stream_app.model_registry``) writes
the manifest and the chunks as records of the compacted ``model-updates`` topic.

Manifest fields (format ``rnnrec-artifact/1``)::

    format, model (name), version, parent_version, created (epoch s, packing time),
    trained (epoch s of the checkpoint, 0 when unknown),
    config: {format, model (ModelConfig JSON), train (TrainConfig JSON | null),
             purchase_calibration [scale, shift]},
    vocabulary: the ItemVocabulary JSON object (items in index order, capacity, counts),
    metrics, layout: {param path: {shape, dtype}},
    size, sha256 (of all param bytes), chunk_bytes, chunk_count, chunk_sha256 [..],
    signature (optional, added by `rnnrec_jax.signing.sign_manifest`)

The param bytes are `checkpoint.serialize_params` output (deterministic ``.npz``, no
pickle). Every refusal is a `checkpoint.CheckpointError` subclass carrying a short
``kind`` (``missing_chunk``, ``chunk_checksum``, ...) that workers use as a metrics
label; `rejection_reason` maps any exception to such a label.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from rnnrec_jax.checkpoint import (
    CheckpointError,
    ChecksumMismatch,
    CorruptCheckpoint,
    NonFiniteParams,
    ShapeMismatch,
    _key_name,
    deserialize_params,
    flatten_tree,
    serialize_params,
    sha256_hex,
)
from rnnrec_jax.config import ModelConfig, TrainConfig
from rnnrec_jax.data.vocabulary import ItemVocabulary
from rnnrec_jax.model_io import FORMAT as MODEL_FORMAT
from rnnrec_jax.model_io import TrainedModel, jsonable

__all__ = [
    "ARTIFACT_FORMAT",
    "ArtifactError",
    "ArtifactNonFinite",
    "ArtifactShapeMismatch",
    "BadSignature",
    "ChunkChecksumMismatch",
    "CorruptArtifact",
    "MalformedManifest",
    "MissingChunk",
    "TotalChecksumMismatch",
    "UnsignedArtifact",
    "VocabularyMismatch",
    "canonical_json",
    "check_layout",
    "expected_layout",
    "layout_of",
    "pack_model",
    "rejection_reason",
    "unpack_model",
]

ARTIFACT_FORMAT = "rnnrec-artifact/1"


# ------------------------------------------------------------------------- errors


class ArtifactError(CheckpointError):
    """A model artifact must not be served; ``kind`` names why (a metrics label)."""

    kind: ClassVar[str] = "invalid"


class MalformedManifest(ArtifactError):
    """The manifest is not an rnnrec artifact manifest (fields missing or of the wrong
    type, unknown format, a config that does not parse, or a name/version that differs
    from the record it was published under)."""

    kind = "malformed_manifest"


class MissingChunk(ArtifactError):
    """A chunk named by the manifest is absent (a publisher killed mid-write, or a
    chunk tombstoned): the version is incomplete."""

    kind = "missing_chunk"


class ChunkChecksumMismatch(ArtifactError, ChecksumMismatch):
    """A chunk's bytes differ from the sha256 the manifest lists for it."""

    kind = "chunk_checksum"


class TotalChecksumMismatch(ArtifactError, ChecksumMismatch):
    """The joined param bytes differ from the manifest's total size or sha256."""

    kind = "checksum"


class CorruptArtifact(ArtifactError, CorruptCheckpoint):
    """The param bytes do not parse, or there are more chunks than the manifest says."""

    kind = "corrupt"


class ArtifactShapeMismatch(ArtifactError, ShapeMismatch):
    """Params missing, extra, or of another shape/dtype than the config builds."""

    kind = "shape_mismatch"


class ArtifactNonFinite(ArtifactError, NonFiniteParams):
    """A parameter holds NaN or infinity."""

    kind = "non_finite"


class VocabularyMismatch(ArtifactError):
    """The vocabulary does not fit the model: capacity differs, more items than
    slots, duplicate or empty ids, or item tables of another row count."""

    kind = "vocabulary_mismatch"


class UnsignedArtifact(ArtifactError):
    """A verify key is configured but the manifest carries no signature."""

    kind = "unsigned"


class BadSignature(ArtifactError):
    """The manifest's signature does not verify with the configured public key
    (tampered manifest, or signed by another key)."""

    kind = "bad_signature"


_BASE_KINDS: tuple[tuple[type[BaseException], str], ...] = (
    (ChecksumMismatch, "checksum"),
    (ShapeMismatch, "shape_mismatch"),
    (NonFiniteParams, "non_finite"),
    (CorruptCheckpoint, "corrupt"),
    (CheckpointError, "invalid"),
)


def rejection_reason(exc: BaseException) -> str:
    """A short, bounded label for why an artifact was refused (for metrics).

    Args:
        exc: the exception raised while validating.

    Returns:
        The error's ``kind`` for artifact errors, a label for other checkpoint errors,
        ``"error"`` for anything else.
    """
    kind = getattr(exc, "kind", None)
    if isinstance(kind, str) and kind:
        return kind
    for cls, label in _BASE_KINDS:
        if isinstance(exc, cls):
            return label
    return "error"


# ------------------------------------------------------------------------- helpers


def canonical_json(obj: Any) -> bytes:
    """Sorted-key, compact UTF-8 JSON: the bytes that are hashed and signed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@functools.lru_cache(maxsize=16)
def _expected_tree(config_json: str) -> Any:
    import jax

    from rnnrec_jax import models

    cfg = ModelConfig.from_json(config_json)
    # Shapes only: eval_shape traces init without computing or compiling anything.
    return jax.eval_shape(lambda: models.init_params(cfg, jax.random.PRNGKey(0)))


def expected_layout(model_cfg: ModelConfig) -> dict[str, dict[str, Any]]:
    """The params layout a config builds: ``{path: {"shape": [...], "dtype": name}}``."""
    import jax

    tree = _expected_tree(model_cfg.to_json())
    layout: dict[str, dict[str, Any]] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        # The same key names as checkpoint.flatten_tree gives the real arrays.
        key = "/".join(_key_name(entry) for entry in path)
        layout[key] = {"shape": [int(d) for d in leaf.shape], "dtype": np.dtype(leaf.dtype).name}
    return layout


def layout_of(params: Any) -> dict[str, dict[str, Any]]:
    """The layout of real params, keyed as `expected_layout`."""
    return {
        key: {"shape": [int(d) for d in value.shape], "dtype": value.dtype.name}
        for key, value in flatten_tree(params).items()
    }


# ----------------------------------------------------------------------------- pack


def pack_model(
    model: TrainedModel, *, chunk_bytes: int, name: str = "", created: float | None = None
) -> tuple[dict[str, Any], list[bytes]]:
    """Serialise a model into a manifest and param chunks.

    Nothing is validated here (tests build bad artifacts with it); publishers check
    their own artifact with `unpack_model` before writing it anywhere.

    Args:
        model: the model (its ``version`` becomes the manifest's).
        chunk_bytes: largest chunk, in bytes (>= 1).
        name: the model name (the registry's ``<model>`` key part).
        created: packing time (default: now).

    Returns:
        ``(manifest, chunks)``; the manifest holds plain JSON types only.
    """
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    data = serialize_params(model.params)
    chunks = [data[i : i + chunk_bytes] for i in range(0, len(data), chunk_bytes)]
    manifest: dict[str, Any] = {
        "format": ARTIFACT_FORMAT,
        "model": name,
        "version": str(model.version),
        "parent_version": None if model.parent_version is None else str(model.parent_version),
        "created": time.time() if created is None else float(created),
        "trained": float(model.created or 0.0),
        "config": {
            "format": MODEL_FORMAT,
            "model": json.loads(model.model_cfg.to_json()),
            "train": json.loads(model.train_cfg.to_json()) if model.train_cfg else None,
            "purchase_calibration": [float(x) for x in model.purchase_calibration],
        },
        "vocabulary": json.loads(model.vocab.to_json()),
        "metrics": jsonable(dict(model.metrics or {})),
        "layout": layout_of(model.params),
        "size": len(data),
        "sha256": sha256_hex(data),
        "chunk_bytes": int(chunk_bytes),
        "chunk_count": len(chunks),
        "chunk_sha256": [sha256_hex(c) for c in chunks],
    }
    # A JSON round trip: what a reader parses is exactly what was signed.
    return json.loads(canonical_json(manifest)), chunks


# --------------------------------------------------------------------------- unpack


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "format": str,
    "model": str,
    "version": str,
    "created": (int, float),
    "config": dict,
    "vocabulary": dict,
    "layout": dict,
    "size": int,
    "sha256": str,
    "chunk_count": int,
    "chunk_sha256": list,
}


def _check_manifest(manifest: Any) -> None:
    if not isinstance(manifest, Mapping):
        raise MalformedManifest("the manifest is not a JSON object")
    if manifest.get("format") != ARTIFACT_FORMAT:
        raise MalformedManifest(
            f"unknown artifact format {manifest.get('format')!r} (expected {ARTIFACT_FORMAT})"
        )
    for key, kind in _REQUIRED.items():
        value = manifest.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise MalformedManifest(f"manifest field {key!r} is missing or of the wrong type")
    count = manifest["chunk_count"]
    hashes = manifest["chunk_sha256"]
    if count < 1 or len(hashes) != count or not all(isinstance(h, str) for h in hashes):
        raise MalformedManifest(f"chunk_count {count} does not match {len(hashes)} chunk hashes")
    if manifest["size"] < 0:
        raise MalformedManifest("manifest size is negative")


def _join_chunks(manifest: Mapping[str, Any], chunks: Sequence[bytes | None]) -> bytes:
    count = manifest["chunk_count"]
    missing = [i for i in range(count) if i >= len(chunks) or chunks[i] is None]
    if missing:
        raise MissingChunk(f"{len(missing)} of {count} chunks missing (first: chunk {missing[0]})")
    if len(chunks) > count:
        raise CorruptArtifact(f"{len(chunks)} chunks, the manifest lists {count}")
    for i, (chunk, expected) in enumerate(zip(chunks, manifest["chunk_sha256"], strict=True)):
        assert chunk is not None
        if sha256_hex(chunk) != expected:
            raise ChunkChecksumMismatch(
                f"chunk {i} sha256 {sha256_hex(chunk)[:12]}... != manifest {expected[:12]}..."
            )
    data = b"".join(c for c in chunks if c is not None)
    if len(data) != manifest["size"] or sha256_hex(data) != manifest["sha256"]:
        raise TotalChecksumMismatch(
            f"params are {len(data)} bytes with sha256 {sha256_hex(data)[:12]}..., the "
            f"manifest says {manifest['size']} bytes, {manifest['sha256'][:12]}..."
        )
    return data


def _configs(manifest: Mapping[str, Any]) -> tuple[ModelConfig, TrainConfig | None, tuple]:
    config = manifest["config"]
    if config.get("format") != MODEL_FORMAT:
        raise MalformedManifest(f"config format {config.get('format')!r} != {MODEL_FORMAT}")
    try:
        model_cfg = ModelConfig.from_json(config["model"])
        train_cfg = TrainConfig.from_json(config["train"]) if config.get("train") else None
        scale, shift = (float(x) for x in config.get("purchase_calibration", (1.0, 0.0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedManifest(f"config does not parse: {type(exc).__name__}: {exc}") from None
    if not (math.isfinite(scale) and math.isfinite(shift)):
        raise ArtifactNonFinite("purchase calibration is not finite")
    return model_cfg, train_cfg, (scale, shift)


def _vocabulary(manifest: Mapping[str, Any], model_cfg: ModelConfig) -> ItemVocabulary:
    payload = manifest["vocabulary"]
    items = payload.get("items")
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise VocabularyMismatch("vocabulary items must be a list of non-empty id strings")
    if len(set(items)) != len(items):
        raise VocabularyMismatch(f"vocabulary has {len(items) - len(set(items))} duplicate ids")
    capacity = payload.get("capacity")
    if capacity != model_cfg.item_capacity:
        raise VocabularyMismatch(
            f"vocabulary capacity {capacity} != model item_capacity {model_cfg.item_capacity}"
        )
    if len(items) > model_cfg.item_capacity - 1:
        raise VocabularyMismatch(
            f"{len(items)} items do not fit capacity {model_cfg.item_capacity} (slot 0 is padding)"
        )
    try:
        return ItemVocabulary.from_json(json.dumps(payload))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise VocabularyMismatch(f"vocabulary does not load: {exc}") from None


def check_layout(found: Mapping[str, Any], model_cfg: ModelConfig) -> None:
    """Refuse params whose layout (`layout_of`) differs from what ``model_cfg`` builds.

    Raises:
        ArtifactShapeMismatch: a parameter missing, extra or of another shape/dtype.
    """
    expected = expected_layout(model_cfg)
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        raise ArtifactShapeMismatch(
            f"params differ from the config: missing {missing[:3]}, extra {extra[:3]}"
        )
    for key, want in expected.items():
        got = found[key]
        if not isinstance(got, Mapping) or (
            list(got.get("shape", ())) != want["shape"] or got.get("dtype") != want["dtype"]
        ):
            raise ArtifactShapeMismatch(
                f"parameter {key!r} is {got}, the config builds {want['dtype']}{want['shape']}"
            )


def unpack_model(
    manifest: Mapping[str, Any],
    chunks: Sequence[bytes | None],
    *,
    public_key: Any = None,
) -> TrainedModel:
    """Rebuild and fully validate a model from its manifest and chunks.

    Checks, in order: the signature (when ``public_key`` is given: unsigned or wrongly
    signed manifests are refused), manifest fields, every chunk present, each chunk's
    sha256, total size and sha256, configs, vocabulary (capacity = model capacity,
    fits, unique non-empty ids), the params layout against what the config builds,
    the arrays against that layout, finite values.

    Args:
        manifest: the manifest (parsed JSON).
        chunks: chunk ``i`` at position ``i``; ``None`` for a chunk not found.
        public_key: an Ed25519 public key (`rnnrec_jax.signing.load_public_key`), or
            None to skip signature checks.

    Returns:
        The model (numpy params; ``sha256`` is the manifest's param sha256).

    Raises:
        ArtifactError: a subclass per failure, with a one-line message and a ``kind``.
    """
    if public_key is not None:
        from rnnrec_jax.signing import verify_manifest

        verify_manifest(manifest, public_key)
    _check_manifest(manifest)
    data = _join_chunks(manifest, chunks)
    model_cfg, train_cfg, calibration = _configs(manifest)
    vocab = _vocabulary(manifest, model_cfg)
    check_layout(manifest["layout"], model_cfg)
    try:
        params = deserialize_params(data, _expected_tree(model_cfg.to_json()), check_finite=True)
    except ShapeMismatch as exc:
        raise ArtifactShapeMismatch(str(exc)) from None
    except NonFiniteParams as exc:
        raise ArtifactNonFinite(str(exc)) from None
    except CheckpointError as exc:
        raise CorruptArtifact(str(exc)) from None
    for table in ("item_out", "item_in", "item_bias"):
        if table in params and np.shape(params[table])[0] != vocab.capacity:
            raise VocabularyMismatch(
                f"{table} has {np.shape(params[table])[0]} rows, vocabulary capacity "
                f"{vocab.capacity}"
            )
    parent = manifest.get("parent_version")
    metrics = manifest.get("metrics")
    return TrainedModel(
        params=params,
        model_cfg=model_cfg,
        vocab=vocab,
        version=manifest["version"],
        train_cfg=train_cfg,
        purchase_calibration=calibration,
        metrics=dict(metrics) if isinstance(metrics, Mapping) else {},
        parent_version=None if parent is None else str(parent),
        created=float(manifest["created"]),
        sha256=manifest["sha256"],
        path=None,
    )
