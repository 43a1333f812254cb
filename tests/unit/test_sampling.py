"""Session-parallel plan and popularity sampler."""

import numpy as np
import pytest

from rnnrec_jax.sampling import (
    MAX_REFILL_DRAWS,
    NegativeSampler,
    popularity_cdf,
    session_parallel_plan,
)

pytestmark = pytest.mark.unit


def test_plan_covers_each_target_once_and_resets_at_session_starts():
    lengths = np.array([2, 5, 3, 2, 4, 1, 6])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    plan = session_parallel_plan(offsets, batch_size=3)
    targets = plan.target_event[plan.target_event >= 0]
    expected = np.concatenate(
        [np.arange(offsets[s] + 1, offsets[s + 1]) for s in range(len(lengths)) if lengths[s] > 1]
    )
    assert sorted(targets.tolist()) == expected.tolist()
    # Input is always the event right before the target.
    has = plan.target_event >= 0
    assert np.all(plan.input_event[has] + 1 == plan.target_event[has])
    # Resets exactly where a slot reads a session's first event.
    firsts = set(offsets[:-1].tolist())
    is_first = np.isin(plan.input_event, list(firsts)) & (plan.input_event >= 0)
    assert np.array_equal(plan.reset, is_first)
    # Within a slot, consecutive steps without a reset continue the same session.
    for t in range(1, plan.n_steps):
        cont = (plan.input_event[t] >= 0) & ~plan.reset[t]
        assert np.all(plan.input_event[t][cont] == plan.input_event[t - 1][cont] + 1)


def test_plan_include_last_steps_on_every_event():
    offsets = np.array([0, 3, 4, 6])
    plan = session_parallel_plan(offsets, batch_size=2, include_last=True)
    inputs = plan.input_event[plan.input_event >= 0]
    assert sorted(inputs.tolist()) == list(range(6))


def test_sampler_follows_popularity_power_and_is_reproducible():
    counts = np.array([0, 1, 4, 9, 16, 0, 100], np.float32)
    alpha = 0.5
    s = NegativeSampler(counts, n_sample=1000, alpha=alpha, seed=3, cache_steps=50)
    draws = s.draw(120)  # crosses cache refills
    assert draws.shape == (120, 1000)
    freq = np.bincount(draws.reshape(-1), minlength=len(counts)) / draws.size
    expected = np.where(counts > 0, counts**alpha, 0)
    expected = expected / expected.sum()
    assert freq[0] == 0 and freq[5] == 0
    np.testing.assert_allclose(freq, expected, atol=0.005)
    again = NegativeSampler(counts, n_sample=1000, alpha=alpha, seed=3, cache_steps=50).draw(120)
    assert np.array_equal(draws, again)


def test_refills_are_bounded_and_the_draws_do_not_depend_on_their_size():
    counts = np.arange(50, dtype=np.float32)
    big = NegativeSampler(counts, n_sample=2048, alpha=0.2, seed=5, cache_steps=4096)
    # A 4,096-step refill of 2,048 negatives would allocate tens of MB at once.
    assert big.cache_steps * big.n_sample <= MAX_REFILL_DRAWS
    small = NegativeSampler(counts, n_sample=2048, alpha=0.2, seed=5, cache_steps=3)
    draws = big.draw(300)
    assert np.array_equal(draws, np.concatenate([small.draw(100) for _ in range(3)]))


def test_popularity_cdf_alpha_zero_is_uniform_over_seen_items():
    cdf = popularity_cdf(np.array([0, 5, 1, 0, 2]), 0.0)
    np.testing.assert_allclose(np.diff(np.concatenate([[0], cdf])), [0, 1 / 3, 1 / 3, 0, 1 / 3])


def test_guided_search_equals_searchsorted():
    rng = np.random.default_rng(0)
    counts = rng.zipf(1.3, 3000).astype(np.float32)
    counts[0] = 0
    counts[rng.integers(0, 3000, 200)] = 0  # unseen items: flat steps in the CDF
    for alpha in (0.0, 0.2, 1.0):
        s = NegativeSampler(counts, n_sample=4, alpha=alpha, seed=0)
        u = np.concatenate([rng.random(200_000), [0.0, np.nextafter(1.0, 0.0)], s.cdf[:-1:7]])
        expect = np.minimum(np.searchsorted(s.cdf, u, side="right"), len(s.cdf) - 1)
        np.testing.assert_array_equal(s._search(u), expect)
