"""The worker's cap on how long the broker holds its fetch requests reaches aiokafka."""

from __future__ import annotations

import asyncio

import faust
import pytest

from stream_app.kafka_fetch import limit_fetch_wait
from stream_app.settings import WorkerSettings


def _worker_consumer(app: faust.App):
    # The aiokafka consumer exactly as Faust's consumer thread creates it for a worker.
    thread = app.consumer._thread
    return thread._create_worker_consumer(app.transport)


def test_the_cap_reaches_the_apps_aiokafka_consumer_and_no_other_apps() -> None:
    async def build() -> tuple[int, int]:
        capped = faust.App("fetch-cap-test-a", broker="kafka://127.0.0.1:1")
        limit_fetch_wait(capped, 37)
        limit_fetch_wait(capped, 40)  # applied twice: the last value holds, one patch
        other = faust.App("fetch-cap-test-b", broker="kafka://127.0.0.1:1")
        return (
            _worker_consumer(capped)._fetch_max_wait_ms,
            _worker_consumer(other)._fetch_max_wait_ms,
        )

    assert asyncio.run(build()) == (40, 1500)


def test_the_setting_defaults_to_50_ms_and_rejects_values_out_of_range() -> None:
    assert WorkerSettings().fetch_max_wait_ms == 50
    for bad in (0, 1501):
        with pytest.raises(ValueError):
            WorkerSettings(fetch_max_wait_ms=bad)


def test_the_worker_app_takes_its_cap_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    from stream_app.settings import load_settings
    from stream_app.worker import create_app
    from tests.worker_scorers import RecentItemsScorer

    monkeypatch.setenv("RNNREC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RNNREC_APP_ID", "rnnrec-fetch-cap-test")
    monkeypatch.setenv("RNNREC_FETCH_MAX_WAIT_MS", "25")

    async def build() -> int:
        runtime = create_app(load_settings(), scorer=RecentItemsScorer())
        return _worker_consumer(runtime.app)._fetch_max_wait_ms

    assert asyncio.run(build()) == 25
