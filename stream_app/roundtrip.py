"""A minimal Faust app that proves the stack works against the broker.

One agent reads ``<prefix>-in``, keeps a count per key in a table (backed by its
changelog topic, so a restarted worker continues the counts), and writes
``{"key", "count", "value"}`` to ``<prefix>-out``. Used by the integration tests
and by ``make demo`` until the serving worker exists.

Run a worker with::

    RNNREC_ROUNDTRIP_PREFIX=rt python -m stream_app.roundtrip worker -l warning
"""

from __future__ import annotations

import os
import tempfile

import faust
import orjson

from stream_app.kafka_local import DEFAULT_PORT, external_bootstrap


def broker_url() -> str:
    """Faust broker URL from the environment (external cluster or local broker)."""
    bootstrap = (
        external_bootstrap() or f"127.0.0.1:{os.environ.get('RNNREC_KAFKA_PORT', DEFAULT_PORT)}"
    )
    return ";".join(f"kafka://{host}" for host in bootstrap.split(","))


def create_app(prefix: str, partitions: int = 1) -> faust.App:
    """Build the round-trip app for topics named after ``prefix``."""
    app = faust.App(
        f"{prefix}-app",
        broker=broker_url(),
        store="memory://",
        # Faust keeps per-app files; never litter the working directory with them.
        datadir=os.environ.get("RNNREC_DATA_DIR")
        or os.path.join(tempfile.gettempdir(), "rnnrec-faust"),
        topic_partitions=partitions,
        topic_replication_factor=1,
        web_enabled=False,
        # Tests need a prompt first commit; the default (2.8 s) is fine for prod.
        broker_commit_interval=0.5,
        consumer_auto_offset_reset="earliest",
    )
    source = app.topic(
        f"{prefix}-in",
        key_type=bytes,
        value_type=bytes,
        value_serializer="raw",
        partitions=partitions,
    )
    sink = app.topic(
        f"{prefix}-out",
        key_type=bytes,
        value_type=bytes,
        value_serializer="raw",
        partitions=partitions,
    )
    counts = app.Table(
        f"{prefix}-counts", default=int, key_type=str, value_type=int, partitions=partitions
    )

    @app.agent(source)
    async def count_per_key(stream: faust.StreamT) -> None:
        async for key, value in stream.items():
            user = key.decode()
            counts[user] += 1
            out = {"key": user, "count": counts[user], "value": value.decode()}
            await sink.send(key=key, value=orjson.dumps(out))

    return app


app = create_app(
    os.environ.get("RNNREC_ROUNDTRIP_PREFIX", "roundtrip"),
    int(os.environ.get("RNNREC_ROUNDTRIP_PARTITIONS", "1")),
)

if __name__ == "__main__":
    app.main()
