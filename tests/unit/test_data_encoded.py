"""encode_sessions and purchase_inputs (prediction point before the first buy)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rnnrec_jax.data.encoded import encode_sessions, purchase_inputs, session_grid
from rnnrec_jax.data.events import SessionEvents
from rnnrec_jax.data.raw import read_yoochoose_buys
from rnnrec_jax.data.split import read_split
from rnnrec_jax.data.vocabulary import PAD_INDEX, ItemVocabulary
from tests.unit._shared import require_shared_data

pytestmark = pytest.mark.unit


def test_encode_sessions_drops_oov_and_rebuilds_offsets():
    events = SessionEvents.from_arrays(
        ["1", "1", "1", "2", "3", "3"],
        ["a", "zz", "b", "zz", "a", "a"],
        [0.0, 1.0, 2.0, 0.0, 0.0, 1.0],
    )
    vocab = ItemVocabulary.from_items(["a", "b"], capacity=4)
    encoded = encode_sessions(events, vocab)
    assert encoded.items.dtype == np.int32
    assert encoded.items.tolist() == [1, 2, 1, 1]
    assert encoded.offsets.tolist() == [0, 2, 4]
    assert encoded.session_ids.tolist() == ["1", "3"]  # "2" is left empty
    assert encoded.source_index.tolist() == [0, 2, 4, 5]
    assert encoded.times.tolist() == [0.0, 2.0, 0.0, 1.0]
    assert (encoded.n_events, encoded.n_sessions, encoded.n_targets) == (4, 2, 2)
    assert encoded.n_oov_dropped == 2

    kept = encode_sessions(events, vocab, drop_oov=False)
    assert kept.items.tolist() == [1, PAD_INDEX, 2, PAD_INDEX, 1, 1]
    assert kept.session_lengths().tolist() == [3, 1, 2]
    assert encode_sessions(events, vocab, min_session_length=3).session_ids.tolist() == []


def purchase_case() -> tuple[SessionEvents, SessionEvents]:
    clicks = [
        ("none", "a", 0),
        ("none", "b", 1),
        ("none", "c", 2),
        ("after", "a", 0),
        ("after", "b", 1),
        ("middle", "a", 0),
        ("middle", "b", 5),
        ("middle", "c", 10),
        ("tie", "a", 0),
        ("tie", "b", 1),
        ("before", "a", 5),
        ("before", "b", 6),
    ]
    buys = [
        ("after", "a", 9),
        ("middle", "b", 7),
        ("middle", "c", 12),
        ("tie", "a", 1),
        ("before", "a", 5),
        ("not_in_events", "x", 0),
    ]
    return (
        SessionEvents.from_arrays(*zip(*clicks, strict=True)),
        SessionEvents.from_arrays(*zip(*buys, strict=True)),
    )


def test_purchase_inputs_prediction_points():
    events, buys = purchase_case()
    inputs = purchase_inputs(events, buys)
    # Table order is lexicographic here: after, before, middle, none, tie.
    rows = dict(
        zip(
            inputs.session_ids.tolist(),
            zip(inputs.n_inputs.tolist(), inputs.labels.tolist(), strict=True),
            strict=True,
        )
    )
    assert rows == {
        "after": (2, 1),  # buy after the last click: every click is an input
        "middle": (2, 1),  # first buy at 7: clicks at 0 and 5 only
        "none": (3, 0),  # no buy: every click
        "tie": (1, 1),  # a click at the buy's own time is not "before" it
    }
    assert inputs.excluded_session_ids.tolist() == ["before"]
    assert inputs.n_excluded == 1
    last = inputs.last_event_index[inputs.session_ids.tolist().index("middle")]
    assert events.session_ids[last] == "middle"
    assert events.times[last] == 5.0
    assert events.session_keys()[inputs.session_number].tolist() == inputs.session_ids.tolist()


def test_purchase_inputs_without_buys_uses_every_event():
    events, _ = purchase_case()
    inputs = purchase_inputs(events, None)
    assert inputs.n_excluded == 0
    assert inputs.labels.sum() == 0
    assert inputs.n_inputs.tolist() == events.session_lengths().tolist()


def rank_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    ranks = pd.Series(scores).rank().to_numpy()
    positive = labels == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@pytest.mark.data
def test_purchase_inputs_on_the_test_split_match_anchors():
    data = require_shared_data() / "yoochoose-1pct"
    test = read_split(data / "split")["test"]
    buys = read_yoochoose_buys(data / "buys.csv.gz")
    inputs = purchase_inputs(test, buys)
    assert inputs.n_sessions == 2_516
    assert inputs.n_excluded == 0
    assert inputs.labels.sum() == 168
    # ANCHORS.md: the number of events before the first buy alone gives AUC 0.691;
    # all of the session's test.tsv events give 0.704.
    assert rank_auc(inputs.n_inputs, inputs.labels) == pytest.approx(0.691, abs=5e-4)
    assert rank_auc(test.session_lengths(), inputs.labels) == pytest.approx(0.704, abs=5e-4)


def test_session_grid_keeps_session_order_and_sorts_each_session_by_time():
    frame = pd.DataFrame(
        {"SessionId": ["b", "a", "b", "a", "a"], "ItemId": ["x", "y", "z", "x", "z"],
         "Time": [5.0, 1.0, 4.0, 3.0, 2.0]}
    )  # fmt: skip
    vocab = ItemVocabulary.from_items(["x", "y", "z"])
    items, times, lengths = session_grid(frame, vocab)
    assert lengths.tolist() == [2, 3]  # "b" first: first-row order, not sorted ids
    assert items.tolist() == [[*vocab.encode(["z", "x"]).tolist(), 0],
                              vocab.encode(["y", "z", "x"]).tolist()]  # fmt: skip
    assert times.tolist() == [[4.0, 5.0, 0.0], [1.0, 2.0, 3.0]]
