"""The demo's live view names the recent items that raised the first recommendation."""

from __future__ import annotations

from stream_app.demo import _why_first


def test_causes_are_the_positive_weights_strongest_first() -> None:
    rec = {
        "items": ["x", "y"],
        "explanation": {
            "method": "occlusion",
            "recent_items": ["a", "b", "c"],
            "weights": [[0.12, -0.4, 0.51], [1.0, 1.0, 1.0]],
        },
    }
    assert _why_first(rec) == "c +0.51, a +0.12"


def test_an_item_clicked_twice_is_named_once_with_its_largest_weight() -> None:
    rec = {
        "items": ["x"],
        "explanation": {
            "method": "occlusion",
            "recent_items": ["a", "b", "a", "a"],
            "weights": [[0.3, 0.1, 1.17, 1.17]],
        },
    }
    assert _why_first(rec) == "a +1.17, b +0.10"


def test_nothing_raised_it_or_no_matrix() -> None:
    lowered = {"explanation": {"recent_items": ["a"], "weights": [[-0.2]]}}
    assert _why_first(lowered) == "no recent item raised it"
    assert _why_first({"explanation": None}) == ""
    assert _why_first({"explanation": {"recent_items": [], "weights": [[]]}}) == ""
    # A schema 1 message (per-item causes) has no matrix to read.
    assert _why_first({"explanation": {"recent_items": ["a"], "per_item": []}}) == ""
