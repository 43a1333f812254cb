"""The serving worker: a Faust app that turns clickstream events into recommendations.

What is committed when (faust-streaming 0.15.3, read from ``faust/streams.py`` and
``faust/transport/consumer.py``):

* ``Stream.take(n, within)`` turns acks off for the stream, buffers values in a
  background processor and acks the buffered events in a ``finally`` block when the
  generator is resumed for the next batch, *or when it is closed*. An exception in
  the agent body therefore closes the generator and acks the whole batch, so a
  failed batch could be committed. We use ``Stream.noack_take`` instead: the same
  buffering and batching (``max_batch`` records or ``max_wait_s``), but it yields
  the events and never acks them; `ClickstreamServer.process_batch` acks them
  itself, last.
* An ack only marks the offset in the consumer's ``_acked`` list. A timer
  (``broker_commit_interval``, our ``commit_interval_s``) commits, per partition,
  the highest offset below which every offset was acked (gaps block it), and
  before committing it flushes the producer, which also carries the table's
  changelog writes (sent with ``send_soon`` when a table key is set).

So per batch, in this order:

1. Every output (recommendations, purchase-predictions, DLQ) is sent and its broker
   acknowledgement awaited.
2. Each touched user's new state, which includes the partition and offset of the
   last event applied, is written to the table (changelog, same partition as the
   input: the table is keyed and partitioned like ``clickstream``).
3. The batch's events are acked; the commit timer later flushes the changelog and
   commits the offsets.

A crash before (3) commits nothing of the batch: it is redelivered. Events whose
offset is at most the stored offset (crash between (2) and the commit) are not
stepped again; the last one's stored result is re-sent, and earlier ones need no
re-send because (1) finished before (2) began. A crash between (1) and (2) re-sends
outputs (duplicates by ``event_id``) and steps from the old state, as intended.

A batch that raises (a scorer error, an output the broker refuses) is served again
event by event in the same process, since `_contiguous` has already moved past its
offsets; what the failed attempt finished counts as done, exactly as for a
redelivery. An event that fails on its own goes to the DLQ (``processing_error``,
the exception in the message) and is acked, so one poison record cannot stop the
stream (``tests/integration/test_worker_failures.py``). If even the DLQ send fails,
the worker stops: a restart resumes from the last commit.

A graceful stop (SIGTERM from Kubernetes, handled by Faust's ``Worker``) repeats
nothing. `ServingApp.on_stop` first pauses fetching and lets the agent finish every
event already fetched, batch in hand included, through steps (1) to (3)
(`ClickstreamServer.drain`, bounded by ``shutdown_drain_s``); only then does Faust's
own stop run, which finds nothing left in flight, flushes the producer (changelog
included) and commits. Faust's stop alone is not enough: it suspends flow control
first, and a suspended stream skips *and acks* the events still queued, so the next
commit would cover events that never got outputs. ``tests/integration/test_sigterm.py``
checks that every event has exactly one output across a mid-stream SIGTERM and restart.

Two other writers act between batches (``batch_lock``), never inside one: the
idle-user sweep (`stream_app.user_ttl`) deletes expired users through the table
(changelog tombstones, flushed like any state write), and the unavailable items of
``item-updates`` (`stream_app.item_updates`) reach the scorer at the start of a batch.

Input should be keyed by user_id: the table is partitioned like ``clickstream``, so a
user's events and state meet on one partition. A valid record whose key is not its
user_id (no key, another id) is repartitioned: re-sent unchanged to
``clickstream-repartition`` keyed by user_id, in step (1) like an output, and served
when it comes back from there (the agent consumes both topics; they have the same
partition count, so Faust assigns them together). Its user's stored offset is then
that topic's (``UserState.source_rekeyed``). Per-user order holds among events that came
through one input partition: a constant wrong key keeps it, no key (spread over the
partitions by the producer) does not, though each event is still applied once. ``RNNREC_REPARTITION=false`` sends such records
to the DLQ (``key_mismatch``) instead, as does a wrong key on the repartition topic
itself (nothing loops).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import faust
import numpy as np
import orjson
from faust.streams import _current_event  # the context Faust's tables read the partition from
from prometheus_client import Gauge

from stream_app.dlq import DeadLetter, dead_letter
from stream_app.event_loop import loop_implementation
from stream_app.events import (
    COMMAND_HEADER,
    DELETE_USER,
    ClickEvent,
    ErrorKind,
    InputLimits,
    Rejection,
    decode_click_event,
)
from stream_app.kafka_fetch import limit_fetch_wait
from stream_app.metrics import WorkerMetrics
from stream_app.output_batch import OutputBatch, app_producer
from stream_app.scoring import EventScorer, Scorer, StepOutput, UserSteps, score_in_rounds
from stream_app.settings import WorkerSettings
from stream_app.state import (
    LastResult,
    SessionRules,
    StateFormatError,
    UserState,
    decode_state,
    encode_state,
    open_session,
    record_step,
    session_history,
)
from stream_app.topics import min_insync_replicas

if TYPE_CHECKING:
    from stream_app.item_updates import ItemFollower
    from stream_app.model_follower import ModelFollower
    from stream_app.offset_probe import OffsetProbe
    from stream_app.user_ttl import IdleUserSweeper

_log = logging.getLogger(__name__)

PREDICTIONS_SCHEMA_VERSION = 1
RECOMMENDATIONS_SCHEMA_VERSION = 2
"""2: the explanation is ``{method, recent_items, weights}`` with a weight per
(recommended item, recent item); 1 listed per recommended item its positive causes
(``per_item``). A result stored before the change is re-sent as version 1."""
_PENDING_CARRY = np.zeros(0, np.float32)
"""How often the event loop checks whether XLA has finished a micro-batch's step."""


@dataclass(slots=True)
class _PendingEvent:
    event: ClickEvent
    step_index: int
    session_id: str
    recomputed: bool


_REFETCH_TRIES = 5
_REFETCH_WAIT_S = 1.0
_TAIL_STALL_S = 5.0
"""How long a partition may stay behind its high-water mark with nothing arriving."""


@dataclass(slots=True)
class _Refetch:
    """A partition seeked back to a missing offset, waiting for it to arrive."""

    partition: Any  # Faust's TP
    offset: int
    since: float
    tries: int = 1
    gave_up: bool = False


def recommendation_schema_version(explanation: Any) -> int:
    """The `recommendations` schema version a message with this explanation follows:
    a result stored by a worker of the previous release (``per_item`` explanation) is
    re-sent on redelivery exactly as it went out, version 1 included."""
    if isinstance(explanation, dict) and "per_item" in explanation:
        return 1
    return RECOMMENDATIONS_SCHEMA_VERSION


def _release(consumer: Any, message: Any) -> None:
    """Stop Faust waiting for an ack of a record `_contiguous` drops without acking.

    Faust tracks every delivered record as unacked and, at shutdown, ``wait_empty``
    waits until none is left; its stream keeps the last record it delivered
    referenced while waiting for the next, so a dropped duplicate at a partition's
    end held the set non-empty and a SIGTERM hung until killed (seen once in
    tests/chaos/test_kill9.py). Acking instead would let a commit step over a held
    record before its redelivery is applied; the redelivered copy is tracked anew.
    """
    unacked = getattr(consumer, "_unacked_messages", None)
    if unacked is not None:
        unacked.discard(message)


@dataclass(slots=True)
class _UserPlan:
    """One user's share of a batch: a working state and the steps to score."""

    state: UserState
    steps: UserSteps
    last_event: Any = None  # the Faust event whose partition the table write uses
    pending: list[_PendingEvent] = field(default_factory=list)
    changed: bool = False
    deleted: bool = False


class ClickstreamServer:
    """The hot path: decode, plan per user, score off the loop, send, store, ack."""

    def __init__(
        self,
        settings: WorkerSettings,
        scorer: Scorer,
        table: faust.Table,
        topics: dict[str, faust.TopicT],
        metrics: WorkerMetrics,
    ) -> None:
        """Wire the server to its table, output topics and metrics."""
        self.settings = settings
        self.scorer = scorer
        self.table = table
        self.topics = topics
        self.metrics = metrics
        # Looked up once: a labelled child per output per event is measurable work.
        self._recommendations_out = metrics.outputs.labels(role="recommendations")
        self._predictions_out = metrics.outputs.labels(role="purchase_predictions")
        self.limits = InputLimits.from_settings(settings)
        self.rules = SessionRules(
            settings.session_policy, settings.session_gap_s, settings.user_ttl_s
        )
        # Scorers without `submit_users` (test scorers, custom factories) step here.
        # One thread: the step is not re-entrant.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rnnrec-step")
        # Waits for a dispatched step's result (blocked in XLA, the GIL released).
        self.step_waiter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rnnrec-wait")
        metrics.set_model_version(scorer.version)
        self.rekeyed_topic = settings.topic("clickstream_repartition")
        self._recommendations_topic = settings.topic("recommendations")
        self._predictions_topic = settings.topic("purchase_predictions")
        # Set by create_app when following model-updates; see `_swap_model`.
        self.follower: ModelFollower | None = None
        # Set by create_app: item-updates (unavailable items) and the idle-user sweep.
        self.items: ItemFollower | None = None
        self.sweeper: IdleUserSweeper | None = None
        # Held by a batch from start to acks, and by a sweep tick: a sweep never
        # deletes a user between a batch reading and writing that user's state.
        self.batch_lock = asyncio.Lock()
        # Highest offset acked per (topic, partition): what `drain` compares with
        # the offsets the consumer has handed to the stream.
        self.acked_upto: dict[tuple[str, int], int] = {}
        self.clickstream_topic = settings.topic("clickstream")
        self.draining = False
        # The app's consumer, looked up late (Faust creates it on first use); None in
        # tests that drive process_batch without a Faust worker.
        self.consumer_of: Callable[[], Any] | None = None
        # Next offset expected per (topic, partition), and holes we seeked back over.
        self.next_offset: dict[tuple[str, int], int] = {}
        self.refetching: dict[tuple[str, int], _Refetch] = {}
        # Per partition behind its high-water mark: the expected offset and since when.
        self.tail_waits: dict[tuple[str, int], tuple[int, float]] = {}
        # Set by create_app: reads a partition directly to tell markers from lost records.
        self.probe: OffsetProbe | None = None
        # (model version, its carry's size): see `_usable_carry`.
        self._carry_size: tuple[str | None, int] = (None, 0)

    async def drain(self, consumer: Any, timeout_s: float) -> bool:
        """Stop fetching and wait until every event already fetched is processed and acked.

        Faust's own stop (``App._stop_consumer``) suspends flow control first, and a
        suspended stream *skips and acks* the events still queued in its channel
        (faust-streaming 0.15.3, ``Stream.__aiter__``): once the batch in hand is
        acked, the commit then covers those skipped events and they are lost. So
        before Faust's stop we pause the partitions (no new records) and let the
        agent work through what was already fetched: outputs, state and acks as for
        any batch. Faust's stop that follows finds nothing left to skip and commits.

        Args:
            consumer: the app's Faust consumer.
            timeout_s: give up waiting after this long (the caller's grace period).

        Returns:
            True when drained, False on timeout (the rest is redelivered after restart).
        """
        self.draining = True
        try:
            assignment = consumer.assignment()
        except Exception:  # not started: nothing was fetched
            return True
        consumer.pause_partitions(assignment)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        settled = 0
        # Both inputs: records fetched from the repartition topic would be skipped
        # and acked by Faust's stop just the same.
        sources = (self.clickstream_topic, self.rekeyed_topic)
        inputs = [tp for tp in assignment if tp.topic in sources]
        while loop.time() < deadline:
            if all(self._handed_over_done(consumer, tp) for tp in inputs):
                # A fetch already in progress may still hand over a few records:
                # only trust the condition once it has held for a while.
                settled += 1
                if settled >= 3:
                    return True
            else:
                settled = 0
            await asyncio.sleep(0.1)
        return False

    def _handed_over_done(self, consumer: Any, partition: Any) -> bool:
        """Whether every record the fetcher handed over on ``partition`` was acked.

        Faust's ``_read_offset`` is the offset of the last record handed to the
        streams, except right after its recovery seek, when it is the committed
        offset: the *next* record to read. On a partition idle since the worker
        started that offset holds no record yet (it is the high-water mark), so
        nothing was handed over; reading it as "record N is in flight" made every
        such stop wait the whole drain timeout.
        """
        read = consumer._read_offset.get(partition)
        if read is None or self.acked_upto.get((partition.topic, partition.partition), -1) >= read:
            return True
        highwater = consumer.highwater(partition)
        # No fetch answered yet, or no record at that offset: nothing came from it.
        return highwater is None or read >= highwater

    def load_state(self, user_id: str) -> UserState:
        """The stored state of a user, or a fresh one."""
        data = self.table.get(user_id)
        if data is None:
            return UserState()
        try:
            return decode_state(data)
        except StateFormatError:
            self.metrics.corrupt_state.inc()
            return UserState()

    async def process_batch(self, stream: faust.StreamT, events: Sequence[Any]) -> None:
        """Handle one micro-batch of Faust events; see the module docstring for order."""
        async with self.batch_lock:
            await self._process_batch(stream, events)

    async def sweep_idle_users(self, owned_partitions: Callable[[], set[int]]) -> None:
        """One tick of the idle-user sweep (`stream_app.user_ttl`), between batches."""
        if self.sweeper is None or self.draining:
            return
        async with self.batch_lock:
            self.sweeper.tick(owned_partitions())

    async def _process_batch(self, stream: faust.StreamT, events: Sequence[Any]) -> None:
        self._swap_model()
        if self.items is not None:
            # Unavailable items take effect from this batch on (the first waits for them).
            await self.items.refresh(self.scorer)
        events = await self._contiguous(events)
        if not events:
            return
        try:
            await self._serve(stream, events)
        except Exception as exc:  # any failure: find the event behind it
            # `_contiguous` has moved past these offsets, so nothing would retry them:
            # serve the batch again event by event (a one-event batch too: a second try
            # outlasts a passing fault). What the failed attempt finished counts as
            # done (outputs are sent before any state is written, so a state already
            # written means its outputs were sent: the retry re-sends only the last
            # result, as for a redelivery); an event that fails alone goes to the DLQ,
            # so one poison record cannot stop the stream.
            self.metrics.batch_failures.labels(scope="batch").inc()
            _log.warning("batch of %d events failed (%r); serving them one by one",
                         len(events), exc, exc_info=True)  # fmt: skip
            for event in events:
                try:
                    await self._serve(stream, [event])
                except Exception as exc_one:  # that event is the poison
                    await self._serve_failed(stream, event, exc_one)

    async def _serve_failed(self, stream: faust.StreamT, event: Any, exc: Exception) -> None:
        """An event that fails on its own: to the DLQ (``processing_error``), then acked.

        If even that fails (the broker is gone, say) the exception propagates: the
        agent (`create_app`) then stops the worker, and a restart gets the event
        again from the last commit.
        """
        self.metrics.batch_failures.labels(scope="event").inc()
        _log.error("event at %s[%d]@%d failed alone: %r; sent to the DLQ",
                   event.message.topic, event.message.partition, event.message.offset,
                   exc, exc_info=True)  # fmt: skip
        reason = Rejection(ErrorKind.PROCESSING_ERROR, f"{type(exc).__name__}: {exc}"[:500])
        await asyncio.gather(await self._send_dead_letter(self._dead_letter(event.message, reason)))
        await stream.ack(event)
        self._note_acked(event.message)

    def _note_acked(self, message: Any) -> None:
        # Plain, not a coroutine: it runs once per event on the hot path.
        tp = (message.topic, message.partition)
        if message.offset > self.acked_upto.get(tp, -1):
            self.acked_upto[tp] = message.offset

    async def _serve(self, stream: faust.StreamT, events: Sequence[Any]) -> None:
        """Steps (1) to (3) of the module docstring for contiguous events."""
        now = time.time()
        self.metrics.events_in.inc(len(events))
        self.metrics.batch_size.observe(len(events))
        plans: dict[str, _UserPlan] = {}
        dead: list[DeadLetter] = []
        rekey: list[tuple[str, Any]] = []  # (user_id, message) to repartition
        resends: list[LastResult] = []
        resend_keys: list[str] = []
        for event in events:
            message = event.message
            headers = dict(message.headers or ())
            if headers.get(COMMAND_HEADER) == DELETE_USER and message.key:
                self._plan_delete(plans, message.key.decode("utf-8", "replace"), event)
                continue
            decoded = decode_click_event(message.key, message.value, self.limits, now)
            if isinstance(decoded, Rejection):
                if self._may_repartition(message, decoded):
                    # Valid but for its key: decode_click_event checked user_id.
                    too_big = self._too_big_to_rekey(message)
                    if too_big is not None:
                        dead.append(self._dead_letter(message, too_big))
                    else:
                        rekey.append((orjson.loads(message.value)["user_id"], message))
                else:
                    dead.append(self._dead_letter(message, decoded))
                continue
            if self.sweeper is not None:
                self.sweeper.observe(decoded.ts)  # the sweep's clock is event time
            plan = plans.get(decoded.user_id)
            if plan is None:
                stored = self.load_state(decoded.user_id)
                carry = self._usable_carry(stored)
                plan = plans[decoded.user_id] = _UserPlan(stored, UserSteps(carry=carry))
            outcome = self._plan_event(plan, decoded, event)
            if isinstance(outcome, Rejection):
                dead.append(self._dead_letter(message, outcome))
            elif isinstance(outcome, LastResult):
                resends.append(outcome)
                resend_keys.append(decoded.user_id)

        count_unknown = getattr(self.scorer, "unknown_items", None)
        if count_unknown is not None:
            # Unknown items are served (out-of-vocabulary), never rejected: count them.
            items = [pending.event.item_id for plan in plans.values() for pending in plan.pending]
            self.metrics.oov_events.inc(count_unknown(items))
        outputs, carries = await self._score([p.steps for p in plans.values()])

        # (1) Send every output and wait for the broker's acknowledgements.
        futures = [await self._send_dead_letter(d) for d in dead]
        futures.extend([await self._repartition(user_id, m) for user_id, m in rekey])
        outputs_batch = OutputBatch()
        for user_id, result in zip(resend_keys, resends, strict=True):
            self._add_result(outputs_batch, user_id, result)
        for (user_id, plan), user_outputs, carry in zip(
            plans.items(), outputs, carries, strict=True
        ):
            if not plan.pending:
                continue
            self.metrics.events_applied.inc(len(plan.pending))
            self.metrics.events_served.labels(model_version=self.scorer.version).inc(
                len(plan.pending)
            )
            for pending in plan.pending:
                output = user_outputs[pending.step_index]
                assert output is not None
                result = self._result(pending, output)
                self._add_result(outputs_batch, user_id, result)
            if plan.changed:  # else a deletion followed the user's events in this batch
                plan.state.carry = carry
                plan.state.last_result = result
        futures.extend(await outputs_batch.send(await self._output_producer()))
        await asyncio.gather(*futures)
        sent_at = time.time()
        for event in events:
            self.metrics.end_to_end_seconds.observe(max(0.0, sent_at - event.message.timestamp))

        # (2) Store each changed user's state, offsets included, in the table.
        for user_id, plan in plans.items():
            if plan.changed or plan.deleted:
                self._write_state(user_id, plan)

        # (3) Ack: the commit timer may now commit these offsets.
        for event in events:
            await stream.ack(event)
            self._note_acked(event.message)

    def forget_offsets(self) -> None:
        """Forget expected offsets (a rebalance: Faust seeks to the committed offsets)."""
        self.next_offset.clear()
        self.refetching.clear()
        self.tail_waits.clear()

    async def _contiguous(self, events: Sequence[Any]) -> list[Any]:
        """The batch's events that follow without a hole from what this worker applied.

        faust-streaming 0.15.3 can fail to deliver a record around start-up and
        rebalances (the recovery seek races a fetch in flight: the fetcher's read
        offset runs ahead and the record is dropped as "already read"), and its commit
        then steps over the hole, losing the event; ``tests/integration/test_sigterm.py``
        caught it. So each partition's offsets must continue exactly where the last
        applied one (or the committed offset) left off. After a hole the partition is
        seeked back to the missing offset and its later events are dropped unacked
        until it arrives: they come again, in order (`retry_refetches` repeats the
        seek). A hole still there after several seeks is a real gap (transaction
        markers, compaction): the next offset is accepted and the gap counted.
        """
        if self.consumer_of is None:
            return list(events)
        consumer = self.consumer_of()
        kept: list[Any] = []
        seeks: dict[Any, int] = {}
        for event in events:
            message = event.message
            tp = (message.topic, message.partition)
            expected = await self._next_expected(consumer, tp, message.tp, message.offset)
            if expected is not None and message.offset < expected:
                # Delivered again within this process (after a seek): its outputs and
                # state are done. Not acked: an ack of an offset below the committed
                # one could move Faust's commit backwards.
                self.metrics.duplicate_deliveries.inc()
                _release(consumer, message)
                continue
            refetch = self.refetching.get(tp)
            if refetch is not None and message.offset > refetch.offset:
                if not refetch.gave_up:
                    _release(consumer, message)
                    continue  # the refetch delivers it again, in order
                _log.warning(
                    "partition %s[%d]: offsets %d..%d absent after %d refetches; skipped",
                    message.topic, message.partition, refetch.offset, message.offset - 1,
                    refetch.tries,
                )  # fmt: skip
                self.metrics.offset_gaps.inc(message.offset - refetch.offset)
            elif refetch is None and expected is not None and message.offset > expected:
                if not await self._absent(message.topic, message.partition, expected,
                                          message.offset):  # fmt: skip
                    self.refetching[tp] = _Refetch(message.tp, expected, time.monotonic())
                    seeks[message.tp] = expected
                    _release(consumer, message)
                    continue
                # Markers or compacted records: nothing to fetch again.
                self.metrics.offset_gaps.inc(message.offset - expected)
            self.refetching.pop(tp, None)
            kept.append(event)
            self.next_offset[tp] = message.offset + 1
        for partition, offset in seeks.items():
            _log.warning(
                "partition %s[%d]: offset %d was not delivered; fetching again from it",
                partition.topic, partition.partition, offset,
            )  # fmt: skip
            await self._seek(consumer, partition, offset)
        return kept

    async def retry_refetches(self) -> None:
        """Seek again where a refetch has not delivered its offset yet (run on a timer).

        The first seek often loses the same race as the original fetch (records of
        the fetch in flight push the read offset past it), so it is repeated until
        the missing offset arrives or the tries run out.
        """
        if self.consumer_of is None or not self.refetching:
            return
        consumer = self.consumer_of()
        now = time.monotonic()
        for refetch in list(self.refetching.values()):
            if refetch.gave_up or now - refetch.since < refetch.tries * _REFETCH_WAIT_S:
                continue
            if refetch.tries >= _REFETCH_TRIES:
                refetch.gave_up = True  # the next offset to come is accepted
            refetch.tries += 1
            await self._seek(consumer, refetch.partition, refetch.offset)

    async def fetch_tail_holes(self) -> None:
        """Fetch again the last records of a partition that were read but never delivered.

        `_contiguous` finds a hole when a later record arrives, but the same race can
        drop the *last* records written so far, and then nothing comes after them: the
        events would wait for the partition's next record (minutes on a quiet
        partition; forever for the end of a replay). So when a partition's next
        expected offset stays below the high-water mark of its last fetch for
        `_TAIL_STALL_S` with no batch in hand, it is seeked back like any other hole.
        A false alarm (records merely queued behind a stalled agent) costs duplicate
        deliveries, which `_contiguous` drops.
        """
        if self.consumer_of is None or self.draining or self.batch_lock.locked():
            return
        consumer = self.consumer_of()
        now = time.monotonic()
        watched = (self.clickstream_topic, self.rekeyed_topic)
        for partition in consumer.assignment():
            tp = (partition.topic, partition.partition)
            if partition.topic not in watched or tp in self.refetching:
                continue
            highwater = consumer.highwater(partition)
            expected = await self._next_expected(consumer, tp, partition, highwater or 0)
            if expected is None or highwater is None or highwater <= expected:
                self.tail_waits.pop(tp, None)
                continue
            waiting = self.tail_waits.get(tp)
            if waiting is None or waiting[0] != expected:
                self.tail_waits[tp] = (expected, now)
                continue
            if now - waiting[1] < _TAIL_STALL_S:
                continue
            del self.tail_waits[tp]
            if await self._absent(partition.topic, partition.partition, expected, highwater):
                # The partition ends with markers (a transactional producer's last
                # commit): step over them unless a record arrived meanwhile.
                if self._expected(consumer, tp, partition) == expected:
                    self.next_offset[tp] = highwater
                    self.metrics.offset_gaps.inc(highwater - expected)
                continue
            _log.warning(
                "partition %s[%d]: offsets %d..%d were not delivered; fetching again",
                partition.topic, partition.partition, expected, highwater - 1,
            )  # fmt: skip
            self.refetching[tp] = _Refetch(partition, expected, now)
            await self._seek(consumer, partition, expected)

    async def _next_expected(
        self, consumer: Any, tp: tuple[str, int], partition: Any, seen_upto: int
    ) -> int | None:
        """`_expected`, or where the group starts when that is unknown and a record
        beyond offset 0 (``seen_upto``: an offset delivered or a high-water mark) exists.

        Faust's recovery seek leaves ``None`` both for "nothing committed" and for
        "offset 0 committed", so `_expected` knows nothing, and a record that the
        start-up race drops before the first one delivered would go unseen (nothing
        gets outputs for it; the commit steps over it). The group's committed offset,
        or the log start, read once per partition and assignment, closes that gap.
        """
        expected = self._expected(consumer, tp, partition)
        if expected is not None or seen_upto <= 0 or self.probe is None:
            return expected
        try:
            start = await self.probe.start_offset(*tp)
        except Exception as exc:  # unsure: fall back to trusting what Faust delivers
            _log.debug("start offset of %s[%d] unknown: %r", tp[0], tp[1], exc)
            return None
        # Only if no event of the partition was applied meanwhile (a batch ran).
        return self.next_offset.setdefault(tp, start)

    async def _absent(self, topic: str, partition: int, start: int, upto: int) -> bool:
        """Whether offsets ``start`` to ``upto - 1`` hold no record (read directly).

        False when unsure (no probe, broker error, timeout): the caller then seeks
        back, which is always safe.
        """
        if self.probe is None:
            return False
        try:
            found = await self.probe.read_from(topic, partition, start)
        except Exception as exc:  # any failure means "unsure"; seeking back is safe
            _log.debug("offset probe of %s[%d] at %d failed: %r", topic, partition, start, exc)
            self.metrics.offset_probes.labels("failed").inc()
            return False
        reached = found.first_record if found.first_record is not None else found.position
        absent = reached >= upto
        self.metrics.offset_probes.labels("absent" if absent else "missing").inc()
        return absent

    async def _seek(self, consumer: Any, partition: Any, offset: int) -> None:
        self.metrics.refetches.inc()
        await consumer.seek(partition, offset)

    def _expected(self, consumer: Any, tp: tuple[str, int], partition: Any) -> int | None:
        """The next offset this worker should apply on a partition (None: unknown)."""
        expected = self.next_offset.get(tp)
        return expected if expected is not None else self._committed(consumer, partition)

    @staticmethod
    def _committed(consumer: Any, partition: Any) -> int | None:
        # What Faust's recovery seek read from the group (None: nothing committed,
        # or 0, which Faust does not distinguish from nothing).
        offset = consumer._committed_offset.get(partition)
        return int(offset) if offset else None

    def _plan_event(
        self, plan: _UserPlan, event: ClickEvent, faust_event: Any
    ) -> Rejection | LastResult | None:
        message = faust_event.message
        state = plan.state
        rekeyed = message.topic == self.rekeyed_topic
        if state.applied(message.partition, message.offset, rekeyed):
            return self._redelivered(state, event)
        seen_digest = state.digest_of_key(event.key)
        if seen_digest is not None:
            if seen_digest != event.digest:
                return Rejection(
                    ErrorKind.EVENT_ID_CONFLICT,
                    "event_id was seen for this user with different bytes",
                )
            return self._redelivered(state, event)
        state, reset = open_session(state, event, self.rules)
        steps = plan.steps
        recomputed = False
        if not reset and state.model_version != self.scorer.version:
            # The carry was made by other params: rebuild it from the session's
            # stored items under the served params, silently, then step the event.
            recomputed = True
            self.metrics.state_recomputed.inc()
            for i, item in enumerate(session_history(state)):
                # Past event times are not stored: the rebuilt carry sees zero gaps.
                self._add_step(steps, item, emit=False, reset=i == 0, excluded=None, ts=event.ts)
            reset = not session_history(state)
        excluded = None
        if self.settings.exclude_seen:
            excluded = [*session_history(state), event.item_id]
        history = None
        if self.settings.explain_window > 0:
            window = self.settings.explain_window
            history = [*session_history(state), event.item_id][-window:]
        self._add_step(
            steps, event.item_id, emit=True, reset=reset, excluded=excluded, ts=event.ts,
            history=history,
        )  # fmt: skip
        plan.pending.append(
            _PendingEvent(event, len(steps.items) - 1, state.session_id, recomputed)
        )
        plan.state = record_step(
            state,
            event,
            _PENDING_CARRY,
            self.scorer.version,
            message.partition,
            message.offset,
            self.settings.history_length,
            result=None,
            rekeyed=rekeyed,
        )
        plan.last_event = faust_event
        plan.changed = True
        plan.deleted = False
        return None

    @staticmethod
    def _add_step(
        steps: UserSteps,
        item: str,
        *,
        emit: bool,
        reset: bool,
        excluded: list[str] | None,
        ts: float,
        history: list[str] | None = None,
    ) -> None:
        steps.items.append(item)
        steps.emit.append(emit)
        steps.reset.append(reset)
        steps.excluded.append(excluded)
        steps.times.append(ts)
        steps.history.append(history)

    def _redelivered(self, state: UserState, event: ClickEvent) -> LastResult | None:
        last = state.last_result
        if last is not None and last.event_id == event.event_id:
            self.metrics.redeliveries.labels(resent="true").inc()
            return last
        self.metrics.redeliveries.labels(resent="false").inc()
        return None

    def _plan_delete(self, plans: dict[str, _UserPlan], user_id: str, event: Any) -> None:
        plan = plans.setdefault(user_id, _UserPlan(UserState(), UserSteps(carry=None)))
        # Events before the deletion in this batch were already planned and their
        # outputs are still sent; everything the user had is forgotten afterwards.
        plan.state = UserState()
        plan.deleted = True
        plan.changed = False
        plan.last_event = event

    async def _score(
        self, users: list[UserSteps]
    ) -> tuple[list[list[StepOutput | None]], list[np.ndarray]]:
        if not any(u.items for u in users):
            return [[None] * len(u.items) for u in users], [_PENDING_CARRY for _ in users]
        started = time.perf_counter()
        scorer = self.scorer
        rows = sum(max(len(u.items), 1) for u in users)
        if isinstance(scorer, EventScorer) and rows <= self.settings.largest_bucket:
            # One jitted call, encoded and dispatched here; XLA computes it on its own
            # threads while the event loop keeps running (heartbeats, commits,
            # fetches). An executor thread doing the dispatch too waited for the GIL
            # at every handover (up to the interpreter's 5 ms switch interval each,
            # while the loop ran), which tripled the step. A helper thread only
            # blocks on the result (GIL released) and wakes the loop once: polling
            # every 0.5 ms instead took a quarter of the loop's CPU during a long step
            # (the default model's), away from XLA's threads on a 2-core machine.
            pending = scorer.submit_users(users, self.settings.top_k)
            if not pending.ready():
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self.step_waiter, pending.wait)
            result = pending.result()
        else:
            loop = asyncio.get_running_loop()
            # Off the event loop: heartbeats, commits and rebalances keep running.
            result = await loop.run_in_executor(
                self.executor,
                score_in_rounds,
                scorer,
                users,
                self.settings.largest_bucket,
                self.settings.top_k,
            )
        self.metrics.step_seconds.observe(time.perf_counter() - started)
        return result

    def _result(self, pending: _PendingEvent, output: StepOutput) -> LastResult:
        return LastResult(
            event_id=pending.event.event_id,
            session_id=pending.session_id,
            items=output.items,
            scores=output.scores,
            p_purchase=min(1.0, max(0.0, output.p_purchase)),
            model_version=self.scorer.version,
            event_ts=pending.event.ts,
            produced_ts=time.time(),
            explanation=output.explanation,
            state_recomputed=pending.recomputed,
        )

    def _add_result(self, batch: OutputBatch, user_id: str, result: LastResult) -> None:
        """Queue the event's recommendation and purchase prediction in `batch`."""
        key = user_id.encode("utf-8")
        recommendation = {
            "schema_version": recommendation_schema_version(result.explanation),
            "event_id": result.event_id,
            "user_id": user_id,
            "session_id": result.session_id,
            "items": result.items,
            "scores": result.scores,
            "model_version": result.model_version,
            "event_ts": result.event_ts,
            "produced_ts": result.produced_ts,
            "explanation": result.explanation,
            "state_recomputed": result.state_recomputed,
        }
        prediction = {
            "schema_version": PREDICTIONS_SCHEMA_VERSION,
            "event_id": result.event_id,
            "user_id": user_id,
            "session_id": result.session_id,
            "p_purchase": result.p_purchase,
            "model_version": result.model_version,
            "event_ts": result.event_ts,
            "produced_ts": result.produced_ts,
        }
        self._recommendations_out.inc()
        self._predictions_out.inc()
        batch.add(self._recommendations_topic, key, orjson.dumps(recommendation))
        batch.add(self._predictions_topic, key, orjson.dumps(prediction))

    async def _output_producer(self) -> Any:
        """The app's aiokafka producer, which the outputs' record batches go to.

        The same producer as Faust's (tables' changelog, DLQ), so the commit timer's
        flush covers the outputs too. Straight to it rather than `Topic.send`, which
        adds channel, buffer and `FutureMessage` machinery per record (about 15 % of
        the event loop's samples in a py-spy profile of the drain).
        """
        return await app_producer(self.topics["recommendations"].app)

    def _dead_letter(self, message: Any, rejection: Rejection) -> DeadLetter:
        self.metrics.dead_letters.labels(reason=str(rejection.kind)).inc()
        return dead_letter(
            message.key,
            message.value,
            rejection,
            message.topic,
            message.partition,
            message.offset,
            self.settings.dlq_max_payload_bytes,
        )

    def _may_repartition(self, message: Any, rejection: Rejection) -> bool:
        return (
            rejection.kind == ErrorKind.KEY_MISMATCH
            and self.settings.repartition
            and message.topic != self.rekeyed_topic
        )

    def _too_big_to_rekey(self, message: Any) -> Rejection | None:
        """Refuse to re-send a record whose headers make it too large.

        The re-sent copy keeps the headers; only the value's size was checked, and a
        copy over the producer's request limit would fail the whole batch.
        """
        size = len(message.value) + sum(
            len(name) + len(value or b"") for name, value in message.headers or ()
        )
        if size <= self.limits.max_message_bytes:
            return None
        return Rejection(
            ErrorKind.TOO_LARGE,
            f"value and headers of {size} bytes, over RNNREC_MAX_MESSAGE_BYTES "
            f"({self.limits.max_message_bytes}); not re-keyed",
        )

    async def _repartition(self, user_id: str, message: Any) -> Any:
        """Re-send a valid event keyed by its user (same bytes and headers)."""
        self.metrics.repartitioned.inc()
        return await self.topics["clickstream_repartition"].send(
            key=user_id.encode("utf-8"), value=message.value, headers=list(message.headers or ())
        )

    async def _send_dead_letter(self, letter: DeadLetter) -> Any:
        self.metrics.outputs.labels(role="dlq").inc()
        return await self.topics["dlq"].send(
            key=letter.key, value=letter.value, headers=letter.headers
        )

    def _usable_carry(self, stored: UserState) -> np.ndarray | None:
        """The stored carry if the served model can continue it, else None (initial).

        A carry from another model version is never continued (`_plan_event` resets
        or rebuilds it), and another version may have another carry layout: stacked
        with this version's carries it would fail the whole batch. A carry of the
        wrong size under the served version is a damaged record.
        """
        carry = stored.carry
        if carry is None or stored.model_version != self.scorer.version:
            return None
        version = self.scorer.version
        if self._carry_size[0] != version:
            self._carry_size = (version, int(np.size(self.scorer.initial_carry())))
        if carry.size != self._carry_size[1]:
            self.metrics.corrupt_state.inc()
            return None
        return carry

    def _swap_model(self) -> None:
        """Serve the follower's staged model from this batch on (between batches, so
        every output of a batch carries one version). The scorer was validated and
        warmed up in the follower thread: this is one assignment. Carries made by the
        old version are rebuilt per user on their next event (`_plan_event`)."""
        if self.follower is None:
            return
        scorer = self.follower.take_pending()
        if scorer is None:
            return
        unavailable = getattr(self.scorer, "unavailable_items", ())
        if unavailable and hasattr(scorer, "set_unavailable"):
            scorer.set_unavailable(unavailable)  # item-updates stay in force
        self.scorer = scorer
        self.metrics.set_model_version(scorer.version)
        self.metrics.model_swaps.inc()

    def _write_state(self, user_id: str, plan: _UserPlan) -> None:
        # Faust picks the changelog partition from the "current event"; in a
        # take() body that context is not set, so set it to the user's last event:
        # the changelog partition then equals the input partition.
        token = _current_event.set(weakref.ref(plan.last_event))
        try:
            if plan.deleted and not plan.changed:
                if user_id in self.table:
                    del self.table[user_id]
            else:
                self.table[user_id] = encode_state(
                    plan.state,
                    self.settings.carry_dtype,
                    getattr(self.scorer, "exact_carry_positions", None),
                )
        finally:
            _current_event.reset(token)


STATE_TABLE = "user-state"
"""The per-user state table's name (its changelog: `changelog_topic`)."""


def changelog_topic(settings: WorkerSettings) -> str:
    """The state table's changelog topic, named as Faust names it."""
    return f"{settings.app_id}-{STATE_TABLE}-changelog"


def ensure_topics(settings: WorkerSettings) -> None:
    """Check the input and output topics; create missing ones if the settings allow.

    Faust declares only the topics it consumes, and a send to a missing topic
    blocks the batch, so outputs must exist up front. Where a topics Job owns the
    topics and the worker's principal may not create any (least privilege), set
    ``RNNREC_CREATE_TOPICS=false``: the worker then only describes them.

    Raises:
        ValueError: a topic is missing and may not be created, or clickstream has
            another partition count than the table's (state would live on other
            partitions than its events).
    """
    from kafka import KafkaConsumer

    from stream_app.kafka_io import create_topics
    from stream_app.kafka_security import kafka_python_kwargs

    security = kafka_python_kwargs(settings)
    roles = ("clickstream", "clickstream_repartition", "recommendations",
             "purchase_predictions", "dlq")  # fmt: skip
    wanted = [settings.topic(role) for role in roles]
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, group_id=None, **security
    )
    try:
        missing = sorted(set(wanted) - set(consumer.topics()))
        if missing and not settings.create_topics:
            raise ValueError(
                f"missing topics {', '.join(missing)}: run the topics Job "
                "(python -m stream_app.topics) or set RNNREC_CREATE_TOPICS=true"
            )
        if missing:
            create_topics(
                settings.bootstrap_servers,
                missing,
                partitions=settings.partitions,
                security=security,
                replication_factor=settings.replication_factor,
            )
        if missing:  # just created: the cached metadata predates them
            consumer.topics()
        # Both inputs must have the table's partitions: a user's events and state
        # then meet on one partition, whichever topic an event came through.
        for role in ("clickstream", "clickstream_repartition"):
            found = consumer.partitions_for_topic(settings.topic(role)) or set()
            if len(found) != settings.partitions:
                raise ValueError(
                    f"{settings.topic(role)} has {len(found)} partitions but "
                    f"RNNREC_PARTITIONS={settings.partitions}; they must match"
                )
        # So must the state's changelog, if it exists (Faust creates it at start):
        # else every state write fails after its outputs were sent.
        changelog = changelog_topic(settings)
        found = consumer.partitions_for_topic(changelog) or set()
        if found and len(found) != settings.partitions:
            raise ValueError(
                f"{changelog} has {len(found)} partitions but RNNREC_PARTITIONS="
                f"{settings.partitions}: the state lives on the changelog's partitions, so "
                "keep its count (or delete the changelog and lose the users' state)"
            )
    finally:
        consumer.close()


class ServingApp(faust.App):
    """A Faust app that drains the clickstream before Faust's own stop sequence.

    See `ClickstreamServer.drain` for why Faust's stop alone can lose events.
    """

    server: ClickstreamServer | None = None
    drain_timeout_s: float = 20.0

    async def on_stop(self) -> None:
        """Finish everything fetched (outputs, state, acks), then stop as Faust does."""
        if self.server is not None and self._consumer is not None:
            drained = await self.server.drain(self._consumer, self.drain_timeout_s)
            if not drained:
                self.log.warning(
                    "Stop: events still in flight after %.0f s; they will be redelivered",
                    self.drain_timeout_s,
                )
        if self.server is not None and self.server.probe is not None:
            self.server.probe.close()
        await super().on_stop()


def faust_app_options(settings: WorkerSettings, security: Any = None) -> dict[str, Any]:
    """The Faust app options of the worker (also the serving benchmark's no-op baseline).

    Args:
        settings: the worker settings.
        security: `stream_app.kafka_security.client_security` output, or None (PLAINTEXT).
    """
    return {
        "broker": settings.broker_url,
        # TLS/SASL for the consumer, producer and admin alike (None: PLAINTEXT).
        "broker_credentials": None if security is None else security.broker_credentials,
        "store": settings.store,
        "datadir": str(settings.state_dir),
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "broker_commit_interval": settings.commit_interval_s,
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        "producer_linger": settings.producer_linger_s,
        "producer_max_batch_size": settings.producer_max_batch_bytes,
        "web_enabled": settings.web_enabled,
        "web_port": settings.web_port,
        "web_bind": settings.web_bind,
        "web_host": settings.web_host,
        # A big batch holds the agent for its whole step; it must not look like a stall.
        "stream_wait_empty": True,
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": settings.session_timeout_s / 10,
        "stream_buffer_maxsize": settings.stream_buffer_maxsize,
        # Standbys off by default: they double the users held in memory, and Faust
        # 0.15.3 was seen assigning a partition as standby and active at once.
        "table_standby_replicas": settings.standby_replicas,
    }


@dataclass
class WorkerRuntime:
    """The app and the objects the web views and tests look at."""

    app: faust.App
    server: ClickstreamServer
    table: faust.Table
    metrics: WorkerMetrics


def create_app(settings: WorkerSettings, scorer: Scorer | None = None) -> WorkerRuntime:
    """Build the serving worker's Faust app from settings.

    Args:
        settings: the worker settings.
        scorer: the model; loaded from the settings when None.

    Returns:
        The `WorkerRuntime` (run ``runtime.app`` with a Faust worker).
    """
    from stream_app.item_updates import attach_item_follower
    from stream_app.kafka_security import client_security
    from stream_app.model_follower import attach_follower, startup_model
    from stream_app.offset_probe import OffsetProbe
    from stream_app.user_ttl import IdleUserSweeper, active_source_partitions
    from stream_app.web import readiness, register_views

    startup = None
    if scorer is None:
        # Precedence (factory, model-updates pointer, RNNREC_MODEL_SOURCE): model_follower.
        startup = startup_model(settings)
        scorer = startup.scorer
    security = client_security(settings)
    app = ServingApp(settings.app_id, **faust_app_options(settings, security))
    limit_fetch_wait(app, settings.fetch_max_wait_ms)

    def raw_topic(role: str) -> faust.TopicT:
        return app.topic(
            settings.topic(role),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
        )

    # The agent's input: clickstream and the events it re-keyed (see module docstring).
    clickstream = app.topic(
        settings.topic("clickstream"),
        settings.topic("clickstream_repartition"),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )
    roles = ("recommendations", "purchase_predictions", "dlq", "clickstream_repartition")
    topics = {role: raw_topic(role) for role in roles}
    table = app.Table(
        STATE_TABLE,
        key_type=str,
        value_type=bytes,  # bytes -> the "raw" serializer: values are encode_state() output
        partitions=settings.partitions,
        # Faust creates the changelog itself; as durable as the topics Job's topics (a
        # broker default of 1 would let an acknowledged state write live on one replica).
        extra_topic_configs={
            "min.insync.replicas": str(min_insync_replicas(settings.replication_factor))
        },
    )
    metrics = WorkerMetrics()
    metrics.track_users(lambda: len(table))
    compile_count = getattr(scorer, "compile_count", None)
    if compile_count is not None:
        # A steady-state recompilation would stall the hot path: make it visible.
        Gauge(
            "rnnrec_jit_compilations",
            "XLA compilations in this worker process (constant after warm-up).",
            registry=metrics.registry,
        ).set_function(lambda: float(getattr(scorer, "compile_count", 0)))
    server = ClickstreamServer(settings, scorer, table, topics, metrics)
    if startup is not None:
        server.follower = attach_follower(app, settings, metrics, startup)
    server.items = attach_item_follower(app, settings, metrics.registry, scorer)
    app.server = server
    server.consumer_of = lambda: app.consumer
    server.probe = OffsetProbe(
        settings.bootstrap_servers, security.kafka_python, group=settings.app_id
    )

    @app.task
    async def _show_event_loop() -> None:
        metrics.event_loop.labels(implementation=loop_implementation()).set(1)

    @app.on_partitions_revoked.connect
    def _forget_offsets(sender: Any, *args: Any, **kwargs: Any) -> None:
        server.forget_offsets()

    @app.timer(_REFETCH_WAIT_S / 2)
    async def _retry_refetches() -> None:
        await server.retry_refetches()
        if readiness(app, model_loaded=True)["ready"]:
            await server.fetch_tail_holes()

    if settings.recovery_stall_s > 0:
        from stream_app.recovery_watchdog import RecoveryWatchdog

        watchdog = RecoveryWatchdog(app, settings.recovery_stall_s, metrics.recovery_reseeks.inc)

        @app.timer(min(5.0, settings.recovery_stall_s / 3))
        async def _watch_recovery() -> None:
            await watchdog.tick()

    if settings.user_ttl_s > 0 and settings.user_ttl_sweep_s > 0:
        server.sweeper = IdleUserSweeper(
            table,
            settings.topic("clickstream"),
            settings.user_ttl_s,
            settings.user_ttl_sweep_users,
            metrics.registry,
        )
        owned = active_source_partitions(app, settings.topic("clickstream"))

        @app.timer(settings.user_ttl_sweep_s)
        async def _sweep_idle_users() -> None:
            await server.sweep_idle_users(owned)

    app.drain_timeout_s = settings.shutdown_drain_s

    @app.agent(clickstream, name="serve-clickstream")
    async def serve_clickstream(stream: faust.StreamT) -> None:
        try:
            async for events in stream.noack_take(settings.max_batch, within=settings.max_wait_s):
                await server.process_batch(stream, events)
        except Exception as exc:
            # Only a failure the batch's own fallback could not absorb gets here (the
            # DLQ unreachable, say). Faust would restart the agent, which would go on
            # past the unacked events, and their users' later events would make the
            # redelivered copies look applied. Stop the worker instead: a restart
            # resumes from the last commit and loses nothing.
            _log.critical("serving failed beyond recovery; stopping the worker: %r", exc)
            await app.crash(exc)
            raise

    runtime = WorkerRuntime(app=app, server=server, table=table, metrics=metrics)
    register_views(runtime)
    return runtime
