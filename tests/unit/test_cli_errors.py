"""Bad input and a bad environment give the CLI user one line, never a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from kafka.errors import KafkaTimeoutError

from stream_app.cli import TRACEBACK_ENV, cli, describe_error, main

pytestmark = pytest.mark.unit


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit status and stderr of ``rnnrec ARGV``."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    return int(exited.value.code or 0), capsys.readouterr().err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "text.txt").write_text("hello\nworld\n")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "header.tsv").write_text("SessionId\tItemId\tTime\n")
    (tmp_path / "single.tsv").write_text("SessionId\tItemId\tTime\n1\t5\t100\n2\t6\t101\n")
    (tmp_path / "no-data").mkdir()
    return tmp_path


@pytest.mark.parametrize(
    ("args", "status", "says"),
    [
        (["train", "--train", "{d}/text.txt", "--out", "{d}/o"], 1, "no column SessionId"),
        (["train", "--train", "{d}/empty.txt", "--out", "{d}/o"], 1, "not a split TSV"),
        (["train", "--train", "{d}/header.tsv", "--out", "{d}/o"], 1, "no session has two"),
        (["train", "--train", "{d}/single.tsv", "--out", "{d}/o"], 1, "no session has two"),
        (["train", "--train", "{d}/single.tsv", "--out", "/proc/no/such"], 1, "/proc/no"),
        (["split", "--raw", "{d}/no-data", "--out", "{d}/s"], 1, "clicks.csv.gz"),
        (["split", "--raw", "{d}/no-data", "--out", "{d}/s", "--days", "nan"], 2, "--days"),
        (["replay", "--split-tsv", "{d}/text.txt"], 2, "no column SessionId"),
        (["worker", "-l", "bogus"], 2, "--loglevel"),
        (["trainer", "-l", "bogus"], 2, "--loglevel"),
        (
            ["train", "--config", "../x", "--train", "{d}/single.tsv", "--out", "{d}/o"],
            2,
            "unknown config",
        ),
    ],
)
def test_bad_input_files_give_one_line(
    files: Path, capsys: pytest.CaptureFixture[str], args: list[str], status: int, says: str
) -> None:
    code, err = run([a.replace("{d}", str(files)) for a in args], capsys)
    assert code == status
    assert says in one_line(err)


def test_a_bad_port_variable_is_refused_like_the_option(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RNNREC_KAFKA_PORT", "abc")
    code, err = run(["kafka", "status"], capsys)
    assert code == 2 and "--port" in one_line(err)


@pytest.fixture
def failing_command() -> Iterator[str]:
    @click.command("fail-for-test")
    def fail() -> None:
        raise KafkaTimeoutError("Unable to bootstrap from [('localhost', 1)]")

    cli.add_command(fail)
    yield "fail-for-test"
    cli.commands.pop("fail-for-test")


def test_an_unreachable_broker_is_one_line_unless_the_traceback_is_asked_for(
    failing_command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run([failing_command], capsys)
    line = one_line(err)
    assert code == 1
    assert line.startswith("rnnrec: error: Kafka: KafkaTimeoutError: Unable to bootstrap")
    assert "KafkaTimeoutError: KafkaTimeoutError" not in line
    assert "KAFKA_BOOTSTRAP_SERVERS" in line
    monkeypatch.setenv(TRACEBACK_ENV, "1")
    with pytest.raises(KafkaTimeoutError):
        main([failing_command])


def test_file_errors_name_the_file() -> None:
    assert describe_error(FileNotFoundError(2, "No such file or directory", "/x/y")) == (
        "No such file or directory: /x/y"
    )
