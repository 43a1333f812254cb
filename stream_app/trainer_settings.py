"""Settings of ``rnnrec trainer``: the worker's settings plus the trainer's own.

The trainer shares the broker, topic names, security and model-distribution settings
with the worker (`WorkerSettings`), so both read one environment; its own knobs carry
the ``RNNREC_TRAINER_`` prefix (plus ``RNNREC_ONLINE_TRAINING_FROZEN``). Bad values
are refused in one line (`SettingsError`).
"""

from __future__ import annotations

import enum

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import SettingsConfigDict

from stream_app.settings import SettingsError, WorkerSettings

__all__ = ["DecisionMetric", "TrainerSettings", "load_trainer_settings"]


class DecisionMetric(enum.StrEnum):
    """The held-back metric a candidate is judged on."""

    MRR_20 = "mrr@20"
    RECALL_20 = "recall@20"


class TrainerSettings(WorkerSettings):
    """``rnnrec trainer`` settings (environment prefix ``RNNREC_``)."""

    model_config = SettingsConfigDict(
        env_prefix="RNNREC_", extra="ignore", frozen=True, populate_by_name=True
    )

    trainer_group_id: str = Field(
        "rnnrec-trainer", description="Consumer group of the trainer on clickstream."
    )
    # --- Cadence -----------------------------------------------------------------------
    trainer_interval_event_time_s: float = Field(
        86_400.0,
        ge=0,
        description="Fine-tune each time event time crosses a multiple of this many "
        "seconds (UTC-aligned; 86400 = daily at midnight). 0: off.",
    )
    trainer_interval_events: int = Field(
        0, ge=0, description="Fine-tune after this many new valid events. 0: off."
    )
    # --- Window ------------------------------------------------------------------------
    trainer_window_max_events: int = Field(
        200_000, ge=10, le=50_000_000, description="Most events the rolling window keeps."
    )
    trainer_window_max_age_s: float = Field(
        7 * 86_400.0,
        gt=0,
        description="Events older than this (event time, behind the newest) leave the window.",
    )
    trainer_holdout_fraction: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="Share of the window's sessions (the freshest) held back to judge on.",
    )
    trainer_min_holdout_targets: int = Field(
        20, ge=1, description="Fewer held-back targets than this: the round is skipped."
    )
    trainer_min_train_targets: int = Field(
        50, ge=1, description="Fewer training targets than this: the round is skipped."
    )
    # --- Decision ----------------------------------------------------------------------
    trainer_decision_metric: DecisionMetric = Field(
        DecisionMetric.MRR_20, description="Held-back metric candidates are judged on."
    )
    trainer_margin: float = Field(
        0.0,
        ge=-1,
        le=1,
        description="Publish when candidate >= serving - margin (metric units; a "
        "negative margin demands an improvement).",
    )
    # --- Fine-tuning -------------------------------------------------------------------
    trainer_finetune_epochs: int = Field(2, ge=1, le=100, description="Passes over the window.")
    trainer_finetune_max_steps: int = Field(
        0, ge=0, description="Cap on optimiser steps per fine-tune. 0: no cap."
    )
    trainer_finetune_lr: float = Field(0.1, gt=0, le=100, description="Fine-tuning learning rate.")
    trainer_finetune_optimiser: str = Field(
        "sgd",
        description="sgd (with momentum; a sampled-softmax model uses its own optimiser "
        "instead), adam, adamw, adagrad or rmsprop.",
    )
    trainer_finetune_encoder_lr_scale: float = Field(
        1.0, ge=0, le=10, description="Encoder step size relative to the item tables'."
    )
    trainer_min_item_count: int = Field(
        1, ge=1, description="Events a new item needs in the window to get a row."
    )
    trainer_seed: int = Field(0, description="Seed of fine-tuning (plus the round number).")
    online_training_frozen: bool = Field(
        False,
        description="Consume and evaluate, but never fine-tune or publish anything.",
    )
    # --- Operations --------------------------------------------------------------------
    trainer_metrics_port: int = Field(
        6067,
        ge=0,
        le=65535,
        description="Port of the trainer's /health, /ready and /metrics. 0: off.",
    )
    trainer_metrics_bind: str = Field("0.0.0.0", description="Address the trainer's views bind.")
    trainer_poll_timeout_s: float = Field(
        0.5, gt=0, le=60, description="Longest wait of one poll of clickstream."
    )

    @model_validator(mode="after")
    def _trainer_consistent(self) -> TrainerSettings:
        if self.trainer_interval_event_time_s == 0 and self.trainer_interval_events == 0:
            raise ValueError(
                "RNNREC_TRAINER_INTERVAL_EVENT_TIME_S and RNNREC_TRAINER_INTERVAL_EVENTS "
                "are both 0: the trainer would never fine-tune"
            )
        if self.trainer_finetune_optimiser not in ("sgd", "adam", "adamw", "adagrad", "rmsprop"):
            raise ValueError(
                "RNNREC_TRAINER_FINETUNE_OPTIMISER must be sgd, adam, adamw, adagrad or rmsprop"
            )
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        if not self.trainer_group_id or not set(self.trainer_group_id) <= allowed:
            raise ValueError("RNNREC_TRAINER_GROUP_ID must be 1-200 characters of [a-zA-Z0-9._-]")
        return self


def load_trainer_settings(**overrides: object) -> TrainerSettings:
    """Read the trainer's settings from the environment, keyword overrides on top.

    Raises:
        SettingsError: one line naming the first bad variable and why.
    """
    try:
        return TrainerSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        message = str(first["msg"]).removeprefix("Value error, ")
        if not field:
            raise SettingsError(message) from None  # the validator names its variables
        variable = field.upper()
        if not variable.endswith("BOOTSTRAP_SERVERS"):
            variable = "RNNREC_" + variable
        raise SettingsError(f"{variable}: {message}") from None
