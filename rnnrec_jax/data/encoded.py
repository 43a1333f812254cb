"""Sessions as vocabulary indices: the arrays the model's batching code consumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rnnrec_jax.data.events import SessionEvents
from rnnrec_jax.data.purchases import PurchaseInputs, purchase_inputs
from rnnrec_jax.data.vocabulary import PAD_INDEX, ItemVocabulary

__all__ = [
    "EncodedSessions",
    "PurchaseInputs",
    "encode_sessions",
    "purchase_inputs",
    "session_grid",
]


@dataclass(frozen=True, eq=False)
class EncodedSessions:
    """Sessions with items encoded as int32 vocabulary indices.

    Attributes:
        items: int32 index per event (never `PAD_INDEX` when OOV events were dropped).
        offsets: int64, length n_sessions + 1; session k is `items[offsets[k]:offsets[k+1]]`.
        times: float64 epoch seconds per event.
        session_ids: '<U' id per session (length n_sessions).
        source_index: int64 row of each event in the `SessionEvents` it came from,
            to line results up with the source (e.g. `purchase_inputs`).
        n_oov_dropped: events dropped because their item was not in the vocabulary.
    """

    items: np.ndarray
    offsets: np.ndarray
    times: np.ndarray
    session_ids: np.ndarray
    source_index: np.ndarray
    n_oov_dropped: int = 0

    @property
    def n_events(self) -> int:
        """Number of events."""
        return int(self.items.size)

    @property
    def n_sessions(self) -> int:
        """Number of sessions."""
        return int(self.offsets.size - 1)

    @property
    def n_targets(self) -> int:
        """Next-item targets: events minus the first event of each session."""
        return self.n_events - self.n_sessions

    def session_lengths(self) -> np.ndarray:
        """Return the number of events of each session (int64)."""
        return np.diff(self.offsets)


def encode_sessions(
    events: SessionEvents,
    vocab: ItemVocabulary,
    *,
    drop_oov: bool = True,
    min_session_length: int = 1,
) -> EncodedSessions:
    """Encode events' items with a vocabulary.

    Args:
        events: the sessions.
        vocab: the item vocabulary.
        drop_oov: drop events whose item is unknown (else keep them as `PAD_INDEX`).
        min_session_length: drop sessions shorter than this after OOV removal
            (sessions left empty are always dropped).

    Returns:
        The encoded sessions.
    """
    items = vocab.encode(events.item_ids)
    keep = items != PAD_INDEX if drop_oov else np.ones(items.size, dtype=bool)
    n_oov_dropped = int((~keep).sum())
    session_index = events.session_index()
    lengths = np.bincount(session_index[keep], minlength=events.n_sessions)
    keep_session = lengths >= max(min_session_length, 1)
    keep &= keep_session[session_index]
    offsets = np.concatenate(([0], np.cumsum(lengths[keep_session]))).astype(np.int64)
    return EncodedSessions(
        items=items[keep].astype(np.int32),
        offsets=offsets,
        times=events.times[keep],
        session_ids=events.session_keys()[keep_session],
        source_index=np.flatnonzero(keep).astype(np.int64),
        n_oov_dropped=n_oov_dropped,
    )


def session_grid(frame: pd.DataFrame, vocab: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sessions as a padded grid, for replaying them event by event (serving parity).

    Args:
        frame: ``SessionId``, ``ItemId``, ``Time`` rows; sessions keep the order of
            their first row, events are ordered by time within a session.
        vocab: anything with ``encode(item ids) -> indices`` (`ItemVocabulary`).

    Returns:
        ``(items, times, lengths)``: (sessions, longest) int32 indices and float64
        times, zero-padded, and each session's length.
    """
    groups = [
        g.sort_values("Time", kind="stable") for _, g in frame.groupby("SessionId", sort=False)
    ]
    length = max(len(g) for g in groups)
    items = np.zeros((len(groups), length), np.int32)
    times = np.zeros((len(groups), length), np.float64)
    lengths = np.array([len(g) for g in groups])
    for s, g in enumerate(groups):
        items[s, : len(g)] = vocab.encode(g.ItemId.astype(str).to_numpy())
        times[s, : len(g)] = g.Time.to_numpy()
    return items, times, lengths
