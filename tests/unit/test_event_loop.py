"""The worker's event loop choice (RNNREC_EVENT_LOOP)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator

import pytest

from stream_app.event_loop import loop_implementation, use_event_loop
from stream_app.settings import EventLoop


@pytest.fixture(autouse=True)
def default_policy() -> Iterator[None]:
    yield
    asyncio.set_event_loop_policy(None)


async def _running() -> str:
    return loop_implementation()


@pytest.mark.parametrize("kind", list(EventLoop))
def test_new_loops_use_the_chosen_implementation(kind: EventLoop) -> None:
    use_event_loop(kind)
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(_running()) == kind.value
    finally:
        loop.close()


def test_asyncio_undoes_uvloop() -> None:
    use_event_loop(EventLoop.UVLOOP)
    use_event_loop(EventLoop.ASYNCIO)
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(_running()) == "asyncio"
    finally:
        loop.close()


def test_worker_without_uvloop_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from stream_app.cli import main

    for name in ("KAFKA_BOOTSTRAP_SERVERS", "RNNREC_BOOTSTRAP_SERVERS", "RNNREC_EVENT_LOOP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    with pytest.raises(SystemExit) as exited:
        main(["worker"])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        "rnnrec: error: RNNREC_EVENT_LOOP=uvloop: uvloop is not installed "
        "(install it, or set RNNREC_EVENT_LOOP=asyncio)"
    )
