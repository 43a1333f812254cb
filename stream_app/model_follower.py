"""The worker's side of model distribution: the starting model and hot swaps.

**Starting model** (`startup_model`), in order of precedence:

1. ``RNNREC_SCORER_FACTORY`` (tests, plug-ins): served as is; the topic is not read
   and nothing is followed.
2. With ``RNNREC_MODEL_FOLLOW`` on (the default): the version the ``model-updates``
   serving pointer names, if it validates fully; if it is refused (counted in
   ``rnnrec_model_rejections``), the newest version the pointer names as ``previous``
   that validates, which is what running workers kept serving when they refused it.
   The topic wins over ``RNNREC_MODEL_SOURCE`` because it is where new versions and
   rollbacks are decided; a checkpoint baked into an image would otherwise undo a
   rollback on every restart, and a restarted worker would serve other params than
   its peers.
3. ``RNNREC_MODEL_SOURCE`` (a checkpoint directory): when there is no pointer, or no
   version it names validates.

**Following** (`ModelFollower`): a thread with a kafka-python consumer (no group,
every partition assigned, from the beginning) applies ``model-updates`` records to a
`Registry`. Once caught up with the end offsets it saw at start, and after every
poll that brought records, it looks at the serving pointer. A version other than the
served one is validated (signature when ``RNNREC_MODEL_VERIFY_KEY`` is set, then every
check of `rnnrec_jax.artifact.unpack_model`), turned into a scorer and warmed up (all
buckets compiled) in this thread, then *staged*. The worker takes the staged scorer
at the start of its next batch (`take_pending`), so the swap is one assignment on the
event loop and every output of a batch carries one version. A refused version is
counted by reason, logged in one line, and not retried until one of its records
changes; the old model keeps serving. Memory: the follower holds the chunks of every
version on the topic (at most ``model_keep_versions`` complete ones).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rnnrec_jax.artifact import rejection_reason
from stream_app.model_registry import (
    Registry,
    load_verify_key,
    model_updates_consumer,
    read_registry,
    validate_version,
)
from stream_app.settings import WorkerSettings

if TYPE_CHECKING:
    import faust

    from stream_app.metrics import WorkerMetrics
    from stream_app.scoring import Scorer

log = logging.getLogger(__name__)

Rejected = set[tuple[str, tuple[tuple[str, int], ...]]]
"""(version, fingerprint of its records) already refused: not validated again."""


@dataclass
class StartupModel:
    """The model a worker starts with, and what the follower needs to know about it."""

    scorer: Scorer
    source: str
    """``factory``, ``topic`` or ``model_source``."""
    public_key: Any = None
    rejected: Rejected = field(default_factory=set)
    rejection_reasons: list[str] = field(default_factory=list)


def _build(settings: WorkerSettings) -> Callable[[Any], Scorer]:
    from stream_app.scoring import scorer_from_trained

    return lambda model: scorer_from_trained(model, settings)


def startup_model(settings: WorkerSettings) -> StartupModel:
    """Choose and load the starting model (precedence in the module docstring).

    Raises:
        ValueError: no model to serve, or the verify key cannot be read (one line).
    """
    from stream_app.scoring import load_scorer

    if settings.scorer_factory:
        return StartupModel(load_scorer(settings), "factory")
    public_key = load_verify_key(settings)  # KeyFileError is a ValueError
    startup = StartupModel(scorer=None, source="model_source", public_key=public_key)  # type: ignore[arg-type]
    if settings.model_follow:
        registry = None
        try:
            registry = read_registry(settings, timeout_s=30.0)
        except Exception as exc:  # broker trouble: fall back to the checkpoint, follow later
            log.warning("model-updates unreadable at start (%s: %s)", type(exc).__name__, exc)
        pointer = registry.serving if registry is not None else None
        if registry is not None and pointer is not None:
            # The pointed version, else the newest earlier one that validates: what the
            # running workers kept serving when they refused the same pointer.
            for version in pointer.candidates():
                try:
                    model = validate_version(registry, version, public_key)
                    startup.scorer = _build(settings)(model)
                except Exception as exc:
                    entry = registry.versions.get(version)
                    startup.rejected.add((version, entry.fingerprint if entry else ()))
                    startup.rejection_reasons.append(_refused(version, exc))
                    continue
                startup.source = "topic"
                if version != pointer.version:
                    log.warning(
                        "serving %s, the newest earlier version that validates; the "
                        "pointer names %s",
                        version,
                        pointer.version,
                    )
                break
    if startup.scorer is None:
        if not settings.model_source:
            raise ValueError(
                "no model to serve: set RNNREC_MODEL_SOURCE (a checkpoint) or publish a "
                "version with `rnnrec model publish`"
            )
        startup.scorer = load_scorer(settings)
    log.info("serving model %s (from %s)", startup.scorer.version, startup.source)
    return startup


def _refused(version: str, exc: BaseException) -> str:
    reason = rejection_reason(exc)
    # One line, versions and reasons only (never user data).
    message = " ".join(str(exc).split())[:300]
    log.warning(
        "model version %s refused (%s): %s; the current model keeps serving",
        version,
        reason,
        message,
    )
    return reason


class ModelFollower:
    """Follows ``model-updates`` in a thread and stages validated, warmed-up scorers."""

    def __init__(
        self,
        settings: WorkerSettings,
        metrics: WorkerMetrics,
        build: Callable[[Any], Scorer],
        served_version: str,
        *,
        public_key: Any = None,
        rejected: Rejected | None = None,
        retry_s: float = 2.0,
    ) -> None:
        """Set up (nothing runs until `start`).

        Args:
            settings: broker, topic, model name.
            metrics: where swaps, rejections and the staged version are counted.
            build: TrainedModel -> warmed-up Scorer (runs in the follower thread).
            served_version: the version the worker serves now.
            public_key: Ed25519 verify key, or None (no signature checks).
            rejected: versions already refused (at start), not to retry unchanged.
            retry_s: wait between attempts while the topic is missing or unreachable.
        """
        self.settings = settings
        self.metrics = metrics
        self._build = build
        self._public_key = public_key
        self._rejected: Rejected = set(rejected or ())
        self._retry_s = retry_s
        self._lock = threading.Lock()
        self._served = served_version
        self._pending: tuple[str, Scorer] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._registry = Registry(settings.model_name, settings.topic("model_updates"))

    # ------------------------------------------------------------ worker side

    def take_pending(self) -> Scorer | None:
        """The staged scorer, if any (it becomes the served one); call between batches."""
        with self._lock:
            if self._pending is None:
                return None
            version, scorer = self._pending
            self._pending = None
            previous, self._served = self._served, version
        self.metrics.model_staged.clear()
        log.info("model version %s now serving (was %s)", version, previous)
        return scorer

    @property
    def served_version(self) -> str:
        """The version the worker serves (as far as the follower knows)."""
        with self._lock:
            return self._served

    def start(self) -> None:
        """Start the follower thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="rnnrec-model-follower", daemon=True
            )
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the thread to stop and wait a little for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    # ------------------------------------------------------------ thread side

    def _assign(self, consumer: Any) -> dict[Any, int] | None:
        """Assign every partition from the beginning; the end offsets to catch up to.

        None while the topic does not exist (nothing was ever published)."""
        from kafka import TopicPartition

        topic = self._registry.topic
        partitions = consumer.partitions_for_topic(topic)  # refreshes metadata if unknown
        if not partitions:
            return None
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        self._registry = Registry(self.settings.model_name, topic)
        return consumer.end_offsets(tps)

    def _run(self) -> None:
        consumer = None
        end: dict[Any, int] | None = None
        caught_up = False
        while not self._stop.is_set():
            try:
                if consumer is None:
                    consumer = model_updates_consumer(self.settings)
                if end is None:
                    end = self._assign(consumer)
                    caught_up = False
                    if end is None:
                        self._stop.wait(self._retry_s)
                        continue
                batch = consumer.poll(timeout_ms=500)
                for records in batch.values():
                    for r in records:
                        self._registry.apply(r.key, r.value, r.offset, r.timestamp)
                if not caught_up:
                    # Judge the pointer only on the whole history, never on a prefix.
                    caught_up = all(consumer.position(tp) >= off for tp, off in end.items())
                    if caught_up:
                        self._consider()
                elif batch:
                    self._consider()
                if caught_up:  # what was read so far has been judged
                    read = sum(consumer.position(tp) for tp in end)
                    self.metrics.model_updates_read.set(read)
            except Exception as exc:
                log.warning("model-updates follower: %s: %s; retrying", type(exc).__name__, exc)
                if consumer is not None:
                    consumer.close()
                consumer, end = None, None  # start over from the beginning
                self._stop.wait(self._retry_s)
        if consumer is not None:
            consumer.close()

    def _consider(self) -> None:
        pointer = self._registry.serving
        if pointer is None:
            return
        target = pointer.version
        with self._lock:
            served = self._served
            staged = self._pending[0] if self._pending else None
            if target == served and staged is not None:
                # The pointer moved back before the worker took the staged version.
                self._pending = None
        if target == served:
            if staged is not None:
                self.metrics.model_staged.clear()
                log.info("serving pointer is back at %s; dropped staged %s", target, staged)
            return
        if target == staged:
            return
        entry = self._registry.versions.get(target)
        key = (target, entry.fingerprint if entry else ())
        if key in self._rejected:
            return
        try:
            model = validate_version(self._registry, target, self._public_key)
            scorer = self._build(model)
        except Exception as exc:
            self._rejected.add(key)
            self.metrics.model_rejections.labels(reason=_refused(target, exc)).inc()
            return
        with self._lock:
            self._pending = (target, scorer)
        self.metrics.model_staged.clear()
        self.metrics.model_staged.labels(version=target).set(1)
        log.info("model version %s validated and warmed up; serving it from the next batch", target)


def attach_follower(
    app: faust.App, settings: WorkerSettings, metrics: WorkerMetrics, startup: StartupModel
) -> ModelFollower | None:
    """Count start-up refusals and, unless disabled, follow the topic while the app runs.

    The thread starts with the app (after table recovery) and stops at shutdown.

    Returns:
        The follower, or None (scorer factory, or ``RNNREC_MODEL_FOLLOW`` off).
    """
    for reason in startup.rejection_reasons:
        metrics.model_rejections.labels(reason=reason).inc()
    if startup.source == "factory" or not settings.model_follow:
        return None
    follower = ModelFollower(
        settings,
        metrics,
        _build(settings),
        startup.scorer.version,
        public_key=startup.public_key,
        rejected=startup.rejected,
    )

    @app.task
    async def follow_model_updates() -> None:
        follower.start()

    async def stop_following(sender: Any = None, **_: Any) -> None:
        follower.stop(timeout_s=2.0)

    app.on_before_shutdown.connect(stop_following)
    return follower
