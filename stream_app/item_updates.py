"""The catalogue side of serving: which items must never be recommended.

``item-updates`` is a compacted topic keyed by item id (``schemas/item-updates.json``):
the latest value per item says whether it may be recommended; a tombstone (null
value) makes it available again. An item is *unavailable* when ``available`` is
false, or ``blocked`` or ``out_of_stock`` is true.

**Following** (`ItemFollower`): a thread in every worker with a kafka-python
consumer (no group, every partition, from the beginning) applies the records to a
`Catalogue`. At the start of each batch the worker calls `ItemFollower.refresh`:
when the set of unavailable ids changed (or a new model was swapped in) the scorer
gets it (``set_unavailable``), so an item marked unavailable before a batch starts
is absent from every output of that batch and all later ones; the set is one swap
of an immutable value under a lock, never read half-applied. The first batch waits
for the follower to read the topic up to the end offsets it found (bounded by
`START_WAIT_S`), so a restarted worker does not serve a blocked item either; /ready
says no until then (`ItemFollower.settled`), and an empty history is read without a
poll, whose timeout the first batch would otherwise wait out. Ids the
served model does not know are kept (the scorer ignores them) and masked once a
model version that knows them is swapped in, since each new scorer gets the set.

A malformed record is skipped, counted by reason and logged once per reason. While
the topic does not exist the thread waits and retries, like the model follower.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from stream_app.settings import WorkerSettings

if TYPE_CHECKING:
    import faust

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
START_WAIT_S = 30.0
"""Longest wait at the first batch for the follower to read the topic's history."""


@dataclass(frozen=True, slots=True)
class ItemUpdate:
    """The latest flags of one item (a tombstone reads as an available item)."""

    item_id: str
    available: bool = True
    blocked: bool = False
    out_of_stock: bool = False
    reason: str = ""
    ts: float = 0.0

    @property
    def unavailable(self) -> bool:
        """True when the item must never be recommended."""
        return not self.available or self.blocked or self.out_of_stock

    def to_json(self) -> bytes:
        """The record value (``schemas/item-updates.json``)."""
        document: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "item_id": self.item_id,
            "available": self.available,
            "blocked": self.blocked,
            "out_of_stock": self.out_of_stock,
            "ts": self.ts,
        }
        if self.reason:
            document["reason"] = self.reason
        return orjson.dumps(document)


@dataclass(frozen=True, slots=True)
class MalformedUpdate:
    """Why an item-updates record was skipped (``kind`` is a metrics label)."""

    kind: str
    message: str


_FLAGS = ("available", "blocked", "out_of_stock")
_REASON_MAX = 256


def decode_item_update(
    key: bytes | None,
    value: bytes | None,
    *,
    max_id_length: int = 256,
    max_bytes: int = 64 * 1024,
) -> ItemUpdate | MalformedUpdate:
    """Read one item-updates record by the rules of ``schemas/item-updates.json``.

    Args:
        key: the record key (the item id, UTF-8).
        value: the JSON value, or None (a tombstone: the item is available again).
        max_id_length: longest accepted item id, in characters.
        max_bytes: largest accepted value.

    Returns:
        The update, or why the record is malformed.
    """
    if not key:
        return MalformedUpdate("no_key", "record has no key (the item id)")
    try:
        item_id = key.decode("utf-8")
    except UnicodeDecodeError:
        return MalformedUpdate("invalid_key", "key is not UTF-8")
    if len(item_id) > max_id_length:
        return MalformedUpdate("invalid_key", f"key longer than {max_id_length} characters")
    if value is None:
        return ItemUpdate(item_id)
    if len(value) > max_bytes:
        return MalformedUpdate("too_large", f"value larger than {max_bytes} bytes")
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        return MalformedUpdate("invalid_json", "value is not JSON")
    problem = _check_document(document, max_id_length)
    if problem is not None:
        return problem
    if document["item_id"] != item_id:
        return MalformedUpdate("key_mismatch", "record key is not the value's item_id")
    reason = document.get("reason", "")
    return ItemUpdate(
        item_id=item_id,
        available=document["available"],
        blocked=document.get("blocked", False),
        out_of_stock=document.get("out_of_stock", False),
        reason=reason,
        ts=float(document["ts"]),
    )


def _is_number(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]


def _check_document(document: object, max_id_length: int) -> MalformedUpdate | None:
    """The schema's rules, written out (bool is no number here, as in JSON Schema)."""
    if not isinstance(document, dict):
        return MalformedUpdate("not_an_object", "value is not a JSON object")
    for name in ("schema_version", "item_id", "available", "ts"):
        if name not in document:
            return MalformedUpdate("missing_field", f"{name} is missing")
    version = document["schema_version"]
    if not _is_number(version) or version != SCHEMA_VERSION:
        return MalformedUpdate("unsupported_version", f"schema_version must be {SCHEMA_VERSION}")
    item_id = document["item_id"]
    if type(item_id) is not str or not 1 <= len(item_id) <= max_id_length:
        return MalformedUpdate("wrong_type", f"item_id must be a string of 1-{max_id_length}")
    for name in _FLAGS:
        if name in document and type(document[name]) is not bool:
            return MalformedUpdate("wrong_type", f"{name} must be true or false")
    ts = document["ts"]
    if not _is_number(ts) or ts < 0:
        return MalformedUpdate("wrong_type", "ts must be a non-negative number")
    reason = document.get("reason", "")
    if type(reason) is not str or len(reason) > _REASON_MAX:
        return MalformedUpdate("wrong_type", f"reason must be a string of at most {_REASON_MAX}")
    return None


class Catalogue:
    """The latest flags of every unavailable item, as read from item-updates."""

    def __init__(self, max_id_length: int = 256, max_bytes: int = 64 * 1024) -> None:
        """An empty catalogue (every item available)."""
        self._max_id_length = max_id_length
        self._max_bytes = max_bytes
        self.entries: dict[str, ItemUpdate] = {}
        """Unavailable items only, by id."""

    def apply(self, key: bytes | None, value: bytes | None) -> bool | MalformedUpdate:
        """Apply one record.

        Returns:
            Whether the set of unavailable ids changed, or why the record was skipped.
        """
        update = decode_item_update(
            key, value, max_id_length=self._max_id_length, max_bytes=self._max_bytes
        )
        if isinstance(update, MalformedUpdate):
            return update
        was = update.item_id in self.entries
        if update.unavailable:
            self.entries[update.item_id] = update
            return not was
        self.entries.pop(update.item_id, None)
        return was

    @property
    def unavailable(self) -> frozenset[str]:
        """Ids never to recommend."""
        return frozenset(self.entries)


class ItemMetrics:
    """The item-updates metrics, in the worker's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        """Register the metrics."""
        self.unavailable = Gauge(
            "rnnrec_unavailable_items",
            "Items marked unavailable or blocked on item-updates (never recommended).",
            registry=registry,
        )
        self.applied = Counter(
            "rnnrec_item_updates_applied", "item-updates records applied.", registry=registry
        )
        self.malformed = Counter(
            "rnnrec_item_updates_malformed",
            "item-updates records skipped as malformed, by reason.",
            ["reason"],
            registry=registry,
        )


def item_updates_consumer(settings: WorkerSettings) -> Any:
    """A kafka-python consumer without a group (not assigned yet)."""
    from kafka import KafkaConsumer

    from stream_app.kafka_security import kafka_python_kwargs

    return KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers.split(","),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **kafka_python_kwargs(settings),
    )


def _assign_all(consumer: Any, topic: str) -> dict[Any, int] | None:
    """Assign every partition from the beginning; the end offsets (None: no topic)."""
    from kafka import TopicPartition

    partitions = consumer.partitions_for_topic(topic)  # refreshes metadata if unknown
    if not partitions:
        return None
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    return consumer.end_offsets(tps)


def _history_read(consumer: Any, end: dict[Any, int]) -> bool:
    """Whether every partition's position reached the end offset found at assignment."""
    return all(consumer.position(tp) >= offset for tp, offset in end.items())


class ItemFollower:
    """Follows item-updates in a thread; the worker reads the unavailable set per batch."""

    def __init__(
        self, settings: WorkerSettings, metrics: ItemMetrics, *, retry_s: float = 2.0
    ) -> None:
        """Set up (nothing runs until `start`).

        Args:
            settings: broker, topic name, id and size bounds.
            metrics: where the set size and record counts go.
            retry_s: wait between attempts while the topic is missing or unreachable.
        """
        self.settings = settings
        self.metrics = metrics
        self.topic = settings.topic("item_updates")
        self._retry_s = retry_s
        self._lock = threading.Lock()
        self._unavailable: frozenset[str] = frozenset()
        self._generation = 0
        self._caught_up = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at: float | None = None
        self._logged_kinds: set[str] = set()
        # Worker side (event loop only): what the served scorer was last given.
        self._waited = False
        self._applied: tuple[Any, int] | None = None  # (weakref to scorer, generation)

    # ------------------------------------------------------------ worker side

    async def refresh(self, scorer: Any) -> None:
        """Give ``scorer`` the current unavailable ids if they (or the scorer) changed.

        Call at the start of each batch, on the event loop. The first call waits, at
        most `START_WAIT_S`, for the follower to read the topic's history.
        """
        if not self._waited:
            self._waited = True
            deadline = time.monotonic() + START_WAIT_S
            while not self.caught_up and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if not self.caught_up:
                log.warning(
                    "item-updates not read after %.0f s; serving without them until it is",
                    START_WAIT_S,
                )
        with self._lock:
            generation, unavailable = self._generation, self._unavailable
        if self._applied is not None:
            ref, applied_generation = self._applied
            if ref() is scorer and applied_generation == generation:
                return
        scorer.set_unavailable(sorted(unavailable))
        self._applied = (weakref.ref(scorer), generation)

    @property
    def unavailable(self) -> frozenset[str]:
        """The ids unavailable as far as the follower has read."""
        with self._lock:
            return self._unavailable

    @property
    def caught_up(self) -> bool:
        """True once the history up to the end offsets seen at start was read (or no topic)."""
        return self._caught_up.is_set()

    @property
    def settled(self) -> bool:
        """True once the first batch would not wait: history read, or `START_WAIT_S` over.

        /ready reports it, so a worker does not take traffic that its first batch would
        then hold back while the follower reads the history.
        """
        if self.caught_up:
            return True
        return self._started_at is not None and time.monotonic() - self._started_at > START_WAIT_S

    def start(self) -> None:
        """Start the follower thread (idempotent)."""
        if self._thread is None:
            self._started_at = time.monotonic()
            self._thread = threading.Thread(
                target=self._run, name="rnnrec-item-follower", daemon=True
            )
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the thread to stop and wait a little for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    # ------------------------------------------------------------ thread side

    def _run(self) -> None:
        consumer = None
        end: dict[Any, int] | None = None
        catalogue = self._new_catalogue()
        replaying = True
        while not self._stop.is_set():
            try:
                if consumer is None:
                    consumer = item_updates_consumer(self.settings)
                if end is None:
                    end = _assign_all(consumer, self.topic)
                    if end is None:
                        self._caught_up.set()  # nothing was ever published
                        self._stop.wait(self._retry_s)
                        continue
                    # Read the history from scratch (first start, or after an error).
                    catalogue, replaying = self._new_catalogue(), True
                    # An empty history is read without a poll: a poll that finds nothing
                    # waits its whole timeout, and the first batch (and /ready) waits for it.
                    if _history_read(consumer, end):
                        replaying = self._finish_replay(catalogue)
                        continue
                batch = consumer.poll(timeout_ms=500)
                changed = self._apply(catalogue, (r for rs in batch.values() for r in rs))
                if replaying and _history_read(consumer, end):
                    replaying = self._finish_replay(catalogue)
                elif changed and not replaying:
                    self._publish(catalogue.unavailable)
            except Exception as exc:
                log.warning("item-updates follower: %s: %s; retrying", type(exc).__name__, exc)
                if consumer is not None:
                    consumer.close()
                consumer, end = None, None
                self._stop.wait(self._retry_s)
        if consumer is not None:
            consumer.close()

    def _finish_replay(self, catalogue: Catalogue) -> bool:
        """Publish the whole history read and mark it read; the new `replaying` flag."""
        # Only whole histories are published: a prefix could unblock an item whose
        # later record blocks it again.
        self._publish(catalogue.unavailable)
        self._caught_up.set()
        log.info("item-updates read: %d items unavailable", len(catalogue.entries))
        return False

    def _new_catalogue(self) -> Catalogue:
        return Catalogue(self.settings.max_id_length, self.settings.max_message_bytes)

    def _apply(self, catalogue: Catalogue, records: Iterable[Any]) -> bool:
        """Apply records; whether the unavailable set changed. Counts and logs bad ones."""
        changed = False
        for record in records:
            outcome = catalogue.apply(record.key, record.value)
            if isinstance(outcome, MalformedUpdate):
                self.metrics.malformed.labels(reason=outcome.kind).inc()
                if outcome.kind not in self._logged_kinds:  # once per kind: no log floods
                    self._logged_kinds.add(outcome.kind)
                    log.warning(
                        "item-updates: skipped a malformed record (%s: %s) at %s[%d]@%d; "
                        "further ones of this kind are only counted",
                        outcome.kind, outcome.message, record.topic, record.partition,
                        record.offset,
                    )  # fmt: skip
                continue
            self.metrics.applied.inc()
            changed = changed or outcome
        return changed

    def _publish(self, unavailable: frozenset[str]) -> None:
        with self._lock:
            self._unavailable = unavailable
            self._generation += 1
        self.metrics.unavailable.set(len(unavailable))


def read_catalogue(settings: WorkerSettings, timeout_s: float = 30.0) -> Catalogue | None:
    """Read item-updates from the beginning to its current end (tools).

    Returns:
        The catalogue, or None when the topic does not exist.

    Raises:
        TimeoutError: the end was not reached in time.
    """
    consumer = item_updates_consumer(settings)
    try:
        end = _assign_all(consumer, settings.topic("item_updates"))
        if end is None:
            return None
        catalogue = Catalogue(settings.max_id_length, settings.max_message_bytes)
        deadline = time.monotonic() + timeout_s
        while not _history_read(consumer, end):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{settings.topic('item_updates')} not read in {timeout_s:.0f} s"
                )
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    catalogue.apply(record.key, record.value)
        return catalogue
    finally:
        consumer.close()


def attach_item_follower(
    app: faust.App, settings: WorkerSettings, registry: CollectorRegistry, scorer: Any
) -> ItemFollower | None:
    """Follow item-updates while the app runs (the thread starts with the app).

    Returns:
        The follower, or None: ``RNNREC_ITEM_UPDATES_FOLLOW`` is off, or the scorer
        cannot mask items (a test or plug-in scorer without ``set_unavailable``).
    """
    if not settings.item_updates_follow:
        return None
    if not hasattr(scorer, "set_unavailable"):
        log.warning("the scorer cannot mask items (no set_unavailable): item-updates ignored")
        return None
    follower = ItemFollower(settings, ItemMetrics(registry))

    @app.task
    async def follow_item_updates() -> None:
        follower.start()

    async def stop_following(sender: Any = None, **_: Any) -> None:
        follower.stop(timeout_s=2.0)

    app.on_before_shutdown.connect(stop_following)
    return follower
