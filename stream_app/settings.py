"""The worker's settings: one typed object read from ``RNNREC_*`` environment variables.

Every topic name, threshold and bound that input can push against lives here, so an
operator changes behaviour without code. The broker address also honours the common
``KAFKA_BOOTSTRAP_SERVERS``. Validators refuse nonsense with a one-line message
(`SettingsError`), which ``rnnrec worker`` prints without a traceback.
"""

from __future__ import annotations

import enum
import os
import tempfile
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from stream_app.kafka_security import KafkaSecuritySettings

BOOTSTRAP_VARIABLES = (
    "RNNREC_BOOTSTRAP_SERVERS",
    "RNNREC_KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_BOOTSTRAP_SERVERS",
)
"""Where the broker address is read from, first set wins."""


class SettingsError(ValueError):
    """A setting is missing or nonsensical; the message names the variable to fix."""


class SessionPolicy(enum.StrEnum):
    """When a user's hidden state starts afresh."""

    NEW_SESSION_ID = "new_session_id"
    """Reset when the event's session_id differs from the stored one (events without
    a session_id fall back to the inactivity gap)."""
    INACTIVITY_GAP = "inactivity_gap"
    """Reset only after `session_gap_s` without events; session ids are recorded."""
    CARRY_OVER = "carry_over"
    """Never reset: one long session per user."""


class EventLoop(enum.StrEnum):
    """Which asyncio event loop the worker runs on."""

    ASYNCIO = "asyncio"
    UVLOOP = "uvloop"


class CarryDtype(enum.StrEnum):
    """How the carry is stored in the table (the model always computes in float32)."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"


def _int_tuple(value: object) -> object:
    # Environment variables hold "8,32,128"; Python callers may pass a sequence.
    if isinstance(value, str):
        return tuple(int(part) for part in value.replace(" ", "").split(",") if part)
    return value


class WorkerSettings(KafkaSecuritySettings):
    """Settings of the serving worker and its tools (environment prefix ``RNNREC_``).

    The Kafka security fields (``RNNREC_KAFKA_SECURITY_PROTOCOL``, SASL, TLS) come from
    `KafkaSecuritySettings`, the one definition every Kafka client shares.
    """

    model_config = SettingsConfigDict(
        env_prefix="RNNREC_", extra="ignore", frozen=True, populate_by_name=True
    )

    # --- Kafka ---------------------------------------------------------------------
    bootstrap_servers: str = Field(
        "127.0.0.1:19092",
        # Aliases bypass env_prefix: the RNNREC_ name is spelled out, first wins.
        validation_alias=AliasChoices(*BOOTSTRAP_VARIABLES),
        description="Comma-separated host:port list of the Kafka brokers.",
    )
    app_id: str = Field(
        "rnnrec-worker", description="Faust app id: consumer group and changelog prefix."
    )
    topic_prefix: str = Field("", description="Prepended to every topic name below.")
    topic_clickstream: str = Field("clickstream", description="Input events (key user_id).")
    topic_recommendations: str = Field("recommendations", description="Top-K per event.")
    topic_purchase_predictions: str = Field(
        "purchase-predictions", description="Purchase probability per event."
    )
    topic_dlq: str = Field("clickstream-dlq", description="Rejected input, with reasons.")
    topic_clickstream_repartition: str = Field(
        "clickstream-repartition",
        description="Input events re-keyed by user_id (records whose key was not their "
        "user_id); consumed with clickstream, same partitions.",
    )
    topic_model_updates: str = Field("model-updates", description="Model versions (compacted).")
    topic_item_updates: str = Field("item-updates", description="Item availability (compacted).")
    partitions: int = Field(
        6, ge=1, le=10_000, description="Partitions of clickstream and of the state table."
    )
    replication_factor: int = Field(1, ge=1, le=16, description="For topics the app creates.")
    create_topics: bool = Field(
        True,
        description="Create missing input/output topics at start; false where a topics Job "
        "owns them and the worker may only describe them.",
    )
    repartition: bool = Field(
        True,
        description="A valid event whose record key is not its user_id is re-sent to "
        "clickstream-repartition keyed by user_id and served from there; false sends it "
        "to the DLQ (key_mismatch) instead.",
    )
    commit_interval_s: float = Field(
        2.8, gt=0, le=300, description="How often acknowledged input offsets are committed."
    )
    fetch_max_wait_ms: int = Field(
        50,
        ge=1,
        le=1500,
        description="How long the broker may hold a fetch request with no new data "
        "(Faust fixes 1,500 ms). The idle repartition topic's partitions then held the "
        "clickstream's next fetch back for 1.5 s whenever the worker had a backlog, and "
        "a backlog at half the drain rate never cleared (stream_app.kafka_fetch).",
    )
    producer_linger_s: float = Field(
        0.005,
        ge=0,
        le=1,
        description="How long the producer waits to fill a batch before sending. Every "
        "event yields two outputs and a changelog write: with Faust's default of 0 each "
        "send can go out as its own small request, costing CPU in the worker and the "
        "broker (bench/bench_serving.py: +16 to +43 % drain rate with 5 ms, no added "
        "latency at half the drain rate).",
    )
    producer_max_batch_bytes: int = Field(
        262_144,
        ge=1024,
        le=16_777_216,
        description="Largest producer batch per partition, bytes (Faust's default 16 kB "
        "holds only a few recommendations with explanations).",
    )

    # --- Scoring and batching --------------------------------------------------------
    top_k: int = Field(20, ge=1, le=1000, description="Items per recommendation.")
    max_batch: int = Field(256, ge=1, le=100_000, description="Events per stream.take batch.")
    max_wait_s: float = Field(
        0.02,
        gt=0,
        le=60,
        description="Longest wait to fill a batch (stream.take within). Below capacity "
        "batches close on this timer, so it is a floor under latency: 20 ms against 50 ms "
        "gave p99 129 vs 262 ms at 350 events/s and 307 vs 388 ms at 700 (explanations on, "
        "bench/bench_serving.py), with the same drain rate; 10 ms against 20 ms gave p99 "
        "51-53 vs 65-74 ms at 1,000 events/s, and nothing clear nearer capacity (2,000 to "
        "2,500 events/s, runs 116 to 781 vs 127 to 507 ms).",
    )
    bucket_sizes: Annotated[tuple[int, ...], NoDecode] = Field(
        (8, 32, 128, 256),
        description="Padded batch sizes of the jitted step, increasing (e.g. '8,32,128'). "
        "A round of a batch has at most max_batch rows, so the largest bucket is best "
        "max_batch: with 512 a 129- to 256-row round is padded to 512 (the step with "
        "explanations took 13 instead of about 20 ms for 256 rows).",
    )
    exclude_seen: bool = Field(
        False, description="Never recommend items already seen in the session."
    )
    model_source: str | None = Field(
        None, description="Checkpoint directory of the model to serve."
    )
    scorer_factory: str | None = Field(
        None,
        description="'module:callable' returning a Scorer; overrides model_source "
        "(tests and plug-ins).",
    )

    # --- Model distribution (model-updates topic) ------------------------------------
    model_name: str = Field(
        "rnnrec", description="Model name: the '<model>/' key prefix on model-updates."
    )
    model_verify_key: Path | None = Field(
        None,
        # The _FILE spelling is what deploy/overlays/prod mounts.
        validation_alias=AliasChoices("RNNREC_MODEL_VERIFY_KEY", "RNNREC_MODEL_VERIFY_KEY_FILE"),
        description="Ed25519 public key (PEM): when set, unsigned or wrongly signed "
        "model versions are refused.",
    )
    model_signing_key: Path | None = Field(
        None,
        validation_alias=AliasChoices("RNNREC_MODEL_SIGNING_KEY", "RNNREC_MODEL_SIGNING_KEY_FILE"),
        description="Ed25519 private key (PEM) that publishers sign manifests with.",
    )
    model_keep_versions: int = Field(
        5, ge=1, le=1000, description="Versions kept on model-updates; older are tombstoned."
    )
    model_chunk_bytes: int = Field(
        512 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Largest model chunk record (below the topic's max.message.bytes).",
    )
    model_follow: bool = Field(
        True, description="Follow model-updates and hot-swap new serving versions."
    )
    item_updates_follow: bool = Field(
        True,
        description="Follow item-updates: unavailable or blocked items are never recommended.",
    )

    # --- Per-user state --------------------------------------------------------------
    store: str = Field("memory://", description="Table store: memory:// or rocksdb://.")
    data_dir: Path | None = Field(
        None,
        description=(
            "Faust data dir (RocksDB files live here); one per worker process. Default: "
            "rnnrec-worker/<app id> in the temp dir, so apps on one host never share files."
        ),
    )
    session_policy: SessionPolicy = Field(
        SessionPolicy.NEW_SESSION_ID, description="When the hidden state resets."
    )
    session_gap_s: float = Field(
        1800.0, gt=0, description="Inactivity that ends a session (seconds of event time)."
    )
    user_ttl_s: float = Field(
        30 * 86400.0,
        ge=0,
        description="A user idle longer than this starts from scratch (0: never).",
    )
    user_ttl_sweep_s: float = Field(
        5.0,
        ge=0,
        le=86_400,
        description="How often idle users are swept from the table (0: only on their next event).",
    )
    user_ttl_sweep_users: int = Field(
        500,
        ge=1,
        le=1_000_000,
        # About 16 us per user (4.7 kB states): a tick holds the hot path ~8 ms.
        description="Users one sweep tick examines at most (bounds the pause per tick).",
    )
    history_length: int = Field(50, ge=1, le=10_000, description="Last item ids kept per user (L).")
    explain_window: int = Field(
        5,
        ge=0,
        le=50,
        description="Recent session items each recommendation is explained by (0: off). "
        "Cost (BENCHMARKS.md, the yoochoose-1pct serving benchmark's model, one process on "
        "2 cores, 2026-12-07): 4,362 events/s drained with explanations, 5,009 without "
        "(medians of 3 rounds; the no-op pass-through 8,591).",
    )
    carry_dtype: CarryDtype = Field(
        CarryDtype.FLOAT32,
        description="Stored carry precision. float16 halves the model state's bytes; item "
        "indices, counts and times stay float32. Measured cost (bench/carry_precision.py): "
        "Recall@20 and MRR@20 unchanged at four decimals, 2 % of top-20 lists reordered.",
    )

    # --- Input bounds ----------------------------------------------------------------
    max_message_bytes: int = Field(
        64 * 1024, ge=64, le=16 * 1024 * 1024, description="Larger input goes to the DLQ."
    )
    max_id_length: int = Field(256, ge=1, le=65_536, description="Longest id, in characters.")
    dlq_max_payload_bytes: int = Field(
        16 * 1024, ge=0, le=16 * 1024 * 1024, description="DLQ copies at most this much."
    )
    min_event_ts: float = Field(
        946_684_800.0, ge=0, description="Earliest plausible event time (default 2000-01-01)."
    )
    max_future_s: float = Field(
        86_400.0, ge=0, description="How far past the worker's clock an event time may be."
    )

    # --- Web -------------------------------------------------------------------------
    session_timeout_s: float = Field(
        60.0,
        ge=6.0,
        le=1800.0,
        description="Kafka consumer session timeout: how long a killed worker's partitions "
        "stay unowned before the group moves them (heartbeats every tenth of it).",
    )
    standby_replicas: int = Field(
        0,
        ge=0,
        le=8,
        description="Faust standby replicas of the user-state table. 0 by default: a "
        "standby holds another worker's users in memory too, and with faust-streaming "
        "0.15.3 a partition was seen assigned as standby and active at once after a "
        "rebalance (tests/chaos/test_rebalance.py).",
    )
    recovery_stall_s: float = Field(
        15.0,
        ge=0.0,
        le=3600.0,
        description="While the state table recovers, a changelog partition with records "
        "left that receives nothing for this long is fetched again from where recovery "
        "stands (stream_app.recovery_watchdog); 0 turns this off.",
    )
    gc_gen0_threshold: int = Field(
        50_000,
        ge=0,
        le=10_000_000,
        description="Allocations between the garbage collector's young-generation passes "
        "(Python's default is 700; 0 keeps Python's thresholds). Objects alive once the "
        "model is loaded are frozen out of collection too. Measured with "
        "bench/bench_serving.py: 8 to 9 % more events/s without explanations, 18 to 61 % "
        "with them (BENCHMARKS.md).",
    )
    event_loop: EventLoop = Field(
        EventLoop.UVLOOP,
        description="The worker's event loop: uvloop (libuv based) or asyncio (the "
        "standard library's). The worker's Python thread is its bottleneck; uvloop "
        "drained 4 to 36 % more events/s with explanations on and 21 to 25 % with them "
        "off in bench/bench_serving.py (BENCHMARKS.md).",
    )
    log_repeat_window_s: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="A repeated log line of the Kafka client libraries (aiokafka, Faust) "
        "is written at most once per this window, with the count of repeats (0: off).",
    )
    stream_buffer_maxsize: int = Field(
        4096,
        ge=16,
        le=1_000_000,
        description="Records Faust buffers ahead of the agent: with max_message_bytes, the "
        "bound on input held in memory under backpressure.",
    )
    shutdown_drain_s: float = Field(
        20.0,
        ge=0.0,
        le=3600.0,
        description="On SIGTERM, how long to finish already-fetched events before stopping "
        "(keep it below the pod's termination grace period).",
    )
    web_enabled: bool = Field(True, description="Serve /health, /ready, /metrics, /users.")
    web_host: str = Field("127.0.0.1", description="Host name other workers route to.")
    web_bind: str = Field("0.0.0.0", description="Address the web server binds.")
    web_port: int = Field(6066, ge=1, le=65535, description="Port of the web views.")

    @field_validator("bucket_sizes", mode="before")
    @classmethod
    def _parse_buckets(cls, value: object) -> object:
        return _int_tuple(value)

    @field_validator("bucket_sizes")
    @classmethod
    def _increasing_buckets(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(b < 1 for b in value) or list(value) != sorted(set(value)):
            raise ValueError("must be positive and strictly increasing, e.g. 8,32,128")
        return value

    @field_validator("store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if value not in ("memory://", "rocksdb://"):
            raise ValueError("must be memory:// or rocksdb://")
        return value

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        hosts = [h.strip() for h in value.split(",") if h.strip()]
        if not hosts or any(h.rpartition(":")[2].isdigit() is False for h in hosts):
            raise ValueError("must be host:port[,host:port...]")
        return ",".join(hosts)

    @field_validator(
        "app_id",
        "topic_clickstream",
        "topic_recommendations",
        "topic_purchase_predictions",
        "topic_dlq",
        "topic_clickstream_repartition",
        "topic_model_updates",
        "topic_item_updates",
        "model_name",
    )
    @classmethod
    def _kafka_name(cls, value: str) -> str:
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        if not value or len(value) > 200 or not set(value) <= allowed:
            raise ValueError("must be 1-200 characters of [a-zA-Z0-9._-]")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> WorkerSettings:
        if self.dlq_max_payload_bytes > self.max_message_bytes:
            raise ValueError(
                "dlq_max_payload_bytes must not exceed max_message_bytes "
                "(a DLQ record would be larger than the input it reports)"
            )
        names = [self.topic(role) for role in TOPIC_ROLES]
        if len(set(names)) != len(names):
            raise ValueError("topic names must be distinct")
        return self

    def topic(self, role: str) -> str:
        """Full topic name for a role (``clickstream``, ``recommendations``, ...).

        Args:
            role: one of `TOPIC_ROLES`.

        Returns:
            ``topic_prefix`` + the configured name.
        """
        return self.topic_prefix + getattr(self, "topic_" + role.replace("-", "_"))

    @property
    def state_dir(self) -> Path:
        """The data dir in use: ``data_dir``, or one per app id in the temp dir."""
        if self.data_dir is not None:
            return self.data_dir
        return Path(tempfile.gettempdir()) / "rnnrec-worker" / self.app_id

    @property
    def broker_url(self) -> str:
        """Faust broker URL (``kafka://h1:p;kafka://h2:p``)."""
        return ";".join(f"kafka://{h}" for h in self.bootstrap_servers.split(","))

    @property
    def largest_bucket(self) -> int:
        """The largest padded batch the step is compiled for."""
        return self.bucket_sizes[-1]


TOPIC_ROLES: tuple[str, ...] = (
    "clickstream",
    "recommendations",
    "purchase_predictions",
    "dlq",
    "clickstream_repartition",
    "model_updates",
    "item_updates",
)
"""Roles accepted by `WorkerSettings.topic`."""


def load_settings(**overrides: object) -> WorkerSettings:
    """Read settings from the environment, with keyword overrides on top.

    Args:
        **overrides: field values that win over the environment (tests, CLI options).

    Returns:
        The validated settings.

    Raises:
        SettingsError: one line naming the first bad variable and why.
    """
    try:
        return WorkerSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        variable = field.upper() if field else "settings"
        if variable.endswith("BOOTSTRAP_SERVERS"):
            # pydantic names the first alias; name the variable the user actually set.
            variable = next((v for v in BOOTSTRAP_VARIABLES if os.environ.get(v)), variable)
        elif variable != "settings":
            variable = "RNNREC_" + variable
        message = str(first["msg"]).removeprefix("Value error, ")
        if variable == "settings" and message.startswith("RNNREC_"):
            raise SettingsError(message) from None  # it names its variables already
        raise SettingsError(f"{variable}: {message}") from None
