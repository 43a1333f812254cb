"""``rnnrec worker | replay | tail | user delete``: run and feed the serving worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from stream_app.settings import SettingsError, WorkerSettings, load_settings

loglevel_option = click.option(
    "-l",
    "--loglevel",
    # Faust's and the logging module's names; checked before anything connects.
    type=click.Choice(["critical", "error", "warning", "warn", "info", "debug"], False),
    default="info",
    show_default=True,
    help="Log level.",
)


@click.command()
@loglevel_option
def worker(loglevel: str) -> None:
    """Run a serving worker (configured by RNNREC_* environment variables)."""
    settings = _settings()
    from stream_app.event_loop import use_event_loop

    try:
        use_event_loop(settings.event_loop)
    except ImportError:
        raise click.ClickException(
            f"RNNREC_EVENT_LOOP={settings.event_loop}: {settings.event_loop} is not installed"
            " (install it, or set RNNREC_EVENT_LOOP=asyncio)"
        ) from None
    from rnnrec_jax.checkpoint import CheckpointError
    from stream_app.worker import create_app, ensure_topics

    try:
        ensure_topics(settings)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        runtime = create_app(settings)
    except (ValueError, ImportError, OSError, CheckpointError) as exc:
        raise click.ClickException(f"cannot load the model: {exc}") from None
    from stream_app.gc_tuning import tune_gc

    tune_gc(settings.gc_gen0_threshold)
    if settings.log_repeat_window_s > 0:
        from stream_app.log_throttle import throttle_library_logs

        # After create_app: aiokafka and Faust are imported, their loggers exist.
        throttle_library_logs(settings.log_repeat_window_s)
    # Faust's Worker installs SIGTERM/SIGINT handlers that stop the app cleanly
    # (agents finish their batch, the consumer commits what was acked).
    faust_worker(runtime.app, loglevel).execute_from_commandline()


def faust_worker(app: Any, loglevel: str) -> Any:
    """Faust's `Worker` for ``app``, logging at ``loglevel`` and nothing below.

    Without a spinner Faust leaves the root logger at ``loglevel``. With one (the
    default, even when quiet) it sets the root logger to DEBUG for the spinner's
    handler, so every aiokafka and Faust debug call built and dispatched a log
    record: about 5 % of the worker's CPU in a py-spy profile of bench/soak.py.
    """
    from faust.worker import Worker

    worker = Worker(app, loglevel=loglevel, quiet=True)
    worker.spinner = None
    return worker


@click.group()
def user() -> None:
    """Act on one user's state."""


@user.command("delete")
@click.argument("user_id")
def delete_user(user_id: str) -> None:
    """Forget USER_ID's state (a delete command on clickstream, applied in order)."""
    from stream_app.events import COMMAND_HEADER, DELETE_USER
    from stream_app.kafka_io import produce
    from stream_app.kafka_security import kafka_python_kwargs

    settings = _settings()
    produce(
        settings.bootstrap_servers,
        settings.topic("clickstream"),
        [(user_id.encode("utf-8"), b"{}")],
        headers=[(COMMAND_HEADER, DELETE_USER)],
        security=kafka_python_kwargs(settings),
    )
    click.echo(f"delete requested on {settings.topic('clickstream')}")


@click.command()
@click.option("--split-tsv", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--yoochoose", "yoochoose_dir", type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--synthetic", "synthetic_sessions", type=click.IntRange(1), help="Sessions to generate."
)
@click.option("--items", "synthetic_items", type=click.IntRange(2), default=1000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="Events per second.")
@click.option("--speedup", type=click.FloatRange(min=0, min_open=True), help="Event-time speed-up.")
@click.option("--limit", type=click.IntRange(1), help="Stop after this many events.")
@click.option("--topic", help="Target topic (default: the clickstream setting).")
def replay(
    split_tsv: Path | None,
    yoochoose_dir: Path | None,
    synthetic_sessions: int | None,
    synthetic_items: int,
    seed: int,
    rate: float | None,
    speedup: float | None,
    limit: int | None,
    topic: str | None,
) -> None:
    """Replay a dataset onto clickstream in time order, keyed by user."""
    from stream_app.kafka_security import kafka_python_kwargs
    from stream_app.tools_replay import load_source
    from stream_app.tools_replay import replay as replay_events

    settings = _settings()
    try:
        events = load_source(split_tsv, yoochoose_dir, synthetic_sessions, synthetic_items, seed)
        sent = replay_events(
            events, settings.bootstrap_servers, topic or settings.topic("clickstream"),
            rate=rate, speedup=speedup, limit=limit, security=kafka_python_kwargs(settings),
        )  # fmt: skip
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"replayed {sent} events")


@click.command()
@click.argument("topic")
@click.option("--from-beginning", is_flag=True, help="Start at the earliest offsets.")
@click.option("-n", "count", type=click.IntRange(1), help="Stop after N records.")
@click.option("--idle-timeout", type=click.FloatRange(min=0), help="Stop after S idle seconds.")
def tail(topic: str, from_beginning: bool, count: int | None, idle_timeout: float | None) -> None:
    """Pretty-print the records of TOPIC as they arrive."""
    from stream_app.kafka_security import kafka_python_kwargs
    from stream_app.tools_tail import tail_topic

    settings = _settings()
    try:
        tail_topic(
            settings.bootstrap_servers, topic, click.echo, from_beginning, count, idle_timeout,
            security=kafka_python_kwargs(settings),
        )  # fmt: skip
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _settings() -> WorkerSettings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
