"""``rnnrec demo``: bring up the local broker and show events flowing through Faust."""

from __future__ import annotations

import click

from stream_app.kafka_local import LocalBrokerError


@click.command()
@click.option("--events", type=click.IntRange(1, 100000), default=20, show_default=True)
@click.option("--keep-broker", is_flag=True, help="Leave the local broker running afterwards.")
def demo(events: int, keep_broker: bool) -> None:
    """Run the end-to-end demo on the embedded default (local Kafka)."""
    from stream_app.demo_roundtrip import run_roundtrip_demo

    try:
        run_roundtrip_demo(n_events=events, keep_broker=keep_broker)
    except LocalBrokerError as exc:
        raise click.ClickException(str(exc)) from None
