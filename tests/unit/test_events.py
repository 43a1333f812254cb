"""Clickstream decoding: named rejection kinds, and agreement with the JSON Schema."""

from __future__ import annotations

import hashlib

import jsonschema
import orjson
import pytest

from stream_app.dlq import MAX_KEY_BYTES, dead_letter, headers_as_dict
from stream_app.events import (
    ClickEvent,
    ErrorKind,
    InputLimits,
    Rejection,
    decode_click_event,
    load_schema,
)
from tests.chaos.poison_corpus import good_look_alikes, miskeyed_look_alikes, poison_cases

NOW = 1_700_000_000.0
LIMITS = InputLimits(max_message_bytes=4096, max_id_length=256)
GOOD = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "ts": 1_600_000_000.5}


def encode(document: object) -> bytes:
    return orjson.dumps(document)


def decode(document: object, key: bytes | None = b"u1") -> ClickEvent | Rejection:
    value = document if isinstance(document, bytes) else encode(document)
    return decode_click_event(key, value, LIMITS, NOW)


def test_a_good_event_decodes_with_defaults() -> None:
    event = decode(GOOD)
    assert isinstance(event, ClickEvent)
    assert (event.event_id, event.user_id, event.item_id) == ("e1", "u1", "i1")
    assert event.ts == 1_600_000_000.5
    assert event.session_id is None and event.event_type == "click"
    assert len(event.digest) == 8


def test_optional_fields_and_unknown_extras() -> None:
    event = decode({**GOOD, "session_id": "s9", "type": "purchase", "price": 3})
    assert isinstance(event, ClickEvent)
    assert (event.session_id, event.event_type) == ("s9", "purchase")
    assert decode({**GOOD, "ts": 1_600_000_000}).ts == 1_600_000_000.0  # type: ignore[union-attr]


BAD_CASES: list[tuple[str, object, bytes | None, ErrorKind]] = [
    ("tombstone", None, b"u1", ErrorKind.NO_VALUE),
    ("too large", {**GOOD, "pad": "x" * 5000}, b"u1", ErrorKind.TOO_LARGE),
    ("bad utf-8", b'{"event_id": "\xff"}', b"u1", ErrorKind.INVALID_UTF8),
    ("not json", b"{event_id: 1}", b"u1", ErrorKind.INVALID_JSON),
    ("nan literal", b'{"ts": NaN}', b"u1", ErrorKind.INVALID_JSON),
    ("huge number", b'{"ts": 1e999}', b"u1", ErrorKind.INVALID_JSON),
    ("array", [GOOD], b"u1", ErrorKind.NOT_AN_OBJECT),
    ("string", "hello", b"u1", ErrorKind.NOT_AN_OBJECT),
    ("no item", {k: v for k, v in GOOD.items() if k != "item_id"}, b"u1", ErrorKind.MISSING_FIELD),
    ("no ts", {k: v for k, v in GOOD.items() if k != "ts"}, b"u1", ErrorKind.MISSING_FIELD),
    ("int item", {**GOOD, "item_id": 17}, b"u1", ErrorKind.WRONG_TYPE),
    ("null session", {**GOOD, "session_id": None}, b"u1", ErrorKind.WRONG_TYPE),
    ("string ts", {**GOOD, "ts": "2020-01-01"}, b"u1", ErrorKind.WRONG_TYPE),
    ("bool ts", {**GOOD, "ts": True}, b"u1", ErrorKind.WRONG_TYPE),
    ("empty item", {**GOOD, "item_id": ""}, b"u1", ErrorKind.EMPTY_VALUE),
    ("long id", {**GOOD, "event_id": "e" * 257}, b"u1", ErrorKind.ID_TOO_LONG),
    ("negative ts", {**GOOD, "ts": -1.0}, b"u1", ErrorKind.BAD_TIMESTAMP),
    ("ts before window", {**GOOD, "ts": 12.0}, b"u1", ErrorKind.BAD_TIMESTAMP),
    ("ts in far future", {**GOOD, "ts": NOW + 10 * 86400}, b"u1", ErrorKind.BAD_TIMESTAMP),
    ("ms instead of s", {**GOOD, "ts": NOW * 1000}, b"u1", ErrorKind.BAD_TIMESTAMP),
    ("unknown type", {**GOOD, "type": "hover"}, b"u1", ErrorKind.UNKNOWN_TYPE),
    ("list type", {**GOOD, "type": ["click"]}, b"u1", ErrorKind.UNKNOWN_TYPE),
    ("other key", GOOD, b"u2", ErrorKind.KEY_MISMATCH),
    ("no key", GOOD, None, ErrorKind.KEY_MISMATCH),
    (
        "repeated item",
        b'{"event_id":"e1","user_id":"u1","item_id":"i1","ts":1600000000,"item_id":"i2"}',
        b"u1",
        ErrorKind.DUPLICATE_FIELD,
    ),
    (
        "repeated ts, escaped name",
        b'{"event_id":"e1","user_id":"u1","item_id":"i1","ts":1600000000,"\\u0074s":1.6e9}',
        b"u1",
        ErrorKind.DUPLICATE_FIELD,
    ),
    ("nul in item", {**GOOD, "item_id": "i\x001"}, b"u1", ErrorKind.CONTROL_CHARACTER),
    ("newline in event id", {**GOOD, "event_id": "e\n1"}, b"u1", ErrorKind.CONTROL_CHARACTER),
    ("c1 control in session", {**GOOD, "session_id": "s\x85"}, b"u1", ErrorKind.CONTROL_CHARACTER),
    ("escape in user", {**GOOD, "user_id": "u\x1b[31m"}, b"u\x1b[31m", ErrorKind.CONTROL_CHARACTER),
]


@pytest.mark.parametrize(
    ("document", "key", "kind"),
    [case[1:] for case in BAD_CASES],
    ids=[case[0] for case in BAD_CASES],
)
def test_bad_input_gets_its_named_kind(
    document: object, key: bytes | None, kind: ErrorKind
) -> None:
    value = (
        None if document is None else document if isinstance(document, bytes) else encode(document)
    )
    outcome = decode_click_event(key, value, LIMITS, NOW)
    assert isinstance(outcome, Rejection), outcome
    assert outcome.kind is kind
    assert outcome.message and "\n" not in outcome.message


# Documents on which the schema alone decides (no size, key or clock rules).
SCHEMA_CORPUS: list[object] = [
    GOOD,
    {**GOOD, "session_id": "s", "type": "view"},
    {**GOOD, "type": "add_to_cart", "extra": {"nested": [1, 2]}},
    {**GOOD, "ts": 1_600_000_000},
    {**GOOD, "event_id": "é" * 256},
    {**GOOD, "event_id": "e" * 257},
    {**GOOD, "user_id": ""},
    {**GOOD, "session_id": ""},
    {**GOOD, "session_id": None},
    {**GOOD, "session_id": 5},
    {**GOOD, "item_id": 5},
    {**GOOD, "item_id": None},
    {**GOOD, "ts": "1"},
    {**GOOD, "ts": False},
    {**GOOD, "ts": None},
    {**GOOD, "type": "CLICK"},
    {**GOOD, "type": None},
    {**GOOD, "type": 1},
    {**GOOD, "item_id": "i\x00"},
    {**GOOD, "user_id": "u\t1"},
    {**GOOD, "session_id": "s\x7f"},
    {**GOOD, "item_id": "caf\u00e9 \u2603 \U0001f600"},
    {k: v for k, v in GOOD.items() if k != "event_id"},
    {k: v for k, v in GOOD.items() if k != "user_id"},
    [],
    "text",
    3,
    None,
    {},
]


@pytest.mark.parametrize("document", SCHEMA_CORPUS, ids=[str(i) for i in range(len(SCHEMA_CORPUS))])
def test_hand_written_validator_agrees_with_the_json_schema(document: object) -> None:
    schema = load_schema("clickstream")
    schema_ok = jsonschema.Draft202012Validator(schema).is_valid(document)
    key = document.get("user_id") if isinstance(document, dict) else None
    key_bytes = key.encode() if isinstance(key, str) else b"u1"
    outcome = decode_click_event(key_bytes, encode(document), LIMITS, NOW)
    assert isinstance(outcome, ClickEvent) == schema_ok, outcome


def test_repeated_names_that_are_not_a_read_field_twice_are_accepted() -> None:
    nested = (
        b'{"event_id":"e1","user_id":"u1","item_id":"i1","ts":1600000000,'
        b'"ctx":{"ts":1,"item_id":"x"},"note":"\\"ts\\" twice: \\"ts\\""}'
    )
    extra_twice = (
        b'{"event_id":"e1","user_id":"u1","item_id":"i1","ts":1600000000,"price":1,"price":2}'
    )
    escaped_text = orjson.dumps({**GOOD, "item_id": "caf\u00e9"}).replace(
        "\u00e9".encode(), b"\\u00e9"
    )
    for value in (nested, extra_twice, escaped_text):
        outcome = decode_click_event(b"u1", value, LIMITS, NOW)
        assert isinstance(outcome, ClickEvent), (value, outcome)
    assert decode_click_event(b"u1", escaped_text, LIMITS, NOW).item_id == "caf\u00e9"  # type: ignore[union-attr]


def test_a_repeated_field_deeper_than_the_stdlib_parser_is_rejected_not_raised() -> None:
    deep = b"[" * 1000 + b"]" * 1000
    value = b'{"event_id":"e1","user_id":"u1","item_id":"i1","ts":1,"x":' + deep + b',"ts":2}'
    outcome = decode_click_event(b"u1", value, InputLimits(max_message_bytes=8192), NOW)
    assert isinstance(outcome, Rejection) and outcome.kind is ErrorKind.DUPLICATE_FIELD


def test_every_poison_corpus_case_gets_its_kind_and_look_alikes_pass() -> None:
    limits = InputLimits(max_message_bytes=4096, max_id_length=64)
    cases = poison_cases(limits, now=NOW)
    assert len(cases) >= 40 and len({c.kind for c in cases}) >= 14
    wrong = []
    for case in cases:
        outcome = decode_click_event(case.key, case.value, limits, NOW)
        if not isinstance(outcome, Rejection) or outcome.kind is not case.kind:
            wrong.append((case.name, outcome))
    assert not wrong, wrong
    assert len(cases[1].value or b"") == limits.max_message_bytes + 1  # one byte over
    for good in good_look_alikes(limits, now=NOW):
        outcome = decode_click_event(good.key, good.value, limits, NOW)
        assert isinstance(outcome, ClickEvent), (good.name, outcome)
        assert outcome.event_id == good.event_id
    # Mis-keyed but valid: key_mismatch for the worker's check, an event without it.
    for miskeyed in miskeyed_look_alikes():
        strict = decode_click_event(miskeyed.key, miskeyed.value, limits, NOW)
        assert isinstance(strict, Rejection) and strict.kind is ErrorKind.KEY_MISMATCH
        relaxed = decode_click_event(miskeyed.key, miskeyed.value, limits, NOW, check_key=False)
        assert isinstance(relaxed, ClickEvent) and relaxed.event_id == miskeyed.event_id


def test_every_shipped_schema_is_a_valid_2020_12_schema() -> None:
    for name in (
        "clickstream",
        "recommendations",
        "purchase-predictions",
        "clickstream-dlq-headers",
        "item-updates",
    ):
        jsonschema.Draft202012Validator.check_schema(load_schema(name))


def test_error_kinds_are_the_ones_the_dlq_schema_lists() -> None:
    listed = load_schema("clickstream-dlq-headers")["properties"]["rnnrec.error.kind"]["enum"]
    assert sorted(listed) == sorted(str(k) for k in ErrorKind)


def test_dead_letter_keeps_key_and_bytes_and_describes_the_source() -> None:
    value = encode({**GOOD, "type": "hover"})
    rejection = decode_click_event(b"u1", value, LIMITS, NOW)
    assert isinstance(rejection, Rejection)
    letter = dead_letter(b"u1", value, rejection, "clickstream", 3, 42, max_payload_bytes=1024)
    headers = headers_as_dict(letter.headers)
    jsonschema.validate(headers, load_schema("clickstream-dlq-headers"))
    assert letter.key == b"u1" and letter.value == value
    assert headers["rnnrec.error.kind"] == "unknown_type"
    assert headers["rnnrec.source.partition"] == "3" and headers["rnnrec.source.offset"] == "42"
    assert headers["rnnrec.truncated"] == "false"


def test_dead_letter_truncates_large_values_with_size_and_hash() -> None:
    value = b"x" * 5000
    letter = dead_letter(b"k", value, Rejection(ErrorKind.TOO_LARGE, "big"), "t", 0, 1, 100)
    headers = headers_as_dict(letter.headers)
    assert letter.value == value[:100]
    assert headers["rnnrec.truncated"] == "true"
    assert headers["rnnrec.original.size"] == "5000"
    assert headers["rnnrec.original.sha256"] == hashlib.sha256(value).hexdigest()


def test_dead_letter_cuts_a_huge_key_with_its_size_and_hash() -> None:
    # A key near the broker's record limit made the DLQ record itself unsendable.
    key = b"a" * 1_010_000
    letter = dead_letter(key, b"x", Rejection(ErrorKind.INVALID_JSON, "bad"), "t", 0, 1, 100)
    headers = headers_as_dict(letter.headers)
    jsonschema.validate(headers, load_schema("clickstream-dlq-headers"))
    assert letter.key == key[:MAX_KEY_BYTES]
    assert headers["rnnrec.original.key_size"] == "1010000"
    assert headers["rnnrec.original.key_sha256"] == hashlib.sha256(key).hexdigest()
    short = dead_letter(
        b"k" * MAX_KEY_BYTES, b"x", Rejection(ErrorKind.INVALID_JSON, "b"), "t", 0, 1, 9
    )
    assert short.key == b"k" * MAX_KEY_BYTES
    assert "rnnrec.original.key_size" not in headers_as_dict(short.headers)


def test_dead_letter_of_a_tombstone_has_an_empty_value() -> None:
    letter = dead_letter(b"k", None, Rejection(ErrorKind.NO_VALUE, "tomb"), "t", 0, 1, 100)
    assert letter.value == b"" and headers_as_dict(letter.headers)["rnnrec.original.size"] == "0"
