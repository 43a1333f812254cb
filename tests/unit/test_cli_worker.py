"""How ``rnnrec worker`` sets up Faust's Worker."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import faust
import pytest

from stream_app.cli_worker import faust_worker

pytestmark = pytest.mark.unit


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield root
    root.setLevel(level)
    root.handlers[:] = handlers


def test_root_logger_stays_at_the_requested_level(root_logger: logging.Logger) -> None:
    # Faust's spinner would set the root logger to DEBUG, and every aiokafka debug
    # call would then build a log record on the hot path.
    app = faust.App("rnnrec-test-logging", broker="kafka://127.0.0.1:1")
    worker = faust_worker(app, "warning")
    root_logger.handlers[:] = [logging.NullHandler()]
    root_logger.setLevel(logging.WARNING)
    worker.on_setup_root_logger(root_logger, logging.WARNING)
    assert root_logger.level == logging.WARNING
    assert not logging.getLogger("aiokafka").isEnabledFor(logging.DEBUG)
