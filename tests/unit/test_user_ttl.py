"""The idle-user sweep: event-time TTL, owned partitions only, bounded work per tick."""

from __future__ import annotations

import numpy as np
import pytest
from faust.streams import current_event
from prometheus_client import CollectorRegistry

from stream_app.settings import CarryDtype
from stream_app.state import UserState, decode_state, encode_state
from stream_app.user_ttl import IdleUserSweeper, sweep_view

pytestmark = pytest.mark.unit

T0 = 1_600_000_000.0
TTL = 100.0


class FakeTable(dict):
    """A dict that records, per deletion, the partition Faust's changelog would get."""

    def __init__(self) -> None:
        super().__init__()
        self.tombstones: list[tuple[str, str, int]] = []

    def __delitem__(self, key: str) -> None:
        event = current_event()
        assert event is not None, "a table deletion needs a current event (its partition)"
        self.tombstones.append((key, event.message.topic, event.message.partition))
        super().__delitem__(key)


def state(ts: float, partition: int) -> bytes:
    return encode_state(
        UserState(
            carry=np.zeros(3, np.float32), recent_items=["1"], session_id="s", last_event_ts=ts,
            model_version="m", event_count=1, source_partition=partition, source_offset=0,
        )
    )  # fmt: skip


def sweeper(
    table: FakeTable, per_tick: int = 100, clock: float = T0 + 1e9
) -> tuple[IdleUserSweeper, CollectorRegistry]:
    registry = CollectorRegistry()
    return IdleUserSweeper(table, "clicks", TTL, per_tick, registry, lambda: clock), registry


def test_users_idle_longer_than_the_ttl_in_event_time_are_deleted_with_their_partition() -> None:
    table = FakeTable()
    table.update(old=state(T0, 0), recent=state(T0 + 950, 1), other=state(T0, 2))
    sweep, registry = sweeper(table)
    sweep.observe(T0 + 1000)
    assert sweep.tick({0, 1}) == 1
    # "other" is idle too, but partition 2 belongs to another worker.
    assert table.tombstones == [("old", "clicks", 0)]
    assert set(table) == {"recent", "other"}
    assert registry.get_sample_value("rnnrec_users_expired_total") == 1
    assert current_event() is None  # the context is restored


def test_nothing_expires_while_event_time_stands_still() -> None:
    table = FakeTable()
    table.update(a=state(T0, 0), b=state(T0 + 50, 0))
    sweep, _ = sweeper(table)
    for _ in range(3):
        assert sweep.tick({0}) == 0  # no wall clock: only events move "now"
    assert set(table) == {"a", "b"}


def test_stored_states_move_the_clock_after_a_restart() -> None:
    table = FakeTable()
    table.update(a=state(T0, 0), b=state(T0 + 500, 0))
    sweep, _ = sweeper(table)  # no event seen yet
    sweep.tick({0})  # one pass learns "now" = T0 + 500 from b ...
    sweep.tick({0})  # ... the next pass deletes a
    assert set(table) == {"b"}


def test_each_tick_examines_a_bounded_number_of_users_and_passes_continue() -> None:
    table = FakeTable()
    for i in range(10):
        table[f"u{i}"] = state(T0, 0)
    sweep, registry = sweeper(table, per_tick=4)
    sweep.observe(T0 + 1000)
    assert [sweep.tick({0}) for _ in range(3)] == [4, 4, 2]
    assert not table
    assert registry.get_sample_value("rnnrec_ttl_sweep_users_examined_total") == 10


def test_no_owned_partitions_means_no_work() -> None:
    table = FakeTable()
    table["a"] = state(T0, 0)
    sweep, _ = sweeper(table)
    sweep.observe(T0 + 1000)
    assert sweep.tick(set()) == 0 and "a" in table


@pytest.mark.parametrize("dtype", list(CarryDtype))
def test_the_sweeps_reader_agrees_with_the_state_codec(dtype: CarryDtype) -> None:
    data = encode_state(decode_state(state(T0 + 7.5, 3)), dtype)
    full = decode_state(data)
    assert sweep_view(data) == (full.last_event_ts, full.event_count, full.source_partition)
    assert sweep_view(encode_state(UserState())) == (0.0, 0, -1)


@pytest.mark.parametrize("data", [b"", b"{nope", b"[]", b'{"v": 99, "t": 1, "n": 1, "p": 0}',
                                  b'{"v": 1, "t": "x", "n": 1, "p": 0}', b'{"v": 1}'])  # fmt: skip
def test_unreadable_states_are_left_alone(data: bytes) -> None:
    assert sweep_view(data) is None
    table = FakeTable()
    table["bad"] = data
    sweep, _ = sweeper(table)
    sweep.observe(T0 + 1e9)
    assert sweep.tick({0}) == 0 and "bad" in table


def test_an_event_time_ahead_of_the_clock_does_not_expire_active_users() -> None:
    # A producer's clock 20 hours fast: its event is accepted (RNNREC_MAX_FUTURE_S is
    # a day by default), but "now" stops at the wall clock.
    table = FakeTable()
    table.update(active=state(T0 - 60, 0), idle=state(T0 - 2 * TTL, 0))
    sweep, _ = sweeper(table, clock=T0)
    sweep.observe(T0 + 20 * 3600)
    assert sweep.newest_event_ts == T0
    assert sweep.tick({0}) == 1
    assert set(table) == {"active"}
