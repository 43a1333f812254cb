"""Run real worker processes from tests and stop them the way an operator would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def running_process(
    args: Sequence[str],
    env: dict[str, str],
    log_path: Path,
    stop_signal: int = signal.SIGTERM,
    stop_timeout_s: float = 30.0,
) -> Iterator[subprocess.Popen]:
    """Start ``python <args>`` with ``env`` added; stop it on exit of the block.

    Output goes to ``log_path`` (printed by the test on failure).
    """
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **env)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, *args], env=full_env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        yield proc
    finally:
        stop(proc, stop_signal, stop_timeout_s)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
    """Send ``sig`` and wait; SIGKILL if it does not exit in time. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def tail(path: Path, lines: int = 40) -> str:
    """The end of a log file, for assertion messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
