"""Throttle repeated log lines of the Kafka client libraries.

While the broker is unreachable, aiokafka and Faust log every failed connection
attempt and request, each client several times a second: about 80 lines a second
per worker, which floods the log store of a cluster and hides the one line that
says what is wrong. The filter here lets the first record of each message
template through, drops repeats of it for a window, and adds to the next one let
through how many were dropped. Our own loggers (``stream_app``, ``rnnrec_jax``) are
left alone.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable

THROTTLED_LIBRARIES = ("aiokafka", "faust", "mode", "kafka")
_DIGITS = re.compile(r"\d+")


class RepeatThrottle(logging.Filter):
    """At most one record per (logger, level, message template) per ``window_s``."""

    def __init__(self, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        """``clock`` is injectable for tests."""
        super().__init__()
        self.window_s = window_s
        self.clock = clock
        # (logger, level, template) -> (when one was last let through, dropped since)
        self.seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Drop a repeat within the window; note the count on the next one let through."""
        # Digits are masked: some libraries format before logging ("producer buffer
        # full size 123"), which would make every line its own template.
        key = (record.name, record.levelno, _DIGITS.sub("#", str(record.msg)))
        now = self.clock()
        last = self.seen.get(key)
        if last is not None and now - last[0] < self.window_s:
            self.seen[key] = (last[0], last[1] + 1)
            return False
        self.seen[key] = (now, 0)
        if last is not None and last[1]:
            # No "%" added: the record is still formatted with its own args.
            record.msg = (
                f"{record.msg} [repeated {last[1]} more times in the last {now - last[0]:.0f} s]"
            )
        return True


def throttle_library_logs(
    window_s: float = 10.0, prefixes: Iterable[str] = THROTTLED_LIBRARIES
) -> RepeatThrottle:
    """Attach one `RepeatThrottle` to every existing logger of the client libraries.

    Call it after the libraries are imported (their module loggers then exist);
    returns the filter (tests look at it).
    """
    throttle = RepeatThrottle(window_s)
    wanted = tuple(prefixes)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name.split(".")[0] in wanted:
            logger.addFilter(throttle)
    for name in wanted:
        logging.getLogger(name).addFilter(throttle)
    return throttle
