"""Per-user state kept in the worker's Faust table, its byte codec, and session policy.

The table stores bytes (``value_serializer="raw"``) made by `encode_state`: orjson
with the carry as base64 float32 (or float16) bytes. JSON keeps the record readable
in the changelog and easy to evolve (a format number ``v`` leads every record);
``test_state.py`` measures the bytes per user. Item ids are stored raw, never as
vocabulary indices, so a new vocabulary never misreads old state.

Every state write goes to the changelog, which the broker compacts, so bytes per
record are bytes per event written and rewritten. The last result is therefore stored
compactly (float32 scores as base64, the explanation's recent items as a count of the
user's last items, its recommended items not repeated) and the recent events as two
base64 strings, their ids' 8-byte keys (`event_key`) and their digests; `decode_state`
rebuilds exactly the objects that were sent, so a re-send is byte-identical. Format 4
keeps event keys instead of event ids (a UUID id is 36 characters, a key 8 bytes);
format 3 (ids as text, explanation as a weight matrix, recommendations schema 2),
format 2 (``per_item`` explanations) and format 1 (everything verbatim) are still read. A worker of an earlier release cannot
read a later format, so roll workers forward, not back.
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from stream_app.events import EVENT_KEY_BYTES, ClickEvent, event_key
from stream_app.settings import CarryDtype, SessionPolicy

STATE_FORMAT = 4
"""Version of the encoded record; bump it (and keep a reader) when fields change."""

READABLE_FORMATS = frozenset({1, 2, 3, STATE_FORMAT})
"""Formats `decode_state` reads: 1 stored the last result and digests verbatim, 2
packed ``per_item`` explanations (recommendations schema 1), 3 stored the recent
event ids as text (their keys are computed on reading)."""


class StateFormatError(ValueError):
    """A stored state record cannot be read (unknown format or corrupt bytes).

    The worker treats that user as new and counts it; inspect the changelog record.
    """


class OcclusionExplanation(dict):
    """An occlusion explanation as it is sent: a plain dict to JSON and to ``==``
    (``method``, ``recent_items``, ``weights``), that also carries its weights as int32
    millionths, taken from the scorer's whole-batch array.

    The state codec stores the weights as those millionths; turning 20 lists of floats
    back into an array for every state write cost more of the event loop than
    building the explanations (py-spy, drain with explanations on).
    """

    __slots__ = ("millionths",)

    def __init__(
        self,
        method: str,
        recent_items: list[str],
        weights: list[list[float]],
        millionths: np.ndarray | None,
    ) -> None:
        """``millionths``: int32 (len(weights), len(recent_items)), exactly the weights
        times 10^6, or None when they are not (then the codec converts the lists)."""
        super().__init__(method=method, recent_items=recent_items, weights=weights)
        self.millionths = millionths


@dataclass(slots=True)
class LastResult:
    """The outputs of the user's last applied event, kept for re-sends and the web view."""

    event_id: str
    session_id: str
    items: list[str]
    scores: list[float]
    p_purchase: float
    model_version: str
    event_ts: float
    produced_ts: float
    explanation: dict[str, Any] | None = None
    state_recomputed: bool = False


@dataclass(slots=True)
class UserState:
    """Everything the worker remembers about one user.

    Attributes:
        carry: the model's flat float32 carry, or None before the first step.
        recent_items: the last L raw item ids, oldest first.
        session_id: the session the carry belongs to.
        session_counter: sessions started so far (names generated session ids).
        session_events: events applied in the current session (bounds recomputation).
        last_event_ts: event time of the last applied event.
        model_version: the model that produced ``carry``.
        event_count: events applied in total.
        source_partition: input partition of the last applied event.
        source_offset: input offset of the last applied event (-1: none).
        source_rekeyed: the last applied event came from ``clickstream-repartition``
            (its partition and offset are in that topic), not from ``clickstream``.
        recent_events: ``(event_key(event_id), digest)`` of the last L events, oldest
            first.
        last_result: outputs of the last applied event.
    """

    carry: np.ndarray | None = None
    recent_items: list[str] = field(default_factory=list)
    session_id: str = ""
    session_counter: int = 0
    session_events: int = 0
    last_event_ts: float = 0.0
    model_version: str = ""
    event_count: int = 0
    source_partition: int = -1
    source_offset: int = -1
    source_rekeyed: bool = False
    recent_events: list[tuple[bytes, bytes]] = field(default_factory=list)
    last_result: LastResult | None = None

    def applied(self, partition: int, offset: int, rekeyed: bool = False) -> bool:
        """True when the record at ``partition``/``offset`` is already in this state.

        ``rekeyed``: the record is on ``clickstream-repartition``, whose offsets are
        not comparable with ``clickstream``'s.
        """
        return (
            rekeyed == self.source_rekeyed
            and partition == self.source_partition
            and offset <= self.source_offset
        )

    def digest_of(self, event_id: str) -> bytes | None:
        """The stored digest of a recent event id, or None if not among the last L."""
        return self.digest_of_key(event_key(event_id))

    def digest_of_key(self, key: bytes) -> bytes | None:
        """`digest_of` for an id's `event_key` (``ClickEvent.key``)."""
        for seen_key, digest in reversed(self.recent_events):
            if seen_key == key:
                return digest
        return None


def encode_state(
    state: UserState,
    carry_dtype: CarryDtype = CarryDtype.FLOAT32,
    exact_positions: np.ndarray | None = None,
) -> bytes:
    """Serialise a user's state for the table.

    Args:
        state: the state to store.
        carry_dtype: float32 (exact) or float16 (half the carry bytes).
        exact_positions: with float16, carry positions also stored as float32 (the
            scorer's `exact_carry_positions`: item indices, counts and event times,
            which float16 would round or overflow).

    Returns:
        The record bytes.
    """
    record: dict[str, Any] = {
        "v": STATE_FORMAT,
        "i": state.recent_items,
        "s": state.session_id,
        "sc": state.session_counter,
        "se": state.session_events,
        "t": state.last_event_ts,
        "m": state.model_version,
        "n": state.event_count,
        "p": state.source_partition,
        "o": state.source_offset,
    }
    record.update(_pack_recent_events(state.recent_events))
    if state.source_rekeyed:
        record["k"] = 1  # absent in records written before repartitioning existed
    if state.carry is not None:
        dtype = np.float16 if carry_dtype == CarryDtype.FLOAT16 else np.float32
        carry = state.carry
        if dtype == np.float16 and exact_positions is not None and len(exact_positions):
            positions = np.asarray(exact_positions, np.int32)
            record["ci"] = base64.b64encode(positions.tobytes()).decode("ascii")
            exact = carry[positions].astype(np.float32)
            record["ce"] = base64.b64encode(exact.tobytes()).decode("ascii")
            # Zeroed in the float16 copy: an epoch time there would overflow (and warn)
            # although its float32 value above is what decoding uses.
            carry = carry.copy()
            carry[positions] = 0.0
        record["c"] = base64.b64encode(carry.astype(dtype).tobytes()).decode("ascii")
        record["cd"] = str(carry_dtype)
    if state.last_result is not None:
        r = state.last_result
        record["r"] = [
            r.event_id,
            r.session_id,
            r.items,
            _pack_scores(r.scores),
            r.p_purchase,
            r.model_version,
            r.event_ts,
            r.produced_ts,
            _pack_explanation(r.explanation, r.items, state.recent_items),
            r.state_recomputed,
        ]
    return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY)


def decode_state(data: bytes) -> UserState:
    """Read a record written by `encode_state`.

    Args:
        data: the table value.

    Returns:
        The state, with the carry as float32.

    Raises:
        StateFormatError: unknown format number or corrupt bytes.
    """
    try:
        record = orjson.loads(data)
        if record.get("v") not in READABLE_FORMATS:
            raise StateFormatError(f"unknown state format {record.get('v')!r}")
        carry = None
        if "c" in record:
            dtype = np.float16 if record["cd"] == CarryDtype.FLOAT16 else np.float32
            raw = base64.b64decode(record["c"])
            carry = np.frombuffer(raw, dtype=dtype).astype(np.float32)
            if "ci" in record:
                positions = np.frombuffer(base64.b64decode(record["ci"]), np.int32)
                carry[positions] = np.frombuffer(base64.b64decode(record["ce"]), np.float32)
        recent_items = list(record["i"])
        last = None
        if "r" in record:
            fields = list(record["r"])
            fields[3] = _unpack_scores(fields[3])
            fields[8] = _unpack_explanation(fields[8], fields[2], recent_items)
            last = LastResult(*fields)
        return UserState(
            carry=carry,
            recent_items=recent_items,
            session_id=record["s"],
            session_counter=record["sc"],
            session_events=record["se"],
            last_event_ts=record["t"],
            model_version=record["m"],
            event_count=record["n"],
            source_partition=record["p"],
            source_offset=record["o"],
            source_rekeyed=bool(record.get("k", 0)),
            recent_events=_unpack_recent_events(record),
            last_result=last,
        )
    except StateFormatError:
        raise
    except (
        orjson.JSONDecodeError,
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
        IndexError,
    ) as exc:
        raise StateFormatError(f"corrupt state record: {exc}") from None


_DIGEST_BYTES = 8  # `stream_app.events.value_digest`


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _pack_recent_events(events: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """Event keys as one base64 string and their digests as another; digests of
    another length (not written by this worker) as a list of base64 strings."""
    keys = b"".join(key for key, _ in events)
    if len(keys) != EVENT_KEY_BYTES * len(events):
        raise ValueError("recent event keys must be event_key() values")
    if all(len(d) == _DIGEST_BYTES for _, d in events):
        return {"ek": _b64(keys), "d": _b64(b"".join(d for _, d in events))}
    return {"ek": _b64(keys), "d": [_b64(d) for _, d in events]}


def _split(blob: bytes, width: int, count: int) -> list[bytes]:
    if len(blob) != width * count:
        raise ValueError("recent event keys and digests differ in number")
    return [blob[i * width : (i + 1) * width] for i in range(count)]


def _unpack_recent_events(record: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    if "ek" in record:  # format 4
        blob = base64.b64decode(record["ek"])
        keys = _split(blob, EVENT_KEY_BYTES, len(blob) // EVENT_KEY_BYTES)
        stored = record["d"]
        if isinstance(stored, str):
            digests = _split(base64.b64decode(stored), _DIGEST_BYTES, len(keys))
        else:
            digests = [base64.b64decode(d) for d in stored]
        return list(zip(keys, digests, strict=True))
    # Formats 1 to 3 stored the ids themselves.
    if "d" not in record:
        return [(event_key(eid), base64.b64decode(d)) for eid, d in record["e"]]
    ids = record["e"]
    if not all(type(e) is str for e in ids):
        raise ValueError("recent event ids must be strings")
    digests = _split(base64.b64decode(record["d"]), _DIGEST_BYTES, len(ids))
    return [(event_key(eid), digest) for eid, digest in zip(ids, digests, strict=True)]


def _pack_scores(scores: list[float]) -> list[float] | str:
    """Scores come from float32 arrays: base64 float32 bytes hold them exactly in about
    a third of their JSON text. Anything not float32-exact is stored as is."""
    packed = np.asarray(scores, np.float32)
    if packed.shape != (len(scores),) or packed.tolist() != list(scores):
        return scores
    return base64.b64encode(packed.tobytes()).decode("ascii")


def _unpack_scores(stored: list[float] | str) -> list[float]:
    if isinstance(stored, str):
        return np.frombuffer(base64.b64decode(stored), np.float32).tolist()
    return stored


def _pack_explanation(
    explanation: dict[str, Any] | None, items: list[str], recent_items: list[str]
) -> Any:
    """``[method, recent, weights]`` for the worker's occlusion explanation.

    ``recent`` is n when the explanation's recent items are the last n of the state's
    (always, for the event the state ends with), else the list. Any other shape is
    stored verbatim (a dict), so nothing is lost.
    """
    if explanation is None:
        return None
    if (
        list(explanation) != ["method", "recent_items", "weights"]
        or not isinstance(explanation["recent_items"], list)
        or not isinstance(explanation["weights"], list)
        or len(explanation["weights"]) != len(items)
    ):
        return explanation
    recent = explanation["recent_items"]
    n = len(recent)
    suffix = (
        n if n <= len(recent_items) and recent_items[len(recent_items) - n :] == recent else None
    )
    millionths = getattr(explanation, "millionths", None)
    if millionths is not None and millionths.shape == (len(items), n):
        weights: str | list = base64.b64encode(millionths.astype("<i4").tobytes()).decode("ascii")
    else:
        weights = _pack_weights(explanation["weights"], (len(items), n))
    return [explanation["method"], recent if suffix is None else suffix, weights]


def to_millionths(values: np.ndarray) -> np.ndarray | None:
    """``values`` as int32 millionths when that is exact (the state codec's form of
    explanation weights, which the scorer rounds to 6 places), else None: not 6
    places, past int32, NaN, or a -0.0 that millionths would turn into 0.0."""
    micro = np.rint(values * 1e6)
    if not np.all(np.abs(micro) < 2**31):  # also false for NaN
        return None
    ints = micro.astype("<i4")
    negative_zero = (values == 0) & np.signbit(values)
    # ints / 1e6 is exactly what `_unpack_weights` will read back.
    if not np.array_equal(ints / 1e6, values) or negative_zero.any():
        return None
    return ints


def _pack_weights(weights: list[list[float]], shape: tuple[int, int]) -> str | list:
    """Weights as base64 int32 millionths (`to_millionths`): 5.3 characters a weight
    instead of about 9.5 as JSON text; where that is not exact, the list as it is."""
    try:
        values = np.asarray(weights, np.float64)
    except (TypeError, ValueError):
        return weights  # ragged or not numbers
    ints = to_millionths(values) if values.shape == shape else None
    if ints is None:
        return weights
    return base64.b64encode(ints.tobytes()).decode("ascii")


def _unpack_weights(stored: str | list, shape: tuple[int, int]) -> list[list[float]]:
    if not isinstance(stored, str):
        return stored
    micro = np.frombuffer(base64.b64decode(stored), "<i4")
    return (micro.astype(np.float64) / 1e6).reshape(shape).tolist()


def _unpack_explanation(stored: Any, items: list[str], recent_items: list[str]) -> Any:
    if not isinstance(stored, list):
        return stored  # None, or a verbatim dict (format 1, or a shape not packed)
    method, recent, *rest = stored
    if isinstance(recent, int):
        if not 0 <= recent <= len(recent_items):
            raise ValueError("explanation refers past the recent items")
        recent = recent_items[len(recent_items) - recent :] if recent else []
    if len(rest) == 1:
        weights = _unpack_weights(rest[0], (len(items), len(recent)))
        return {"method": method, "recent_items": recent, "weights": weights}
    # Format 2: per recommended item its causes, as positions in ``recent``.
    because, weights = rest
    per_item = [
        {"item": item, "because": [recent[p] for p in positions], "weights": w}
        for item, positions, w in zip(items, because, weights, strict=True)
    ]
    return {"method": method, "recent_items": recent, "per_item": per_item}


@dataclass(frozen=True, slots=True)
class SessionRules:
    """The session settings the policy functions need."""

    policy: SessionPolicy = SessionPolicy.NEW_SESSION_ID
    gap_s: float = 1800.0
    user_ttl_s: float = 30 * 86400.0


def is_expired(state: UserState, ts: float, rules: SessionRules) -> bool:
    """True when the user was idle longer than the TTL: forget everything about them."""
    return (
        rules.user_ttl_s > 0
        and state.event_count > 0
        and ts - state.last_event_ts > rules.user_ttl_s
    )


def starts_new_session(state: UserState, event: ClickEvent, rules: SessionRules) -> bool:
    """Decide whether ``event`` opens a new session (the carry resets).

    Args:
        state: the user's state before the event (``event_count == 0``: new user).
        event: the incoming event.
        rules: policy, inactivity gap and TTL.

    Returns:
        True when the carry must start from the model's initial carry.
    """
    if state.event_count == 0 or state.carry is None:
        return True
    if rules.policy == SessionPolicy.CARRY_OVER:
        return False
    gap_passed = event.ts - state.last_event_ts > rules.gap_s
    if rules.policy == SessionPolicy.INACTIVITY_GAP or event.session_id is None:
        return gap_passed
    return event.session_id != state.session_id


def session_id_for(user_id: str, event_session_id: str | None, start_ts: float) -> str:
    """The session id published with the outputs.

    Args:
        user_id: the user.
        event_session_id: the producer's session id, if any (always wins).
        start_ts: event time of the session's first event (names generated ids).

    Returns:
        ``event_session_id`` or ``"<user_id>#<start ms>"``. The start time, not a
        per-user counter: a counter restarts when the user's state is deleted (idle
        sweep, ``rnnrec user delete``), and a later session would reuse an old id.
    """
    if event_session_id is not None:
        return event_session_id
    return f"{user_id}#{round(start_ts * 1000)}"


def open_session(
    state: UserState, event: ClickEvent, rules: SessionRules
) -> tuple[UserState, bool]:
    """Apply the session policy before stepping the model on ``event``.

    Args:
        state: the user's state (not modified).
        event: the incoming event.
        rules: the session settings.

    Returns:
        ``(state, reset)``: a state whose session fields are ready for the event
        (carry set to None on reset; history and bookkeeping kept unless the user
        expired), and whether the session reset.
    """
    if is_expired(state, event.ts, rules):
        state = UserState(
            session_counter=state.session_counter,
            source_partition=state.source_partition,
            source_offset=state.source_offset,
            source_rekeyed=state.source_rekeyed,
            recent_events=state.recent_events,
        )
    reset = starts_new_session(state, event, rules)
    if not reset:
        if event.session_id is not None and event.session_id != state.session_id:
            # Carry-over policies still report the producer's current session id.
            state = _copy(state, session_id=event.session_id)
        return state, False
    counter = state.session_counter + 1
    return (
        _copy(
            state,
            carry=None,
            session_counter=counter,
            session_events=0,
            session_id=session_id_for(event.user_id, event.session_id, event.ts),
        ),
        True,
    )


def record_step(
    state: UserState,
    event: ClickEvent,
    carry: np.ndarray,
    model_version: str,
    partition: int,
    offset: int,
    history_length: int,
    result: LastResult | None,
    rekeyed: bool = False,
) -> UserState:
    """The state after the model stepped on ``event``.

    Args:
        state: the state returned by `open_session` for this event.
        event: the applied event.
        carry: the new flat float32 carry.
        model_version: the version that produced it.
        partition: the event's input partition.
        offset: the event's input offset.
        history_length: L, the item ids and event ids kept.
        result: the outputs sent for the event (None: filled in once scored).
        rekeyed: the event came from ``clickstream-repartition``.

    Returns:
        A new `UserState`.
    """
    return _copy(
        state,
        carry=carry,
        recent_items=[*state.recent_items, event.item_id][-history_length:],
        session_events=state.session_events + 1,
        last_event_ts=max(state.last_event_ts, event.ts),
        model_version=model_version,
        event_count=state.event_count + 1,
        source_partition=partition,
        source_offset=offset,
        source_rekeyed=rekeyed,
        recent_events=[*state.recent_events, (event.key, event.digest)][-history_length:],
        last_result=result,
    )


def session_history(state: UserState) -> list[str]:
    """Item ids of the current session still in the window (oldest first).

    Used to recompute a carry under new model params, and to exclude seen items.
    """
    n = min(state.session_events, len(state.recent_items))
    return state.recent_items[len(state.recent_items) - n :] if n else []


def _copy(state: UserState, **changes: Any) -> UserState:
    return dataclasses.replace(state, **changes)
