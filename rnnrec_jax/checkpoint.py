"""Model checkpoints: crash-safe save/load of params, optimiser state and metadata.

Layout of a checkpoint root (one per model)::

    root/
      LATEST                 # name of the current checkpoint directory (atomic pointer)
      ckpt-<version>/
        arrays.npz           # params and optimiser state, flattened key paths, no pickle
        meta.json            # version, parent, created, vocabulary, config, metrics, sha256
      .tmp-<version>-<rand>/ # a save in progress (or killed); removed by the next save

A save writes a fresh temporary directory, fsyncs it, renames it to ``ckpt-<version>``
and only then swaps ``LATEST`` with an atomic ``os.replace``. A kill at any point leaves
``LATEST`` naming a complete checkpoint. Old checkpoints beyond ``keep`` are deleted after
the pointer moved.

``arrays.npz`` holds the bytes of :func:`serialize_params` over a tree
``{"params": ..., "opt_state": ...}``; these bytes are deterministic (sorted keys, fixed
zip timestamps), so the same params give the same sha256 wherever they are serialised.
``meta.json`` carries the sha256 and size of ``arrays.npz`` and a sha256 over itself (all
fields but that one), so any changed byte is detected on load.

The Kafka distribution layer uses :func:`serialize_params` / :func:`deserialize_params`
directly (no filesystem) and chunks the bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import secrets
import shutil
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "ChecksumMismatch",
    "CorruptCheckpoint",
    "NonFiniteParams",
    "ShapeMismatch",
    "deserialize_params",
    "flatten_tree",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "save_checkpoint",
    "serialize_params",
    "sha256_hex",
    "unflatten_tree",
]

FORMAT_VERSION = 1
POINTER = "LATEST"
ARRAYS_FILE = "arrays.npz"
META_FILE = "meta.json"
_DIR_PREFIX = "ckpt-"
_TMP_PREFIX = ".tmp-"
_SEP = "/"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed zip timestamps keep the bytes deterministic
_DTYPES_ENTRY = "__dtypes__"  # names of dtypes npz cannot describe (e.g. bfloat16)
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


# ------------------------------------------------------------------------- errors


class CheckpointError(Exception):
    """A checkpoint or serialised model cannot be used; keep serving the previous model."""


class ChecksumMismatch(CheckpointError):
    """The bytes differ from what was written (bit rot, tampering, mixed-up files).

    Operator: do not serve this artifact. Re-publish or restore it from its source.
    """


class ShapeMismatch(CheckpointError):
    """The arrays do not fit the model: a parameter is missing, extra, or has another
    shape or dtype than the running model's template.

    Operator: the artifact was made for a different model configuration or vocabulary
    capacity; check the config and capacity it was trained with.
    """


class CorruptCheckpoint(CheckpointError):
    """A file is missing, truncated or unreadable (e.g. a partial copy or a bad disk).

    Operator: the previous checkpoint (``LATEST``) is still intact; re-run the save or
    copy the checkpoint again.
    """


class NonFiniteParams(CheckpointError):
    """A parameter holds NaN or infinity, usually from diverged training.

    Operator: do not serve it; look at the training run that produced it.
    """


# -------------------------------------------------------------- pytree <-> flat keys


def _key_name(entry: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            name = str(getattr(entry, attr))
            break
    else:
        name = str(entry)
    if not name or _SEP in name or name == _DTYPES_ENTRY:
        raise ValueError(f"tree key {name!r} cannot be stored (empty, contains '/' or reserved)")
    return name


def flatten_tree(tree: Any) -> dict[str, np.ndarray]:
    """Flatten a pytree to ``{"a/b/c": array}`` using its key paths.

    Dict keys, sequence indices and attribute names become path parts, so nested dicts
    (flax params) and tuples/namedtuples (optax states) are both covered.

    Args:
        tree: a pytree of arrays.

    Returns:
        Flat dict of numpy arrays keyed by ``/``-joined paths.
    """
    flat: dict[str, np.ndarray] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        key = _SEP.join(_key_name(entry) for entry in path)
        if key in flat:
            raise ValueError(f"two leaves map to the key {key!r}")
        flat[key] = np.asarray(leaf)
    return flat


def unflatten_tree(flat: Mapping[str, np.ndarray], template: Any = None) -> Any:
    """Rebuild a pytree from :func:`flatten_tree` output.

    Args:
        flat: ``{"a/b": array}``.
        template: a pytree of the expected structure (arrays or ``jax.ShapeDtypeStruct``).
            Without it the result is nested dicts (sequences come back as dicts keyed
            ``"0"``, ``"1"``, ...), which is exact for flax params.

    Returns:
        The pytree.

    Raises:
        ShapeMismatch: a template is given and keys, shapes or dtypes differ.
    """
    if template is None:
        root: dict[str, Any] = {}
        for key, value in flat.items():
            node = root
            *parents, last = key.split(_SEP)
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
        return root
    expected = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    expected_keys = set()
    for path, leaf in expected[0]:
        key = _SEP.join(_key_name(entry) for entry in path)
        expected_keys.add(key)
        if key not in flat:
            raise ShapeMismatch(f"parameter {key!r} is missing from the artifact")
        value = flat[key]
        want_shape = tuple(np.shape(leaf))
        want_dtype = np.dtype(leaf.dtype) if hasattr(leaf, "dtype") else value.dtype
        if value.shape != want_shape or value.dtype != want_dtype:
            raise ShapeMismatch(
                f"parameter {key!r} is {value.dtype}{list(value.shape)}, "
                f"the model expects {want_dtype}{list(want_shape)}"
            )
        leaves.append(value)
    extra = sorted(set(flat) - expected_keys)
    if extra:
        raise ShapeMismatch(f"the artifact has parameters the model lacks: {extra[:5]}")
    return jax.tree_util.tree_unflatten(expected[1], leaves)


# ------------------------------------------------------------------- serialisation


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _write_npz(flat: Mapping[str, np.ndarray]) -> bytes:
    """Deterministic ``.npz`` bytes: sorted entries, stored, fixed timestamps."""
    buf = io.BytesIO()
    odd_dtypes: dict[str, str] = {}
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key in sorted(flat):
            array = np.asarray(flat[key], order="C")  # ascontiguousarray would make 0-d 1-d
            if array.dtype.kind not in "biufc":
                # e.g. bfloat16: npz would store an anonymous void type; keep raw bits.
                odd_dtypes[key] = array.dtype.name
                array = array.view(f"u{array.dtype.itemsize}")
            member = io.BytesIO()
            np.lib.format.write_array(member, array, allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(key + ".npy", _ZIP_EPOCH), member.getvalue())
        if odd_dtypes:
            meta = np.frombuffer(json.dumps(odd_dtypes, sort_keys=True).encode(), np.uint8)
            member = io.BytesIO()
            np.lib.format.write_array(member, meta, allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(_DTYPES_ENTRY + ".npy", _ZIP_EPOCH), member.getvalue())
    return buf.getvalue()


def _read_npz(data: bytes, what: str) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            flat = {key: npz[key] for key in npz.files}
    except Exception as exc:  # zip, header and pickle refusals all mean "unreadable"
        raise CorruptCheckpoint(f"{what} is unreadable: {type(exc).__name__}: {exc}") from exc
    if _DTYPES_ENTRY in flat:
        odd = json.loads(flat.pop(_DTYPES_ENTRY).tobytes().decode())
        for key, name in odd.items():
            flat[key] = flat[key].view(jnp.dtype(name))
    return flat


def _check_finite(flat: Mapping[str, np.ndarray], what: str) -> None:
    for key in sorted(flat):
        value = flat[key]
        if not jnp.issubdtype(value.dtype, jnp.inexact):
            continue
        # bfloat16 and other ml_dtypes floats: check them widened to float32.
        bad = ~np.isfinite(value if value.dtype.kind in "fc" else value.astype(np.float32))
        if bad.any():
            raise NonFiniteParams(
                f"{what}: parameter {key!r} has {int(bad.sum())} NaN/inf values of {value.size}"
            )


def serialize_params(params: Any) -> bytes:
    """Serialise a pytree of arrays to deterministic ``.npz`` bytes (no pickle).

    Args:
        params: a pytree of arrays (e.g. flax params).

    Returns:
        The bytes; the same params always give the same bytes.
    """
    return _write_npz(flatten_tree(params))


def deserialize_params(
    data: bytes,
    template: Any = None,
    *,
    expected_sha256: str | None = None,
    check_finite: bool = True,
) -> Any:
    """Inverse of :func:`serialize_params`, with the checks a worker needs before serving.

    Args:
        data: bytes from :func:`serialize_params`.
        template: expected pytree (arrays or ``jax.ShapeDtypeStruct``); ``None`` returns
            nested dicts.
        expected_sha256: hex sha256 the bytes must have (e.g. from a manifest).
        check_finite: reject NaN/inf.

    Returns:
        The pytree of numpy arrays.

    Raises:
        ChecksumMismatch, CorruptCheckpoint, ShapeMismatch, NonFiniteParams.
    """
    if expected_sha256 is not None and sha256_hex(data) != expected_sha256:
        raise ChecksumMismatch(
            f"model bytes sha256 {sha256_hex(data)[:12]}... != expected {expected_sha256[:12]}..."
        )
    flat = _read_npz(data, "model bytes")
    tree = unflatten_tree(flat, template)
    if check_finite:
        _check_finite(flat, "model bytes")
    return tree


# ---------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint."""

    path: Path
    params: Any
    opt_state: Any | None
    vocabulary: dict[str, Any]
    config: dict[str, Any]
    metrics: dict[str, Any]
    version: int | str
    parent_version: int | str | None
    created: float
    sha256: str


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _meta_digest(meta: Mapping[str, Any]) -> str:
    return sha256_hex(_canonical_json({k: v for k, v in meta.items() if k != "sha256"}))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _dir_name(version: int | str) -> str:
    text = str(version)
    if not _VERSION_RE.match(text):
        raise ValueError(f"version {text!r} must match {_VERSION_RE.pattern}")
    return _DIR_PREFIX + text


def _read_pointer(root: Path) -> str | None:
    try:
        name = (root / POINTER).read_text().strip()
    except FileNotFoundError:
        return None
    return name or None


def latest_checkpoint(root: str | os.PathLike[str]) -> Path | None:
    """The checkpoint directory ``LATEST`` points to, or ``None`` when nothing was saved."""
    root = Path(root)
    name = _read_pointer(root)
    return None if name is None else root / name


def list_checkpoints(root: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoint directories under ``root``, oldest first (by created time)."""
    root = Path(root)
    found: list[tuple[float, str, Path]] = []
    if not root.is_dir():
        return []
    for path in root.iterdir():
        if not path.name.startswith(_DIR_PREFIX) or not (path / META_FILE).is_file():
            continue
        try:
            created = float(json.loads((path / META_FILE).read_text())["created"])
        except (ValueError, KeyError, TypeError, OSError):
            created = -math.inf  # unreadable: oldest, pruned first
        found.append((created, path.name, path))
    return [path for _, _, path in sorted(found)]


def _json_ready(obj: Any, what: str) -> Any:
    try:
        return json.loads(_canonical_json(obj))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be JSON-serialisable: {exc}") from exc


def _created(ckpt_dir: Path) -> float | None:
    try:
        return float(json.loads((ckpt_dir / META_FILE).read_text())["created"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _was_committed(root: Path, ckpt_dir: Path) -> bool:
    """Whether ``ckpt_dir`` may have been the current checkpoint once: it is not newer
    than the current one. A save killed before its pointer swap leaves a newer one."""
    current = _read_pointer(root)
    if current is None:
        return False
    mine, theirs = _created(ckpt_dir), _created(root / current)
    return mine is not None and theirs is not None and mine <= theirs


def _stored_arrays_digest(ckpt_dir: Path) -> str | None:
    try:
        return str(json.loads((ckpt_dir / META_FILE).read_text())["arrays"]["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_checkpoint(
    root: str | os.PathLike[str],
    params: Any,
    *,
    version: int | str,
    vocabulary: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    opt_state: Any = None,
    parent_version: int | str | None = None,
    created: float | None = None,
    keep: int | None = 3,
) -> Path:
    """Save a checkpoint atomically and make it the one ``LATEST`` points to.

    Args:
        root: checkpoint root directory (created if missing).
        params: pytree of arrays.
        version: this checkpoint's version (``[A-Za-z0-9._-]``, used in the dir name).
        vocabulary: JSON-able vocabulary (raw item id -> index, capacity, ...).
        config: JSON-able model/training config.
        metrics: JSON-able validation metrics.
        opt_state: optional optimiser state pytree.
        parent_version: the version this one was fine-tuned from.
        created: epoch seconds (default: now).
        keep: keep this many newest checkpoints (``None``: all); the current one is
            never deleted.

    Returns:
        The new checkpoint directory.

    Raises:
        FileExistsError: ``version`` is the current checkpoint, or an earlier one that
            holds other params (versions are immutable).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = _dir_name(version)
    final = root / name
    if _read_pointer(root) == name:
        raise FileExistsError(f"{final} is the current checkpoint; versions are immutable")
    for stale in root.glob(_TMP_PREFIX + "*"):
        # Left by a killed save; a single writer per root is assumed.
        shutil.rmtree(stale, ignore_errors=True)

    tree: dict[str, Any] = {"params": params}
    if opt_state is not None:
        tree["opt_state"] = opt_state
    flat = flatten_tree(tree)
    # Refuse to persist what a worker would refuse to load.
    _check_finite({k: v for k, v in flat.items() if k.startswith("params/")}, "params")
    arrays = _write_npz(flat)
    meta: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "version": version,
        "parent_version": parent_version,
        "created": time.time() if created is None else float(created),
        "vocabulary": _json_ready(dict(vocabulary or {}), "vocabulary"),
        "config": _json_ready(dict(config or {}), "config"),
        "metrics": _json_ready(dict(metrics or {}), "metrics"),
        "has_opt_state": opt_state is not None,
        "arrays": {"file": ARRAYS_FILE, "size": len(arrays), "sha256": sha256_hex(arrays)},
    }
    meta["sha256"] = _meta_digest(meta)
    committed = final.exists() and _was_committed(root, final)
    if committed and _stored_arrays_digest(final) != meta["arrays"]["sha256"]:
        raise FileExistsError(
            f"{final} holds other params under version {version!r}; versions are "
            "immutable: choose another version"
        )

    tmp = root / f"{_TMP_PREFIX}{name}-{secrets.token_hex(4)}"
    tmp.mkdir()
    _write_file(tmp / ARRAYS_FILE, arrays)
    _write_file(tmp / META_FILE, _canonical_json(meta))
    _fsync_dir(tmp)
    if final.exists():
        # Same version left by a save killed before its pointer swap (never current),
        # or the same params saved again.
        trash = root / f"{_TMP_PREFIX}old-{name}-{secrets.token_hex(4)}"
        os.replace(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
    os.replace(tmp, final)
    _fsync_dir(root)

    pointer_tmp = root / f"{_TMP_PREFIX}{POINTER}-{secrets.token_hex(4)}"
    _write_file(pointer_tmp, name.encode())
    os.replace(pointer_tmp, root / POINTER)  # the commit point
    _fsync_dir(root)

    if keep is not None:
        _prune(root, keep, current=name)
    return final


def _prune(root: Path, keep: int, current: str) -> None:
    if keep < 1:
        raise ValueError("keep must be >= 1")
    old = [p for p in list_checkpoints(root) if p.name != current]
    for path in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(path, ignore_errors=True)


def _read_meta(ckpt_dir: Path) -> dict[str, Any]:
    try:
        raw = (ckpt_dir / META_FILE).read_bytes()
    except FileNotFoundError as exc:
        raise CorruptCheckpoint(f"{ckpt_dir}: {META_FILE} is missing") from exc
    try:
        meta = json.loads(raw)
        if not isinstance(meta, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        raise CorruptCheckpoint(f"{ckpt_dir}: {META_FILE} is not valid JSON ({exc})") from exc
    if "sha256" not in meta or "arrays" not in meta:
        raise CorruptCheckpoint(f"{ckpt_dir}: {META_FILE} lacks sha256/arrays fields")
    if _meta_digest(meta) != meta["sha256"]:
        raise ChecksumMismatch(f"{ckpt_dir}: {META_FILE} was modified after it was written")
    if meta.get("format") != FORMAT_VERSION:
        raise CorruptCheckpoint(f"{ckpt_dir}: unknown checkpoint format {meta.get('format')!r}")
    return meta


def load_checkpoint(
    path: str | os.PathLike[str],
    template: Any = None,
    *,
    opt_state_template: Any = None,
    load_opt_state: bool = True,
) -> Checkpoint:
    """Load and verify a checkpoint.

    Checks, in order: ``meta.json`` parses and matches its own sha256; ``arrays.npz`` has
    the recorded size and sha256; the arrays parse without pickle; they fit ``template``;
    params are finite.

    Args:
        path: a checkpoint root (follows ``LATEST``) or a ``ckpt-<version>`` directory.
        template: expected params pytree (arrays or ``jax.ShapeDtypeStruct``); ``None``
            returns nested dicts.
        opt_state_template: expected optimiser state structure; without it the state
            comes back as nested dicts.
        load_opt_state: ``False`` skips the optimiser state (serving).

    Returns:
        :class:`Checkpoint`.

    Raises:
        CheckpointError: one of its subclasses, with a one-line reason.
    """
    path = Path(path)
    if not (path / META_FILE).exists() and (path / POINTER).exists():
        pointed = latest_checkpoint(path)
        assert pointed is not None
        path = pointed
    if not path.is_dir():
        raise CorruptCheckpoint(f"{path}: no checkpoint here")
    meta = _read_meta(path)
    arrays_meta = meta["arrays"]
    try:
        data = (path / arrays_meta["file"]).read_bytes()
    except FileNotFoundError as exc:
        raise CorruptCheckpoint(f"{path}: {arrays_meta['file']} is missing") from exc
    if len(data) != arrays_meta["size"]:
        raise CorruptCheckpoint(
            f"{path}: {arrays_meta['file']} is {len(data)} bytes, expected "
            f"{arrays_meta['size']} (truncated or partially copied)"
        )
    if sha256_hex(data) != arrays_meta["sha256"]:
        raise ChecksumMismatch(f"{path}: {arrays_meta['file']} sha256 differs from meta.json")
    flat = _read_npz(data, f"{path}/{arrays_meta['file']}")
    param_flat = _subtree(flat, "params")
    params = unflatten_tree(param_flat, template)
    _check_finite(param_flat, str(path))
    opt_state = None
    if load_opt_state and meta.get("has_opt_state"):
        opt_state = unflatten_tree(_subtree(flat, "opt_state"), opt_state_template)
    return Checkpoint(
        path=path,
        params=params,
        opt_state=opt_state,
        vocabulary=meta["vocabulary"],
        config=meta["config"],
        metrics=meta["metrics"],
        version=meta["version"],
        parent_version=meta["parent_version"],
        created=float(meta["created"]),
        sha256=meta["sha256"],
    )


def _subtree(flat: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    head = prefix + _SEP
    return {k[len(head) :]: v for k, v in flat.items() if k.startswith(head)}
