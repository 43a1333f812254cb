"""A corpus of bad clickstream records, each with the DLQ reason it must get, and the
look-alikes that are NOT bad input.

Data, not a test: the chaos test mixes it into a good stream on the real broker, the
unit test checks every case against `stream_app.events.decode_click_event`, and a
benchmark may replay it. Cases are built for given input limits and clock, because
"too large", "too long" and "in the future" are relative to them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson

from stream_app.events import ErrorKind, InputLimits

T0 = 1_600_000_000.0
HUGE_BYTES = 512 * 1024
"""A payload far above any sane limit, still below the producer's 1 MiB request cap."""


@dataclass(frozen=True)
class PoisonCase:
    """One bad record: what it is, its key and value, and the reason it must get."""

    name: str
    key: bytes | None
    value: bytes | None
    kind: ErrorKind


@dataclass(frozen=True)
class GoodLookAlike:
    """A record that looks odd but is valid: it must get outputs, never the DLQ."""

    name: str
    key: bytes | None
    value: bytes
    event_id: str


def _doc(user: str, event_id: str, **fields: object) -> dict[str, object]:
    return {"event_id": event_id, "user_id": user, "item_id": "1", "ts": T0, **fields}


def _json(document: object) -> bytes:
    return orjson.dumps(document)


def poison_cases(
    limits: InputLimits | None = None, now: float | None = None, user: str = "p"
) -> list[PoisonCase]:
    """Every kind of bad input the worker must route to the DLQ (over 40 cases).

    Args:
        limits: the worker's input limits (size, id length, time window); the
            defaults when None.
        now: the worker's clock; defaults to the current time.
        user: the user id (and key) the cases are written for.

    Returns:
        The cases; each ``name`` is unique. ``event_id_conflict`` is not here: it
        needs an earlier good event (see `conflict_case`).
    """
    limits = limits or InputLimits()
    now = time.time() if now is None else now
    key = user.encode()
    good = _doc(user, "p-0")

    def with_(**changes: object) -> bytes:
        return _json({**good, **changes})

    def without(name: str) -> bytes:
        return _json({k: v for k, v in good.items() if k != name})

    head = b'{"event_id":"p-1","user_id":"' + key + b'","item_id":"1",'
    long_id = "x" * (limits.max_id_length + 1)
    # Valid JSON, exactly one byte over the limit.
    just_too_large = with_(pad="z" * (limits.max_message_bytes + 1 - len(with_(pad=""))))
    K = ErrorKind
    cases = [
        ("tombstone", key, None, K.NO_VALUE),
        ("one byte over the size limit", key, just_too_large, K.TOO_LARGE),
        ("huge payload", key, with_(pad="z" * HUGE_BYTES), K.TOO_LARGE),
        ("invalid utf-8 in a string", key, head + b'"ts":1600000000,"x":"\xff\xfe"}', K.INVALID_UTF8),
        ("overlong utf-8 encoding", key, head + b'"ts":1600000000,"x":"\xc0\xaf"}', K.INVALID_UTF8),
        ("utf-16 document", key, _json(good).decode().encode("utf-16"), K.INVALID_UTF8),
        ("empty value", key, b"", K.INVALID_JSON),
        ("whitespace only", key, b" \n\t ", K.INVALID_JSON),
        ("truncated json", key, _json(good)[:-7], K.INVALID_JSON),
        ("trailing garbage", key, _json(good) + b"}", K.INVALID_JSON),
        ("single quotes", key, _json(good).replace(b'"', b"'"), K.INVALID_JSON),
        ("NaN literal", key, head + b'"ts":NaN}', K.INVALID_JSON),
        ("Infinity literal", key, head + b'"ts":Infinity}', K.INVALID_JSON),
        ("number overflows to inf", key, head + b'"ts":1e999}', K.INVALID_JSON),
        ("nested 2000 deep", key, b"[" * 2000 + b"]" * 2000, K.INVALID_JSON),
        ("utf-8 byte order mark", key, b"\xef\xbb\xbf" + _json(good), K.INVALID_JSON),
        ("lone surrogate escape", key, head + b'"ts":1600000000,"x":"\\ud800"}', K.INVALID_JSON),
        ("json array", key, _json([good]), K.NOT_AN_OBJECT),
        ("json number", key, b"42", K.NOT_AN_OBJECT),
        ("json null", key, b"null", K.NOT_AN_OBJECT),
        ("json string", key, b'"click"', K.NOT_AN_OBJECT),
        ("empty object", key, b"{}", K.MISSING_FIELD),
        ("no item_id", key, without("item_id"), K.MISSING_FIELD),
        ("no ts", key, without("ts"), K.MISSING_FIELD),
        ("no user_id", key, without("user_id"), K.MISSING_FIELD),
        ("item_id a number", key, with_(item_id=17), K.WRONG_TYPE),
        ("item_id an object", key, with_(item_id={"id": "1"}), K.WRONG_TYPE),
        ("event_id a list", key, with_(event_id=["p-0"]), K.WRONG_TYPE),
        ("user_id a boolean", b"true", with_(user_id=True), K.WRONG_TYPE),
        ("item_id null", key, with_(item_id=None), K.WRONG_TYPE),
        ("session_id null", key, with_(session_id=None), K.WRONG_TYPE),
        ("ts a string", key, with_(ts="2020-09-13T12:26:40Z"), K.WRONG_TYPE),
        ("ts a boolean", key, with_(ts=True), K.WRONG_TYPE),
        ("empty item_id", key, with_(item_id=""), K.EMPTY_VALUE),
        ("empty event_id", key, with_(event_id=""), K.EMPTY_VALUE),
        ("empty session_id", key, with_(session_id=""), K.EMPTY_VALUE),
        ("overlong item_id", key, with_(item_id=long_id), K.ID_TOO_LONG),
        ("overlong user_id", long_id.encode(), with_(user_id=long_id), K.ID_TOO_LONG),
        ("negative ts", key, with_(ts=-1.0), K.BAD_TIMESTAMP),
        ("zero ts", key, with_(ts=0), K.BAD_TIMESTAMP),
        ("ts before the window", key, with_(ts=limits.min_event_ts - 1), K.BAD_TIMESTAMP),
        ("ts far in the future", key, with_(ts=now + limits.max_future_s + 86_400), K.BAD_TIMESTAMP),
        ("ts in milliseconds", key, with_(ts=now * 1000), K.BAD_TIMESTAMP),
        ("ts 1e300", key, with_(ts=1e300), K.BAD_TIMESTAMP),
        ("ts a 30-digit integer", key, head + b'"ts":123456789012345678901234567890}', K.BAD_TIMESTAMP),
        ("unknown type", key, with_(type="hover"), K.UNKNOWN_TYPE),
        ("type in capitals", key, with_(type="CLICK"), K.UNKNOWN_TYPE),
        ("type null", key, with_(type=None), K.UNKNOWN_TYPE),
        ("key is another user", b"someone-else", _json(good), K.KEY_MISMATCH),
        ("no key", None, _json(good), K.KEY_MISMATCH),
        ("key not utf-8", b"\xff" + key, _json(good), K.KEY_MISMATCH),
        ("item_id repeated", key, head + b'"ts":1600000000,"item_id":"2"}', K.DUPLICATE_FIELD),
        ("ts repeated, escaped name", key, head + b'"ts":1600000000,"\\u0074s":1}', K.DUPLICATE_FIELD),
        ("NUL in item_id", key, with_(item_id="1\x002"), K.CONTROL_CHARACTER),
        ("newline in event_id", key, with_(event_id="p\n0"), K.CONTROL_CHARACTER),
        ("terminal escape in user_id", b"p\x1b[2J", with_(user_id="p\x1b[2J"), K.CONTROL_CHARACTER),
    ]  # fmt: skip
    out = [PoisonCase(name, k, v, kind) for name, k, v, kind in cases]
    assert len({c.name for c in out}) == len(out), "case names must be unique"
    return out


def conflict_case(original_key: bytes, original_value: bytes) -> PoisonCase:
    """The same event id as an event already applied, with different bytes."""
    document = orjson.loads(original_value)
    document["item_id"] = f"{document['item_id']}-changed"
    return PoisonCase(
        "event id reused with other content", original_key, _json(document),
        ErrorKind.EVENT_ID_CONFLICT,
    )  # fmt: skip


def good_look_alikes(
    limits: InputLimits | None = None, now: float | None = None, prefix: str = "g"
) -> list[GoodLookAlike]:
    """Valid records at the edges of the contract; each has its own user.

    A redelivery (same id, same bytes) and an event on an item no model knows are
    valid too; the chaos test adds those itself, against events of its stream.
    """
    limits = limits or InputLimits()
    now = time.time() if now is None else now
    edge = "e" * limits.max_id_length
    documents = [
        ("unicode ids", f"{prefix}-\u00fcser-\U0001f600", {"item_id": "caf\u00e9 \u2603"}),
        ("id of the maximal length", edge[: limits.max_id_length - 2] + prefix[:1] + "-", {}),
        ("integer ts", f"{prefix}-int-ts", {"ts": int(T0)}),
        ("ts an hour ahead", f"{prefix}-ahead", {"ts": now + 3600}),
        ("unknown extra fields", f"{prefix}-extra", {"price": 9.5, "ctx": {"ts": 1, "x": [1]}}),
        ("explicit type", f"{prefix}-typed", {"type": "purchase", "session_id": "s 1"}),
        ("ids with spaces and quotes", f'{prefix} "q" u', {"item_id": 'it "1"'}),
    ]
    out = []
    for i, (name, user, fields) in enumerate(documents):
        event_id = f"{prefix}-ev-{i}"
        value = _json(_doc(user, event_id, **fields))
        out.append(GoodLookAlike(name, user.encode(), value, event_id))
    return out


def miskeyed_look_alikes(prefix: str = "k") -> list[GoodLookAlike]:
    """Valid events whose record key is not their user_id; each has its own user.

    `stream_app.events.decode_click_event` rejects them (``key_mismatch``), and a
    worker with repartitioning on (the default) re-keys and serves them; with
    ``RNNREC_REPARTITION=false`` they are dead letters.
    """
    keys = [("no key", None), ("key is another user", b"someone-else"),
            ("key not utf-8", b"\xff" + prefix.encode())]  # fmt: skip
    out = []
    for i, (name, key) in enumerate(keys):
        event_id = f"{prefix}-ev-{i}"
        out.append(GoodLookAlike(name, key, _json(_doc(f"{prefix}-user-{i}", event_id)), event_id))
    return out
