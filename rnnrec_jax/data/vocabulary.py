"""String item ids ↔ int32 indices, with a fixed capacity so models never change shape.

Index 0 is reserved for padding and out-of-vocabulary items; real items are 1..n with
n <= capacity - 1. The embedding/output tables are sized by `capacity`, and
`valid_mask()` marks the rows in use, so growing the vocabulary online changes
values, not shapes (no recompilation of the serving step).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np

from rnnrec_jax.data.events import as_str_array

PAD_INDEX = 0
"""Index of padding and of any item not in the vocabulary."""
PAD_TOKEN = ""
"""What `decode` returns for `PAD_INDEX`."""
_JSON_FORMAT = "rnnrec.item_vocabulary"
_JSON_VERSION = 1


class VocabularyFullError(RuntimeError):
    """The vocabulary has no free slot for a new item.

    Nothing was added. Fine-tune into a model built with a larger capacity (or prune
    rarely seen items) before adding more items; until then new items stay OOV.
    """


class UnknownIndexError(IndexError):
    """An index is neither padding nor an item of the vocabulary (e.g. an unused slot)."""


class ItemVocabulary:
    """A deterministic, growable mapping of item ids to indices 1..n within a capacity.

    `from_items` orders items by frequency, most frequent first, ties by first
    appearance: index order then follows popularity, which keeps the hot rows of the
    embedding table together and makes the index a popularity rank. `add` appends new
    items after the existing ones in first-appearance order, so existing indices
    never move.
    """

    def __init__(
        self, items: Iterable[str] = (), *, capacity: int, counts: Iterable[int] | None = None
    ) -> None:
        """Create a vocabulary holding `items` at indices 1..len(items).

        Args:
            items: distinct item ids in index order.
            capacity: number of index slots, padding included (n <= capacity - 1).
            counts: optional event count per item (same order as `items`).
        """
        item_list = [str(item) for item in items]
        if capacity < 1 or capacity > np.iinfo(np.int32).max:
            raise ValueError(f"capacity must be in [1, 2**31 - 1], got {capacity}")
        if len(item_list) > capacity - 1:
            raise VocabularyFullError(
                f"{len(item_list)} items do not fit capacity {capacity} (slot 0 is padding)"
            )
        self._index = {item: i + 1 for i, item in enumerate(item_list)}
        if len(self._index) != len(item_list):
            raise ValueError("item ids must be distinct")
        self._items = item_list
        self._capacity = int(capacity)
        self._counts = np.zeros(self._capacity, dtype=np.int64)
        if counts is not None:
            count_array = np.asarray(list(counts), dtype=np.int64)
            if count_array.shape != (len(item_list),):
                raise ValueError(f"{count_array.size} counts for {len(item_list)} items")
            self._counts[1 : len(item_list) + 1] = count_array
        self._lookup: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_items(
        cls, ids: Iterable[str] | np.ndarray, capacity: int | None = None
    ) -> ItemVocabulary:
        """Build a vocabulary from a stream of item ids (e.g. all training events).

        Args:
            ids: item ids, repeated as often as they occur.
            capacity: index slots including padding; None means exactly n + 1 (no room
                to grow). Give headroom when the vocabulary will grow online.

        Returns:
            The vocabulary, most frequent item at index 1, ties by first appearance.
        """
        id_array = as_str_array(list(ids) if not isinstance(ids, np.ndarray) else ids)
        unique_ids, first_index, counts = np.unique(id_array, return_index=True, return_counts=True)
        order = np.lexsort((first_index, -counts))
        n_items = int(unique_ids.size)
        return cls(
            unique_ids[order].tolist(),
            capacity=n_items + 1 if capacity is None else capacity,
            counts=counts[order],
        )

    @property
    def capacity(self) -> int:
        """Number of index slots, padding included."""
        return self._capacity

    @property
    def items(self) -> tuple[str, ...]:
        """Item ids in index order (index 1 first)."""
        return tuple(self._items)

    @property
    def item_counts(self) -> np.ndarray:
        """int64 event counts per index (length capacity; 0 for padding and free slots)."""
        counts = self._counts.view()
        counts.flags.writeable = False
        return counts

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return str(item_id) in self._index

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ItemVocabulary):
            return NotImplemented
        return (
            self._capacity == other._capacity
            and self._items == other._items
            and np.array_equal(self._counts, other._counts)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable (add), so not hashable

    def __repr__(self) -> str:
        return f"ItemVocabulary(n={len(self)}, capacity={self._capacity})"

    def _sorted_lookup(self) -> tuple[np.ndarray, np.ndarray]:
        # Sorted ids + their indices, so encoding a whole batch is one searchsorted
        # instead of a Python dict lookup per id. Rebuilt lazily after `add`.
        if self._lookup is None:
            ids = np.asarray(self._items, dtype=str)
            order = np.argsort(ids, kind="stable")
            self._lookup = (ids[order], (order + 1).astype(np.int32))
        return self._lookup

    def encode(self, ids: Iterable[str] | np.ndarray) -> np.ndarray:
        """Map item ids to indices.

        Args:
            ids: item ids (any shape when an array).

        Returns:
            int32 indices of the same shape; unknown items map to `PAD_INDEX` (0).
        """
        id_array = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids))
        shape = id_array.shape
        flat = as_str_array(id_array)
        if not self._items or flat.size == 0:
            return np.zeros(shape, dtype=np.int32)
        sorted_ids, sorted_index = self._sorted_lookup()
        position = np.searchsorted(sorted_ids, flat).clip(max=sorted_ids.size - 1)
        found = sorted_ids[position] == flat
        return np.where(found, sorted_index[position], PAD_INDEX).astype(np.int32).reshape(shape)

    def decode(self, indices: Iterable[int] | np.ndarray) -> np.ndarray:
        """Map indices back to item ids.

        Args:
            indices: integer indices (any shape when an array).

        Returns:
            '<U' array of the same shape; `PAD_INDEX` decodes to `PAD_TOKEN` ('').

        Raises:
            UnknownIndexError: an index is negative, >= capacity, or a free slot.
        """
        index_array = np.asarray(indices if isinstance(indices, np.ndarray) else list(indices))
        index_array = index_array.astype(np.int64)
        bad = (index_array < 0) | (index_array > len(self._items))
        if bad.any():
            raise UnknownIndexError(
                f"indices {np.unique(index_array[bad])[:5].tolist()} are not in 0..{len(self)}"
            )
        table = np.asarray([PAD_TOKEN, *self._items], dtype=str)
        return table[index_array]

    def add(self, ids: Iterable[str] | np.ndarray) -> np.ndarray:
        """Count `ids`, appending unseen ones (first-appearance order) after the last index.

        All or nothing: when the new items do not fit, nothing is added or counted.

        Args:
            ids: item ids, repeated as often as they occur.

        Returns:
            int32 index of each given id after the update.

        Raises:
            VocabularyFullError: the new items exceed the free capacity.
        """
        id_array = as_str_array(ids if isinstance(ids, np.ndarray) else list(ids))
        unique_ids, first_index, counts = np.unique(id_array, return_index=True, return_counts=True)
        is_new = np.array([item not in self._index for item in unique_ids.tolist()], dtype=bool)
        new_ids = unique_ids[is_new][np.argsort(first_index[is_new], kind="stable")]
        free = self._capacity - 1 - len(self._items)
        if new_ids.size > free:
            raise VocabularyFullError(
                f"{new_ids.size} new items but only {free} free slots (capacity {self._capacity})"
            )
        for item in new_ids.tolist():
            self._items.append(item)
            self._index[item] = len(self._items)
        if new_ids.size:
            self._lookup = None
        np.add.at(self._counts, self.encode(unique_ids), counts)
        return self.encode(id_array)

    def valid_mask(self) -> np.ndarray:
        """Return a bool array of length capacity, True exactly at indices 1..n."""
        mask = np.zeros(self._capacity, dtype=bool)
        mask[1 : len(self._items) + 1] = True
        return mask

    def to_json(self) -> str:
        """Serialise for checkpoints; equal vocabularies give byte-equal text.

        Returns:
            A JSON object with format tag, version, capacity, items and counts.
        """
        return json.dumps(
            {
                "format": _JSON_FORMAT,
                "version": _JSON_VERSION,
                "capacity": self._capacity,
                "items": self._items,
                "counts": self._counts[1 : len(self._items) + 1].tolist(),
            },
            ensure_ascii=False,
            separators=(",", ":"),
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> ItemVocabulary:
        """Load a vocabulary written by `to_json`.

        Args:
            text: the JSON text.

        Returns:
            The vocabulary.

        Raises:
            ValueError: the text is not a vocabulary of a known version.
        """
        payload = json.loads(text)
        if payload.get("format") != _JSON_FORMAT or payload.get("version") != _JSON_VERSION:
            raise ValueError(
                f"not an item vocabulary v{_JSON_VERSION}: "
                f"{payload.get('format')!r} v{payload.get('version')!r}"
            )
        return cls(payload["items"], capacity=payload["capacity"], counts=payload["counts"])
