"""Parity: Recall@20/MRR@20 read back from the recommendations topic equal `rnnrec evaluate`.

The test sessions are replayed through the real broker and worker (user = session,
each session a fresh state under the worker's session policy, float32 carries, no
exclusion); each recommendation is scored against the session's next event and the
result must equal the offline evaluator on the same model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import orjson
import pandas as pd
import pytest

from rnnrec_jax.configs.tiny import get_config
from rnnrec_jax.data.events import read_split_tsv
from rnnrec_jax.data.paths import shared_data_dir
from rnnrec_jax.evaluate import evaluate
from rnnrec_jax.model_io import load_trained_model, save_trained_model
from rnnrec_jax.train import train_and_evaluate
from stream_app.kafka_io import produce
from stream_app.tools_replay import clickstream_records
from tests.ci import in_ci
from tests.serving_models import cached_tiny_model
from tests.unit._shared import require_shared_data
from tests.worker_harness import make_setup, read_outputs, running_worker

K = 20


@pytest.fixture(scope="session")
def parity_case(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """(model dir, test sessions): YooChoose-1pct when present, synthetic otherwise."""
    data = shared_data_dir()
    if (data is None or not data.is_dir()) and not in_ci():
        model_dir, _, test_df = cached_tiny_model(tmp_path_factory)
        return model_dir, test_df
    split = require_shared_data() / "yoochoose-1pct" / "split"
    train = read_split_tsv(split / "train_full.tsv")
    test = read_split_tsv(split / "test.tsv")
    model_cfg, train_cfg = get_config()
    # The tiny config, widened to the real catalogue; one epoch is enough for parity.
    # The input item excluded at inference, as the default model has it: the split has
    # 52 test targets equal to their input item, which both sides must rank last.
    model_cfg = dataclasses.replace(model_cfg, item_capacity=8192, exclude_input_item=True)
    train_cfg = dataclasses.replace(train_cfg, epochs=1, batch_size=128)
    result = train_and_evaluate(model_cfg, train_cfg, train, progress=False, log=None)
    out = tmp_path_factory.mktemp("yoochoose-model") / "model"
    save_trained_model(
        out, result.params, result.model_cfg, result.vocab, version="1",
        purchase_calibration=result.purchase_calibration,
    )  # fmt: skip
    frame = pd.DataFrame(
        {"SessionId": test.session_ids, "ItemId": test.item_ids, "Time": test.times}
    )
    return out, frame


def test_recall_and_mrr_from_the_topic_equal_rnnrec_evaluate(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    parity_case: tuple[Path, pd.DataFrame],
) -> None:
    model_dir, test_df = parity_case
    model = load_trained_model(model_dir)
    offline = evaluate(model.model_cfg, test_df, params=model.params, vocab=model.vocab)

    from rnnrec_jax.data.events import SessionEvents

    events = SessionEvents.from_frame(test_df)
    records = [(key, value) for _, key, value in clickstream_records(events)]
    setup = make_setup(
        kafka_bootstrap, unique_name, tmp_path, partitions=4, RNNREC_MODEL_SOURCE=str(model_dir)
    )
    env = {
        "RNNREC_SCORER_FACTORY": "",
        "RNNREC_EXPLAIN_WINDOW": "0",
        "RNNREC_EXCLUDE_SEEN": "false",
        "RNNREC_CARRY_DTYPE": "float32",
        "RNNREC_MAX_BATCH": "512",
        "RNNREC_MAX_FUTURE_S": str(10 * 365 * 86400.0),
    }
    with running_worker(setup, **env) as proc:
        produce(kafka_bootstrap, setup.topic("clickstream"), records)
        recs = read_outputs(setup, "recommendations", len(records), proc, timeout_s=240)

    by_event = {}
    for record in recs:
        document = orjson.loads(record.value)
        by_event[document["event_id"]] = document["items"]
    hits = 0
    reciprocal = 0.0
    n_targets = 0
    for session, group in test_df.groupby("SessionId", sort=False):
        items = group.sort_values("Time", kind="stable").ItemId.astype(str).tolist()
        for pos in range(len(items) - 1):
            recommended = by_event[f"{session}-{pos}"][:K]
            n_targets += 1
            if items[pos + 1] in recommended:
                hits += 1
                reciprocal += 1.0 / (recommended.index(items[pos + 1]) + 1)
    assert n_targets == offline["n_targets"]
    recall, mrr = hits / n_targets, reciprocal / n_targets
    print(
        f"parity: offline Recall@20 {offline['recall@20']:.6f} MRR@20 {offline['mrr@20']:.6f}; "
        f"from topic Recall@20 {recall:.6f} MRR@20 {mrr:.6f} ({n_targets} targets)"
    )
    assert recall == pytest.approx(offline["recall@20"], abs=1e-12)
    assert mrr == pytest.approx(offline["mrr@20"], abs=1e-12)
