"""An event on an item the model does not know is not bad input.

With a real (tiny) trained model: unknown items get recommendations and purchase
predictions like any event, nothing goes to the DLQ, and /metrics counts them as
out-of-vocabulary (``rnnrec_oov_events_total``).
"""

from __future__ import annotations

import urllib.request
import uuid

import orjson
import pytest

from rnnrec_jax.model_io import load_trained_model
from stream_app.kafka_io import drain, produce
from tests.chaos.support import parse_metrics
from tests.processes import tail
from tests.serving_models import cached_tiny_model
from tests.worker_harness import click, make_setup, read_outputs, running_worker

MODEL_ENV = {"RNNREC_SCORER_FACTORY": "", "RNNREC_BUCKET_SIZES": "8,64"}
UNKNOWN = ("never-seen-1", "never-seen-2", "never-seen-3")


@pytest.fixture(scope="module")
def served(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[dict], list[dict], dict, int, set[str]]:
    """Run the real model on sessions mixing known and unknown items, once."""
    model_dir, _, test_df = cached_tiny_model(tmp_path_factory)
    catalogue = set(load_trained_model(model_dir).vocab.items)
    known = [str(i) for i in test_df.ItemId.head(12)]
    records, n_unknown = [], 0
    for u in range(4):
        for step in range(6):
            # Users 0-2 see an unknown item now and then; user 3 only unknown items.
            unknown = u == 3 or step % 3 == 2
            item = UNKNOWN[(u + step) % 3] if unknown else known[(u * 3 + step) % len(known)]
            n_unknown += unknown
            records.append(click(f"o{u}", f"o{u}-{step}", item, 1_600_000_000.0 + step))
    tmp = tmp_path_factory.mktemp("oov")
    token = uuid.uuid4().hex[:8]  # module-scoped: no unique_name fixture here
    setup = make_setup(
        kafka_bootstrap, lambda role: f"t-oov-{role}-{token}", tmp,
        RNNREC_MODEL_SOURCE=str(model_dir),
    )  # fmt: skip
    with running_worker(setup, **MODEL_ENV) as proc:
        produce(kafka_bootstrap, setup.topic("clickstream"), records)
        recs = read_outputs(setup, "recommendations", len(records), proc)
        preds = read_outputs(setup, "purchase_predictions", len(records), proc)
        with urllib.request.urlopen(setup.url("/metrics"), timeout=5) as response:
            metrics = parse_metrics(response.read().decode())
        assert proc.poll() is None, tail(setup.log)
    dlq = drain(kafka_bootstrap, setup.topic("dlq"), idle_s=1.0)
    assert dlq == [], [r.headers for r in dlq]
    return (
        [orjson.loads(r.value) for r in recs],
        [orjson.loads(r.value) for r in preds],
        metrics,
        n_unknown,
        catalogue,
    )


def test_unknown_items_get_outputs_never_the_dlq(served: tuple) -> None:
    recs, preds, _, n_unknown, catalogue = served
    expected = {f"o{u}-{s}" for u in range(4) for s in range(6)}
    assert n_unknown >= 6
    assert sorted(r["event_id"] for r in recs) == sorted(expected)
    assert sorted(p["event_id"] for p in preds) == sorted(expected)
    for rec in recs:
        assert rec["items"] and set(rec["items"]) <= catalogue, rec["event_id"]
        assert not set(rec["items"]) & set(UNKNOWN)
    assert all(0.0 <= p["p_purchase"] <= 1.0 for p in preds)


def test_unknown_items_are_counted_as_oov_on_metrics(served: tuple) -> None:
    _, _, metrics, n_unknown, _ = served
    assert metrics.get(("rnnrec_oov_events_total", frozenset())) == n_unknown
