"""The Faust round trip behind ``rnnrec demo`` until the serving worker lands."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import click
import orjson

from stream_app.kafka_io import create_topics, drain, produce
from stream_app.kafka_local import demo_bootstrap


def run_roundtrip_demo(n_events: int = 20, keep_broker: bool = False) -> list[dict]:
    """Start the broker and a Faust worker, send events, print what came out.

    Returns:
        The decoded output messages, in topic order.
    """
    with demo_bootstrap(keep_broker, click.echo) as bootstrap:
        return _round_trip(bootstrap, n_events)


def _round_trip(bootstrap: str, n_events: int) -> list[dict]:
    prefix = f"demo-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, [f"{prefix}-in", f"{prefix}-out"])
    env = dict(os.environ, RNNREC_ROUNDTRIP_PREFIX=prefix)
    worker = subprocess.Popen(
        [sys.executable, "-m", "stream_app.roundtrip", "worker", "-l", "warn"],
        env=env,
        stdin=subprocess.DEVNULL,
    )
    try:
        users = [f"user-{i % 3}" for i in range(n_events)]
        events = [
            (u.encode(), orjson.dumps({"event_id": f"e{i}", "user_id": u, "item_id": f"item-{i}"}))
            for i, u in enumerate(users)
        ]
        produce(bootstrap, f"{prefix}-in", events)
        click.echo(f"sent {len(events)} events to {prefix}-in; waiting for the Faust worker ...")
        records: list = []
        deadline = time.monotonic() + 120
        while len(records) < len(events) and time.monotonic() < deadline:
            if worker.poll() is not None:
                raise click.ClickException(
                    f"the Faust worker exited with status {worker.returncode}"
                )
            records = drain(bootstrap, f"{prefix}-out", expected=len(events), timeout_s=5)
        outputs = [orjson.loads(r.value) for r in records]
        for out in outputs:
            click.echo(f"  {out['key']:>7}  count={out['count']:<3} {out['value']}")
        click.echo(f"{len(outputs)}/{len(events)} events went through Faust")
        if len(outputs) < len(events):
            raise click.ClickException("not every event came out of the worker")
        return outputs
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
