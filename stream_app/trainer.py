"""``rnnrec trainer``: fine-tune the served model from the stream, judge, publish.

One replica. It reads ``clickstream`` in its own consumer group (kafka-python, a plain
poll loop), validates each record with the worker's rules (`stream_app.events`; bad
records are skipped and counted: the worker already sends them to the DLQ) and keeps
a bounded rolling window of recent events grouped by session (`SessionWindow`).

**Cadence.** A round runs when event time crosses the next multiple of
``RNNREC_TRAINER_INTERVAL_EVENT_TIME_S`` (UTC-aligned; the boundary B) or after
``RNNREC_TRAINER_INTERVAL_EVENTS`` new events, whichever comes first. On an event-time
crossing the trainer first reads every partition up to the end offsets it saw at the
crossing, so each event produced before the crossing event is in the window; events
timed at or after B wait and join the window after the round. A round at B therefore
uses exactly the events timed before B, whatever the replay speed or the interleaving
of partitions (late events join the next round).

**A round** (`OnlineTrainer.run_round`): the window's sessions timed before B are split
into training sessions and the freshest ``RNNREC_TRAINER_HOLDOUT_FRACTION`` of
sessions (by their last event), held back. The vocabulary grows from the training
part (`rnnrec_jax.finetune.grow_vocabulary`, fixed capacity, stated eviction), a
candidate is fine-tuned from the serving model on it, and candidate and serving model
are evaluated on the held-back slice (`evaluate_slice`: the served protocol, unknown
targets are misses). The candidate is published (and served) only when its
``RNNREC_TRAINER_DECISION_METRIC`` is at least the serving model's minus
``RNNREC_TRAINER_MARGIN``. Every decision is a log line, metrics, and (unless frozen)
a ``<model>/<version>/decision`` record on ``model-updates``. Rounds with too little
data are skipped (logged and counted, nothing written). The serving model is re-read
from the topic when its serving pointer moved (a rollback or an offline publish), so
the next candidate starts from what workers serve.

**Frozen** (``RNNREC_ONLINE_TRAINING_FROZEN``): the trainer consumes and, at each
round, evaluates the serving model on the fresh slice (a monitoring figure), but never
fine-tunes and writes nothing to any topic.

**Offsets and restarts.** Offsets are committed after each round, every
``_COMMIT_EVERY_S`` seconds and at shutdown: they mean "read", not "trained on". The
window lives in memory, so a restarted trainer starts with an empty window and its
next round waits for new data. A SIGTERM abandons a running fine-tune at the next
compiled chunk, commits and exits 0.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PromCounter

from stream_app.events import (
    COMMAND_HEADER,
    DELETE_USER,
    ClickEvent,
    InputLimits,
    Rejection,
    decode_click_event,
)
from stream_app.trainer_settings import TrainerSettings
from stream_app.trainer_window import Cadence, SessionWindow, split_holdout

log = logging.getLogger("rnnrec.trainer")

DECISION_SCHEMA_VERSION = 1
_COMMIT_EVERY_S = 10.0
_TOPIC_WAIT_S = 30.0


class TrainerError(RuntimeError):
    """The trainer cannot start (no model, unreachable broker); one line for the operator."""


# ------------------------------------------------------------------------ metrics


class TrainerMetrics:
    """The trainer's Prometheus metrics, in their own registry."""

    def __init__(self) -> None:
        """Create the metrics."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events_consumed = PromCounter(
            "rnnrec_trainer_events_consumed", "Valid clickstream events read.", registry=r
        )
        self.events_rejected = PromCounter(
            "rnnrec_trainer_events_rejected",
            "Invalid clickstream records skipped (the worker DLQs them), by reason.",
            ["reason"],
            registry=r,
        )
        self.window_events = Gauge(
            "rnnrec_trainer_window_events", "Events in the rolling window.", registry=r
        )
        self.window_sessions = Gauge(
            "rnnrec_trainer_window_sessions", "Sessions in the rolling window.", registry=r
        )
        self.rounds = PromCounter(
            "rnnrec_trainer_rounds", "Cadence points handled, by trigger.", ["trigger"], registry=r
        )
        self.fine_tunes = PromCounter(
            "rnnrec_trainer_fine_tunes", "Candidates fine-tuned.", registry=r
        )
        self.fine_tune_running = Gauge(
            "rnnrec_trainer_fine_tune_running", "1 while a fine-tune runs.", registry=r
        )
        self.decisions = PromCounter(
            "rnnrec_trainer_decisions",
            "Round outcomes: published, rejected, superseded, skipped, frozen, failed, abandoned.",
            ["outcome"],
            registry=r,
        )
        self.candidate_metric = Gauge(
            "rnnrec_trainer_candidate_metric",
            "Last candidate's held-back metrics.",
            ["metric"],
            registry=r,
        )
        self.serving_metric = Gauge(
            "rnnrec_trainer_serving_metric",
            "Serving model's metrics on the last held-back slice.",
            ["metric"],
            registry=r,
        )
        self.last_fine_tune_seconds = Gauge(
            "rnnrec_trainer_last_fine_tune_seconds", "Duration of the last fine-tune.", registry=r
        )
        self.last_round_seconds = Gauge(
            "rnnrec_trainer_last_round_seconds",
            "Duration of the last round (evaluation and publication included).",
            registry=r,
        )
        self.last_boundary = Gauge(
            "rnnrec_trainer_last_round_boundary_seconds",
            "Event time (epoch s) up to which the last completed round saw the stream.",
            registry=r,
        )
        self.vocabulary_items = Gauge(
            "rnnrec_trainer_vocabulary_items",
            "Items in the serving model's vocabulary.",
            registry=r,
        )
        self.items_added = PromCounter(
            "rnnrec_trainer_items_added", "Items given a row by vocabulary growth.", registry=r
        )
        self.items_evicted = PromCounter(
            "rnnrec_trainer_items_evicted", "Items evicted to make room.", registry=r
        )
        self.items_deferred = Gauge(
            "rnnrec_trainer_items_deferred", "New items left without a row last round.", registry=r
        )
        self.users_deleted = PromCounter(
            "rnnrec_trainer_users_deleted",
            "Delete-user commands applied: the user's events left the window.",
            registry=r,
        )
        self.model_version = Gauge(
            "rnnrec_trainer_model_version_info",
            "The version the trainer fine-tunes from (value 1).",
            ["version"],
            registry=r,
        )

    def set_model_version(self, version: str) -> None:
        """Show ``version`` as the current serving model."""
        self.model_version.clear()
        self.model_version.labels(version=version).set(1)


# ------------------------------------------------------------------------ rounds


class Publisher(Protocol):
    """Where the trainer reads the served version and writes versions and decisions."""

    def serving_version(self) -> str | None:
        """The version workers are told to serve (None: no pointer)."""
        ...

    def load_serving(self) -> Any:
        """The served `TrainedModel`, validated (None: no pointer)."""
        ...

    def publish(self, model: Any) -> str:
        """Publish and serve ``model``; returns the version name used."""
        ...

    def record_decision(self, version: str, decision: dict[str, Any]) -> None:
        """Write the decision record of ``version``."""
        ...


class TopicPublisher:
    """`Publisher` on the ``model-updates`` topic (`stream_app.model_registry`)."""

    def __init__(self, settings: TrainerSettings) -> None:
        """Publish with these settings (signing key, model name, chunk size)."""
        self.settings = settings

    def serving_version(self) -> str | None:
        """The serving pointer's version."""
        from stream_app.model_registry import read_registry

        registry = read_registry(self.settings)
        return registry.serving.version if registry.serving is not None else None

    def load_serving(self) -> Any:
        """The pointed version, fully validated."""
        from stream_app.model_registry import load_serving_model_from_topic

        return load_serving_model_from_topic(self.settings)

    def publish(self, model: Any) -> str:
        """Chunks, manifest (signed when a key is set), serving pointer."""
        from stream_app.model_registry import publish_model

        return publish_model(self.settings, model, serve=True, reason="trainer")

    def record_decision(self, version: str, decision: dict[str, Any]) -> None:
        """``<model>/<version>/decision``."""
        from stream_app.model_registry import publish_decision

        publish_decision(self.settings, version, decision)


_UNKNOWN: Any = object()
"""The serving pointer could not be read at the start of a round."""


@dataclasses.dataclass
class Decision:
    """What one round decided, as logged, counted and recorded."""

    outcome: str
    reason: str
    round: int
    trigger: str
    boundary_ts: float
    parent_version: str
    candidate_version: str | None = None
    published_version: str | None = None
    metric: str = "mrr@20"
    margin: float = 0.0
    candidate: dict[str, Any] | None = None
    serving: dict[str, Any] | None = None
    window: dict[str, Any] = dataclasses.field(default_factory=dict)
    vocabulary: dict[str, Any] | None = None
    fine_tune: dict[str, Any] | None = None
    seconds: float = 0.0
    decided_at: float = 0.0

    def record(self) -> dict[str, Any]:
        """The JSON record written to ``model-updates`` (``decision`` and ``reason``
        are the fields ``rnnrec model list`` shows)."""
        body = dataclasses.asdict(self)
        body["boundary_ts"] = self.boundary_ts if math.isfinite(self.boundary_ts) else None
        return {"schema_version": DECISION_SCHEMA_VERSION, "decision": self.outcome, **body}

    def log_line(self) -> str:
        """One line with the essentials."""
        metric = self.metric

        def fig(report: dict[str, Any] | None) -> str:
            return f"{report[metric]:.4f}" if report and metric in report else "-"

        vocab = self.vocabulary or {}
        return (
            f"decision round={self.round} trigger={self.trigger} boundary={_iso(self.boundary_ts)} "
            f"outcome={self.outcome} reason={self.reason!r} "
            f"candidate={self.candidate_version or '-'} parent={self.parent_version} "
            f"{metric}: candidate={fig(self.candidate)} serving={fig(self.serving)} "
            f"margin={self.margin:g} window_events={self.window.get('events', 0)} "
            f"holdout_targets={self.window.get('holdout_targets', 0)} "
            f"items_added={vocab.get('added', 0)} evicted={vocab.get('evicted', 0)} "
            f"seconds={self.seconds:.1f}"
        )


def _iso(ts: float) -> str:
    if not math.isfinite(ts):
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _version_stamp(ts: float) -> str:
    moment = ts if math.isfinite(ts) else time.time()
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def _buy_times(events: Any) -> dict[str, float] | None:
    """Session -> first purchase time, when the window has purchase events at all."""
    if events.event_types is None:
        return None
    bought = events.event_types == "purchase"
    if not bought.any():
        return None  # no purchase events in the stream: no labels, not "no purchases"
    out: dict[str, float] = {}
    for session, ts in zip(events.session_ids[bought], events.times[bought], strict=True):
        out[str(session)] = min(out.get(str(session), math.inf), float(ts))
    return out


class OnlineTrainer:
    """The rounds, free of Kafka: feed it events, ask it to run rounds."""

    def __init__(
        self,
        settings: TrainerSettings,
        model: Any,
        publisher: Publisher,
        metrics: TrainerMetrics | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        """Start from ``model`` (the served `TrainedModel`)."""
        self.settings = settings
        self.model = model
        self.publisher = publisher
        self.metrics = metrics or TrainerMetrics()
        self.should_stop = should_stop or (lambda: False)
        self.window = SessionWindow(
            settings.trainer_window_max_events,
            settings.trainer_window_max_age_s,
            settings.session_gap_s,
        )
        self.cadence = Cadence(
            settings.trainer_interval_event_time_s, settings.trainer_interval_events
        )
        self.rounds_done = 0
        self._pointer_at_start: Any = _UNKNOWN
        self.last_seen: dict[str, float] = {}
        self.decisions: list[Decision] = []
        self.metrics.set_model_version(str(model.version))
        self.metrics.vocabulary_items.set(len(model.vocab))

    def add(self, event: ClickEvent) -> None:
        """Take one valid event into the window."""
        self.window.add(event)
        self.cadence.events_since_round += 1
        self.metrics.events_consumed.inc()

    def forget_user(self, user_id: str) -> int:
        """Apply a delete-user command: the user's events leave the window, so no later
        round trains or evaluates on them. Returns the events removed."""
        removed = self.window.forget_user(user_id)
        self.metrics.users_deleted.inc()
        return removed

    def update_gauges(self) -> None:
        """Refresh the window gauges."""
        self.metrics.window_events.set(len(self.window))
        self.metrics.window_sessions.set(self.window.n_sessions)

    def run_round(self, boundary: float, trigger: str) -> Decision:
        """Fine-tune, judge and (maybe) publish on the window's events before ``boundary``.

        Never raises for a failed round: the outcome says what happened (``failed``
        with the error), so the stream keeps being read.
        """
        from rnnrec_jax.finetune import FineTuneAbandoned

        started = time.perf_counter()
        self.rounds_done += 1
        self.metrics.rounds.labels(trigger=trigger).inc()
        self._follow_serving_pointer()
        s = self.settings
        decision = Decision(
            outcome="skipped",
            reason="",
            round=self.rounds_done,
            trigger=trigger,
            boundary_ts=boundary,
            parent_version=str(self.model.version),
            metric=str(s.trainer_decision_metric),
            margin=s.trainer_margin,
        )
        try:
            self._round(decision, boundary)
        except FineTuneAbandoned:
            decision.outcome, decision.reason = "abandoned", "stopping (SIGTERM)"
        except Exception as exc:  # a round must never stop the trainer
            log.exception("round %d failed", decision.round)
            decision.outcome = "failed"
            decision.reason = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            self.metrics.fine_tune_running.set(0)
        decision.seconds = time.perf_counter() - started
        decision.decided_at = time.time()
        self._record(decision)
        # Last sightings only matter for items that can be evicted: bounded by capacity.
        vocab = self.model.vocab
        self.last_seen = {k: v for k, v in self.last_seen.items() if k in vocab}
        self.metrics.last_round_seconds.set(decision.seconds)
        if math.isfinite(boundary):
            self.metrics.last_boundary.set(boundary)
        else:
            self.metrics.last_boundary.set(self.window.newest_ts)
        self.window.forget_idle_users()
        self.update_gauges()
        return decision

    def _round(self, decision: Decision, boundary: float) -> None:
        from rnnrec_jax.finetune import (
            browsing_events,
            evaluate_slice,
            fine_tune,
            grow_vocabulary,
            params_digest,
        )

        s = self.settings
        events = self.window.snapshot(before=boundary)
        browsing = browsing_events(events)
        train, held_back = split_holdout(browsing, s.trainer_holdout_fraction)
        decision.window = {
            "events": int(events.n_events),
            "sessions": int(events.n_sessions),
            "train_events": int(train.n_events),
            "train_targets": int(train.n_targets),
            "holdout_events": int(held_back.n_events),
            "holdout_targets": int(held_back.n_targets),
            "first_ts": float(events.times.min()) if events.n_events else None,
            "last_ts": float(events.times.max()) if events.n_events else None,
        }
        if held_back.n_targets < s.trainer_min_holdout_targets:
            decision.reason = (
                f"{held_back.n_targets} held-back targets < {s.trainer_min_holdout_targets}"
            )
            return
        metric = str(s.trainer_decision_metric)
        serving_report = evaluate_slice(self.model, held_back)
        decision.serving = serving_report
        self._set_metric(self.metrics.serving_metric, serving_report)
        if s.online_training_frozen:
            decision.outcome, decision.reason = "frozen", "online training is frozen"
            return
        if train.n_targets < s.trainer_min_train_targets:
            decision.reason = f"{train.n_targets} training targets < {s.trainer_min_train_targets}"
            return
        for item, ts in zip(browsing.item_ids.tolist(), browsing.times.tolist(), strict=True):
            if ts > self.last_seen.get(item, -math.inf):
                self.last_seen[item] = ts
        seed = s.trainer_seed + self.rounds_done
        grown, growth = grow_vocabulary(
            self.model,
            train.item_ids,
            train.times,
            last_seen=self.last_seen,
            protect=held_back.item_ids,  # in the window, but no rows from held-back data
            min_count=s.trainer_min_item_count,
            seed=seed,
        )
        decision.vocabulary = growth.as_dict()
        self.metrics.fine_tune_running.set(1)
        self.metrics.fine_tunes.inc()
        buy_times = _buy_times(events)
        try:
            candidate = fine_tune(
                grown,
                train,
                steps=s.trainer_finetune_max_steps or None,
                epochs=s.trainer_finetune_epochs,
                learning_rate=s.trainer_finetune_lr,
                encoder_lr_scale=s.trainer_finetune_encoder_lr_scale,
                optimiser=s.trainer_finetune_optimiser,
                seed=seed,
                buy_times=buy_times,
                should_stop=self.should_stop,
            )
        except FloatingPointError as exc:
            decision.outcome, decision.reason = "rejected", str(exc)
            return
        finally:
            self.metrics.fine_tune_running.set(0)
        decision.fine_tune = candidate.metrics.get("fine_tune")
        self.metrics.last_fine_tune_seconds.set(float(decision.fine_tune["seconds"]))
        digest = params_digest(candidate.params)[:8]
        version = f"ft-{_version_stamp(decision.boundary_ts)}-{digest}"
        candidate = dataclasses.replace(candidate, version=version)
        decision.candidate_version = version
        candidate_report = evaluate_slice(candidate, held_back)
        decision.candidate = candidate_report
        self._set_metric(self.metrics.candidate_metric, candidate_report)
        candidate = dataclasses.replace(
            candidate,
            metrics={
                "fine_tune": decision.fine_tune,
                "holdout": candidate_report,
                "serving_holdout": serving_report,
                "vocabulary": decision.vocabulary,
            },
        )
        floor = serving_report[metric] - s.trainer_margin
        if candidate_report[metric] < floor:
            decision.outcome = "rejected"
            decision.reason = (
                f"{metric} {candidate_report[metric]:.4f} < serving "
                f"{serving_report[metric]:.4f} - margin {s.trainer_margin:g}"
            )
            return
        # An operator's rollback (or another publisher) during the fine-tune moved the
        # pointer: publishing now would undo it, with a candidate judged against a
        # model that is no longer served. The next round starts from the new pointer.
        pointer = self.publisher.serving_version()
        if self._pointer_at_start is not _UNKNOWN and pointer != self._pointer_at_start:
            decision.outcome = "superseded"
            decision.reason = (
                f"the serving pointer moved from {self._pointer_at_start} to {pointer} "
                "during the round"
            )
            return
        published = self.publisher.publish(candidate)
        self.model = dataclasses.replace(candidate, version=published)
        decision.outcome = "published"
        decision.published_version = decision.candidate_version = published
        decision.reason = (
            f"{metric} {candidate_report[metric]:.4f} >= serving "
            f"{serving_report[metric]:.4f} - margin {s.trainer_margin:g}"
        )
        self.metrics.set_model_version(published)
        self.metrics.vocabulary_items.set(len(self.model.vocab))
        self.metrics.items_added.inc(len(growth.added))
        self.metrics.items_evicted.inc(len(growth.evicted))
        self.metrics.items_deferred.set(len(growth.deferred))

    def _set_metric(self, gauge: Gauge, report: dict[str, Any]) -> None:
        for name in ("recall@20", "mrr@20"):
            if name in report:
                gauge.labels(metric=name).set(float(report[name]))

    def _follow_serving_pointer(self) -> None:
        """Start from what workers serve: re-read the model when the pointer moved."""
        self._pointer_at_start = _UNKNOWN
        try:
            version = self._pointer_at_start = self.publisher.serving_version()
            if version is None or version == str(self.model.version):
                return
            model = self.publisher.load_serving()
        except Exception as exc:  # keep fine-tuning the model we have
            log.warning(
                "cannot follow the serving pointer (%s); keeping %s", exc, self.model.version
            )
            return
        if model is not None and str(model.version) != str(self.model.version):
            log.info("serving pointer moved to %s: fine-tuning from it", model.version)
            self.model = model
            self.metrics.set_model_version(str(model.version))
            self.metrics.vocabulary_items.set(len(model.vocab))

    def _record(self, decision: Decision) -> None:
        self.decisions.append(decision)
        self.metrics.decisions.labels(outcome=decision.outcome).inc()
        log.info(decision.log_line())
        if decision.candidate_version is None or self.settings.online_training_frozen:
            return
        try:
            self.publisher.record_decision(decision.candidate_version, decision.record())
        except Exception as exc:  # the log line and metrics still hold it
            log.warning("could not record the decision on the topic: %s", exc)


# -------------------------------------------------------------------------- loop


def starting_model(settings: TrainerSettings, publisher: Publisher) -> Any:
    """The model to fine-tune from: the topic's serving version, else MODEL_SOURCE.

    Raises:
        TrainerError: neither gives a model.
    """
    from rnnrec_jax.checkpoint import CheckpointError
    from rnnrec_jax.model_io import load_trained_model

    model = None
    if settings.model_follow:
        try:
            model = publisher.load_serving()
        except CheckpointError as exc:
            log.warning("the served version on the topic is refused (%s)", exc)
    if model is None and settings.model_source:
        try:
            model = load_trained_model(settings.model_source)
        except (CheckpointError, OSError) as exc:
            raise TrainerError(f"cannot load RNNREC_MODEL_SOURCE: {exc}") from None
    if model is None:
        raise TrainerError(
            "no model to fine-tune: nothing is served on "
            f"{settings.topic('model_updates')} and RNNREC_MODEL_SOURCE is not set"
        )
    return model


class _Consumer:
    """The clickstream consumer (kafka-python) with the trainer's group."""

    def __init__(self, settings: TrainerSettings) -> None:
        from kafka import KafkaConsumer

        from stream_app.kafka_security import kafka_python_kwargs

        self.topic = settings.topic("clickstream")
        self.consumer = KafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers.split(","),
            group_id=settings.trainer_group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=2000,
            # A fine-tune keeps the loop away from poll() for a while.
            max_poll_interval_ms=30 * 60 * 1000,
            **kafka_python_kwargs(settings),
        )
        # Subscribing before the client knows the topic's partitions leaves the group
        # with nothing assigned until the next metadata refresh (minutes).
        deadline = time.monotonic() + _TOPIC_WAIT_S
        while not self.consumer.partitions_for_topic(self.topic):
            if time.monotonic() > deadline:
                self.consumer.close()
                raise TrainerError(
                    f"topic {self.topic} does not exist (topics are never auto-created): "
                    "create it first (the worker or the topics Job does)"
                )
            time.sleep(0.5)
        self.consumer.subscribe([self.topic])

    def poll(self, timeout_s: float) -> list[Any]:
        batch = self.consumer.poll(timeout_ms=int(timeout_s * 1000))
        records = []
        for tp_records in batch.values():
            records.extend(tp_records)
        return records

    def end_offsets(self) -> dict[Any, int]:
        assigned = self.consumer.assignment()
        return dict(self.consumer.end_offsets(list(assigned))) if assigned else {}

    def caught_up(self, target: dict[Any, int]) -> bool:
        return all(self.consumer.position(tp) >= end for tp, end in target.items())

    def commit(self) -> None:
        from kafka.errors import KafkaError

        try:
            self.consumer.commit()
        except KafkaError as exc:  # a rebalance or a broker hiccup: commit next time
            log.warning("offset commit failed: %s", exc)

    def close(self) -> None:
        self.consumer.close()


def run_trainer(
    settings: TrainerSettings,
    *,
    publisher: Publisher | None = None,
    stop: threading.Event | None = None,
    install_signals: bool = True,
) -> OnlineTrainer:
    """Run the trainer until SIGTERM/SIGINT (or ``stop`` is set).

    Returns:
        The `OnlineTrainer` (its decisions), after offsets were committed.

    Raises:
        TrainerError: no model to start from, or the broker cannot be reached.
    """
    from kafka.errors import KafkaError

    stop = stop or threading.Event()
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    publisher = publisher or TopicPublisher(settings)
    metrics = TrainerMetrics()
    server = None
    readiness = {"model": False, "consumer": False}
    if settings.trainer_metrics_port:
        from stream_app.trainer_http import serve_trainer_views

        server = serve_trainer_views(
            settings.trainer_metrics_port,
            settings.trainer_metrics_bind,
            metrics.registry,
            ready=lambda: all(readiness.values()) and not stop.is_set(),
        )
    try:
        model = starting_model(settings, publisher)
        log.info(
            "trainer starting from %s (%d items, capacity %d); frozen=%s",
            model.version,
            len(model.vocab),
            model.vocab.capacity,
            settings.online_training_frozen,
        )
        trainer = OnlineTrainer(settings, model, publisher, metrics, should_stop=stop.is_set)
        readiness["model"] = True
        try:
            consumer = _Consumer(settings)
        except KafkaError as exc:
            raise TrainerError(
                f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}"
            ) from None
        readiness["consumer"] = True
        try:
            _loop(settings, trainer, consumer, stop)
        finally:
            consumer.commit()
            consumer.close()
        log.info("trainer stopped after %d rounds", trainer.rounds_done)
        return trainer
    finally:
        if server is not None:
            server.shutdown()


def _loop(
    settings: TrainerSettings, trainer: OnlineTrainer, consumer: _Consumer, stop: threading.Event
) -> None:
    limits = InputLimits.from_settings(settings)
    armed: float | None = None  # an event-time boundary crossed, round pending
    drain_to: dict[Any, int] = {}
    pending: list[ClickEvent] = []
    last_commit = time.monotonic()
    while not stop.is_set():
        records = consumer.poll(settings.trainer_poll_timeout_s)
        for event in _decode(records, limits, trainer.metrics, settings.repartition):
            if isinstance(event, UserDeletion):
                # In log order: events of the user read before the command go, later
                # ones (the user came back) stay.
                pending = [e for e in pending if e.user_id != event.user_id]
                trainer.forget_user(event.user_id)
                continue
            if armed is None:
                boundary = trainer.cadence.crossing(event.ts)
                if boundary is not None:
                    # Everything produced before this event must be read first.
                    armed, drain_to = boundary, consumer.end_offsets()
            if armed is not None and event.ts >= armed:
                pending.append(event)
            else:
                trainer.add(event)
        # A backlog (a first start on retained history, a long outage) would hold the
        # whole rest of the log in `pending` before the round: past one window's worth
        # the round runs on what has been read, and the next boundary follows it.
        backlog = len(pending) >= settings.trainer_window_max_events
        if armed is not None and (backlog or consumer.caught_up(drain_to)):
            trainer.run_round(armed, "event_time")
            newest = max([armed, *(event.ts for event in pending)])
            trainer.cadence.round_done(newest)
            for event in pending:
                trainer.add(event)
            armed, pending = None, []
            consumer.commit()
            last_commit = time.monotonic()
        elif armed is None and trainer.cadence.count_due():
            trainer.run_round(math.inf, "event_count")
            trainer.cadence.round_done(trainer.window.newest_ts)
            consumer.commit()
            last_commit = time.monotonic()
        trainer.update_gauges()
        if time.monotonic() - last_commit > _COMMIT_EVERY_S:
            consumer.commit()
            last_commit = time.monotonic()
    # Stopping: pending events were read and are committed with the rest; a restarted
    # trainer starts a fresh window either way (see the module docstring).


@dataclasses.dataclass(frozen=True)
class UserDeletion:
    """A delete-user command read from ``clickstream`` (`rnnrec user delete`)."""

    user_id: str


def _decode(
    records: Iterable[Any], limits: InputLimits, metrics: TrainerMetrics, any_key: bool
) -> Iterable[ClickEvent | UserDeletion]:
    """Valid events and delete-user commands of a poll. ``any_key``: the workers
    repartition events keyed by something else than user_id and serve them, so the
    trainer learns from them too (from ``clickstream``; it never reads
    ``clickstream-repartition``, which would count them twice)."""
    now = time.time()
    for record in records:
        headers = dict(record.headers or ())
        if headers.get(COMMAND_HEADER) is not None:
            if headers[COMMAND_HEADER] == DELETE_USER and record.key:
                yield UserDeletion(record.key.decode("utf-8", "replace"))
            continue  # a command, not an event
        decoded = decode_click_event(record.key, record.value, limits, now, check_key=not any_key)
        if isinstance(decoded, Rejection):
            metrics.events_rejected.labels(reason=str(decoded.kind)).inc()
            continue
        yield decoded
