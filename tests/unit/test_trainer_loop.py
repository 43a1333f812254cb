"""The trainer's read loop on a backlog: memory stays bounded by one window."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from stream_app.trainer import TrainerMetrics, _loop
from stream_app.trainer_settings import load_trainer_settings
from stream_app.trainer_window import Cadence

pytestmark = pytest.mark.unit

DAY = 86_400.0
T0 = 1_700_000_000.0 - 30 * DAY  # a month before the clock: history, not the future


@dataclass
class Record:
    key: bytes
    value: bytes
    headers: tuple = ()


class Backlog:
    """A consumer over a long retained history that is never "caught up" while read."""

    def __init__(self, events: int, per_poll: int) -> None:
        self.records = [
            Record(b"u%d" % (i % 50), orjson.dumps({
                "event_id": f"e{i}", "user_id": f"u{i % 50}", "item_id": str(i % 97),
                "ts": T0 + i * 60.0,
            }))
            for i in range(events)
        ]  # fmt: skip
        self.per_poll = per_poll
        self.read = 0

    def poll(self, timeout_s: float) -> list[Record]:
        batch = self.records[self.read : self.read + self.per_poll]
        self.read += len(batch)
        return batch

    def end_offsets(self) -> dict[Any, int]:
        return {"p0": len(self.records)}

    def caught_up(self, target: dict[Any, int]) -> bool:
        return self.read >= target["p0"]

    def commit(self) -> None:
        pass


class Trainer:
    """Records what the loop hands over; rounds only note the pending high-water mark."""

    def __init__(self, stop: threading.Event, consumer: Backlog, loop: Any) -> None:
        self.cadence = Cadence(DAY, 0, clock=lambda: T0 + 365 * DAY)
        self.metrics = TrainerMetrics()
        self.rounds: list[tuple[float, int]] = []
        self.added = 0
        self.stop, self.consumer, self.loop = stop, consumer, loop

    def add(self, event: Any) -> None:
        self.added += 1

    def run_round(self, before: float, why: str) -> None:
        self.rounds.append((before, self.consumer.read))

    def update_gauges(self) -> None:
        if self.consumer.read >= len(self.consumer.records):
            self.stop.set()


def test_a_backlog_runs_rounds_on_a_bounded_pending_list() -> None:
    # Before: crossing a day boundary early in the backlog armed a round that waited
    # for the log's end, holding every later event in memory (here all 20,000).
    settings = load_trainer_settings(trainer_window_max_events=1000)
    stop = threading.Event()
    consumer = Backlog(events=20_000, per_poll=100)
    trainer = Trainer(stop, consumer, _loop)
    _loop(settings, trainer, consumer, stop)  # type: ignore[arg-type]
    assert trainer.rounds, "no round ran"
    # Each round ran once a window's worth had piled up, not at the end of the log.
    assert trainer.rounds[0][1] < 3 * 1000 + 1440 + 100
    assert len(trainer.rounds) > 3
    assert trainer.added == len(consumer.records)


class Recorder(Trainer):
    """Keeps the events handed over and applies deletions to them."""

    def __init__(self, stop: threading.Event, consumer: Any) -> None:
        super().__init__(stop, consumer, _loop)
        self.events: list[Any] = []
        self.deleted: list[str] = []

    def add(self, event: Any) -> None:
        self.events.append(event)

    def forget_user(self, user_id: str) -> int:
        self.deleted.append(user_id)
        before = len(self.events)
        self.events = [e for e in self.events if e.user_id != user_id]
        return before - len(self.events)


def click_record(i: int, user: str, ts: float) -> Record:
    value = {"event_id": f"e{i}", "user_id": user, "item_id": str(i), "ts": ts}
    return Record(user.encode(), orjson.dumps(value))


def test_a_delete_command_removes_the_users_earlier_events_pending_ones_included() -> None:
    # Before: the trainer skipped every command, so a deleted user's events stayed in
    # its window (trained on, evaluated on) until they aged out.
    stop = threading.Event()
    consumer = Backlog(events=0, per_poll=1)
    records = [click_record(i, ("u1", "u2")[i % 2], T0 + i * 60.0) for i in range(6)]
    # A day later: the first of these crosses the boundary; the round waits for the
    # end of the log, so these are held as pending when the command arrives.
    records += [click_record(10 + i, ("u1", "u2")[i % 2], T0 + DAY + i) for i in range(4)]
    records.append(Record(b"u1", b"{}", (("rnnrec.command", b"delete-user"),)))
    records.append(Record(b"u2", b"{}", (("rnnrec.command", b"other-command"),)))
    records.append(click_record(20, "u1", T0 + DAY + 10))  # u1 comes back afterwards
    consumer.records = records
    trainer = Recorder(stop, consumer)
    _loop(load_trainer_settings(), trainer, consumer, stop)  # type: ignore[arg-type]
    assert trainer.rounds, "the boundary was crossed: a round ran"
    assert trainer.deleted == ["u1"]
    kept = [(e.user_id, e.event_id) for e in trainer.events]
    assert kept == [("u2", "e1"), ("u2", "e3"), ("u2", "e5"), ("u2", "e11"), ("u2", "e13"),
                    ("u1", "e20")]  # fmt: skip
