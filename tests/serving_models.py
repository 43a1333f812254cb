"""Small trained models and session data for the serving tests (unit and integration)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from rnnrec_jax.configs.tiny import get_config
from rnnrec_jax.data.synthetic import generate_sessions
from rnnrec_jax.model_io import TrainedModel, load_trained_model, save_trained_model
from rnnrec_jax.train import train_and_evaluate


def synthetic_frames(
    n_train: int = 3000, n_test: int = 300, n_items: int = 300, seed: int = 11
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and test sessions as SessionId/ItemId/Time frames.

    Test events on items unseen in training are dropped and sessions shorter than 2
    removed, as in the GRU4Rec split, so every test event is in the vocabulary.
    """
    train, _ = generate_sessions(n_train, n_items, seed=seed)
    test, _ = generate_sessions(n_test, n_items, seed=seed + 1)

    def frame(events: object) -> pd.DataFrame:
        return pd.DataFrame(
            {"SessionId": events.session_ids, "ItemId": events.item_ids, "Time": events.times}
        )

    train_df, test_df = frame(train), frame(test)
    test_df = test_df[test_df.ItemId.isin(set(train_df.ItemId))]
    test_df = test_df[test_df.groupby("SessionId").ItemId.transform("size") >= 2]
    return train_df, test_df.reset_index(drop=True)


def train_tiny(
    train_df: pd.DataFrame, out: Path, epochs: int = 2, version: str = "1", **model_changes: object
) -> TrainedModel:
    """Train the tiny config briefly, save it under ``out`` and load it back."""
    model_cfg, train_cfg = get_config()
    model_cfg = dataclasses.replace(model_cfg, **model_changes)
    train_cfg = dataclasses.replace(train_cfg, epochs=epochs)
    result = train_and_evaluate(model_cfg, train_cfg, train_df, progress=False, log=None)
    save_trained_model(
        out, result.params, result.model_cfg, result.vocab, version=version,
        train_cfg=result.train_cfg, purchase_calibration=result.purchase_calibration,
    )  # fmt: skip
    return load_trained_model(out)


_CACHE: dict[str, tuple[Path, pd.DataFrame, pd.DataFrame]] = {}


def cached_tiny_model(root_factory: object) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    """One tiny model per test process (trained once, ~15 s): (model dir, train, test).

    Args:
        root_factory: pytest's ``tmp_path_factory``.
    """
    if "tiny" not in _CACHE:
        root = root_factory.mktemp("tiny-model")  # type: ignore[attr-defined]
        train_df, test_df = synthetic_frames()
        train_tiny(train_df, root / "model")
        train_df.to_csv(root / "train.tsv", sep="\t", index=False)
        test_df.to_csv(root / "test.tsv", sep="\t", index=False)
        _CACHE["tiny"] = (root / "model", train_df, test_df)
    return _CACHE["tiny"]
