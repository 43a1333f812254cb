"""Online fine-tuning on synthetic sessions: shifted data, new items, capacity, parity."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pandas as pd
import pytest

from rnnrec_jax import metrics
from rnnrec_jax.data.events import SessionEvents
from rnnrec_jax.data.synthetic import generate_sessions
from rnnrec_jax.data.vocabulary import ItemVocabulary
from rnnrec_jax.finetune import (
    NEW_ITEM_BIAS_PERCENTILE,
    FineTuneAbandoned,
    drop_consecutive_repeats,
    evaluate_slice,
    fine_tune,
    grow_vocabulary,
)
from rnnrec_jax.model_io import TrainedModel
from rnnrec_jax.serving import ServingModel
from tests.serving_models import synthetic_frames, train_tiny

pytestmark = pytest.mark.unit

LATER = 1_800_000_000.0


def _frame(events: SessionEvents) -> pd.DataFrame:
    return pd.DataFrame(
        {"SessionId": events.session_ids, "ItemId": events.item_ids, "Time": events.times}
    )


def _split(frame: pd.DataFrame, fraction: float = 0.8) -> tuple[pd.DataFrame, pd.DataFrame]:
    sessions = frame.SessionId.unique()
    cut = int(len(sessions) * fraction)
    return (
        frame[frame.SessionId.isin(sessions[:cut])],
        frame[frame.SessionId.isin(sessions[cut:])],
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    train_df, _ = synthetic_frames()
    return train_tiny(train_df, tmp_path_factory.mktemp("finetune") / "model", epochs=2)


def _leaves_equal(a: dict, b: dict) -> bool:
    pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in pairs)


def test_fine_tune_on_a_shifted_distribution_improves_the_held_back_slice(tiny):
    # Another seed: other item clusters and successors over the same catalogue.
    shifted, _ = generate_sessions(2500, 300, seed=99, start_time=LATER)
    train, held_back = _split(_frame(shifted))
    before = evaluate_slice(tiny, held_back)
    candidate = fine_tune(tiny, train, epochs=2, seed=0)
    after = evaluate_slice(candidate, held_back)
    assert after["n_targets"] == before["n_targets"] > 500
    assert after["recall@20"] > before["recall@20"] + 0.1, (before, after)
    assert after["mrr@20"] > before["mrr@20"] + 0.03, (before, after)
    assert candidate.parent_version == tiny.version
    assert candidate.version != tiny.version
    assert candidate.metrics["fine_tune"]["steps"] > 0


def test_fine_tune_is_seeded_and_leaves_its_input_alone(tiny):
    shifted, _ = generate_sessions(400, 300, seed=5, start_time=LATER)
    before = jax.tree_util.tree_map(np.array, tiny.params)
    a = fine_tune(tiny, _frame(shifted), steps=20, seed=3)
    b = fine_tune(tiny, _frame(shifted), steps=20, seed=3)
    c = fine_tune(tiny, _frame(shifted), steps=20, seed=4)
    assert _leaves_equal(a.params, b.params)
    assert a.version == b.version  # content-derived
    assert not _leaves_equal(a.params, c.params)
    assert _leaves_equal(tiny.params, before), "the starting model was modified"
    assert not _leaves_equal(a.params, before), "fine-tuning changed nothing"
    assert a.metrics["fine_tune"]["steps"] == 20
    assert fine_tune(tiny, _frame(shifted), steps=5, version="cand-7").version == "cand-7"


def test_fine_tune_can_be_abandoned(tiny):
    shifted, _ = generate_sessions(400, 300, seed=5, start_time=LATER)
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(FineTuneAbandoned):
        fine_tune(tiny, _frame(shifted), epochs=3, steps_per_call=4, should_stop=stop)


def _renamed(events: SessionEvents, mapping: dict[str, str]) -> SessionEvents:
    items = np.array([mapping.get(i, i) for i in events.item_ids.tolist()])
    return SessionEvents(events.session_ids, items, events.times)


def test_new_items_are_learned_and_recommended(tiny):
    # The same generator as the training data, but 20 of the most frequent items now
    # carry ids the model has never seen (a catalogue change).
    stream, _ = generate_sessions(2500, 300, seed=11, start_time=LATER)
    popular = pd.Series(stream.item_ids).value_counts().index[:20].tolist()
    mapping = {item: f"new-{item}" for item in popular}
    frame = _frame(_renamed(stream, mapping))
    train, held_back = _split(frame)
    new_ids = set(mapping.values())

    before = evaluate_slice(tiny, held_back)
    assert before["n_oov_targets"] > 50  # the new items are out of vocabulary
    grown, growth = grow_vocabulary(tiny, train.ItemId.to_numpy(), train.Time.to_numpy())
    assert set(growth.added) == new_ids and not growth.evicted and not growth.deferred
    candidate = fine_tune(grown, train, epochs=2, seed=0)
    after = evaluate_slice(candidate, held_back)
    assert after["n_oov_targets"] == 0
    assert after["recall@20"] > before["recall@20"] + 0.05, (before, after)

    # Served as the worker serves it: the new items are recommended, and hit.
    serving = ServingModel.from_trained(candidate, buckets=(1,), k=20)
    events = drop_consecutive_repeats(SessionEvents.from_frame(held_back))
    offsets = events.session_offsets()
    recommended_new, new_targets, new_hits = 0, 0, 0
    for s in range(events.n_sessions):
        idx = candidate.vocab.encode(events.item_ids[offsets[s] : offsets[s + 1]])
        carry = serving.init_carry(1)
        for pos in range(len(idx) - 1):
            out = serving.step(carry, idx[pos : pos + 1], np.ones(1, bool))
            carry = out.carry
            top = set(candidate.vocab.decode(out.top_items[0][out.top_items[0] > 0]).tolist())
            recommended_new += len(top & new_ids)
            target = candidate.vocab.decode(idx[pos + 1 : pos + 2])[0]
            if target in new_ids:
                new_targets += 1
                new_hits += target in top
    assert recommended_new > 0
    assert new_targets > 50
    assert new_hits / new_targets > 0.3, (new_hits, new_targets)


def test_growth_changes_values_not_shapes(tiny):
    known = list(tiny.vocab.items)
    window = np.array([known[0], "fresh-a", "fresh-b", "fresh-a", known[5]])
    grown, growth = grow_vocabulary(tiny, window, np.arange(5.0), seed=1)
    assert growth.added == ("fresh-a", "fresh-b")  # most frequent first
    assert len(grown.vocab) == len(tiny.vocab) + 2
    assert grown.vocab.capacity == tiny.vocab.capacity == tiny.model_cfg.item_capacity
    assert grown.model_cfg.n_items == len(grown.vocab)
    for name in tiny.params:
        if name == "encoder":
            assert _leaves_equal(grown.params[name], tiny.params[name])
            continue
        assert np.shape(grown.params[name]) == np.shape(tiny.params[name])
    # Existing items keep their index and rows; new rows sit after them.
    np.testing.assert_array_equal(grown.vocab.encode(known), tiny.vocab.encode(known))
    new_rows = grown.vocab.encode(["fresh-a", "fresh-b"])
    np.testing.assert_array_equal(new_rows, [len(known) + 1, len(known) + 2])
    old_out = np.asarray(tiny.params["item_out"])
    new_out = np.asarray(grown.params["item_out"])
    np.testing.assert_array_equal(new_out[: len(known) + 1], old_out[: len(known) + 1])
    bias = np.asarray(tiny.params["item_bias"])[1 : len(known) + 1]
    expected_bias = np.percentile(bias, NEW_ITEM_BIAS_PERCENTILE)
    np.testing.assert_allclose(np.asarray(grown.params["item_bias"])[new_rows], expected_bias)
    assert np.all(np.linalg.norm(new_out[new_rows], axis=1) > 0)
    # Nothing new: the same model back.
    same, nothing = grow_vocabulary(tiny, np.array(known[:3]))
    assert same is tiny and nothing.added == ()
    # min_count keeps one-off ids out.
    _, rare = grow_vocabulary(tiny, window, min_count=2)
    assert rare.added == ("fresh-a",)


def _small_model(tiny: TrainedModel, n_items: int) -> TrainedModel:
    """``tiny`` cut down to its first ``n_items`` items with capacity n_items + 3."""
    capacity = n_items + 3
    counts = np.arange(n_items, 0, -1) * 10  # item 1 most frequent
    vocab = ItemVocabulary(list(tiny.vocab.items)[:n_items], capacity=capacity, counts=counts)
    params = dict(jax.tree_util.tree_map(np.asarray, tiny.params))
    params["item_out"] = params["item_out"][:capacity].copy()
    params["item_bias"] = params["item_bias"][:capacity].copy()
    cfg = dataclasses.replace(tiny.model_cfg, item_capacity=capacity, n_items=n_items)
    return dataclasses.replace(tiny, params=params, vocab=vocab, model_cfg=cfg)


def test_eviction_policy_when_the_capacity_is_full(tiny):
    model = _small_model(tiny, 10)  # 10 items, 2 free slots
    items = list(model.vocab.items)
    # The window holds items 1-4 and five new ids (counts 5, 4, 3, 2, 1).
    new = {"n5": 5, "n4": 4, "n3": 3, "n2": 2, "n1": 1}
    window = [*items[:4], *[i for i, c in new.items() for _ in range(c)]]
    times = np.full(len(window), 100.0)
    # Last sightings outside the window: item 10 seen most recently, item 9 long ago,
    # items 5-8 never (oldest); among those, the lowest count (highest index) first.
    last_seen = {items[9]: 90.0, items[8]: 10.0}
    grown, growth = grow_vocabulary(model, window, times, last_seen=last_seen)
    assert growth.added == ("n5", "n4", "n3", "n2", "n1")
    assert growth.evicted == (items[7], items[6], items[5])
    assert growth.deferred == ()
    assert len(grown.vocab) == grown.vocab.capacity - 1 == 12
    # Window items and recently seen items survive; evicted slots were reused in place.
    for item in items[:5] + items[8:]:
        assert item in grown.vocab
        assert grown.vocab.encode([item])[0] == model.vocab.encode([item])[0]
    reused = grown.vocab.encode(["n3", "n2", "n1"])
    np.testing.assert_array_equal(reused, model.vocab.encode([items[7], items[6], items[5]]))
    assert np.all(np.asarray(grown.params["item_out"]).shape == np.shape(model.params["item_out"]))
    assert not np.allclose(
        np.asarray(grown.params["item_out"])[reused], np.asarray(model.params["item_out"])[reused]
    )

    # Protected items (held back, in the window) are skipped: the next candidate goes.
    _, spared = grow_vocabulary(
        model, window, times, last_seen=last_seen, protect=[items[7], items[6]]
    )
    assert spared.evicted == (items[5], items[4], items[8])

    # When every item is in the window, nothing is evicted and new items wait.
    full, report = grow_vocabulary(grown, [*grown.vocab.items, "late-1", "late-2"])
    assert report.added == () and report.evicted == ()
    assert report.deferred == ("late-1", "late-2")
    assert full.vocab == grown.vocab


def test_evaluate_slice_matches_the_serving_step(tiny):
    """Unknown inputs keep the state, unknown targets are misses, repeats removed."""
    _, test_df = synthetic_frames()
    sessions = test_df[test_df.SessionId.isin(test_df.SessionId.unique()[:40])].copy()
    items = sessions.ItemId.astype(str).to_numpy().copy()
    rng = np.random.default_rng(0)
    items[rng.random(len(items)) < 0.2] = "unknown-item"
    sessions["ItemId"] = items
    events = drop_consecutive_repeats(SessionEvents.from_frame(sessions))
    report = evaluate_slice(tiny, sessions, ks=(5, 20))

    serving = ServingModel.from_trained(tiny, buckets=(1,), k=20)
    valid = serving.valid_mask()
    ranks: list[int] = []
    offsets = events.session_offsets()
    for s in range(events.n_sessions):
        ids = events.item_ids[offsets[s] : offsets[s + 1]]
        idx = tiny.vocab.encode(ids)
        carry = serving.init_carry(1)
        for pos in range(len(ids) - 1):
            carry = serving.step(carry, idx[pos : pos + 1], np.ones(1, bool)).carry
            target = idx[pos + 1]
            if target == 0:
                ranks.append(10**9)  # a miss at every cut-off
                continue
            scores = serving.score_all(carry)
            ranks.append(int(metrics.target_ranks_np(scores, np.array([target]), valid)[0]))
    ranks_np = np.asarray(ranks)
    assert report["n_targets"] == len(ranks) == events.n_targets
    assert report["n_oov_targets"] == int((ranks_np == 10**9).sum()) > 0
    assert report["n_cold_targets"] > 0  # sessions that start on an unknown item
    for k in (5, 20):
        expected_recall = float((ranks_np <= k).mean())
        expected_mrr = float(np.where(ranks_np <= k, 1.0 / ranks_np, 0.0).mean())
        assert report[f"recall@{k}"] == pytest.approx(expected_recall, abs=1e-9)
        assert report[f"mrr@{k}"] == pytest.approx(expected_mrr, rel=1e-5)


def test_drop_consecutive_repeats():
    events = SessionEvents.from_arrays(
        ["1", "1", "1", "1", "2", "2"], ["a", "a", "b", "a", "a", "a"], [1, 2, 3, 4, 5, 6]
    )
    kept = drop_consecutive_repeats(events)
    assert kept.item_ids.tolist() == ["a", "b", "a", "a"]
    assert kept.session_ids.tolist() == ["1", "1", "1", "2"]


def test_the_default_sgd_falls_back_to_the_models_optimiser_for_sampled_tables(tiny):
    # The trainer's default optimiser is sgd; every round failed for the gru4rec_*
    # configurations (sampled softmax), whose tables are updated row by row.
    sampled = dataclasses.replace(tiny, train_cfg=dataclasses.replace(tiny.train_cfg, n_sample=64))
    shifted, _ = generate_sessions(400, 300, seed=5, start_time=LATER)
    candidate = fine_tune(sampled, _frame(shifted), steps=10, seed=0)
    info = candidate.metrics["fine_tune"]
    assert info["steps"] == 10 and info["optimiser"] == tiny.train_cfg.optimiser
    assert not _leaves_equal(candidate.params, tiny.params)
