"""The ``rnnrec`` command line: one entry point, subcommands from each component.

Errors an operator can fix (bad arguments, missing Java, a taken port, an unreachable
broker, a file that cannot be read or written, a damaged model) are printed as one
line on stderr with exit status 2 or 1, never as a traceback; ``RNNREC_TRACEBACK=1``
shows the traceback of the environment errors.
"""

from __future__ import annotations

import os
import ssl
import sys

import click
from kafka.errors import KafkaError

from rnnrec_jax.cli import evaluate, split, train
from stream_app.cli_demo import demo
from stream_app.cli_item import item
from stream_app.cli_kafka import kafka
from stream_app.cli_model import model
from stream_app.cli_trainer import trainer
from stream_app.cli_worker import replay, tail, user, worker


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rnnrec")
def cli() -> None:
    """rnnrec: streaming session-based recommendations from Kafka."""


cli.add_command(kafka)
cli.add_command(demo)
cli.add_command(split)
cli.add_command(train)
cli.add_command(evaluate)
cli.add_command(worker)
cli.add_command(replay)
cli.add_command(tail)
cli.add_command(user)
cli.add_command(item)
cli.add_command(model)
cli.add_command(trainer)


class OperatorError(click.ClickException):
    """An error whose message tells the operator what to do; printed as one line."""


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; turn usage and operator errors into a single line."""
    try:
        cli.main(args=argv, prog_name="rnnrec", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        sys.exit(0)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "rnnrec"
        click.echo(f"{where}: error: {exc.format_message()} (see '{where} --help')", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"rnnrec: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("rnnrec: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        # The environment, not the code: an unreachable broker, a bad CA file, a path
        # that cannot be read or written, a damaged model. One line, as for arguments.
        if not is_environment_error(exc) or os.environ.get(TRACEBACK_ENV):
            raise
        click.echo(f"rnnrec: error: {describe_error(exc)} (set {TRACEBACK_ENV}=1 for "
                   "the traceback)", err=True)  # fmt: skip
        sys.exit(1)


TRACEBACK_ENV = "RNNREC_TRACEBACK"


def is_environment_error(exc: BaseException) -> bool:
    """Whether an exception reports the environment (broker, files, TLS, a model)."""
    if isinstance(exc, KafkaError | ssl.SSLError | OSError):
        return True
    # Looked up, not imported: the checkpoint module pulls in JAX (0.6 s), and a
    # command that never loaded it cannot have raised its error.
    checkpoint = sys.modules.get("rnnrec_jax.checkpoint")
    return checkpoint is not None and isinstance(exc, checkpoint.CheckpointError)


def describe_error(exc: BaseException) -> str:
    """One line for an environment error: where it came from and what it says."""
    if isinstance(exc, KafkaError):
        text = str(exc)
        name = type(exc).__name__
        # kafka-python's messages repeat the class name ("KafkaTimeoutError: ...").
        while text.startswith(f"{name}: "):
            text = text[len(name) + 2 :]
        hint = ""
        if "bootstrap" in text.lower() or "NoBrokersAvailable" in name:
            hint = " (is the broker running? KAFKA_BOOTSTRAP_SERVERS names it)"
        return f"Kafka: {name}: {text or 'no detail'}{hint}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc} (check the CA, certificate and key files)"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    return f"{type(exc).__name__}: {exc}"


if __name__ == "__main__":
    main()
