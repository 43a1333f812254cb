"""The recommendations schema version follows the explanation's shape."""

from __future__ import annotations

import jsonschema
import pytest

from stream_app.events import load_schema
from stream_app.worker import RECOMMENDATIONS_SCHEMA_VERSION, recommendation_schema_version

MATRIX = {"method": "occlusion", "recent_items": ["a", "b"], "weights": [[0.5, -0.1]]}
PER_ITEM = {
    "method": "occlusion",
    "recent_items": ["a", "b"],
    "per_item": [{"item": "x", "because": ["a"], "weights": [0.5]}],
}


def message(explanation: dict | None) -> dict:
    return {
        "schema_version": recommendation_schema_version(explanation),
        "event_id": "e1",
        "user_id": "u1",
        "session_id": "s1",
        "items": ["x"],
        "scores": [1.5],
        "model_version": "3",
        "event_ts": 1.0,
        "produced_ts": 2.0,
        "explanation": explanation,
        "state_recomputed": False,
    }


@pytest.mark.parametrize("explanation", [MATRIX, None])
def test_current_messages_are_version_2_and_follow_the_schema(explanation: dict | None) -> None:
    assert recommendation_schema_version(explanation) == RECOMMENDATIONS_SCHEMA_VERSION == 2
    jsonschema.validate(message(explanation), load_schema("recommendations"))


def test_a_stored_version_1_result_is_resent_as_version_1() -> None:
    assert recommendation_schema_version(PER_ITEM) == 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(message(PER_ITEM), load_schema("recommendations"))
