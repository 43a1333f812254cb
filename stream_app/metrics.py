"""Prometheus metrics of the serving worker (served as text by ``/metrics``).

Each app gets its own registry, so several apps in one process (tests) never clash.
Labels are bounded sets (error kinds, topic roles, model versions): never user ids.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "WorkerMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class WorkerMetrics:
    """The worker's counters, gauges and histograms in one registry."""

    def __init__(self) -> None:
        """Create the metrics in a fresh registry."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # CPU seconds, RSS and garbage-collector passes of the process: an operator
        # tells a worker that computes from one that waits, and sees GC pauses.
        ProcessCollector(registry=r)
        GCCollector(registry=r)
        self.events_in = Counter("rnnrec_events_in", "Clickstream records consumed.", registry=r)
        self.events_applied = Counter(
            "rnnrec_events_applied", "Events that stepped a user's state.", registry=r
        )
        self.redeliveries = Counter(
            "rnnrec_redeliveries",
            "Events already applied (by offset or event id); state not stepped again.",
            ["resent"],
            registry=r,
        )
        self.outputs = Counter(
            "rnnrec_outputs", "Messages produced, by topic role.", ["role"], registry=r
        )
        self.refetches = Counter(
            "rnnrec_refetches",
            "Partitions seeked back because a record was not delivered (Faust fetch race).",
            registry=r,
        )
        self.duplicate_deliveries = Counter(
            "rnnrec_duplicate_deliveries",
            "Records delivered again to this process after it applied them; dropped.",
            registry=r,
        )
        self.offset_gaps = Counter(
            "rnnrec_offset_gaps",
            "Offsets accepted as holding no record (transaction markers, compaction): "
            "confirmed by a direct read, or after refetching.",
            registry=r,
        )
        self.offset_probes = Counter(
            "rnnrec_offset_probes",
            "Direct reads of a partition at a hole, by result: absent (nothing there, "
            "skipped), missing (a record there: fetched again), failed.",
            ["result"],
            registry=r,
        )
        self.recovery_reseeks = Counter(
            "rnnrec_recovery_reseeks",
            "Changelog partitions fetched again because table recovery received nothing.",
            registry=r,
        )
        self.repartitioned = Counter(
            "rnnrec_repartitioned",
            "Valid events whose key was not their user_id, re-sent keyed by user_id.",
            registry=r,
        )
        self.dead_letters = Counter(
            "rnnrec_dead_letters", "Records sent to the DLQ, by reason.", ["reason"], registry=r
        )
        self.batch_failures = Counter(
            "rnnrec_batch_failures",
            "Serving failures: scope=batch, a batch failed and was served again event "
            "by event; scope=event, an event failed alone and went to the DLQ "
            "(reason processing_error).",
            ["scope"],
            registry=r,
        )
        self.batch_size = Histogram(
            "rnnrec_batch_size",
            "Records per stream.take batch.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.step_seconds = Histogram(
            "rnnrec_step_seconds",
            "Scoring time per batch (all rounds).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "rnnrec_end_to_end_seconds",
            "Input record broker timestamp to outputs acknowledged.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.state_recomputed = Counter(
            "rnnrec_state_recomputed", "Carries rebuilt under a new model version.", registry=r
        )
        self.oov_events = Counter(
            "rnnrec_oov_events",
            "Events on an item the served model does not know (answered, never rejected).",
            registry=r,
        )
        self.corrupt_state = Counter(
            "rnnrec_corrupt_state", "Unreadable state records (user restarted).", registry=r
        )
        self.model_version = Gauge(
            "rnnrec_model_version_info",
            "The served model version (value 1).",
            ["version"],
            registry=r,
        )
        self.events_served = Counter(
            "rnnrec_events_served",
            "Events answered, by the model version that answered them.",
            ["model_version"],
            registry=r,
        )
        self.model_swaps = Counter(
            "rnnrec_model_swaps", "Model versions swapped in between batches.", registry=r
        )
        self.model_rejections = Counter(
            "rnnrec_model_rejections",
            "Model versions refused (the old model kept serving), by reason.",
            ["reason"],
            registry=r,
        )
        self.model_staged = Gauge(
            "rnnrec_model_staged_info",
            "A validated, warmed-up version waiting for the next batch (value 1).",
            ["version"],
            registry=r,
        )
        self.model_updates_read = Gauge(
            "rnnrec_model_updates_read_offset",
            "Offset up to which the model follower has read model-updates and judged "
            "the serving pointer (compare with the topic's end offset).",
            registry=r,
        )
        self.event_loop = Gauge(
            "rnnrec_event_loop_info",
            "The asyncio event loop implementation the worker runs on (value 1).",
            ["implementation"],
            registry=r,
        )
        self.users_in_state = Gauge(
            "rnnrec_users_in_state", "Users held in this worker's table partitions.", registry=r
        )

    def set_model_version(self, version: str) -> None:
        """Show ``version`` as the one served (older labels are removed)."""
        self.model_version.clear()
        self.model_version.labels(version=version).set(1)

    def track_users(self, count: Callable[[], int]) -> None:
        """Read the user count at scrape time."""
        self.users_in_state.set_function(count)

    def exposition(self) -> bytes:
        """The metrics in Prometheus text format."""
        return generate_latest(self.registry)
