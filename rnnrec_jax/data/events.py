"""The flat event table every other data module works on, and its TSV format.

A `SessionEvents` holds one row per event in parallel numpy arrays, grouped by
session (each session's events contiguous) and ordered by time within a session.
Session-parallel training, evaluation and replay all walk it through
`session_offsets()`, so no per-session Python objects are ever built.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from rnnrec_jax.data.tables import read_table

EVENT_TYPES: tuple[str, ...] = ("click", "view", "add_to_cart", "purchase")
"""The event types of the `clickstream` topic (DESIGN.md); `click` is the default."""

# Column names of the GRU4Rec TSV format and of `to_frame()`.
SESSION_COLUMN = "SessionId"
ITEM_COLUMN = "ItemId"
TIME_COLUMN = "Time"
TYPE_COLUMN = "Type"
USER_COLUMN = "UserId"
CATEGORY_COLUMN = "Category"
BOUGHT_COLUMN = "Bought"

_OPTIONAL_COLUMNS = {
    "event_types": TYPE_COLUMN,
    "user_ids": USER_COLUMN,
    "categories": CATEGORY_COLUMN,
}


def as_str_array(values: object) -> np.ndarray:
    """Turn ids of any kind (ints, str, pandas strings) into a 1-D numpy unicode array.

    Args:
        values: a sequence or array of ids.

    Returns:
        A '<U' array; integers are rendered in decimal.
    """
    if isinstance(values, pd.Series | pd.Index):
        values = values.to_numpy(dtype=object)
    array = np.asarray(values)
    if array.dtype.kind != "U":
        array = array.astype(str)
    return array.reshape(-1)


def session_sort_rank(session_ids: np.ndarray) -> np.ndarray:
    """Rank sessions in the project's canonical session order.

    The order is numeric when every id is a decimal integer (shorter first, then
    lexicographic: numeric order for ids without leading zeros), else plain code-point
    order. Numeric order is what the GRU4Rec files use, and YooChoose session ids
    grow with time, so that order is also roughly chronological.

    Args:
        session_ids: '<U' array of session ids, one per event.

    Returns:
        int64 array, one rank per event; equal ids get equal ranks.
    """
    unique_ids, inverse = np.unique(session_ids, return_inverse=True)
    if unique_ids.size and bool(np.char.isdigit(unique_ids).all()):
        order = np.lexsort((unique_ids, np.char.str_len(unique_ids)))
        rank = np.empty(order.size, dtype=np.int64)
        rank[order] = np.arange(order.size, dtype=np.int64)
        return rank[inverse.reshape(-1)]
    return inverse.reshape(-1).astype(np.int64)


@dataclass(frozen=True, eq=False)
class SessionEvents:
    """Events grouped by session and ordered by time within each session.

    Build it with `from_arrays` / `from_frame` (which sort) unless the arrays are
    already grouped; the constructor checks the grouping but does not reorder.

    Attributes:
        session_ids: '<U' session id per event.
        item_ids: '<U' item id per event.
        times: float64 epoch seconds (UTC) per event.
        event_types: one of `EVENT_TYPES` per event, or None when the source has none.
        user_ids: '<U' user id per event ('' where unknown), or None.
        categories: '<U' item category per event, or None.
    """

    session_ids: np.ndarray
    item_ids: np.ndarray
    times: np.ndarray
    event_types: np.ndarray | None = None
    user_ids: np.ndarray | None = None
    categories: np.ndarray | None = None

    def __post_init__(self) -> None:
        # Normalise dtypes once here, so every consumer can rely on them, and make
        # the stored views read-only: offsets are cached and must stay valid.
        set_field = object.__setattr__
        set_field(self, "session_ids", as_str_array(self.session_ids))
        set_field(self, "item_ids", as_str_array(self.item_ids))
        set_field(self, "times", np.asarray(self.times, dtype=np.float64).reshape(-1))
        for name in _OPTIONAL_COLUMNS:
            if getattr(self, name) is not None:
                set_field(self, name, as_str_array(getattr(self, name)))
        n = self.session_ids.size
        for field in fields(self):
            array = getattr(self, field.name)
            if array is None:
                continue
            if array.size != n:
                raise ValueError(f"{field.name} has {array.size} rows, session_ids has {n}")
            view = array.view()
            view.flags.writeable = False
            set_field(self, field.name, view)
        if not np.isfinite(self.times).all():
            raise ValueError("times must be finite epoch seconds")
        if self.event_types is not None:
            unknown = np.setdiff1d(self.event_types, EVENT_TYPES)
            if unknown.size:
                raise ValueError(
                    f"unknown event types {unknown[:5].tolist()}, allowed {EVENT_TYPES}"
                )
        starts = self._session_starts
        if pd.unique(self.session_ids[starts]).size != starts.size:
            raise ValueError(
                "events of a session must be contiguous; use SessionEvents.from_arrays"
            )
        same_session = self.session_ids[1:] == self.session_ids[:-1]
        if (same_session & (self.times[1:] < self.times[:-1])).any():
            raise ValueError("times must be non-decreasing within a session; use from_arrays")

    @classmethod
    def from_arrays(
        cls,
        session_ids: object,
        item_ids: object,
        times: object,
        *,
        event_types: object | None = None,
        user_ids: object | None = None,
        categories: object | None = None,
    ) -> SessionEvents:
        """Build a table from unordered arrays, sorting by (session, time).

        The sort is stable, so events with equal times keep their input order
        (the source files' order is the only tie-break the data has).

        Args:
            session_ids: session id per event.
            item_ids: item id per event.
            times: epoch seconds per event.
            event_types: optional event type per event.
            user_ids: optional user id per event.
            categories: optional item category per event.

        Returns:
            The sorted `SessionEvents`.
        """
        sessions = as_str_array(session_ids)
        times_array = np.asarray(times, dtype=np.float64).reshape(-1)
        if sessions.size != times_array.size:
            raise ValueError(f"{sessions.size} session ids but {times_array.size} times")
        order = np.lexsort((times_array, session_sort_rank(sessions)))
        optional = {
            "event_types": event_types,
            "user_ids": user_ids,
            "categories": categories,
        }
        return cls(
            session_ids=sessions[order],
            item_ids=as_str_array(item_ids)[order],
            times=times_array[order],
            **{k: None if v is None else as_str_array(v)[order] for k, v in optional.items()},
        )

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> SessionEvents:
        """Build a table from a frame with `SessionId`, `ItemId`, `Time` columns.

        Args:
            frame: a DataFrame; the optional columns `Type`, `UserId`, `Category`
                are read when present.

        Returns:
            The sorted `SessionEvents`.
        """
        optional = {
            name: frame[column] if column in frame.columns else None
            for name, column in _OPTIONAL_COLUMNS.items()
        }
        return cls.from_arrays(
            frame[SESSION_COLUMN], frame[ITEM_COLUMN], frame[TIME_COLUMN], **optional
        )

    def to_frame(self) -> pd.DataFrame:
        """Return the table as a DataFrame (columns as in `from_frame`).

        Returns:
            A DataFrame with `SessionId`, `ItemId`, `Time` and any optional columns.
        """
        columns = {
            SESSION_COLUMN: self.session_ids,
            ITEM_COLUMN: self.item_ids,
            TIME_COLUMN: self.times,
        }
        for name, column in _OPTIONAL_COLUMNS.items():
            if getattr(self, name) is not None:
                columns[column] = getattr(self, name)
        return pd.DataFrame(columns)

    @cached_property
    def _session_starts(self) -> np.ndarray:
        change = self.session_ids[1:] != self.session_ids[:-1]
        if self.session_ids.size == 0:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate(([0], np.flatnonzero(change) + 1)).astype(np.int64)

    @property
    def n_events(self) -> int:
        """Number of events (rows)."""
        return int(self.session_ids.size)

    @property
    def n_sessions(self) -> int:
        """Number of sessions."""
        return int(self._session_starts.size)

    @property
    def n_targets(self) -> int:
        """Next-item targets: events minus the first event of each session."""
        return self.n_events - self.n_sessions

    def session_offsets(self) -> np.ndarray:
        """Return where each session starts in the arrays, plus the end.

        Returns:
            int64 array of length n_sessions + 1; session k is rows
            `offsets[k]:offsets[k + 1]`.
        """
        return np.append(self._session_starts, self.n_events)

    def session_lengths(self) -> np.ndarray:
        """Return the number of events of each session (int64, session order)."""
        return np.diff(self.session_offsets())

    def session_keys(self) -> np.ndarray:
        """Return the id of each session, in table order ('<U', length n_sessions)."""
        return self.session_ids[self._session_starts]

    def session_index(self) -> np.ndarray:
        """Return, per event, the number of its session (0..n_sessions-1, int64)."""
        return np.repeat(np.arange(self.n_sessions, dtype=np.int64), self.session_lengths())

    def session_start_times(self) -> np.ndarray:
        """Return the time of each session's first event (float64, session order)."""
        return self.times[self._session_starts]

    def filter_mask(self, mask: np.ndarray) -> SessionEvents:
        """Keep the events where `mask` is True (order and grouping are preserved).

        Args:
            mask: bool array with one entry per event.

        Returns:
            A new `SessionEvents` with the selected rows.
        """
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (self.n_events,):
            raise ValueError(f"mask shape {mask.shape} != ({self.n_events},)")
        return type(self)(
            **{
                f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[mask]
                for f in fields(self)
            }
        )

    def filter_sessions(self, keep: np.ndarray) -> SessionEvents:
        """Keep whole sessions where `keep` is True.

        Args:
            keep: bool array with one entry per session (table order).

        Returns:
            A new `SessionEvents` with the selected sessions.
        """
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (self.n_sessions,):
            raise ValueError(f"keep shape {keep.shape} != ({self.n_sessions},)")
        return self.filter_mask(np.repeat(keep, self.session_lengths()))

    def equals(self, other: SessionEvents, *, time_tolerance: float = 0.0) -> bool:
        """Compare two tables row by row.

        Args:
            other: the table to compare with.
            time_tolerance: largest allowed absolute difference of times, in seconds.

        Returns:
            True when ids, optional columns and times (within tolerance) agree.
        """
        if self.n_events != other.n_events:
            return False
        for field in fields(self):
            mine, theirs = getattr(self, field.name), getattr(other, field.name)
            if field.name == "times":
                if not np.allclose(mine, theirs, rtol=0.0, atol=time_tolerance):
                    return False
            elif (mine is None) != (theirs is None) or (
                mine is not None and not np.array_equal(mine, theirs)
            ):
                return False
        return True


class EventLog(NamedTuple):
    """A dataset's browsing events and, where it has them, its buys.

    `events` never holds purchases; `buys` holds them (event type `purchase`), so
    next-item models see browsing only and purchase labels come from one place.
    Use `merged()` for a replay stream that interleaves both.
    """

    events: SessionEvents
    buys: SessionEvents | None

    def merged(self) -> SessionEvents:
        """Return events and buys in one table, sorted by (session, time).

        Returns:
            A `SessionEvents` whose event types mark the buys as `purchase`
            (browsing events without a type become `click`).
        """
        if self.buys is None:
            return self.events
        parts = [_with_types(self.events, "click"), _with_types(self.buys, "purchase")]
        columns = {}
        for field in fields(SessionEvents):
            values = [getattr(p, field.name) for p in parts]
            if any(v is None for v in values):
                if all(v is None for v in values):
                    columns[field.name] = None
                    continue
                values = [
                    np.full(p.n_events, "") if v is None else v
                    for p, v in zip(parts, values, strict=True)
                ]
            columns[field.name] = np.concatenate(values)
        return SessionEvents.from_arrays(
            columns.pop("session_ids"), columns.pop("item_ids"), columns.pop("times"), **columns
        )


def _with_types(events: SessionEvents, default: str) -> SessionEvents:
    if events.event_types is not None:
        return events
    return SessionEvents(
        **{f.name: getattr(events, f.name) for f in fields(events) if f.name != "event_types"},
        event_types=np.full(events.n_events, default),
    )


def read_split_tsv(path: str | Path) -> SessionEvents:
    """Read a GRU4Rec-format TSV (header `SessionId	ItemId	Time`).

    Args:
        path: the file; ids are read as strings, `Time` as float epoch seconds.

    Returns:
        The events, sorted by (session, time).
    """
    frame = read_table(
        path,
        (SESSION_COLUMN, ITEM_COLUMN, TIME_COLUMN),
        "a split TSV (SessionId, ItemId, Time)",
        sep="\t",
        dtype={SESSION_COLUMN: str, ITEM_COLUMN: str, TIME_COLUMN: np.float64},
    )
    return SessionEvents.from_frame(frame)


def write_split_tsv(events: SessionEvents, path: str | Path, *, time_decimals: int = 3) -> None:
    """Write events in the GRU4Rec TSV format (the three core columns only).

    Args:
        events: the events to write, in table order.
        path: the output file.
        time_decimals: digits after the point for `Time`; 3 (milliseconds) is the
            resolution of the raw YooChoose data and what the canonical split uses.
    """
    frame = events.to_frame()[[SESSION_COLUMN, ITEM_COLUMN, TIME_COLUMN]]
    frame.to_csv(
        path, sep="\t", index=False, float_format=f"%.{time_decimals}f", lineterminator="\n"
    )


def read_purchase_labels(path: str | Path) -> pd.Series:
    """Read a `*_purchase_labels.tsv` file (header `SessionId	Bought`).

    Args:
        path: the file.

    Returns:
        int8 Series named `Bought` (1 = the session has a buy), indexed by session id
        (str) in file order.
    """
    frame = pd.read_csv(path, sep="\t", dtype={SESSION_COLUMN: str, BOUGHT_COLUMN: np.int8})
    return pd.Series(
        frame[BOUGHT_COLUMN].to_numpy(dtype=np.int8),
        index=pd.Index(frame[SESSION_COLUMN].to_numpy(dtype=object), name=SESSION_COLUMN),
        name=BOUGHT_COLUMN,
    )


def write_purchase_labels(labels: pd.Series, path: str | Path) -> None:
    """Write purchase labels as `SessionId	Bought`.

    Args:
        labels: 0/1 Series indexed by session id (e.g. from `session_purchase_labels`).
        path: the output file.
    """
    frame = pd.DataFrame(
        {
            SESSION_COLUMN: np.asarray(labels.index, dtype=object),
            BOUGHT_COLUMN: labels.to_numpy(dtype=np.int8),
        }
    )
    frame.to_csv(path, sep="\t", index=False, lineterminator="\n")


def session_purchase_labels(events: SessionEvents, buys: SessionEvents | None) -> pd.Series:
    """Label each session of `events` 1 if it has any buy, else 0.

    Args:
        events: the sessions to label.
        buys: the buys (any table with session ids); None means no buys at all.

    Returns:
        int8 Series named `Bought`, indexed by session id in table order.
    """
    keys = events.session_keys()
    bought = np.zeros(keys.size, dtype=np.int8)
    if buys is not None:
        bought = np.isin(keys, buys.session_ids).astype(np.int8)
    return pd.Series(
        bought, index=pd.Index(keys.astype(object), name=SESSION_COLUMN), name=BOUGHT_COLUMN
    )
