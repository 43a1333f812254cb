"""The worker serving a real trained model (tiny config, synthetic data) on the broker."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import jsonschema
import orjson
import pytest

from rnnrec_jax.model_io import load_trained_model
from stream_app.events import load_schema
from stream_app.kafka_io import produce
from tests.processes import tail
from tests.serving_models import cached_tiny_model
from tests.worker_harness import click, make_setup, read_outputs, running_worker

MODEL_ENV = {
    "RNNREC_SCORER_FACTORY": "",
    "RNNREC_BUCKET_SIZES": "8,64",  # fewer buckets: a faster warm-up on a shared machine
    "RNNREC_EXPLAIN_WINDOW": "5",
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    return cached_tiny_model(tmp_path_factory)


def session_records(test_df: object, n_sessions: int) -> list[tuple[bytes, bytes]]:
    """The first sessions of the test data as clickstream records (user = session)."""
    records = []
    for session, group in list(test_df.groupby("SessionId", sort=False))[:n_sessions]:
        for pos, (item, ts) in enumerate(zip(group.ItemId, group.Time, strict=True)):
            user = f"s{session}"
            records.append(click(user, f"{user}-{pos}", str(item), float(ts), session_id=user))
    records.sort(key=lambda r: orjson.loads(r[1])["ts"])
    return records


def compilations(setup: object) -> float:
    import urllib.request

    with urllib.request.urlopen(setup.url("/metrics"), timeout=5) as response:  # type: ignore[attr-defined]
        text = response.read().decode()
    match = re.search(r"^rnnrec_jit_compilations (\S+)$", text, re.M)
    assert match, "no rnnrec_jit_compilations in /metrics"
    return float(match.group(1))


def test_model_recommends_catalogue_items_with_explanations_and_never_recompiles(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path, tiny: tuple
) -> None:
    model_dir, _, test_df = tiny
    catalogue = set(load_trained_model(model_dir).vocab.items)
    records = session_records(test_df, 40)
    first, second = records[:20], records[20:]
    setup = make_setup(kafka_bootstrap, unique_name, tmp_path, RNNREC_MODEL_SOURCE=str(model_dir))
    with running_worker(setup, **MODEL_ENV) as proc:
        produce(kafka_bootstrap, setup.topic("clickstream"), first)
        read_outputs(setup, "recommendations", len(first), proc)
        warm = compilations(setup)
        # Many batch sizes: single events, then the rest at once.
        for record in second[:10]:
            produce(kafka_bootstrap, setup.topic("clickstream"), [record])
        produce(kafka_bootstrap, setup.topic("clickstream"), second[10:])
        recs = read_outputs(setup, "recommendations", len(records), proc)
        preds = read_outputs(setup, "purchase_predictions", len(records), proc)
        assert compilations(setup) == warm, tail(setup.log)

    outputs = [orjson.loads(r.value) for r in recs]
    schema = load_schema("recommendations")
    assert {o["event_id"] for o in outputs} == {orjson.loads(v)["event_id"] for _, v in records}
    for out in outputs:
        assert len(out["items"]) == 20 and set(out["items"]) <= catalogue
        assert out["scores"] == sorted(out["scores"], reverse=True)
        explanation = out["explanation"]
        assert explanation["method"] == "occlusion"
        assert 1 <= len(explanation["recent_items"]) <= 5
        # One row per recommended item, one weight per recent item.
        assert len(explanation["weights"]) == len(out["items"])
        assert {len(row) for row in explanation["weights"]} == {len(explanation["recent_items"])}
        jsonschema.validate(out, schema)
    # Some recommendation was raised by some recent item.
    assert any(w > 0 for o in outputs for row in o["explanation"]["weights"] for w in row)
    probabilities = [orjson.loads(r.value)["p_purchase"] for r in preds]
    assert all(0.0 <= p <= 1.0 for p in probabilities) and len(set(probabilities)) > 1


def test_restart_continues_model_state_from_the_changelog(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path, tiny: tuple
) -> None:
    model_dir, _, test_df = tiny
    records = session_records(test_df, 12)
    half = len(records) // 2
    users = [
        {orjson.loads(v)["user_id"] for _, v in part} for part in (records[:half], records[half:])
    ]
    # Sessions on both sides of the restart: served right only with the state from before.
    assert users[0] & users[1], "no session spans the restart: the test would prove nothing"

    def without_time(recs: list) -> dict[str, dict]:
        out = {}
        for record in recs:
            document = orjson.loads(record.value)
            document.pop("produced_ts")
            out[document["event_id"]] = document
        return out

    env = {"RNNREC_MODEL_SOURCE": str(model_dir)}
    straight = make_setup(kafka_bootstrap, unique_name, tmp_path / "straight", **env)
    with running_worker(straight, **MODEL_ENV) as proc:
        produce(kafka_bootstrap, straight.topic("clickstream"), records)
        expected = without_time(read_outputs(straight, "recommendations", len(records), proc))

    restarted = make_setup(kafka_bootstrap, unique_name, tmp_path / "restarted", **env)
    with running_worker(restarted, **MODEL_ENV) as proc:
        produce(kafka_bootstrap, restarted.topic("clickstream"), records[:half])
        read_outputs(restarted, "recommendations", half, proc)
    assert proc.returncode == 0, tail(restarted.log)  # SIGTERM: a clean stop
    restarted.data_dir = tmp_path / "restarted" / "fresh-data-dir"  # changelog only
    with running_worker(restarted, **MODEL_ENV) as proc:
        produce(kafka_bootstrap, restarted.topic("clickstream"), records[half:])
        got = without_time(read_outputs(restarted, "recommendations", len(records), proc))
    assert got == expected
