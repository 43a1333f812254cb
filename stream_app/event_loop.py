"""Choose the asyncio event loop implementation before Faust creates its loop."""

from __future__ import annotations

import asyncio

from stream_app.settings import EventLoop


def use_event_loop(kind: EventLoop) -> None:
    """Install ``kind``'s event loop policy for the loops created from now on.

    Must run before the Faust app or worker asks asyncio for a loop: a loop that already
    exists keeps its implementation.

    Raises:
        ImportError: uvloop was asked for and is not installed.
    """
    if kind is EventLoop.UVLOOP:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    else:
        asyncio.set_event_loop_policy(None)


def loop_implementation() -> str:
    """Top-level package of the running loop's class: ``uvloop`` or ``asyncio``."""
    return type(asyncio.get_running_loop()).__module__.split(".")[0]
