"""SessionEvents: ordering, offsets, filtering, frames and the TSV/label formats."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rnnrec_jax.data.events import (
    EventLog,
    SessionEvents,
    read_purchase_labels,
    read_split_tsv,
    session_purchase_labels,
    write_purchase_labels,
    write_split_tsv,
)

pytestmark = pytest.mark.unit


def small_events() -> SessionEvents:
    # Sessions "10" and "9" given out of order, and "9" with its events reversed.
    return SessionEvents.from_arrays(
        ["10", "9", "10", "9", "10", "200"],
        ["a", "b", "c", "d", "e", "f"],
        [5.0, 2.0, 6.0, 1.0, 6.0, 0.5],
    )


def test_from_arrays_sorts_sessions_numerically_and_times_stably():
    events = small_events()
    assert events.session_ids.tolist() == ["9", "9", "10", "10", "10", "200"]
    assert events.item_ids.tolist() == ["d", "b", "a", "c", "e", "f"]  # c before e: tie kept
    assert events.times.dtype == np.float64


def test_non_numeric_session_ids_sort_lexicographically():
    events = SessionEvents.from_arrays(["b", "a10", "a9"], ["x", "y", "z"], [0.0, 0.0, 0.0])
    assert events.session_keys().tolist() == ["a10", "a9", "b"]


def test_offsets_lengths_and_counts():
    events = small_events()
    assert events.n_events == 6
    assert events.n_sessions == 3
    assert events.n_targets == 3
    assert events.session_offsets().tolist() == [0, 2, 5, 6]
    assert events.session_offsets().dtype == np.int64
    assert events.session_lengths().tolist() == [2, 3, 1]
    assert events.session_keys().tolist() == ["9", "10", "200"]
    assert events.session_index().tolist() == [0, 0, 1, 1, 1, 2]
    assert events.session_start_times().tolist() == [1.0, 5.0, 0.5]


def test_empty_table():
    events = SessionEvents.from_arrays([], [], [])
    assert (events.n_events, events.n_sessions, events.n_targets) == (0, 0, 0)
    assert events.session_offsets().tolist() == [0]


@pytest.mark.parametrize(
    ("sessions", "times", "message"),
    [
        (["1", "2", "1"], [0.0, 0.0, 1.0], "contiguous"),
        (["1", "1"], [2.0, 1.0], "non-decreasing"),
        (["1", "1"], [0.0, np.nan], "finite"),
    ],
)
def test_constructor_rejects_ungrouped_or_bad_times(sessions, times, message):
    with pytest.raises(ValueError, match=message):
        SessionEvents(np.array(sessions), np.array(["a"] * len(sessions)), np.array(times))


def test_constructor_rejects_bad_types_and_lengths():
    with pytest.raises(ValueError, match="unknown event types"):
        SessionEvents.from_arrays(["1"], ["a"], [0.0], event_types=["like"])
    with pytest.raises(ValueError, match="rows"):
        SessionEvents(np.array(["1", "1"]), np.array(["a"]), np.array([0.0, 1.0]))


def test_arrays_are_read_only():
    events = small_events()
    with pytest.raises(ValueError):
        events.times[0] = 99.0


def test_filter_mask_and_filter_sessions_keep_grouping():
    events = small_events()
    kept = events.filter_mask(events.item_ids != "a")
    assert kept.session_lengths().tolist() == [2, 2, 1]
    only_long = events.filter_sessions(events.session_lengths() >= 2)
    assert only_long.session_keys().tolist() == ["9", "10"]
    with pytest.raises(ValueError):
        events.filter_mask(np.ones(3, dtype=bool))


def test_frame_round_trip_with_optional_columns():
    events = SessionEvents.from_arrays(
        ["1", "1", "2"],
        ["a", "b", "a"],
        [0.0, 1.5, 2.0],
        event_types=["click", "add_to_cart", "view"],
        user_ids=["u1", "u1", ""],
        categories=["S", "0", "7"],
    )
    frame = events.to_frame()
    assert list(frame.columns) == ["SessionId", "ItemId", "Time", "Type", "UserId", "Category"]
    assert SessionEvents.from_frame(frame).equals(events)
    assert not SessionEvents.from_frame(frame[["SessionId", "ItemId", "Time"]]).equals(events)


def test_split_tsv_round_trip(tmp_path):
    events = SessionEvents.from_arrays(
        ["22", "22", "7"], ["214837485", "00123", "5"], [1396747745.969, 1396747911.443, 1.0]
    )
    path = tmp_path / "part.tsv"
    write_split_tsv(events, path)
    lines = path.read_text().splitlines()
    assert lines[0] == "SessionId\tItemId\tTime"
    assert lines[1] == "7\t5\t1.000"
    assert lines[3] == "22\t00123\t1396747911.443"  # leading zeros kept: ids are strings
    assert read_split_tsv(path).equals(events, time_tolerance=1e-6)


def test_purchase_labels_round_trip(tmp_path):
    events = small_events()
    buys = SessionEvents.from_arrays(["10", "10", "404"], ["a", "c", "z"], [9.0, 9.0, 1.0])
    labels = session_purchase_labels(events, buys)
    assert labels.index.tolist() == ["9", "10", "200"]
    assert labels.tolist() == [0, 1, 0]
    path = tmp_path / "labels.tsv"
    write_purchase_labels(labels, path)
    assert path.read_text() == "SessionId\tBought\n9\t0\n10\t1\n200\t0\n"
    read_back = read_purchase_labels(path)
    pd.testing.assert_series_equal(read_back, labels, check_index_type=False)
    assert session_purchase_labels(events, None).sum() == 0


def test_event_log_merged_interleaves_buys():
    events = SessionEvents.from_arrays(["1", "1", "2"], ["a", "b", "c"], [0.0, 2.0, 5.0])
    buys = SessionEvents.from_arrays(["1"], ["a"], [1.0], event_types=["purchase"])
    merged = EventLog(events, buys).merged()
    assert merged.item_ids.tolist() == ["a", "a", "b", "c"]
    assert merged.event_types.tolist() == ["click", "purchase", "click", "click"]
    assert EventLog(events, None).merged() is events
