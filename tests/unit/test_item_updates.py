"""item-updates records, the catalogue of unavailable items, and handing it to the scorer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import jsonschema
import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry

from rnnrec_jax.model_io import TrainedModel, load_trained_model
from rnnrec_jax.serving import ServingModel
from stream_app.events import load_schema
from stream_app.item_updates import (
    Catalogue,
    ItemFollower,
    ItemMetrics,
    ItemUpdate,
    MalformedUpdate,
    decode_item_update,
)
from stream_app.scoring import ServingModelScorer
from stream_app.settings import load_settings
from tests.serving_models import cached_tiny_model

pytestmark = pytest.mark.unit

GOOD = {"schema_version": 1, "item_id": "i1", "available": False, "ts": 1_700_000_000.0}

# Documents on which the schema alone decides (the key is the document's item_id).
DOCUMENTS: list[object] = [
    GOOD,
    {**GOOD, "available": True},
    {**GOOD, "blocked": True, "reason": "legal"},
    {**GOOD, "out_of_stock": True, "extra": [1, 2]},
    {**GOOD, "ts": 0},
    {**GOOD, "ts": 5},
    {**GOOD, "schema_version": 1.0},
    {**GOOD, "schema_version": 2},
    {**GOOD, "schema_version": True},
    {**GOOD, "schema_version": "1"},
    {k: v for k, v in GOOD.items() if k != "ts"},
    {k: v for k, v in GOOD.items() if k != "available"},
    {k: v for k, v in GOOD.items() if k != "schema_version"},
    {**GOOD, "available": "false"},
    {**GOOD, "available": 0},
    {**GOOD, "blocked": None},
    {**GOOD, "out_of_stock": 1},
    {**GOOD, "ts": -1},
    {**GOOD, "ts": True},
    {**GOOD, "ts": "1700000000"},
    {**GOOD, "reason": 5},
    {**GOOD, "reason": "r" * 256},
    {**GOOD, "reason": "r" * 257},
    {**GOOD, "item_id": 7},
    [GOOD],
    "i1",
    None,
]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_the_reader_agrees_with_the_json_schema(document: object) -> None:
    schema_ok = jsonschema.Draft202012Validator(load_schema("item-updates")).is_valid(document)
    outcome = decode_item_update(b"i1", orjson.dumps(document))
    assert isinstance(outcome, ItemUpdate) == schema_ok, outcome


def test_written_updates_validate_and_read_back() -> None:
    update = ItemUpdate("caf\u00e9", available=False, blocked=True, reason="recall", ts=12.5)
    value = update.to_json()
    jsonschema.validate(orjson.loads(value), load_schema("item-updates"))
    assert decode_item_update("caf\u00e9".encode(), value) == update
    assert update.unavailable and not ItemUpdate("x").unavailable
    assert ItemUpdate("x", out_of_stock=True).unavailable


@pytest.mark.parametrize(
    ("key", "value", "kind"),
    [
        (None, orjson.dumps(GOOD), "no_key"),
        (b"\xff", orjson.dumps(GOOD), "invalid_key"),
        (b"i" * 300, None, "invalid_key"),
        (b"i1", b"{nope", "invalid_json"),
        (b"i1", b"[]", "not_an_object"),
        (b"i1", orjson.dumps({"item_id": "i1"}), "missing_field"),
        (b"i1", orjson.dumps({**GOOD, "schema_version": 9}), "unsupported_version"),
        (b"i1", orjson.dumps({**GOOD, "blocked": "yes"}), "wrong_type"),
        (b"other", orjson.dumps(GOOD), "key_mismatch"),
        (b"i1", orjson.dumps({**GOOD, "pad": "x" * 200}), "too_large"),
    ],
)
def test_malformed_records_name_their_kind(key: bytes | None, value: bytes, kind: str) -> None:
    outcome = decode_item_update(key, value, max_bytes=200)
    assert isinstance(outcome, MalformedUpdate) and outcome.kind == kind


def test_catalogue_keeps_the_latest_flags_and_a_tombstone_clears_them() -> None:
    catalogue = Catalogue()
    block = ItemUpdate("a", available=False, blocked=True, ts=1).to_json()
    assert catalogue.apply(b"a", block) is True
    assert catalogue.apply(b"a", block) is False  # already unavailable: no change
    assert catalogue.apply(b"b", ItemUpdate("b", out_of_stock=True).to_json()) is True
    assert catalogue.unavailable == {"a", "b"}
    assert catalogue.apply(b"a", None) is True  # tombstone: available again
    assert catalogue.apply(b"b", ItemUpdate("b", available=True).to_json()) is True
    assert catalogue.apply(b"c", None) is False  # never blocked: nothing changes
    bad = catalogue.apply(b"c", b"{nope")
    assert isinstance(bad, MalformedUpdate) and catalogue.unavailable == frozenset()


class RecordingScorer:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def set_unavailable(self, item_ids: Sequence[str]) -> None:
        self.calls.append(list(item_ids))


def test_refresh_hands_the_set_over_only_when_it_or_the_scorer_changed() -> None:
    settings = load_settings(bootstrap_servers="127.0.0.1:1")
    registry = CollectorRegistry()
    follower = ItemFollower(settings, ItemMetrics(registry))
    follower._caught_up.set()  # no thread here: the history counts as read
    first = RecordingScorer()

    async def run() -> None:
        await follower.refresh(first)
        await follower.refresh(first)
        follower._publish(frozenset({"b", "a"}))
        await follower.refresh(first)
        await follower.refresh(first)
        second = RecordingScorer()  # a model swapped in: it gets the set at once
        await follower.refresh(second)
        assert second.calls == [["a", "b"]]

    asyncio.run(run())
    assert first.calls == [[], ["a", "b"]]
    assert registry.get_sample_value("rnnrec_unavailable_items") == 2


def test_settled_once_the_history_is_read_or_the_first_batch_would_stop_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import stream_app.item_updates as item_updates

    settings = load_settings(bootstrap_servers="127.0.0.1:1")
    follower = ItemFollower(settings, ItemMetrics(CollectorRegistry()))
    assert not follower.settled  # not started: /ready must not say yes yet
    monkeypatch.setattr(follower, "_run", lambda: None)  # no broker here
    follower.start()
    assert not follower.settled  # started, history not read, still within the wait
    monkeypatch.setattr(item_updates, "START_WAIT_S", 0.0)
    assert follower.settled  # the first batch would serve without it now
    monkeypatch.setattr(item_updates, "START_WAIT_S", 3600.0)
    assert not follower.settled
    follower._caught_up.set()
    assert follower.settled


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    model_dir, _, _ = cached_tiny_model(tmp_path_factory)
    return load_trained_model(model_dir)


def scorer_for(trained: TrainedModel) -> ServingModelScorer:
    vocab = type(trained.vocab).from_json(trained.vocab.to_json())  # a private copy
    model = ServingModel(trained.params, trained.model_cfg, vocab, "v", buckets=(8,), k=10)
    return ServingModelScorer(model)


def test_unknown_ids_are_kept_and_masked_once_a_model_knows_them(trained: TrainedModel) -> None:
    scorer = scorer_for(trained)
    item = str(trained.vocab.items[0])
    carry = np.stack([scorer.initial_carry()] * 2)
    before = scorer.step(carry, [item, item], None, 10).top_items[0]
    top = before[0]
    scorer.set_unavailable([top, "not-in-the-vocabulary"])  # unknown: no error
    assert set(scorer.unavailable_items) == {top, "not-in-the-vocabulary"}
    after = scorer.step(carry, [item, item], None, 10).top_items
    assert all(top not in row for row in after)
    assert after[0][: len(before) - 1] == before[1:]  # the others keep their order

    # A later version that learned the item masks it as soon as it is handed the set.
    grown = scorer_for(trained)
    grown._model.vocab.add(["not-in-the-vocabulary"])
    grown.set_unavailable(scorer.unavailable_items)
    index = int(grown._model.vocab.encode(["not-in-the-vocabulary"])[0])
    assert index > 0 and grown._unavailable[index]
