"""``rnnrec demo``: the whole service on the embedded default (local Kafka)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from stream_app.kafka_local import LocalBrokerError


@click.command()
@click.option(
    "--rate",
    type=click.FloatRange(1, 100_000),
    default=300.0,
    show_default=True,
    help="Events per second offered to the worker.",
)
@click.option(
    "--seconds",
    type=click.FloatRange(1, 3600),
    default=20.0,
    show_default=True,
    help="How long to replay events.",
)
@click.option(
    "--sessions",
    type=click.IntRange(100, 1_000_000),
    default=3000,
    show_default=True,
    help="Synthetic training sessions for the demo model.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run folder (default: runs/demo-<time>).",
)
@click.option("--keep-broker", is_flag=True, help="Leave the local broker running afterwards.")
@click.option("--roundtrip", is_flag=True, help="Only the Faust round trip (no model).")
def demo(rate: float, seconds: float, sessions: int, out_dir: Path | None, keep_broker: bool,
         roundtrip: bool) -> None:  # fmt: skip
    """Broker up, train a small model, serve live events, report, shut down."""
    try:
        if roundtrip:
            from stream_app.demo_roundtrip import run_roundtrip_demo

            run_roundtrip_demo(n_events=20, keep_broker=keep_broker)
            return
        from stream_app.demo import run_demo

        run_dir = out_dir or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
        run_demo(run_dir, sessions=sessions, rate=rate, seconds=seconds, keep_broker=keep_broker)
    except LocalBrokerError as exc:
        raise click.ClickException(str(exc)) from None
