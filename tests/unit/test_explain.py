"""Occlusion explanations are faithful: the weights are the measured score drops."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnrec_jax import explain, models
from rnnrec_jax.cli import load_config
from rnnrec_jax.config import ModelConfig
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


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(item_capacity=64, hidden_sizes=(16,)),
        ModelConfig(item_capacity=64, cell="lstm", hidden_sizes=(16, 8)),
        ModelConfig(item_capacity=64, hidden_sizes=(16,), attention=True, attention_window=4),
        # Wider than the replay: the replay keeps L window slots only.
        ModelConfig(item_capacity=64, hidden_sizes=(16,), attention=True, attention_window=16),
        dataclasses.replace(load_config("default")[0], item_capacity=64),
    ],
    ids=["gru", "lstm-stacked", "gru-attention-4", "gru-attention-16", "default-config"],
)
def test_shared_prefix_replays_equal_replaying_every_window(cfg: ModelConfig) -> None:
    # replay_variants starts each one-event-removed window from the full window's
    # state at the removed position; the plain way replays all L + 1 windows from zero.
    params = models.init_params(cfg, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    # Off the init (some readouts start at zero, e.g. the default's residual attention).
    params = jax.tree_util.tree_map(
        lambda p: p + 0.1 * rng.standard_normal(p.shape).astype(p.dtype), params
    )
    history = rng.integers(1, 64, (7, 5)).astype(np.int32)
    history[rng.random(history.shape) < 0.3] = 0  # padding and skipped events anywhere
    history[0] = 0
    windows = np.repeat(history[None], 6, axis=0)  # (L + 1, B, L)
    for j in range(5):
        windows[j + 1, :, j] = 0
    plain = explain.replay_window(cfg, params, jnp.asarray(windows.reshape(-1, 5)))
    shared = explain.replay_variants(cfg, params, jnp.asarray(history))
    assert shared.shape == (6, 7, cfg.output_dim)
    np.testing.assert_allclose(
        np.asarray(shared), np.asarray(plain).reshape(6, 7, -1), rtol=1e-5, atol=1e-6
    )
