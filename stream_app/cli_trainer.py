"""``rnnrec trainer``: the online fine-tuning process (see `stream_app.trainer`)."""

from __future__ import annotations

import logging

import click

from stream_app.cli_worker import loglevel_option


@click.command()
@loglevel_option
def trainer(loglevel: str) -> None:
    """Fine-tune the served model from clickstream and publish better versions.

    Single replica, configured by RNNREC_* environment variables (the worker's plus
    RNNREC_TRAINER_*, RNNREC_ONLINE_TRAINING_FROZEN). Stops on SIGTERM/SIGINT,
    abandoning a running fine-tune, and exits 0.
    """
    from stream_app.settings import SettingsError
    from stream_app.trainer_settings import load_trainer_settings

    try:
        settings = load_trainer_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    level = getattr(logging, loglevel.upper(), None)
    if not isinstance(level, int):
        raise click.BadParameter(f"unknown log level {loglevel!r}", param_hint="--loglevel")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kafka-python logs every connection at INFO.
    logging.getLogger("kafka").setLevel(max(level, logging.WARNING))

    from stream_app.trainer import TrainerError, run_trainer

    try:
        run_trainer(settings)
    except TrainerError as exc:
        raise click.ClickException(str(exc)) from None
