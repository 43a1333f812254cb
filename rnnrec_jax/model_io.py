"""A trained model as one verified artifact: params, configs, vocabulary, calibration.

This is the unit that `rnnrec train` writes, `rnnrec evaluate` reads, and the stream
worker serves. It sits on `checkpoint` (atomic writes, checksums) and adds the
model-level meaning: which config built the params and which items the rows are.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnnrec_jax.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from rnnrec_jax.config import ModelConfig, TrainConfig
from rnnrec_jax.data.vocabulary import ItemVocabulary

FORMAT = "rnnrec-model/1"


class ModelArtifactError(CheckpointError):
    """The checkpoint is intact but is not a usable rnnrec model (wrong format,
    vocabulary larger than the model's capacity, missing config). Retrain or publish
    a model written by `rnnrec train`."""


@dataclass(frozen=True)
class TrainedModel:
    """A loaded, verified model ready for evaluation or serving."""

    params: dict[str, Any]
    model_cfg: ModelConfig
    vocab: ItemVocabulary
    version: str
    train_cfg: TrainConfig | None = None
    purchase_calibration: tuple[float, float] = (1.0, 0.0)
    metrics: dict[str, Any] = field(default_factory=dict)
    parent_version: str | None = None
    created: float = 0.0
    sha256: str = ""
    path: Path | None = None


def as_item_vocabulary(
    vocab: Any, capacity: int, counts: np.ndarray | None = None
) -> ItemVocabulary:
    """An `ItemVocabulary` from a vocabulary object or a dict ``item id -> index``.

    Args:
        vocab: an ItemVocabulary, or a dict mapping ids to the indices 1..n.
        capacity: the model's item capacity (index slots, padding included).
        counts: training event counts by index (length >= n + 1) for a dict: the
            online trainer's eviction order reads them (without, every count is 0).

    Returns:
        The vocabulary with the same id -> index mapping.
    """
    if isinstance(vocab, ItemVocabulary):
        return vocab
    ordered = sorted(vocab.items(), key=lambda kv: kv[1])
    indices = [idx for _, idx in ordered]
    if indices != list(range(1, len(indices) + 1)):
        raise ModelArtifactError("vocabulary indices must be exactly 1..n")
    by_item = None
    if counts is not None:
        by_item = np.rint(np.asarray(counts)[1 : len(indices) + 1]).astype(np.int64)
    return ItemVocabulary([str(k) for k, _ in ordered], capacity=capacity, counts=by_item)


def save_trained_model(
    root: str | os.PathLike[str],
    params: dict[str, Any],
    model_cfg: ModelConfig,
    vocab: Any,
    *,
    version: int | str,
    train_cfg: TrainConfig | None = None,
    purchase_calibration: tuple[float, float] = (1.0, 0.0),
    metrics: dict[str, Any] | None = None,
    parent_version: int | str | None = None,
    keep: int | None = 3,
    item_counts: np.ndarray | None = None,
) -> Path:
    """Write a model atomically under ``root`` and point ``LATEST`` at it.

    ``item_counts``: training event counts by index, kept with a dict vocabulary.

    Returns:
        The new checkpoint directory.
    """
    item_vocab = as_item_vocabulary(vocab, model_cfg.item_capacity, item_counts)
    if item_vocab.capacity != model_cfg.item_capacity:
        raise ModelArtifactError(
            f"vocabulary capacity {item_vocab.capacity} != model capacity {model_cfg.item_capacity}"
        )
    config = {
        "format": FORMAT,
        "model": json.loads(model_cfg.to_json()),
        "train": json.loads(train_cfg.to_json()) if train_cfg is not None else None,
        "purchase_calibration": [float(x) for x in purchase_calibration],
    }
    return save_checkpoint(
        root,
        params,
        version=version,
        vocabulary={"item_vocabulary": item_vocab.to_json()},
        config=config,
        metrics=jsonable(metrics or {}),
        parent_version=parent_version,
        keep=keep,
    )


def load_trained_model(path: str | os.PathLike[str]) -> TrainedModel:
    """Load and verify a model written by `save_trained_model`.

    Args:
        path: a checkpoint root (follows ``LATEST``) or one checkpoint directory.

    Raises:
        CheckpointError: corrupt, truncated, non-finite or not an rnnrec model.
    """
    ckpt: Checkpoint = load_checkpoint(path, load_opt_state=False)
    config = ckpt.config or {}
    if config.get("format") != FORMAT:
        raise ModelArtifactError(f"{path}: not an rnnrec model (format {config.get('format')!r})")
    try:
        model_cfg = ModelConfig.from_json(config["model"])
        train_cfg = TrainConfig.from_json(config["train"]) if config.get("train") else None
        vocab = ItemVocabulary.from_json(ckpt.vocabulary["item_vocabulary"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelArtifactError(f"{path}: config or vocabulary does not load: {exc}") from None
    # The checksums prove the arrays are what was written, not that they fit the
    # config: a mismatch would only fail later, at warm-up or in every fine-tune round.
    from rnnrec_jax.artifact import check_layout, layout_of  # artifact imports this module

    check_layout(layout_of(ckpt.params), model_cfg)
    if vocab.capacity != model_cfg.item_capacity:
        raise ModelArtifactError(
            f"{path}: vocabulary capacity {vocab.capacity} != model capacity "
            f"{model_cfg.item_capacity}"
        )
    scale, shift = config.get("purchase_calibration", (1.0, 0.0))
    return TrainedModel(
        params=ckpt.params,
        model_cfg=model_cfg,
        vocab=vocab,
        version=str(ckpt.version),
        train_cfg=train_cfg,
        purchase_calibration=(float(scale), float(shift)),
        metrics=dict(ckpt.metrics or {}),
        parent_version=None if ckpt.parent_version is None else str(ckpt.parent_version),
        created=ckpt.created,
        sha256=ckpt.sha256,
        path=ckpt.path,
    )


def jsonable(obj: Any) -> Any:
    """Plain JSON values from reports that carry numpy scalars, arrays and tuples."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj
