"""The trainer's rolling window of sessions, its cadence, and the hold-out split.

Kafka-free, so it is tested without a broker (`stream_app.trainer` drives it).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import numpy as np

from stream_app.events import ClickEvent

_SEP = "\x1f"  # joins user and session ids into a window session key


@dataclasses.dataclass(frozen=True, slots=True)
class WindowEvent:
    """One event as the window keeps it."""

    session: str
    item: str
    ts: float
    event_type: str


class SessionWindow:
    """A bounded rolling window of recent events, grouped into sessions on demand.

    Bounded by count (the oldest arrivals leave first) and by age in event time (events
    older than ``max_age_s`` behind the newest event leave). A session is the event's
    ``session_id`` within its user; without one, a user's events form a session until a
    gap of ``session_gap_s`` (the worker's inactivity rule).
    """

    def __init__(self, max_events: int, max_age_s: float, session_gap_s: float) -> None:
        """Create an empty window."""
        self.max_events = max_events
        self.max_age_s = max_age_s
        self.session_gap_s = session_gap_s
        self._events: deque[WindowEvent] = deque()
        self._sessions: Counter[str] = Counter()
        self._user_sessions: dict[str, tuple[float, int]] = {}
        self.newest_ts = -math.inf

    def __len__(self) -> int:
        return len(self._events)

    @property
    def n_sessions(self) -> int:
        """Sessions with at least one event in the window."""
        return len(self._sessions)

    def add(self, event: ClickEvent) -> None:
        """Append an event, then drop what exceeds the bounds."""
        self._append(
            WindowEvent(self._session_key(event), event.item_id, event.ts, event.event_type)
        )

    def _append(self, item: WindowEvent) -> None:
        self._events.append(item)
        self._sessions[item.session] += 1
        self.newest_ts = max(self.newest_ts, item.ts)
        while len(self._events) > self.max_events:
            self._pop()
        horizon = self.newest_ts - self.max_age_s
        # Arrival order is nearly time order; stragglers go at `snapshot`.
        while self._events and self._events[0].ts < horizon:
            self._pop()

    def _pop(self) -> None:
        old = self._events.popleft()
        self._sessions[old.session] -= 1
        if self._sessions[old.session] <= 0:
            del self._sessions[old.session]

    def _session_key(self, event: ClickEvent) -> str:
        if event.session_id is not None:
            return f"{event.user_id}{_SEP}{event.session_id}"
        last_ts, number = self._user_sessions.get(event.user_id, (-math.inf, 0))
        if event.ts - last_ts > self.session_gap_s:
            number += 1
        self._user_sessions[event.user_id] = (max(last_ts, event.ts), number)
        return f"{event.user_id}{_SEP}#{number}"

    def forget_user(self, user_id: str) -> int:
        """Remove every event of ``user_id`` (a deletion request); returns how many."""
        prefix = f"{user_id}{_SEP}"
        kept = deque(e for e in self._events if not e.session.startswith(prefix))
        removed = len(self._events) - len(kept)
        self._events = kept
        for session in [s for s in self._sessions if s.startswith(prefix)]:
            del self._sessions[session]
        self._user_sessions.pop(user_id, None)
        return removed

    def forget_idle_users(self) -> None:
        """Drop the sessionising memory of users idle for longer than the window."""
        horizon = self.newest_ts - max(self.max_age_s, self.session_gap_s)
        stale = [u for u, (ts, _) in self._user_sessions.items() if ts < horizon]
        for user in stale:
            del self._user_sessions[user]

    def snapshot(self, before: float = math.inf) -> Any:
        """The window's events timed before ``before`` (and within the age bound).

        Returns:
            A `rnnrec_jax.data.SessionEvents` with event types, sessions grouped and
            time-ordered.
        """
        from rnnrec_jax.data.events import SessionEvents

        horizon = min(before, self.newest_ts) - self.max_age_s
        rows = [e for e in self._events if horizon <= e.ts < before]
        return SessionEvents.from_arrays(
            np.array([e.session for e in rows], dtype=str),
            np.array([e.item for e in rows], dtype=str),
            np.array([e.ts for e in rows], dtype=np.float64),
            event_types=np.array([e.event_type for e in rows], dtype=str),
        )


class Cadence:
    """When the next round is due: event-time boundaries and/or an event count."""

    def __init__(
        self, interval_s: float, interval_events: int, clock: Callable[[], float] = time.time
    ) -> None:
        """``interval_s`` seconds of event time (0: off), ``interval_events`` (0: off).

        Event times count at most up to ``clock()``: one event from a producer whose
        clock runs ahead (accepted up to ``RNNREC_MAX_FUTURE_S``) would otherwise start
        a round early, on part of the interval, and skip the rounds in between.
        """
        self.interval_s = interval_s
        self.interval_events = interval_events
        self.clock = clock
        self.next_boundary: float | None = None
        self.events_since_round = 0

    def crossing(self, ts: float) -> float | None:
        """The boundary an event at ``ts`` crosses, or None (the first event arms it)."""
        if self.interval_s <= 0:
            return None
        ts = min(ts, self.clock())
        if self.next_boundary is None:
            self.next_boundary = self._after(ts)
            return None
        return self.next_boundary if ts >= self.next_boundary else None

    def count_due(self) -> bool:
        """True when enough events arrived since the last round."""
        return 0 < self.interval_events <= self.events_since_round

    def round_done(self, newest_ts: float) -> None:
        """Move past a round: the next boundary follows the newest event time seen."""
        self.events_since_round = 0
        newest_ts = min(newest_ts, self.clock())
        if self.interval_s > 0 and math.isfinite(newest_ts):
            self.next_boundary = self._after(newest_ts)

    def _after(self, ts: float) -> float:
        return (math.floor(ts / self.interval_s) + 1) * self.interval_s


def split_holdout(events: Any, fraction: float) -> tuple[Any, Any]:
    """(training sessions, held-back sessions): the freshest ``fraction`` of sessions
    by their last event time are held back (at least one when there are two or more).
    """
    n = events.n_sessions
    if n < 2:
        return events, events.filter_sessions(np.zeros(n, bool))
    last = events.times[events.session_offsets()[1:] - 1]
    order = np.argsort(last, kind="stable")
    n_hold = min(n - 1, max(1, round(n * fraction)))
    hold = np.zeros(n, bool)
    hold[order[-n_hold:]] = True
    return events.filter_sessions(~hold), events.filter_sessions(hold)
