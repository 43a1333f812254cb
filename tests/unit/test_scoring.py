"""The worker's adapter to the serving model: carry layout for the float16 option."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from rnnrec_jax.model_io import load_trained_model
from rnnrec_jax.serving import ServingModel
from stream_app.scoring import ServingModelScorer, exact_positions
from tests.serving_models import cached_tiny_model

pytestmark = pytest.mark.unit


def test_exact_positions_are_integer_leaves_and_times() -> None:
    names = ["['count']", "['h']", "['last_time']", "['recent_items']", "['t_hi']", "['t_lo']"]
    dtypes = [np.dtype(np.int32), np.dtype(np.float32), np.dtype(np.float32),
              np.dtype(np.int32), np.dtype(np.float32), np.dtype(np.float32)]  # fmt: skip
    sizes = [1, 4, 1, 3, 1, 1]
    # count 0 | h 1-4 | last_time 5 | recent_items 6-8 | t_hi 9 | t_lo 10
    assert exact_positions(names, dtypes, sizes).tolist() == [0, 5, 6, 7, 8, 9, 10]


def test_scorer_names_the_positions_of_a_purchase_head_carry(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    trained = load_trained_model(cached_tiny_model(tmp_path_factory)[0])
    model = ServingModel(trained.params, trained.model_cfg, trained.vocab, "v", buckets=(8,), k=5)
    scorer = ServingModelScorer(model)
    with_paths, _ = jax.tree_util.tree_flatten_with_path(model.init_carry(1))
    start, expected = 0, []
    for path, leaf in with_paths:
        size = int(np.prod(np.shape(leaf)[1:]))
        name = jax.tree_util.keystr(path)
        if any(
            key in name
            for key in ("recent_items", "count", "time", "t_hi", "t_lo", "dwell", "repeat")
        ):
            expected.extend(range(start, start + size))
        start += size
    assert scorer.initial_carry().size == start
    assert sorted(scorer.exact_carry_positions.tolist()) == expected
    assert len(expected) >= 16 + 1  # the purchase head's recent items and its time
