"""Per-user state: codec, size per user, session policy, and per-round scoring order."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import numpy as np
import orjson
import pytest

from stream_app.events import ClickEvent, value_digest
from stream_app.scoring import UserSteps, score_in_rounds
from stream_app.settings import CarryDtype, SessionPolicy
from stream_app.state import (
    LastResult,
    OcclusionExplanation,
    SessionRules,
    StateFormatError,
    UserState,
    decode_state,
    encode_state,
    event_key,
    is_expired,
    open_session,
    record_step,
    session_history,
    session_id_for,
    starts_new_session,
)
from tests.worker_scorers import RecentItemsScorer

T0 = 1_600_000_000.0


def event(item: str, ts: float, session: str | None = None, eid: str | None = None) -> ClickEvent:
    eid = eid or f"e-{item}-{ts}"
    return ClickEvent(eid, "u1", item, ts, session, "click", value_digest(eid.encode()))


def recent_ids(history: int = 50) -> list[str]:
    """The event ids behind `full_state`'s recent events (12 characters each)."""
    return [f"{100_000_000 + j}-{j}" for j in range(history)]


def full_state(
    carry_size: int = 100, history: int = 50, k: int = 20, ids: list[str] | None = None
) -> UserState:
    rng = np.random.default_rng(0)
    items = [str(100_000_000 + i) for i in range(history)]
    ids = ids or recent_ids(history)
    return UserState(
        carry=rng.standard_normal(carry_size).astype(np.float32),
        recent_items=items,
        session_id="s-123456",
        session_counter=3,
        session_events=12,
        last_event_ts=T0,
        model_version="7",
        event_count=40,
        source_partition=2,
        source_offset=123456,
        recent_events=[(event_key(eid), value_digest(b"%d" % j)) for j, eid in enumerate(ids)],
        last_result=LastResult(
            "e1",
            "s-123456",
            items[:k],
            # float32 values, as the scorer sends them
            rng.random(k).astype(np.float32).tolist(),
            0.25,
            "7",
            T0,
            T0 + 1,
            explanation=occlusion_explanation(items[:k], items[-5:], rng),
        ),
    )


def occlusion_explanation(
    recommended: list[str], recent: list[str], rng: np.random.Generator
) -> dict[str, Any]:
    """The shape `stream_app.scoring.Scorer` sends: a weight per (recommended item,
    recent item), rounded to 6 places, of either sign."""
    weights = np.round(rng.normal(size=(len(recommended), len(recent))), 6) + 0.0
    return {"method": "occlusion", "recent_items": recent, "weights": weights.tolist()}


def per_item_explanation(
    recommended: list[str], recent: list[str], rng: np.random.Generator
) -> dict[str, Any]:
    """The explanation of recommendations schema 1: 1 to 3 causes per recommended item."""
    per_item = []
    for item in recommended:
        picks = rng.choice(len(recent), size=int(rng.integers(1, 4)), replace=False)
        weights = np.round(np.sort(rng.random(len(picks)))[::-1], 6).tolist()
        per_item.append({"item": item, "because": [recent[p] for p in picks], "weights": weights})
    return {"method": "occlusion", "recent_items": recent, "per_item": per_item}


def with_recent_ids(record: dict[str, Any]) -> dict[str, Any]:
    """A format 4 record's event keys replaced by the ids of formats 2 and 3."""
    assert "ek" in record and isinstance(record["d"], str)
    ids = recent_ids(len(base64.b64decode(record["ek"])) // 8)
    return {**{k: v for k, v in record.items() if k != "ek"}, "e": ids}


def format_3(state: UserState) -> bytes:
    """A record as the previous release wrote it: recent event ids as text."""
    record = with_recent_ids(orjson.loads(encode_state(state)))
    return orjson.dumps({**record, "v": 3})


def format_2(state: UserState) -> bytes:
    """A record as the previous release wrote it: a ``per_item`` explanation packed as
    ``[method, n recent, positions per item, weights per item]``."""
    assert state.last_result is not None
    explanation = state.last_result.explanation
    assert explanation is not None and "per_item" in explanation
    recent = explanation["recent_items"]
    assert state.recent_items[-len(recent) :] == recent
    record = with_recent_ids(orjson.loads(encode_state(dataclasses.replace(
        state, last_result=dataclasses.replace(state.last_result, explanation=None)
    ))))  # fmt: skip
    record["v"] = 2
    position = {item: i for i, item in reversed(list(enumerate(recent)))}
    record["r"][8] = [
        "occlusion",
        len(recent),
        [[position[b] for b in p["because"]] for p in explanation["per_item"]],
        [p["weights"] for p in explanation["per_item"]],
    ]
    return orjson.dumps(record)


def format_1(state: UserState) -> bytes:
    """A record as the previous release wrote it (everything verbatim)."""
    assert state.carry is not None and state.last_result is not None
    r = state.last_result
    return orjson.dumps(
        {
            "v": 1,
            "i": state.recent_items,
            "s": state.session_id,
            "sc": state.session_counter,
            "se": state.session_events,
            "t": state.last_event_ts,
            "m": state.model_version,
            "n": state.event_count,
            "p": state.source_partition,
            "o": state.source_offset,
            "e": [
                [eid, base64.b64encode(d).decode()]
                for eid, (_, d) in zip(recent_ids(), state.recent_events, strict=True)
            ],
            "c": base64.b64encode(state.carry.tobytes()).decode(),
            "cd": "float32",
            "r": [r.event_id, r.session_id, r.items, r.scores, r.p_purchase, r.model_version,
                  r.event_ts, r.produced_ts, r.explanation, r.state_recomputed],
        }
    )  # fmt: skip


def test_codec_round_trips_every_field() -> None:
    state = full_state()
    back = decode_state(encode_state(state))
    assert back.carry is not None and np.array_equal(back.carry, state.carry)
    for name in UserState.__slots__:
        if name != "carry":
            assert getattr(back, name) == getattr(state, name), name


def test_a_resent_result_is_byte_identical_to_the_sent_one() -> None:
    # The worker re-sends the stored result on a redelivery: the packed scores and
    # explanation must rebuild exactly what went out, key order included.
    state = full_state()
    back = decode_state(encode_state(state))
    assert back.last_result is not None and state.last_result is not None
    sent, resent = state.last_result, back.last_result
    assert orjson.dumps(resent.explanation) == orjson.dumps(sent.explanation)
    assert orjson.dumps(resent.scores) == orjson.dumps(sent.scores)
    assert resent == sent


def test_format_1_records_are_still_read() -> None:
    state = full_state()
    back = decode_state(format_1(state))
    for name in UserState.__slots__:
        if name != "carry":
            assert getattr(back, name) == getattr(state, name), name
    assert encode_state(back) == encode_state(state)  # rewritten in the current format


def test_format_3_records_are_still_read_and_recognise_their_event_ids() -> None:
    state = full_state()
    old = format_3(state)
    assert b'"e":["100000000-0"' in old  # ids as text, as format 3 wrote them
    back = decode_state(old)
    for name in UserState.__slots__:
        if name != "carry":
            assert getattr(back, name) == getattr(state, name), name
    # A redelivery after the upgrade is still recognised by its event id.
    assert back.digest_of("100000007-7") == value_digest(b"7")
    assert back.digest_of("100000007-8") is None
    assert encode_state(back) == encode_state(state)  # rewritten in the current format


def test_recent_events_keep_eight_byte_keys_whatever_the_ids() -> None:
    # UUID event ids (36 characters) cost what 12-character ones do: 8 bytes each.
    uuids = [f"{j:08x}-1b9d-4b7c-9f3e-{j:012x}" for j in range(50)]
    short, long = full_state(), full_state(ids=uuids)
    assert len(encode_state(long)) == len(encode_state(short))
    assert len(format_3(short)) - len(encode_state(short)) > 200  # 50 ids x ~15 bytes
    back = decode_state(encode_state(long))
    assert back.recent_events == long.recent_events
    assert (
        back.digest_of(uuids[3]) == value_digest(b"3") and back.digest_of(uuids[3].upper()) is None
    )
    assert len({event_key(u) for u in uuids}) == 50 and all(len(event_key(u)) == 8 for u in uuids)


def test_recent_event_digests_of_another_length_are_kept() -> None:
    state = dataclasses.replace(full_state(history=3), recent_events=[
        (event_key("a"), b"0123456789abcdef"), (event_key("b"), b"x"), (event_key("c"), b""),
    ])  # fmt: skip
    assert decode_state(encode_state(state)).recent_events == state.recent_events


def test_format_2_records_and_their_per_item_explanations_are_still_read() -> None:
    state = full_state()
    assert state.last_result is not None
    rng = np.random.default_rng(3)
    old = per_item_explanation(state.last_result.items, state.recent_items[-5:], rng)
    state.last_result = dataclasses.replace(state.last_result, explanation=old)
    back = decode_state(format_2(state))
    for name in UserState.__slots__:
        if name != "carry":
            assert getattr(back, name) == getattr(state, name), name
    assert back.last_result is not None
    # A redelivery re-sends the stored result exactly as it went out.
    assert orjson.dumps(back.last_result.explanation) == orjson.dumps(old)
    again = decode_state(encode_state(back))  # and it survives a rewrite
    assert again.last_result == back.last_result


@pytest.mark.parametrize(
    "change",
    [
        {"scores": [0.1, 0.2]},  # not float32-exact: stored as JSON numbers
        {"explanation": {"method": "other", "data": [1, 2]}},  # unknown shape
        {"explanation": {"method": "occlusion", "recent_items": ["x"], "weights": []}},
        {"explanation": {"method": "occlusion", "recent_items": "x", "weights": [[1.0]] * 20}},
    ],
)
def test_results_that_cannot_be_packed_are_stored_verbatim(change: dict[str, Any]) -> None:
    state = full_state()
    assert state.last_result is not None
    items = state.last_result.items[:2] if "scores" in change else state.last_result.items
    state.last_result = dataclasses.replace(state.last_result, items=items, **change)
    if "scores" in change:
        state.last_result.explanation = None
    back = decode_state(encode_state(state))
    assert back.last_result == state.last_result


@pytest.mark.parametrize(
    "weight",
    [0.1234567, 1e-7, -0.0, 3000.0, float("nan")],  # not 6 places, -0, past int32, NaN
)
def test_weights_that_millionths_cannot_hold_are_stored_as_they_are(weight: float) -> None:
    state = full_state()
    assert state.last_result is not None and state.last_result.explanation is not None
    weights = state.last_result.explanation["weights"]
    weights[3][1] = weight
    back = decode_state(encode_state(state))
    assert back.last_result is not None and back.last_result.explanation is not None
    assert orjson.dumps(back.last_result.explanation) == orjson.dumps(state.last_result.explanation)


def test_the_scorers_millionths_encode_as_the_lists_would() -> None:
    state = full_state()
    assert state.last_result is not None and state.last_result.explanation is not None
    plain = state.last_result.explanation
    micro = np.rint(np.asarray(plain["weights"]) * 1e6).astype(np.int32)
    carried = OcclusionExplanation(plain["method"], plain["recent_items"], plain["weights"], micro)
    with_micro = dataclasses.replace(state, last_result=dataclasses.replace(
        state.last_result, explanation=carried))  # fmt: skip
    assert encode_state(with_micro) == encode_state(state)
    # A copy of another shape is not trusted: the lists decide.
    odd = OcclusionExplanation(plain["method"], plain["recent_items"], plain["weights"], micro[:3])
    with_odd = dataclasses.replace(state, last_result=dataclasses.replace(
        state.last_result, explanation=odd))  # fmt: skip
    assert encode_state(with_odd) == encode_state(state)


def test_explanations_of_items_outside_the_history_keep_their_own_list() -> None:
    # After a model swap the carry is recomputed and the history may have been cut:
    # the explanation's recent items are then not the last n of the state's.
    state = full_state()
    assert state.last_result is not None
    rng = np.random.default_rng(1)
    other = ["900", "901", "900"]  # not the last items of the state: stored as a list
    state.last_result.explanation = occlusion_explanation(state.last_result.items, other, rng)
    back = decode_state(encode_state(state))
    assert back.last_result == state.last_result


def test_fresh_state_round_trips_without_carry() -> None:
    back = decode_state(encode_state(UserState()))
    assert back.carry is None and back.event_count == 0 and back.last_result is None


def test_bytes_per_user_are_measured_and_bounded() -> None:
    # A GRU of 100 units, L=50 nine-digit item ids and 50 recent event keys, K=20 last
    # result with an occlusion explanation over the last 5 items (a 20 x 5 weight
    # matrix): 3,308 bytes with a float32 carry (format 3 wrote 3,510 with 12-character
    # event ids and 4,710 with UUIDs; format 1 4,634), 3,040 with float16. The item
    # history is about 600 bytes, the event keys and digests 536 each as base64, the
    # carry 536, the weights 536 as base64 int32 millionths.
    state = full_state()
    size32 = len(encode_state(state, CarryDtype.FLOAT32))
    size16 = len(encode_state(state, CarryDtype.FLOAT16))
    assert size16 < size32 < 3400
    assert size32 - size16 == pytest.approx((400 - 200) * 4 / 3, abs=4)
    # What the packing saves on every changelog write: the explanation's ids and the
    # repeated item names, the scores' and weights' decimal text, the digests' quoting.
    assert len(format_1(state)) - size32 > 1000


def test_float16_carry_costs_bounded_precision() -> None:
    state = full_state()
    back = decode_state(encode_state(state, CarryDtype.FLOAT16))
    assert back.carry is not None and back.carry.dtype == np.float32
    assert np.max(np.abs(back.carry - state.carry)) < 2e-3 * np.max(np.abs(state.carry))


def test_float16_carry_keeps_exact_positions_in_float32() -> None:
    # An epoch time overflows float16 and an item index above 2,048 is rounded: the
    # scorer names such positions and the codec stores them in float32 as well.
    state = full_state(carry_size=40)
    state.carry[3] = 1.7e9
    state.carry[7] = 6001.0
    with np.errstate(over="ignore"):  # the overflow is what this line shows
        lossy = decode_state(encode_state(state, CarryDtype.FLOAT16)).carry
    assert lossy is not None and np.isinf(lossy[3]) and lossy[7] != 6001.0
    exact = np.array([3, 7], np.int32)
    back = decode_state(encode_state(state, CarryDtype.FLOAT16, exact)).carry
    assert back is not None and back[3] == np.float32(1.7e9) and back[7] == 6001.0
    rest = np.ones(40, bool)
    rest[exact] = False
    np.testing.assert_allclose(back[rest], state.carry[rest], rtol=1e-3, atol=1e-4)
    # float32 records ignore the positions (already exact) and store nothing extra.
    assert b'"ci"' not in encode_state(state, CarryDtype.FLOAT32, exact)


@pytest.mark.parametrize("data", [b"", b"not json", b'{"v": 99}', b'{"v": 1, "i": []}'])
def test_unreadable_records_raise_state_format_error(data: bytes) -> None:
    with pytest.raises(StateFormatError):
        decode_state(data)


RULES = SessionRules(SessionPolicy.NEW_SESSION_ID, gap_s=1800, user_ttl_s=86400)


def stepped(state: UserState, ev: ClickEvent, offset: int = 0, history: int = 3) -> UserState:
    state, _ = open_session(state, ev, RULES)
    return record_step(state, ev, np.ones(2, np.float32), "1", 0, offset, history, None)


def test_first_event_opens_a_generated_session() -> None:
    state, reset = open_session(UserState(), event("a", T0), RULES)
    assert reset and state.session_id == "u1#1600000000000" and state.session_counter == 1


def test_new_session_id_resets_and_same_id_continues() -> None:
    state = stepped(UserState(), event("a", T0, "s1"))
    assert not starts_new_session(state, event("b", T0 + 5, "s1"), RULES)
    assert starts_new_session(state, event("b", T0 + 5, "s2"), RULES)
    after, reset = open_session(state, event("b", T0 + 5, "s2"), RULES)
    assert reset and after.session_id == "s2" and after.carry is None


def test_without_session_id_the_gap_decides() -> None:
    state = stepped(UserState(), event("a", T0))
    assert not starts_new_session(state, event("b", T0 + 1800), RULES)
    assert starts_new_session(state, event("b", T0 + 1801), RULES)
    after, _ = open_session(state, event("b", T0 + 1801), RULES)
    assert after.session_id == "u1#1600001801000"


def test_inactivity_gap_policy_ignores_session_ids_but_reports_them() -> None:
    rules = SessionRules(SessionPolicy.INACTIVITY_GAP, gap_s=60, user_ttl_s=0)
    state, _ = open_session(UserState(), event("a", T0, "s1"), rules)
    state = record_step(state, event("a", T0, "s1"), np.ones(2, np.float32), "1", 0, 0, 3, None)
    after, reset = open_session(state, event("b", T0 + 10, "s2"), rules)
    assert not reset and after.session_id == "s2"
    assert open_session(state, event("b", T0 + 61, "s1"), rules)[1]


def test_carry_over_never_resets_after_the_first_event() -> None:
    rules = SessionRules(SessionPolicy.CARRY_OVER, gap_s=1, user_ttl_s=0)
    state, _ = open_session(UserState(), event("a", T0), rules)
    state = record_step(state, event("a", T0), np.ones(2, np.float32), "1", 0, 0, 3, None)
    assert not starts_new_session(state, event("b", T0 + 1e6, "other"), rules)


def test_ttl_forgets_history_but_keeps_the_session_counter() -> None:
    state = stepped(UserState(), event("a", T0))
    assert is_expired(state, T0 + 86401, RULES) and not is_expired(state, T0 + 86400, RULES)
    after, reset = open_session(state, event("b", T0 + 86401), RULES)
    assert reset and after.recent_items == [] and after.event_count == 0
    assert after.session_id == "u1#1600086401000"


def test_record_step_bounds_history_and_tracks_offsets() -> None:
    state = UserState()
    for i, item in enumerate("abcde"):
        state = stepped(state, event(item, T0 + i), offset=10 + i)
    assert state.recent_items == ["c", "d", "e"] and len(state.recent_events) == 3
    assert state.event_count == 5 and state.session_events == 5
    assert state.applied(0, 14) and state.applied(0, 3) and not state.applied(0, 15)
    assert not state.applied(1, 14)
    assert state.digest_of("e-e-1600000004.0") is not None and state.digest_of("e-a-x") is None
    assert session_history(state) == ["c", "d", "e"]


def test_offsets_of_the_repartition_topic_are_not_compared_with_clickstream() -> None:
    state = record_step(UserState(), event("a", T0), np.zeros(4, np.float32), "m", 0, 14, 3,
                        None, rekeyed=True)  # fmt: skip
    assert state.applied(0, 14, rekeyed=True) and not state.applied(0, 14)
    back = decode_state(encode_state(state))
    assert back.source_rekeyed and back.applied(0, 3, rekeyed=True)
    # Records written before repartitioning existed carry no flag: clickstream.
    assert not decode_state(encode_state(UserState())).source_rekeyed


def test_session_id_for_prefers_the_producer() -> None:
    assert session_id_for("u", "s", 4.0) == "s" and session_id_for("u", None, 4.0) == "u#4000"


def test_a_deleted_users_next_session_gets_a_new_id() -> None:
    # Ids were "<user>#<counter>": a user deleted (idle sweep, `rnnrec user delete`)
    # started again at #1, and downstream joins merged an old and a new session.
    first = stepped(UserState(), event("a", T0))
    again, _ = open_session(UserState(), event("b", T0 + 7200), RULES)  # state deleted
    assert first.session_id != again.session_id


def test_rounds_are_batched_across_users_and_sequential_per_user() -> None:
    class CountingScorer(RecentItemsScorer):
        widths: list[int] = []  # noqa: RUF012 - test instrumentation

        def step(self, carries, item_ids, excluded, k, **model_inputs):  # type: ignore[no-untyped-def]
            self.widths.append(len(item_ids))
            return super().step(carries, item_ids, excluded, k, **model_inputs)

    scorer = CountingScorer()
    users = [
        UserSteps(None, ["1", "2", "3"], [True] * 3, [True, False, False], [None] * 3),
        UserSteps(None, ["7"], [True], [True], [None]),
        UserSteps(None, ["4", "5"], [False, True], [True, True], [None, None]),
    ]
    outputs, carries = score_in_rounds(scorer, users, max_rows=2, k=5)
    assert scorer.widths == [2, 1, 2, 1]  # round 0 split by max_rows, then 2, then 1
    assert [o.items for o in outputs[0] if o] == [["1"], ["2", "1"], ["3", "2", "1"]]
    assert [o.items if o else None for o in outputs[2]] == [None, ["5"]]  # reset before 5
    assert carries[1][0] == 1.0 and carries[0][0] == 3.0
