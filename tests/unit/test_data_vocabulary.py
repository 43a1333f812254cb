"""ItemVocabulary: order, OOV, fixed capacity, growth and the checkpoint format."""

from __future__ import annotations

import numpy as np
import pytest

from rnnrec_jax.data.vocabulary import (
    PAD_INDEX,
    ItemVocabulary,
    UnknownIndexError,
    VocabularyFullError,
)

pytestmark = pytest.mark.unit


def test_frequency_order_with_first_appearance_tie_break():
    vocab = ItemVocabulary.from_items(["c", "b", "a", "b", "a", "d"])
    # a and b appear twice (b first), then c and d once (c first).
    assert vocab.items == ("b", "a", "c", "d")
    assert vocab.encode(["b", "a", "c", "d"]).tolist() == [1, 2, 3, 4]
    assert vocab.item_counts.tolist() == [0, 2, 2, 1, 1]
    assert len(vocab) == 4
    assert vocab.capacity == 5  # default: exactly n + 1, no headroom


def test_unknown_items_encode_to_padding_index_in_any_shape():
    vocab = ItemVocabulary.from_items(["x", "y"], capacity=8)
    encoded = vocab.encode(np.array([["x", "nope"], ["y", ""]]))
    assert encoded.dtype == np.int32
    assert encoded.tolist() == [[1, PAD_INDEX], [2, PAD_INDEX]]
    assert ItemVocabulary([], capacity=3).encode(["x"]).tolist() == [0]
    assert "x" in vocab
    assert "z" not in vocab


def test_decode_round_trip_and_errors():
    vocab = ItemVocabulary.from_items(["10", "20", "20"], capacity=6)
    assert vocab.decode(vocab.encode(["10", "20"])).tolist() == ["10", "20"]
    assert vocab.decode([0]).tolist() == [""]
    for bad in ([3], [5], [6], [-1]):  # free slots and out of range are not items
        with pytest.raises(UnknownIndexError):
            vocab.decode(bad)


def test_valid_mask_marks_used_slots_only():
    vocab = ItemVocabulary.from_items(["a", "b"], capacity=5)
    assert vocab.valid_mask().tolist() == [False, True, True, False, False]


def test_add_grows_within_capacity_and_keeps_existing_indices():
    vocab = ItemVocabulary.from_items(["a", "b", "b"], capacity=5)
    before = vocab.encode(["a", "b"]).tolist()
    indices = vocab.add(["z", "a", "y", "z"])
    assert indices.tolist() == [3, 2, 4, 3]
    assert vocab.encode(["a", "b"]).tolist() == before
    assert vocab.items == ("b", "a", "z", "y")
    assert vocab.item_counts.tolist() == [0, 2, 2, 2, 1]
    assert not vocab.valid_mask()[0]  # slot 0 stays padding
    assert vocab.valid_mask()[1:].all()


def test_add_beyond_capacity_raises_and_changes_nothing():
    vocab = ItemVocabulary.from_items(["a"], capacity=3)
    snapshot = vocab.to_json()
    with pytest.raises(VocabularyFullError):
        vocab.add(["b", "c"])
    assert vocab.to_json() == snapshot
    vocab.add(["b"])
    with pytest.raises(VocabularyFullError):
        vocab.add(["c"])
    vocab.add(["a", "b"])  # known items still count when full
    assert vocab.item_counts.tolist() == [0, 2, 2]
    with pytest.raises(VocabularyFullError):
        ItemVocabulary(["a", "b"], capacity=2)


def test_json_round_trip_is_stable():
    vocab = ItemVocabulary.from_items(["é", "b", "b"], capacity=10)
    vocab.add(["new"])
    text = vocab.to_json()
    restored = ItemVocabulary.from_json(text)
    assert restored == vocab
    assert restored.to_json() == text
    assert restored.capacity == 10
    assert ItemVocabulary.from_items(["é", "b", "b"], capacity=10).to_json() != text
    with pytest.raises(ValueError, match="not an item vocabulary"):
        ItemVocabulary.from_json('{"format": "other", "version": 1}')


def test_construction_rejects_bad_arguments():
    with pytest.raises(ValueError, match="distinct"):
        ItemVocabulary(["a", "a"], capacity=4)
    with pytest.raises(ValueError, match="capacity"):
        ItemVocabulary([], capacity=0)


def test_encoding_large_batches_matches_a_dict_lookup():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 5000, size=20_000).astype(str)
    vocab = ItemVocabulary.from_items(ids[:10_000], capacity=6000)
    lookup = {item: i + 1 for i, item in enumerate(vocab.items)}
    expected = [lookup.get(item, 0) for item in ids.tolist()]
    assert vocab.encode(ids).tolist() == expected
