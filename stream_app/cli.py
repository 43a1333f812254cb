"""The ``rnnrec`` command line: one entry point, subcommands from each component.

Errors an operator can fix (bad arguments, missing Java, a taken port) are printed
as one line on stderr with exit status 2 or 1, never as a traceback.
"""

from __future__ import annotations

import sys

import click

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


if __name__ == "__main__":
    main()
