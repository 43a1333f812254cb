"""Shared pieces of the chaos tests: a known stream with exact expected outputs, and
readers for what the broker and the worker hold afterwards.

The stream is scored by ``tests.worker_scorers`` (the recent-items test double), so
the output of every event is known in advance: user ``u`` event ``j`` recommends the
user's last `WINDOW` items newest first, and ``p_purchase`` is ``min(1, (j + 1) / 10)``.
A state stepped twice for one event, or lost, changes those outputs (a repeated item
in the window, a shorter window), and the stored state's event count and the step
counter in its carry must equal the user's number of events.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from subprocess import Popen

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from stream_app.kafka_io import Record, drain
from stream_app.state import StateFormatError, UserState, decode_state
from tests import prom
from tests.worker_harness import WorkerSetup, click
from tests.worker_scorers import WINDOW

T0 = 1_600_000_000.0
# Faust settings read from the environment (unprefixed): a killed member leaves the
# group after 10 s instead of the default 60 s, so a restart need not wait a minute.
FAST_GROUP_ENV = {"RNNREC_SESSION_TIMEOUT_S": "10"}  # heartbeats every 1 s


@dataclass(frozen=True)
class KnownStream:
    """``users`` x ``per_user`` events, interleaved by step, one session per user."""

    users: int
    per_user: int
    prefix: str = "u"

    @property
    def total(self) -> int:
        """Number of events."""
        return self.users * self.per_user

    def user(self, u: int) -> str:
        """Id of user number ``u``."""
        return f"{self.prefix}{u}"

    def event_id(self, u: int, step: int) -> str:
        """Id of user ``u``'s event number ``step``."""
        return f"{self.user(u)}-{step}"

    def item(self, u: int, step: int) -> str:
        """Item of user ``u``'s event ``step`` (decimal: exact in the test scorer)."""
        return str(u * 1000 + step)

    def record(self, u: int, step: int, **extra: object) -> tuple[bytes, bytes]:
        """The clickstream record ``(key, value)`` of one event."""
        return click(
            self.user(u), self.event_id(u, step), self.item(u, step), T0 + step,
            session_id=f"s-{self.user(u)}", **extra,
        )  # fmt: skip

    def records(self, **extra: object) -> list[tuple[bytes, bytes]]:
        """Every record, step-major (all users' first events, then the second ...)."""
        return [self.record(u, s, **extra) for s in range(self.per_user) for u in range(self.users)]

    def event_ids(self) -> set[str]:
        """Every event id."""
        return {self.event_id(u, s) for u in range(self.users) for s in range(self.per_user)}

    def expected(self, event_id: str) -> dict[str, object]:
        """The fields of the recommendation and prediction of ``event_id`` that are known."""
        user, _, step_text = event_id.rpartition("-")
        u, step = int(user[len(self.prefix) :]), int(step_text)
        items = [self.item(u, s) for s in range(step, max(-1, step - WINDOW), -1)]
        return {
            "user_id": user,
            "session_id": f"s-{user}",
            "items": items,
            "p_purchase": min(1.0, (step + 1) / 10.0),
            "event_ts": T0 + step,
        }


def output_counts(stream: KnownStream, records: Iterable[Record]) -> Counter[str]:
    """How many outputs each event id has; fails on a missing or unexpected output.

    Works for recommendations and purchase predictions alike (fields absent from a
    record are not compared). A lost event is reported first: it also makes the
    outputs of the user's later events differ.
    """
    counts: Counter[str] = Counter()
    wrong: list[str] = []
    known = stream.event_ids()
    for record in records:
        document = orjson.loads(record.value or b"null")
        event_id = document["event_id"]
        counts[event_id] += 1
        if event_id not in known:
            wrong.append(f"{event_id}: not an input event")
            continue
        for name, value in stream.expected(event_id).items():
            if name not in document:
                continue
            got = document[name]
            same = abs(got - value) < 1e-6 if name == "p_purchase" else got == value  # type: ignore[operator]
            if not same:
                wrong.append(f"{event_id}: {name} = {got!r}, expected {value!r}")
    lost = missing(stream, counts)
    assert not lost, f"{len(lost)} events have no output: {lost[:10]}"
    assert not wrong, f"{len(wrong)} outputs differ from the reference: {wrong[:5]}"
    return counts


def missing(stream: KnownStream, counts: Counter[str]) -> list[str]:
    """Event ids without any output, sorted."""
    return sorted(stream.event_ids() - set(counts))


def duplicates(counts: Counter[str]) -> int:
    """Outputs beyond the first per event id."""
    return sum(n - 1 for n in counts.values() if n > 1)


def changelog_topic(setup: WorkerSetup) -> str:
    """The worker table's changelog topic."""
    return f"{setup.app_id}-user-state-changelog"


def changelog_states(setup: WorkerSetup) -> dict[str, UserState | None]:
    """Each user's last state record in the changelog (None: deleted)."""
    states: dict[str, UserState | None] = {}
    records = drain(setup.bootstrap, changelog_topic(setup), idle_s=1.5, timeout_s=60)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        user = orjson.loads(record.key or b'""')  # Faust writes str keys as JSON strings
        if record.value is None:
            states[user] = None
            continue
        try:
            states[user] = decode_state(record.value)
        except StateFormatError as exc:
            raise AssertionError(f"unreadable state of {user}: {exc}") from None
    return states


def check_states(stream: KnownStream, states: dict[str, UserState | None]) -> None:
    """Each user's stored state applied each of its events exactly once."""
    problems = []
    for u in range(stream.users):
        state = states.get(stream.user(u))
        if state is None or state.carry is None:
            problems.append(f"{stream.user(u)}: no state")
            continue
        steps = int(state.carry[0])  # the test scorer counts its steps in the carry
        if state.event_count != stream.per_user or steps != stream.per_user:
            problems.append(
                f"{stream.user(u)}: event_count {state.event_count}, carry steps {steps}, "
                f"expected {stream.per_user}"
            )
        if state.recent_items[-1:] != [stream.item(u, stream.per_user - 1)]:
            problems.append(f"{stream.user(u)}: last item {state.recent_items[-1:]}")
    assert not problems, f"{len(problems)} users with a wrong state: {problems[:5]}"


def positions(bootstrap: str, topic: str, expected: int) -> dict[str, tuple[int, int]]:
    """``event_id -> (partition, offset)`` of every record on the input topic."""
    out = {}
    for record in drain(bootstrap, topic, expected=expected, timeout_s=60):
        try:
            out[orjson.loads(record.value or b"{}")["event_id"]] = (record.partition, record.offset)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
    return out


def produce_at(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]
) -> list[tuple[int, int]]:
    """Send records in order, wait for every ack; ``(partition, offset)`` of each."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5,
        max_in_flight_requests_per_connection=1,  # retries never reorder a user's events
    )  # fmt: skip
    try:
        futures = [producer.send(topic, key=k, value=v) for k, v in records]
        producer.flush()
        return [(m.partition, m.offset) for m in (f.get(timeout=30) for f in futures)]
    finally:
        producer.close()


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offset per partition (0 where none)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) or 0 for p in range(partitions)}
    finally:
        consumer.close()


def commit_offsets(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commit offsets for a group as a tool does: no membership (generation -1).

    The broker refuses such commits while the group has active members.
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        tps = {p: TopicPartition(topic, p) for p in offsets}
        consumer.assign(list(tps.values()))
        consumer.commit({tps[p]: OffsetAndMetadata(o, "", -1) for p, o in offsets.items()})
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """The log end offset per partition."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def lag(setup: WorkerSetup) -> int:
    """Input records the worker's group has not committed yet."""
    topic = setup.topic("clickstream")
    ends = end_offsets(setup.bootstrap, topic, setup.partitions)
    done = committed_offsets(setup.bootstrap, setup.app_id, topic, setup.partitions)
    return sum(ends[p] - done[p] for p in ends)


def wait_for_lag_zero(setup: WorkerSetup, proc: Popen, timeout_s: float = 60.0) -> None:
    """Wait until every input record is committed (changelog flushed before that)."""
    deadline = time.monotonic() + timeout_s
    remaining = -1
    while time.monotonic() < deadline:
        assert proc.poll() is None, "worker exited"
        remaining = lag(setup)
        if remaining == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"lag still {remaining} after {timeout_s}s")


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text format as ``{(name, labels): value}`` (`tests.prom.parse`)."""
    return prom.parse(text)


def labelled(
    metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, label: str
) -> dict[str, float]:
    """``{label value: sample}`` of one metric with one label."""
    return {
        dict(labels)[label]: value
        for (metric, labels), value in metrics.items()
        if metric == name and label in dict(labels)
    }


class TopicWatcher:
    """Reads a topic from its beginning as records arrive (one consumer, no group)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        """Assign every partition of ``topic`` and start at the beginning."""
        self.records: list[Record] = []
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest",
        )  # fmt: skip
        deadline = time.monotonic() + 30
        parts = None
        while not parts and time.monotonic() < deadline:
            parts = self._consumer.partitions_for_topic(topic)
            if not parts:
                time.sleep(0.2)
        assert parts, f"topic {topic} does not exist"
        self._consumer.assign([TopicPartition(topic, p) for p in sorted(parts)])
        self._consumer.seek_to_beginning()

    def poll(self, timeout_s: float = 0.3) -> list[Record]:
        """Fetch what arrived; returns every record seen so far."""
        batch = self._consumer.poll(timeout_ms=int(timeout_s * 1000))
        for tp_records in batch.values():
            for r in tp_records:
                headers = tuple((h[0], h[1]) for h in (r.headers or ()))
                self.records.append(
                    Record(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp, headers)
                )
        return self.records

    def settle(self, idle_s: float = 1.5) -> list[Record]:
        """Poll until nothing new arrived for ``idle_s``."""
        last, count = time.monotonic(), len(self.records)
        while time.monotonic() - last < idle_s:
            self.poll()
            if len(self.records) != count:
                last, count = time.monotonic(), len(self.records)
        return self.records

    def event_ids(self) -> set[str]:
        """Distinct ``event_id`` values seen."""
        return {orjson.loads(r.value)["event_id"] for r in self.records if r.value}

    def close(self) -> None:
        """Close the consumer."""
        self._consumer.close()
