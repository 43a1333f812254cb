"""Decode and validate clickstream records in the hot path.

The rules are those of ``schemas/clickstream.json``, written out by hand because a
generic JSON Schema validator costs more than the rest of decoding; a test runs both
on a corpus of good and bad events and checks they agree. Bad input is data, not an
exception: `decode_click_event` returns a `Rejection` naming the error kind, and the
worker sends it to the dead-letter topic.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson

from stream_app.settings import WorkerSettings

EVENT_TYPES: frozenset[str] = frozenset(("view", "click", "add_to_cart", "purchase"))
"""Allowed values of ``type``; ``click`` when absent."""
DEFAULT_EVENT_TYPE = "click"
_REQUIRED_IDS = ("event_id", "user_id", "item_id")
_READ_FIELDS = (*_REQUIRED_IDS, "ts", "session_id", "type")
"""The fields the worker reads: a repeated one makes the event ambiguous."""
_QUOTED_FIELDS = tuple(f'"{name}"'.encode() for name in _READ_FIELDS)
# C0 controls, DEL and C1 controls: never part of a real id, and they corrupt logs,
# terminals and Kafka tooling that print keys.
_CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f]")

COMMAND_HEADER = "rnnrec.command"
"""A clickstream record with this header set to ``delete-user`` deletes its key's state
(the worker's table, the trainer's window)."""
DELETE_USER = b"delete-user"


class ErrorKind(enum.StrEnum):
    """Why an input record was rejected (the DLQ header ``rnnrec.error.kind``)."""

    NO_VALUE = "no_value"
    TOO_LARGE = "too_large"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    EMPTY_VALUE = "empty_value"
    ID_TOO_LONG = "id_too_long"
    BAD_TIMESTAMP = "bad_timestamp"
    UNKNOWN_TYPE = "unknown_type"
    KEY_MISMATCH = "key_mismatch"
    EVENT_ID_CONFLICT = "event_id_conflict"
    DUPLICATE_FIELD = "duplicate_field"
    CONTROL_CHARACTER = "control_character"
    # Valid, but serving it raised (alone, after its batch failed): see the worker.
    PROCESSING_ERROR = "processing_error"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that is not a valid event: the kind and a short human message."""

    kind: ErrorKind
    message: str


@dataclass(frozen=True, slots=True)
class ClickEvent:
    """A validated clickstream event.

    Attributes:
        event_id: the producer's id of the event.
        user_id: the user (the record key).
        item_id: the item interacted with (raw id, not a vocabulary index).
        ts: event time, epoch seconds.
        session_id: the producer's session id, or None (the worker makes one).
        event_type: one of `EVENT_TYPES`.
        digest: 8-byte hash of the record value: equal ids with different digests
            are a conflict, equal digests a redelivery.
        key: `event_key` of ``event_id`` (derived, computed once per event).
    """

    event_id: str
    user_id: str
    item_id: str
    ts: float
    session_id: str | None
    event_type: str
    digest: bytes
    key: bytes = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", event_key(self.event_id))


@dataclass(frozen=True, slots=True)
class InputLimits:
    """The bounds input is checked against (from `WorkerSettings`)."""

    max_message_bytes: int = 64 * 1024
    max_id_length: int = 256
    min_event_ts: float = 946_684_800.0
    max_future_s: float = 86_400.0

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> InputLimits:
        """Take the limits from the worker settings."""
        return cls(
            max_message_bytes=settings.max_message_bytes,
            max_id_length=settings.max_id_length,
            min_event_ts=settings.min_event_ts,
            max_future_s=settings.max_future_s,
        )


EVENT_KEY_BYTES = 8


def event_key(event_id: str) -> bytes:
    """The 8-byte key under which a user's state remembers a recent event id (BLAKE2b).

    The state keeps keys, not ids: 8 bytes whatever the id (a UUID is 36 characters,
    and the last L of them were most of a state record). Two different ids share a
    key with probability 2^-64, which would make an event look like a redelivery.
    """
    return hashlib.blake2b(
        event_id.encode("utf-8", "surrogatepass"), digest_size=EVENT_KEY_BYTES,
        person=b"rnnrec-event-id",
    ).digest()  # fmt: skip


def value_digest(value: bytes) -> bytes:
    """The 8-byte digest used to tell a redelivery from an event id conflict."""
    return hashlib.blake2b(value, digest_size=8).digest()


def _check_id(document: dict[str, Any], field: str, limits: InputLimits) -> Rejection | None:
    value = document[field]
    if type(value) is not str:
        return Rejection(ErrorKind.WRONG_TYPE, f"{field} must be a string")
    if not value:
        return Rejection(ErrorKind.EMPTY_VALUE, f"{field} is empty")
    if len(value) > limits.max_id_length:
        return Rejection(
            ErrorKind.ID_TOO_LONG, f"{field} has {len(value)} > {limits.max_id_length} characters"
        )
    if _CONTROL_CHARACTERS.search(value) is not None:
        return Rejection(ErrorKind.CONTROL_CHARACTER, f"{field} contains a control character")
    return None


def _repeated_field(value: bytes) -> str | None:
    """The first field the worker reads that the top-level object repeats, or None.

    orjson keeps the last of repeated names silently, while other readers keep the
    first: the same bytes would be two different events. The exact check (a second,
    slower parse) only runs when a read field's quoted name occurs twice in the
    bytes or names may be written with escapes, so ordinary events never pay it.
    """
    if b"\\u" not in value and all(value.count(name) < 2 for name in _QUOTED_FIELDS):
        return None
    objects: list[list[tuple[str, Any]]] = []

    def keep_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        objects.append(pairs)
        return dict(pairs)

    try:
        # Nested objects are built first: the top-level object's pairs come last.
        json.loads(value, object_pairs_hook=keep_pairs)
    except (RecursionError, ValueError):
        # Nested deeper than the stdlib parser goes: uniqueness cannot be shown.
        return "a field"
    names = [name for name, _ in objects[-1]] if objects else []
    for name in _READ_FIELDS:
        if names.count(name) > 1:
            return name
    return None


def decode_click_event(
    key: bytes | None,
    value: bytes | None,
    limits: InputLimits,
    now: float,
    check_key: bool = True,
) -> ClickEvent | Rejection:
    """Decode one clickstream record and check it against the topic contract.

    Args:
        key: the record key (must be the UTF-8 user_id).
        value: the record value (a JSON object).
        limits: size, id length and time bounds.
        now: the worker's clock (epoch seconds), for the future-time bound.
        check_key: reject a key other than user_id (``key_mismatch``); false where
            the key does not matter (the trainer, which groups by user_id itself).

    Returns:
        The event, or a `Rejection` with the first rule broken.
    """
    if value is None:
        return Rejection(ErrorKind.NO_VALUE, "record has no value (tombstone)")
    if len(value) > limits.max_message_bytes:
        return Rejection(
            ErrorKind.TOO_LARGE, f"{len(value)} bytes > limit {limits.max_message_bytes}"
        )
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        # orjson validates UTF-8 itself; tell the two failures apart only on error.
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return Rejection(ErrorKind.INVALID_UTF8, "value is not valid UTF-8")
        return Rejection(ErrorKind.INVALID_JSON, str(exc)[:200])
    if type(document) is not dict:
        return Rejection(ErrorKind.NOT_AN_OBJECT, f"value is a JSON {type(document).__name__}")
    repeated = _repeated_field(value)
    if repeated is not None:
        return Rejection(ErrorKind.DUPLICATE_FIELD, f"{repeated} appears more than once")
    for field in (*_REQUIRED_IDS, "ts"):
        if field not in document:
            return Rejection(ErrorKind.MISSING_FIELD, f"{field} is missing")
    for field in _REQUIRED_IDS:
        problem = _check_id(document, field, limits)
        if problem is not None:
            return problem
    session_id = document.get("session_id")
    if "session_id" in document:
        problem = _check_id(document, "session_id", limits)
        if problem is not None:
            return problem
    event_type = document.get("type", DEFAULT_EVENT_TYPE)
    if type(event_type) is not str or event_type not in EVENT_TYPES:
        return Rejection(ErrorKind.UNKNOWN_TYPE, f"type must be one of {sorted(EVENT_TYPES)}")
    ts = document["ts"]
    if type(ts) is not float and type(ts) is not int:
        return Rejection(ErrorKind.WRONG_TYPE, "ts must be a number (epoch seconds)")
    ts = float(ts)
    if not math.isfinite(ts) or ts < 0:
        return Rejection(ErrorKind.BAD_TIMESTAMP, "ts must be finite and non-negative")
    if ts < limits.min_event_ts or ts > now + limits.max_future_s:
        return Rejection(ErrorKind.BAD_TIMESTAMP, f"ts {ts:.3f} is outside the accepted window")
    user_id = document["user_id"]
    try:
        key_text = None if key is None else key.decode("utf-8")
    except UnicodeDecodeError:
        key_text = None
    if check_key and key_text != user_id:
        # Per-user order and state locality rest on the key being the user id.
        return Rejection(ErrorKind.KEY_MISMATCH, "record key is not the event's user_id")
    return ClickEvent(
        event_id=document["event_id"],
        user_id=user_id,
        item_id=document["item_id"],
        ts=ts,
        session_id=session_id,
        event_type=event_type,
        digest=value_digest(value),
    )


def load_schema(name: str) -> dict[str, Any]:
    """Load a topic's JSON Schema shipped in ``stream_app/schemas``.

    Args:
        name: the file stem, e.g. ``clickstream`` or ``recommendations``.

    Returns:
        The parsed schema.
    """
    text = resources.files("stream_app.schemas").joinpath(f"{name}.json").read_bytes()
    return orjson.loads(text)
