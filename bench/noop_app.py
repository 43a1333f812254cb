"""No-op baseline of the serving benchmark: the worker's Faust app without state or model.

The worker's Faust app options (`stream_app.worker.faust_app_options`: broker, commit interval,
acks, ``stream_wait_empty``, web views), same consumer settings and
``noack_take(max_batch, within=max_wait_s)`` batching, orjson decode of each event,
one output message of about the size of a recommendation per input event (to the
recommendations topic, sent as the worker sends its outputs: one record batch per
partition through the app's producer, `stream_app.output_batch`), every batch's
acknowledgement awaited, then the batch acked.

"About the size": ``RNNREC_NOOP_OUTPUT_BYTES`` (default 1,460, the worker's mean
recommendation with explanations on, its default, on the benchmark's data; 0: the
bare 644-byte document used before 2026-12-08). Like the worker's agent, it reads
``clickstream-repartition`` beside ``clickstream`` (no events arrive there in the
benchmark, but its idle partitions are in every fetch).
No table, no model. The same process set-up as ``rnnrec worker`` (root log level,
garbage-collector tuning). Configured by the same ``RNNREC_*`` variables as the worker:

    RNNREC_TOPIC_PREFIX=... RNNREC_APP_ID=... .venv/bin/python bench/noop_app.py
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faust
import orjson

from stream_app.kafka_fetch import limit_fetch_wait
from stream_app.kafka_io import create_topics
from stream_app.output_batch import OutputBatch, app_producer
from stream_app.settings import load_settings
from stream_app.worker import faust_app_options

DEFAULT_OUTPUT_BYTES = 1460


def create_noop_app() -> faust.App:
    """The no-op app (settings from the environment)."""
    settings = load_settings()
    app = faust.App(settings.app_id, **faust_app_options(settings))
    limit_fetch_wait(app, settings.fetch_max_wait_ms)  # the worker's consumer settings

    # The worker's agent reads both topics (stream_app.worker); the worker creates the
    # repartition topic at start, the no-op too.
    names = [settings.topic("clickstream"), settings.topic("clickstream_repartition")]
    create_topics(settings.bootstrap_servers, names[1:], partitions=settings.partitions)
    inputs = app.topic(
        *names,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )
    output_name = settings.topic("recommendations")
    k = settings.top_k
    target_bytes = int(os.environ.get("RNNREC_NOOP_OUTPUT_BYTES", str(DEFAULT_OUTPUT_BYTES)))

    @app.agent(inputs, name="noop-clickstream")
    async def noop(stream: faust.StreamT) -> None:
        async for events in stream.noack_take(settings.max_batch, within=settings.max_wait_s):
            outputs = OutputBatch()
            for event in events:
                message = event.message
                doc = orjson.loads(message.value)
                item = str(doc.get("item_id", ""))
                value = orjson.dumps(
                    {
                        "schema_version": 1,
                        "event_id": doc.get("event_id"),
                        "user_id": doc.get("user_id"),
                        "session_id": doc.get("session_id"),
                        "items": [item] * k,
                        "scores": [0.123456] * k,
                        "model_version": "noop",
                        "event_ts": doc.get("ts"),
                        "produced_ts": 0.0,
                        "explanation": None,
                        "state_recomputed": False,
                    }
                )
                if len(value) < target_bytes:
                    # Padding in a string the size of the worker's explanation.
                    pad = b',"pad":"' + b"x" * (target_bytes - len(value) - 9) + b'"}'
                    value = value[:-1] + pad
                outputs.add(output_name, message.key, value)
            # The worker's send path (ClickstreamServer._output_producer).
            await asyncio.gather(*await outputs.send(await app_producer(app)))
            for event in events:
                await stream.ack(event)

    return app


if __name__ == "__main__":
    from stream_app.cli_worker import faust_worker
    from stream_app.event_loop import use_event_loop
    from stream_app.gc_tuning import tune_gc

    # The worker's process set-up too (event loop, log level, garbage collector), so the
    # two differ only in what they do per event.
    settings = load_settings()
    use_event_loop(settings.event_loop)
    app = create_noop_app()
    tune_gc(settings.gc_gen0_threshold)
    faust_worker(app, "warn").execute_from_commandline()
