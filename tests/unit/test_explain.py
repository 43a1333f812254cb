"""Occlusion explanations are faithful: the weights are the measured score drops."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from rnnrec_jax import explain, models
from rnnrec_jax.data.encoded import session_grid
from rnnrec_jax.model_io import TrainedModel, load_trained_model
from rnnrec_jax.serving import ServingModel
from tests.serving_models import cached_tiny_model

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    return load_trained_model(cached_tiny_model(tmp_path_factory)[0])


@pytest.fixture(scope="module")
def windows(trained: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The last 5 events of real test sessions (left-padded with 0)."""
    _, _, test_df = cached_tiny_model(tmp_path_factory)
    items, _, lengths = session_grid(test_df, trained.vocab)
    rows = []
    for s in np.flatnonzero(lengths >= 2)[:24]:
        seq = items[s, : lengths[s]][-5:]
        rows.append(np.concatenate([np.zeros(5 - len(seq), np.int32), seq]))
    return np.stack(rows)


def full_scores(trained: TrainedModel, history: np.ndarray) -> np.ndarray:
    rep = explain.replay_window(trained.model_cfg, trained.params, jnp.asarray(history))
    return np.asarray(models.score_items(trained.params, rep))


def test_weights_equal_the_measured_score_drops(trained: TrainedModel, windows: np.ndarray) -> None:
    model = ServingModel.from_trained(trained, buckets=(32,), k=20, explain_window=5)
    # Explain the recommendations made from the window itself.
    carry = model.init_carry(len(windows))
    for t in range(windows.shape[1]):
        carry = model.step(carry, windows[:, t], windows[:, t] > 0).carry
    out = model.step(carry, np.zeros(len(windows), np.int32), np.zeros(len(windows), bool),
                     history=windows)  # fmt: skip
    att = out.attributions
    assert att is not None and att.weights.shape == (len(windows), 20, 5)
    full = full_scores(trained, windows)
    rows = np.arange(len(windows))[:, None]
    top = out.top_items
    for j in range(5):
        removed = windows.copy()
        removed[:, j] = 0
        drop = full[rows, top] - full_scores(trained, removed)[rows, top]
        real = windows[:, j] > 0
        np.testing.assert_allclose(att.weights[real, :, j], drop[real], atol=2e-4, rtol=1e-4)
        assert np.all(att.weights[~real, :, j] == 0.0)


def test_removing_the_top_attributed_event_lowers_the_recommendation(
    trained: TrainedModel, windows: np.ndarray
) -> None:
    model = ServingModel.from_trained(trained, buckets=(32,), k=20, explain_window=5)
    carry = model.init_carry(len(windows))
    for t in range(windows.shape[1]):
        out = model.step(carry, windows[:, t], windows[:, t] > 0, history=windows[:, : t + 1])
        carry = out.carry
    att = out.attributions
    full = full_scores(trained, windows)
    # Every window with each single position removed, scored in one batch.
    removed = np.repeat(windows[:, None, :], 5, axis=1)
    removed[:, np.arange(5), np.arange(5)] = 0
    without = full_scores(trained, removed.reshape(-1, 5)).reshape(len(windows), 5, -1)
    b_idx, k_idx = np.nonzero((att.positions[:, :, 0] >= 0) & (att.top_weights[:, :, 0] > 1e-3))
    assert len(b_idx) >= 100
    items = out.top_items[b_idx, k_idx]
    j = att.positions[b_idx, k_idx, 0]
    drop = full[b_idx, items] - without[b_idx, j, items]
    assert np.all(drop > 0)
    np.testing.assert_allclose(drop, att.top_weights[b_idx, k_idx, 0], atol=2e-4, rtol=1e-4)
    # Contributors are sorted among real positions; -1 only after them.
    kept = att.positions >= 0
    ordered = np.where(kept, att.top_weights, -np.inf)
    assert np.all(np.diff(ordered, axis=-1) <= 1e-6)
    assert set(np.unique(att.positions)) <= set(range(-1, 5))


def test_short_windows_report_fewer_contributors(trained: TrainedModel) -> None:
    history = jnp.asarray([[0, 0, 0, 0, 3], [0, 0, 0, 0, 0]], jnp.int32)
    items = jnp.asarray([[1, 2], [1, 0]], jnp.int32)
    att = explain.occlusion(trained.model_cfg, trained.params, history, items, top=3)
    assert att.positions[0, 0].tolist() == [4, -1, -1]
    assert np.all(np.asarray(att.positions[1]) == -1)
    assert np.all(np.asarray(att.weights[1]) == 0.0)
