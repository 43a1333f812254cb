"""``rnnrec kafka up|down|status|logs``: the local development broker."""

from __future__ import annotations

import click
import orjson

from stream_app.kafka_local import (
    DEFAULT_PORT,
    KAFKA_VERSION,
    LocalBroker,
    LocalBrokerError,
    external_bootstrap,
)

port_option = click.option(
    "--port",
    type=click.IntRange(1024, 65534),
    default=DEFAULT_PORT,
    envvar="RNNREC_KAFKA_PORT",  # checked like the option itself
    show_default=f"{DEFAULT_PORT} or $RNNREC_KAFKA_PORT",
    help="Listener port on 127.0.0.1 (the controller uses port+1).",
)


def _external_note() -> bool:
    external = external_bootstrap()
    if external:
        click.echo(f"using external Kafka at {external} (KAFKA_BOOTSTRAP_SERVERS); nothing started")
        return True
    return False


@click.group()
def kafka() -> None:
    """Run a real local Apache Kafka broker (KRaft, single node)."""


@kafka.command()
@port_option
@click.option(
    "--timeout",
    type=click.FloatRange(1, 1800),
    default=300.0,
    show_default=True,
    help="Seconds to wait for an answer (an uncleanly stopped broker recovers its logs first).",
)
def up(port: int, timeout: float) -> None:
    """Start the broker (idempotent) and print its bootstrap address."""
    if _external_note():
        return
    try:
        bootstrap = LocalBroker(port=port).up(timeout_s=timeout)
    except LocalBrokerError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(bootstrap)


@kafka.command()
@port_option
def down(port: int) -> None:
    """Stop the broker started by `up`."""
    if _external_note():
        return
    stopped = LocalBroker(port=port).down()
    click.echo("stopped" if stopped else "not running")


@kafka.command()
@port_option
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable status.")
def status(port: int, as_json: bool) -> None:
    """Tell whether the broker runs and answers; exit 1 when it does not."""
    external = external_bootstrap()
    if external:
        from stream_app.kafka_local import broker_answers

        state = {"bootstrap": external, "external": True, "ready": broker_answers(external)}
    else:
        state = LocalBroker(port=port).status()
    if as_json:
        click.echo(orjson.dumps(state).decode())
    elif state.get("ready"):
        click.echo(
            f"ready at {state['bootstrap']} (Kafka {state.get('version', '?')}, pid {state.get('pid')})"
        )
    elif state.get("running"):
        click.echo(f"running (pid {state['pid']}) but not answering at {state['bootstrap']}")
    elif state.get("external"):
        click.echo(f"no answer from the external Kafka at {external} (KAFKA_BOOTSTRAP_SERVERS)")
    else:
        click.echo(f"not running (would listen at {state['bootstrap']}, Kafka {KAFKA_VERSION})")
    raise SystemExit(0 if state.get("ready") else 1)


@kafka.command()
@port_option
@click.option("-n", "--lines", type=click.IntRange(1, 100000), default=50, show_default=True)
def logs(port: int, lines: int) -> None:
    """Print the end of the broker log."""
    broker = LocalBroker(port=port)
    text = broker.logs(lines)
    click.echo(text if text else f"no log yet at {broker.log_file}")


@kafka.command()
@port_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def reset(port: int, yes: bool) -> None:
    """Stop the local broker and delete its data (every topic and committed offset)."""
    if _external_note():
        return
    broker = LocalBroker(port=port)
    if not yes:
        click.confirm(f"delete {broker.state_dir} (all topics and offsets)?", abort=True)
    broker.reset()
    click.echo(f"deleted {broker.state_dir}")
