"""The GRU4Rec split: each rule on a hand-made log, and the canonical files reproduced."""

from __future__ import annotations

import filecmp

import numpy as np
import pytest

from rnnrec_jax.data.events import SessionEvents, read_purchase_labels
from rnnrec_jax.data.raw import read_yoochoose
from rnnrec_jax.data.split import (
    SECONDS_PER_DAY,
    SPLIT_PARTS,
    filter_by_support,
    gru4rec_split,
    read_split,
    remove_consecutive_repeats,
    split_by_time,
    time_cut,
    write_split,
)
from tests.unit._shared import require_shared_data

pytestmark = pytest.mark.unit

DAY = SECONDS_PER_DAY


def events_of(rows: list[tuple[str, str, float]]) -> SessionEvents:
    sessions, items, times = zip(*rows, strict=True)
    return SessionEvents.from_arrays(sessions, items, times)


def test_consecutive_repeats_removed_within_sessions_only():
    events = events_of([("1", "a", 0), ("1", "a", 1), ("1", "b", 2), ("1", "a", 3), ("2", "a", 4)])
    kept = remove_consecutive_repeats(events)
    assert kept.item_ids.tolist() == ["a", "b", "a", "a"]
    assert kept.session_ids.tolist() == ["1", "1", "1", "2"]


def test_support_filter_runs_until_stable():
    # Dropping the single-event session "3" leaves item "b" with 1 event, and dropping
    # "b" then leaves session "2" with 1 event: only a second round catches it.
    events = events_of(
        [
            ("1", "a", 0),
            ("1", "a2", 1),
            ("2", "b", 0),
            ("2", "a", 1),
            ("3", "b", 0),
            ("4", "a", 0),
            ("4", "a2", 1),
        ]
    )
    kept = filter_by_support(events, min_session_length=2, min_item_support=2)
    assert kept.session_keys().tolist() == ["1", "4"]


def test_time_split_rules():
    rows = [
        # train sessions
        ("1", "a", 0.0),
        ("1", "b", 10.0),
        ("2", "c", 1.0 * DAY),  # alone before the cut once "2"'s late event is cut off
        ("2", "a", 8.5 * DAY),
        ("3", "a", 2.0 * DAY),
        ("3", "b", 2.0 * DAY + 5),
        # test sessions (start >= cut = 10 days - 7 days = 3 days)
        ("4", "a", 3.0 * DAY),
        ("4", "new", 3.0 * DAY + 1),
        ("4", "b", 3.0 * DAY + 2),
        ("5", "a", 9.0 * DAY),
        ("5", "new", 9.0 * DAY + 1),  # only "a" is known: session too short
        ("6", "b", 10.0 * DAY - 1),
        ("6", "a", 10.0 * DAY),
    ]
    events = events_of(rows)
    assert time_cut(events, 7) == 3.0 * DAY
    train, test = split_by_time(events, 7)
    assert train.session_keys().tolist() == ["1", "3"]
    assert test.session_keys().tolist() == ["4", "6"]
    assert test.item_ids.tolist() == ["a", "b", "b", "a"]


def test_gru4rec_split_parts_and_write(tmp_path):
    rows = [(str(s), item, s * DAY + k) for s in range(20) for k, item in enumerate("abcab")]
    split = gru4rec_split(events_of(rows), days=7)
    assert tuple(split) == SPLIT_PARTS
    # cut = 19 days + 4 s - 7 days: session 12 is train, cut short to its first 4 events.
    assert split["test"].session_keys().tolist() == [str(s) for s in range(13, 20)]
    assert split["train_full"].session_lengths()[-1] == 4
    assert split["train_valid"].session_keys().tolist() == [str(s) for s in range(6, 13)]
    buys = events_of([("13", "a", 13 * DAY + 9)])
    written = write_split(split, buys, tmp_path)
    assert read_split(tmp_path)["test"].equals(split["test"], time_tolerance=1e-3)
    labels = read_purchase_labels(written["test_purchase_labels"])
    assert labels[labels == 1].index.tolist() == ["13"]


def test_days_is_keyword_only_so_buys_cannot_be_mistaken_for_it():
    events = events_of([("1", "a", 0.0)])
    with pytest.raises(TypeError):
        gru4rec_split(events, events)  # type: ignore[misc]


@pytest.mark.data
def test_reproduces_canonical_yoochoose_split_exactly(tmp_path):
    data = require_shared_data() / "yoochoose-1pct"
    log = read_yoochoose(data)
    split = gru4rec_split(log.events, days=7)
    canonical = read_split(data / "split")
    assert tuple(canonical) == SPLIT_PARTS
    expected_counts = {
        "train_full": (186_994, 49_606, 6_380, 3_113),
        "test": (9_238, 2_516, 1_967, 168),
        "train_tr": (174_919, 46_563, 6_335, 2_907),
        "train_valid": (11_760, 2_972, 2_032, 205),
    }
    for part, reference in canonical.items():
        ours = split[part]
        assert ours.session_ids.tolist() == reference.session_ids.tolist(), part
        assert ours.item_ids.tolist() == reference.item_ids.tolist(), part
        np.testing.assert_allclose(ours.times, reference.times, rtol=0, atol=1e-3)
        n_items = np.unique(ours.item_ids).size
        n_bought = int(np.isin(ours.session_keys(), log.buys.session_ids).sum())
        assert (ours.n_events, ours.n_sessions, n_items, n_bought) == expected_counts[part]
    # The cut the README quotes, 2014-08-24 23:58 UTC, is the latest event *after*
    # filtering minus 7 days (the latest raw click is 2014-09-01 00:01:49).
    cut = time_cut(filter_by_support(remove_consecutive_repeats(log.events)), 7)
    assert 1408924680.0 <= cut < 1408924740.0
    # Written files (events and labels) are byte-identical to the canonical ones.
    written = write_split(split, log.buys, tmp_path)
    for path in written.values():
        assert filecmp.cmp(path, data / "split" / path.name, shallow=False), path.name
