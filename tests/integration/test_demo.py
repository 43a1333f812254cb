"""`make demo` (rnnrec demo) runs end to end: model, worker, live traffic, report."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_demo_serves_every_event_and_writes_a_report(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stream_app.demo import _why_first, run_demo

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    stats = run_demo(tmp_path / "run", sessions=600, rate=100.0, seconds=4.0)
    assert stats.outputs == 400
    assert stats.purchases == 400
    assert len(stats.latencies_ms) == 400
    assert all(lat >= 0 for lat in stats.latencies_ms)
    assert stats.last_rec is not None and len(stats.last_rec["items"]) == 20
    assert _why_first(stats.last_rec)  # the live view can say why
    report = (tmp_path / "run" / "report.md").read_text()
    assert "p99" in report
    assert (tmp_path / "run" / "latency.png").stat().st_size > 1000
