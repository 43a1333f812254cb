"""The model-updates registry survives any record a writer can put on the topic."""

from __future__ import annotations

import json

import pytest

from stream_app.model_registry import Registry, _previous_versions

pytestmark = pytest.mark.unit


def pointer(version: str, **fields: object) -> bytes:
    return json.dumps({"version": version, **fields}).encode()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"rnnrec/v1/chunk/\xc2\xb2", b"bytes"),  # a superscript two: isdigit(), not int()
        (b"rnnrec/v1/manifest", b"[" * 100_000 + b"]" * 100_000),  # nesting past recursion
        (b"rnnrec/serving", b'{"version": "v1", "updated": 1' + b"0" * 400 + b"}"),  # > float
        (b"rnnrec/serving", b'{"version": "v1", "updated": true}'),
        (b"rnnrec/v1/manifest", b'{"created": 1' + b"0" * 400 + b"}"),
        (b"rnnrec/v1/manifest", b"\xff\xfe not json"),
    ],
)
def test_a_malformed_record_is_absorbed_not_raised(key: bytes, value: bytes) -> None:
    # One such record used to raise in every reader (workers' followers, publishers,
    # `rnnrec model list`), for as long as it stayed on the topic.
    registry = Registry("rnnrec", "model-updates")
    registry.apply(b"rnnrec/serving", pointer("v0", updated=5.0), 0)
    registry.apply(key, value, 1)
    registry.published()  # sorts by the manifests' creation time
    if registry.serving is not None:
        assert registry.serving.updated in (0.0, 5.0)


def test_a_good_chunk_key_is_read() -> None:
    registry = Registry("rnnrec", "model-updates")
    registry.apply(b"rnnrec/v1/chunk/12", b"data", 3)
    assert registry.versions["v1"].chunks == {12: b"data"}


def test_the_pointer_names_its_previous_versions_and_garbage_there_is_ignored() -> None:
    registry = Registry("rnnrec", "model-updates")
    registry.apply(b"rnnrec/serving", pointer("v3", previous=["v2", "v3", "v1"]), 0)
    assert registry.serving is not None
    assert registry.serving.candidates() == ["v3", "v2", "v1"]
    for bad in ("v2", {"v": 1}, [1, None, "v2"], ["v"] * 100_000):
        registry.apply(b"rnnrec/serving", pointer("v3", previous=bad), 1)
        assert registry.serving is not None
        assert registry.serving.candidates()[0] == "v3"
        assert len(registry.serving.candidates()) <= 33
    registry.apply(b"rnnrec/serving", pointer("v3", previous=[1, None, "v2"]), 2)
    assert registry.serving.candidates() == ["v3", "v2"]


def test_a_new_pointer_carries_the_chain_of_earlier_ones() -> None:
    registry = Registry("rnnrec", "model-updates")
    assert _previous_versions(registry, "v1", 5) == []
    registry.apply(b"rnnrec/serving", pointer("v3", previous=["v2", "v1"]), 0)
    assert _previous_versions(registry, "v4", 5) == ["v3", "v2", "v1"]
    assert _previous_versions(registry, "v4", 2) == ["v3", "v2"]
    # A rollback to v2: v2 leaves the chain, the version it replaces heads it.
    assert _previous_versions(registry, "v2", 5) == ["v3", "v1"]
