"""The GRU4Rec time-based split protocol, as the canonical `yoochoose-1pct/split/` uses it.

Steps (shared/data/README.md, "The canonical benchmark split"):

1. remove consecutive repeats of an item within a session (once, on the raw clicks:
   the canonical files keep the ~870 repeats that the later item filter creates,
   e.g. A B A with B filtered out);
2. keep sessions with >= 2 events and items with >= 5 events, alternating until
   nothing changes;
3. cut = (latest event time after step 2) - `days`; test = sessions starting at or
   after the cut; train = events of the other sessions timed before the cut, then
   training sessions shorter than 2 dropped (no support filter is re-run);
4. test events on items absent from train dropped, then test sessions shorter than
   2 dropped;
5. `train_tr` / `train_valid` = steps 3-4 applied to `train_full`.

`gru4rec_split` on `yoochoose-1pct` reproduces the canonical files row for row
(tests/unit/test_data_split.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnnrec_jax.data.events import (
    SessionEvents,
    read_split_tsv,
    session_purchase_labels,
    write_purchase_labels,
    write_split_tsv,
)

SECONDS_PER_DAY = 86_400.0
SPLIT_PARTS: tuple[str, ...] = ("train_full", "test", "train_tr", "train_valid")
"""The parts of a GRU4Rec split, in the order they are written."""


def remove_consecutive_repeats(events: SessionEvents) -> SessionEvents:
    """Drop an event when it repeats the item of the event just before it in its session.

    Args:
        events: the events.

    Returns:
        The events without consecutive repeats (A A B A -> A B A).
    """
    keep = np.ones(events.n_events, dtype=bool)
    keep[1:] = (events.item_ids[1:] != events.item_ids[:-1]) | (
        events.session_ids[1:] != events.session_ids[:-1]
    )
    return events.filter_mask(keep)


def item_supports(events: SessionEvents) -> tuple[np.ndarray, np.ndarray]:
    """Count events per item.

    Args:
        events: the events.

    Returns:
        `(support_per_event, unique_items)`: int64 count of the event's item, and the
        sorted distinct item ids.
    """
    unique_items, inverse, counts = np.unique(
        events.item_ids, return_inverse=True, return_counts=True
    )
    return counts[inverse.reshape(-1)], unique_items


def drop_short_sessions(events: SessionEvents, min_length: int = 2) -> SessionEvents:
    """Keep sessions with at least `min_length` events.

    Args:
        events: the events.
        min_length: the shortest session kept.

    Returns:
        The events of the kept sessions.
    """
    return events.filter_sessions(events.session_lengths() >= min_length)


def filter_by_support(
    events: SessionEvents, *, min_session_length: int = 2, min_item_support: int = 5
) -> SessionEvents:
    """Alternate the session-length and item-support filters until both hold.

    Args:
        events: the events.
        min_session_length: the shortest session kept.
        min_item_support: the fewest events an item needs to be kept.

    Returns:
        Events in which every session and every item meets its threshold.
    """
    while True:
        before = events.n_events
        events = drop_short_sessions(events, min_session_length)
        support, _ = item_supports(events)
        events = events.filter_mask(support >= min_item_support)
        if events.n_events == before:
            return events


def time_cut(events: SessionEvents, days: float) -> float:
    """Return the split time: the latest event time minus `days`.

    Args:
        events: the (already filtered) events.
        days: the length of the test period.

    Returns:
        Epoch seconds; on `yoochoose-1pct` this is 2014-08-24 23:58:28.754 UTC.
    """
    if events.n_events == 0:
        raise ValueError(
            "no events left to split: the periods are longer than the data covers, or "
            "the support and length filters removed every event"
        )
    return float(events.times.max()) - days * SECONDS_PER_DAY


def split_by_time(
    events: SessionEvents, days: float, *, min_session_length: int = 2
) -> tuple[SessionEvents, SessionEvents]:
    """Split filtered events into train and test by session start (steps 3-4 above).

    Args:
        events: events after `filter_by_support`.
        days: the length of the test period, counted back from the latest event.
        min_session_length: the shortest session kept on either side.

    Returns:
        `(train, test)`.
    """
    cut = time_cut(events, days)
    starts_in_test = np.repeat(events.session_start_times() >= cut, events.session_lengths())
    # A session that starts before the cut but runs past it keeps only its part
    # before the cut, so no training event is later than any test session's start.
    train = drop_short_sessions(
        events.filter_mask(~starts_in_test & (events.times < cut)), min_session_length
    )
    test = events.filter_mask(starts_in_test)
    test = test.filter_mask(np.isin(test.item_ids, np.unique(train.item_ids)))
    test = drop_short_sessions(test, min_session_length)
    return train, test


def gru4rec_split(
    clicks: SessionEvents,
    *,
    days: float = 7.0,
    min_session_length: int = 2,
    min_item_support: int = 5,
) -> dict[str, SessionEvents]:
    """Make the GRU4Rec split of a click log (see the module docstring).

    Buys play no part in the split; pass them to `write_split` for the labels.

    Args:
        clicks: browsing events only (not buys).
        days: length of the test and of the validation period.
        min_session_length: the shortest session kept.
        min_item_support: the fewest events an item needs.

    Returns:
        `{"train_full", "test", "train_tr", "train_valid"}` → events.
    """
    filtered = filter_by_support(
        remove_consecutive_repeats(clicks),
        min_session_length=min_session_length,
        min_item_support=min_item_support,
    )
    train_full, test = split_by_time(filtered, days, min_session_length=min_session_length)
    train_tr, train_valid = split_by_time(train_full, days, min_session_length=min_session_length)
    return {
        "train_full": train_full,
        "test": test,
        "train_tr": train_tr,
        "train_valid": train_valid,
    }


def write_split(
    split: dict[str, SessionEvents],
    buys: SessionEvents | None,
    out_dir: str | Path,
    *,
    time_decimals: int = 3,
) -> dict[str, Path]:
    """Write each part as `<part>.tsv` and `<part>_purchase_labels.tsv`.

    Args:
        split: parts from `gru4rec_split`.
        buys: the raw buys (a session's label is 1 if it has any buy), or None.
        out_dir: the folder to write into (created if missing).
        time_decimals: digits after the point for `Time`.

    Returns:
        Written file paths, keyed by `<part>` and `<part>_purchase_labels`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for part, events in split.items():
        written[part] = out_dir / f"{part}.tsv"
        write_split_tsv(events, written[part], time_decimals=time_decimals)
        labels_key = f"{part}_purchase_labels"
        written[labels_key] = out_dir / f"{labels_key}.tsv"
        write_purchase_labels(session_purchase_labels(events, buys), written[labels_key])
    return written


def read_split(directory: str | Path) -> dict[str, SessionEvents]:
    """Read the parts of a split folder that exist (`train_full.tsv`, `test.tsv`, ...).

    Args:
        directory: e.g. `shared/data/yoochoose-1pct/split`.

    Returns:
        Part name → events, in `SPLIT_PARTS` order.
    """
    directory = Path(directory)
    return {
        part: read_split_tsv(directory / f"{part}.tsv")
        for part in SPLIT_PARTS
        if (directory / f"{part}.tsv").exists()
    }
