"""The trainer's Kafka-free parts: rolling window, cadence, hold-out split, settings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream_app.events import ClickEvent
from stream_app.settings import SettingsError
from stream_app.trainer import Decision
from stream_app.trainer_settings import DecisionMetric, load_trainer_settings
from stream_app.trainer_window import Cadence, SessionWindow, split_holdout

pytestmark = pytest.mark.unit


def event(user: str, item: str, ts: float, session: str | None = None, kind: str = "click"):
    return ClickEvent(f"{user}-{ts}", user, item, ts, session, kind, b"")


def test_window_is_bounded_by_count_and_by_event_time_age():
    window = SessionWindow(max_events=5, max_age_s=100.0, session_gap_s=30.0)
    for i in range(8):
        window.add(event("u", f"i{i}", float(i), session="s"))
    assert len(window) == 5
    assert window.snapshot().item_ids.tolist() == ["i3", "i4", "i5", "i6", "i7"]
    window.add(event("v", "late", 250.0, session="t"))  # 150 s after i7: i3..i7 age out
    assert len(window) == 1 and window.n_sessions == 1
    # A straggler that arrived late is dropped at snapshot time.
    window.add(event("w", "old", 120.0, session="x"))
    assert window.snapshot().item_ids.tolist() == ["late"]


def test_window_groups_sessions_and_cuts_before_a_boundary():
    window = SessionWindow(max_events=100, max_age_s=1e6, session_gap_s=30.0)
    # Explicit session ids group within a user; without one, a 30 s gap starts anew.
    for ts, user, item, session in [
        (1, "a", "x", "s1"),
        (2, "b", "y", None),
        (3, "a", "z", "s1"),
        (10, "b", "w", None),
        (100, "b", "v", None),
        (101, "a", "q", "s2"),
    ]:
        window.add(event(user, item, float(ts), session=session))
    events = window.snapshot()
    groups = {
        tuple(events.item_ids[a:b].tolist())
        for a, b in zip(events.session_offsets()[:-1], events.session_offsets()[1:], strict=True)
    }
    assert groups == {("x", "z"), ("y", "w"), ("v",), ("q",)}
    assert window.n_sessions == 4
    before = window.snapshot(before=100.0)
    assert sorted(before.item_ids.tolist()) == ["w", "x", "y", "z"]
    assert before.event_types.tolist() == ["click"] * 4


def test_cadence_on_event_time_is_aligned_and_skips_empty_intervals():
    cadence = Cadence(interval_s=100.0, interval_events=0, clock=lambda: 1e9)
    assert cadence.crossing(150.0) is None  # arms the next boundary, 200
    assert cadence.crossing(199.9) is None
    assert cadence.crossing(200.0) == 200.0
    assert cadence.crossing(450.0) == 200.0  # still due until the round is done
    cadence.round_done(450.0)
    assert cadence.next_boundary == 500.0
    assert not cadence.count_due()


def test_cadence_on_event_count():
    cadence = Cadence(interval_s=0.0, interval_events=3)
    assert cadence.crossing(1e9) is None
    cadence.events_since_round = 2
    assert not cadence.count_due()
    cadence.events_since_round = 3
    assert cadence.count_due()
    cadence.round_done(math.inf)
    assert cadence.events_since_round == 0


def test_holdout_is_the_freshest_sessions():
    window = SessionWindow(max_events=100, max_age_s=1e6, session_gap_s=1e6)
    for s in range(10):
        for k in range(3):
            window.add(event(f"u{s}", f"i{k}", float(s * 10 + k), session="s"))
    train, held = split_holdout(window.snapshot(), 0.2)
    assert held.n_sessions == 2 and train.n_sessions == 8
    assert held.times.min() > train.times.max()
    assert train.n_events + held.n_events == 30
    one = SessionWindow(10, 1e6, 1e6)
    one.add(event("u", "i", 1.0))
    train, held = split_holdout(one.snapshot(), 0.5)
    assert (train.n_sessions, held.n_sessions) == (1, 0)


def test_decision_record_and_log_line():
    decision = Decision(
        outcome="rejected",
        reason="worse",
        round=3,
        trigger="event_time",
        boundary_ts=86_400.0,
        parent_version="1",
        candidate_version="ft-x",
        candidate={"mrr@20": 0.1},
        serving={"mrr@20": 0.2},
    )
    record = decision.record()
    assert record["decision"] == "rejected" and record["schema_version"] == 1
    assert record["boundary_ts"] == 86_400.0
    line = decision.log_line()
    assert "outcome=rejected" in line and "candidate=0.1000 serving=0.2000" in line
    assert "boundary=1970-01-02T00:00:00Z" in line
    assert Decision("skipped", "", 1, "event_count", math.inf, "1").record()["boundary_ts"] is None


def test_trainer_settings(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RNNREC_TRAINER_INTERVAL_EVENTS", "500")
    monkeypatch.setenv("RNNREC_ONLINE_TRAINING_FROZEN", "true")
    monkeypatch.setenv("RNNREC_TRAINER_DECISION_METRIC", "recall@20")
    s = load_trainer_settings()
    assert s.trainer_interval_events == 500 and s.online_training_frozen
    assert s.trainer_decision_metric is DecisionMetric.RECALL_20
    assert s.topic("model_updates") == "model-updates"  # the worker's settings too
    with pytest.raises(SettingsError, match="RNNREC_TRAINER_HOLDOUT_FRACTION"):
        load_trainer_settings(trainer_holdout_fraction=1.5)
    with pytest.raises(SettingsError, match="would never fine-tune"):
        load_trainer_settings(trainer_interval_events=0, trainer_interval_event_time_s=0)
    with pytest.raises(SettingsError, match="OPTIMISER"):
        load_trainer_settings(trainer_finetune_optimiser="lbfgs")
    assert np.isclose(load_trainer_settings().trainer_window_max_age_s, 7 * 86_400)


def test_cadence_counts_event_time_only_up_to_the_clock():
    # One event from a clock 20 hours fast: no early round, no rounds skipped.
    now = 10_000.0
    cadence = Cadence(interval_s=3600.0, interval_events=0, clock=lambda: now)
    assert cadence.crossing(now - 100) is None  # arms 10,800
    assert cadence.crossing(now + 20 * 3600) is None
    now = 10_900.0
    assert cadence.crossing(now - 50) == 10_800.0
    cadence.round_done(now + 20 * 3600)
    assert cadence.next_boundary == 14_400.0


def test_forget_user_removes_every_event_of_that_user_only():
    window = SessionWindow(max_events=100, max_age_s=1e6, session_gap_s=30.0)
    for ts, user, session in [(1, "u1", "s"), (2, "u10", "s"), (3, "u1", None), (4, "u1", "t")]:
        window.add(event(user, f"i{ts}", float(ts), session=session))
    assert window.forget_user("u1") == 3
    assert window.snapshot().item_ids.tolist() == ["i2"]  # u10 is another user
    assert len(window) == 1 and window.n_sessions == 1
    assert window.forget_user("nobody") == 0
    window.add(event("u1", "back", 5.0))  # a user who comes back starts afresh
    assert sorted(window.snapshot().item_ids.tolist()) == ["back", "i2"]
