"""A rollback during a fine-tune is not undone by the round's candidate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_app.events import ClickEvent, InputLimits, decode_click_event
from stream_app.trainer import OnlineTrainer
from stream_app.trainer_settings import load_trainer_settings
from tests.serving_models import cached_tiny_model

pytestmark = pytest.mark.unit


class Pointer:
    """A publisher whose serving pointer an operator moves after the round starts."""

    def __init__(self, versions: list[str | None]) -> None:
        self.versions = versions
        self.published: list[str] = []

    def serving_version(self) -> str | None:
        return self.versions.pop(0) if len(self.versions) > 1 else self.versions[0]

    def load_serving(self) -> Any:
        return None  # keep the model in hand

    def publish(self, model: Any) -> str:
        self.published.append(str(model.version))
        return str(model.version)

    def record_decision(self, version: str, decision: dict[str, Any]) -> None:
        pass


def events(train_df: Any) -> list[ClickEvent]:
    out = []
    limits = InputLimits(max_future_s=1e12)
    for n, row in enumerate(train_df.itertuples(index=False)):
        user = f"u{row.SessionId}"
        value = orjson.dumps({"event_id": f"e{n}", "user_id": user, "item_id": str(row.ItemId),
                              "ts": float(row.Time), "session_id": str(row.SessionId)})  # fmt: skip
        decoded = decode_click_event(user.encode(), value, limits, now=0.0)
        assert isinstance(decoded, ClickEvent), decoded
        out.append(decoded)
    return out


@pytest.mark.parametrize(("pointers", "outcome"), [
    (["1", "1"], "published"),
    (["1", "rolled-back-to"], "superseded"),
])  # fmt: skip
def test_a_candidate_is_published_only_if_the_pointer_did_not_move(
    tmp_path_factory: pytest.TempPathFactory, pointers: list[str | None], outcome: str
) -> None:
    from rnnrec_jax.model_io import load_trained_model

    model_dir, train_df, _ = cached_tiny_model(tmp_path_factory)
    model = load_trained_model(Path(model_dir))
    settings = load_trainer_settings(trainer_margin=1.0, trainer_finetune_epochs=1)
    publisher = Pointer(list(pointers))
    trainer = OnlineTrainer(settings, model, publisher)
    for event in events(train_df.head(3000)):
        trainer.add(event)
    decision = trainer.run_round(float("inf"), "event_time")
    assert decision.outcome == outcome, decision.log_line()
    assert bool(publisher.published) is (outcome == "published")
