"""/metrics of a real worker after a small stream: every documented metric, sane values."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import orjson

from stream_app.kafka_io import produce
from tests.processes import tail
from tests.worker_harness import click, make_setup, read_outputs, running_worker, scrape, value

T0 = 1_600_000_000.0


def histogram(samples: dict, name: str) -> tuple[float, float, list[tuple[float, float]]]:
    """(count, sum, [(upper bound, cumulative count)]) of an unlabelled histogram."""
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (n, labels), v in samples.items()
        if n == f"{name}_bucket"
    )
    return value(samples, f"{name}_count"), value(samples, f"{name}_sum"), buckets


def test_metrics_count_the_stream_and_stay_consistent(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    # Strict keys: a mis-keyed record is counted as a dead letter, not repartitioned
    # (tests/integration/test_repartition.py counts repartitioned events).
    setup = make_setup(kafka_bootstrap, unique_name, tmp_path, RNNREC_REPARTITION="false")
    good = [click(f"u{i % 3}", f"e{i}", str(i), T0 + i) for i in range(15)]
    poison = [(b"u0", b"{nope"), (b"u9", b"{nope"), (b"other", good[0][1])]
    records = good[:5] + poison + good[5:]
    n = len(records)
    with running_worker(setup) as proc:
        sent_at = time.time()
        produce(kafka_bootstrap, setup.topic("clickstream"), records)
        read_outputs(setup, "recommendations", len(good), proc)
        read_outputs(setup, "dlq", len(poison), proc)
        deadline = time.monotonic() + 20
        samples = scrape(setup)
        while value(samples, "rnnrec_end_to_end_seconds_count") < n:
            assert time.monotonic() < deadline, tail(setup.log)
            time.sleep(0.2)
            samples = scrape(setup)
        elapsed = time.time() - sent_at

    assert value(samples, "rnnrec_events_in_total") == n
    assert value(samples, "rnnrec_events_applied_total") == len(good)
    assert value(samples, "rnnrec_events_served_total", model_version="test-1") == len(good)
    for role, expected in (
        ("recommendations", len(good)), ("purchase_predictions", len(good)), ("dlq", len(poison))
    ):  # fmt: skip
        assert value(samples, "rnnrec_outputs_total", role=role) == expected, role
    assert value(samples, "rnnrec_dead_letters_total", reason="invalid_json") == 2
    assert value(samples, "rnnrec_dead_letters_total", reason="key_mismatch") == 1
    assert value(samples, "rnnrec_model_version_info", version="test-1") == 1
    assert value(samples, "rnnrec_users_in_state") == 3
    assert value(samples, "rnnrec_event_loop_info", implementation="uvloop") == 1  # the default
    assert value(samples, "rnnrec_redeliveries_total", resent="true") == 0

    count, total, buckets = histogram(samples, "rnnrec_batch_size")
    assert 1 <= count <= n and total == n  # every record in exactly one batch
    count, total, _ = histogram(samples, "rnnrec_step_seconds")
    assert 1 <= count <= n and 0 < total < elapsed
    count, total, buckets = histogram(samples, "rnnrec_end_to_end_seconds")
    assert count == n and 0 < total / count < elapsed  # from the broker timestamp, per record
    cumulative = [c for _, c in buckets]
    assert cumulative == sorted(cumulative) and buckets[-1] == (float("inf"), n)
    # Process figures of the worker itself (the worker ran a jitted model: CPU was spent).
    assert value(samples, "process_cpu_seconds_total") > 0
    assert value(samples, "process_resident_memory_bytes") > 50 * 2**20
    assert value(samples, "python_gc_collections_total", generation="0") > 0

    # The served output agrees with what the metrics say about the model.
    rec = orjson.loads(read_outputs(setup, "recommendations", 1)[0].value)
    assert rec["model_version"] == "test-1"
