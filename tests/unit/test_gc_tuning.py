"""The worker's garbage-collector settings."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from stream_app.gc_tuning import tune_gc
from stream_app.settings import SettingsError, load_settings

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_tune_gc_freezes_live_objects_and_raises_gen0_threshold() -> None:
    gc.unfreeze()
    _, gen1, gen2 = gc.get_threshold()
    tune_gc(50_000)
    assert gc.get_threshold() == (50_000, gen1, gen2)
    assert gc.get_freeze_count() > 1000  # this interpreter's live objects


def test_tune_gc_zero_keeps_python_defaults() -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    tune_gc(0)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_gc_setting_default_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNREC_GC_GEN0_THRESHOLD", "0")
    assert load_settings().gc_gen0_threshold == 0
    monkeypatch.setenv("RNNREC_GC_GEN0_THRESHOLD", "-1")
    with pytest.raises(SettingsError, match="GC_GEN0_THRESHOLD"):
        load_settings()
