"""The synthetic generator: determinism, skew, learnable transitions, sane purchases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rnnrec_jax.data.events import SessionEvents
from rnnrec_jax.data.synthetic import SyntheticConfig, generate_event_log, generate_sessions

pytestmark = pytest.mark.unit

N_SESSIONS, N_ITEMS = 20_000, 3_000


@pytest.fixture(scope="module")
def generated() -> tuple[SessionEvents, SessionEvents]:
    return generate_sessions(N_SESSIONS, N_ITEMS, seed=7)


def test_same_seed_same_data_other_seed_other_data(generated):
    events, buys = generated
    again_events, again_buys = generate_sessions(N_SESSIONS, N_ITEMS, seed=7)
    assert events.equals(again_events)
    assert buys.equals(again_buys)
    other, _ = generate_sessions(N_SESSIONS, N_ITEMS, seed=8)
    assert not events.equals(other)


def test_shape_of_the_sessions(generated):
    events, buys = generated
    assert events.n_sessions == N_SESSIONS
    assert 3.0 <= events.session_lengths().mean() <= 5.0
    assert set(np.unique(events.event_types)) == {"click", "add_to_cart"}
    assert set(np.unique(buys.event_types)) == {"purchase"}
    # Session ids are numbered in start-time order.
    starts = events.session_start_times()
    assert (np.diff(starts) >= 0).all()
    gaps = np.diff(events.times)[events.session_ids[1:] == events.session_ids[:-1]]
    assert 20.0 <= np.median(gaps) <= 120.0


def test_popularity_is_skewed(generated):
    events, _ = generated
    counts = np.sort(pd.Series(events.item_ids).value_counts().to_numpy())[::-1]
    top_share = counts[: N_ITEMS // 100].sum() / counts.sum()
    # 1 % of the catalogue gets over 10x its uniform share (YooChoose: 11 %), but the
    # head does not swamp everything (a popularity baseline should stay weak).
    assert 0.1 < top_share < 0.4


def recall_at_20(events: SessionEvents) -> tuple[float, float]:
    """Recall@20 of popularity and of the most frequent successors, by time split."""
    index = events.session_index()
    cut = np.quantile(events.session_start_times(), 0.8)
    in_train = events.session_start_times()[index] < cut
    is_pair = np.zeros(events.n_events, dtype=bool)
    is_pair[1:] = index[1:] == index[:-1]
    previous, following = events.item_ids[:-1], events.item_ids[1:]
    train_pairs = pd.DataFrame(
        {
            "previous": previous[is_pair[1:] & in_train[1:]],
            "next": following[is_pair[1:] & in_train[1:]],
        }
    )
    test_pairs = pd.DataFrame(
        {
            "previous": previous[is_pair[1:] & ~in_train[1:]],
            "next": following[is_pair[1:] & ~in_train[1:]],
        }
    )
    top_popular = pd.Series(events.item_ids[in_train]).value_counts().index[:20]
    popularity_recall = test_pairs["next"].isin(top_popular).mean()
    counts = train_pairs.value_counts().rename("count").reset_index()
    # Pessimistic ties: rank = number of successors counted at least as often.
    counts["rank"] = counts.groupby("previous")["count"].rank(method="max", ascending=False)
    ranked = test_pairs.merge(counts, on=["previous", "next"], how="left")
    markov_recall = (ranked["rank"] <= 20).mean()
    return float(popularity_recall), float(markov_recall)


def test_transitions_are_learnable(generated):
    events, _ = generated
    popularity_recall, markov_recall = recall_at_20(events)
    assert markov_recall > 0.5
    assert markov_recall > 3 * popularity_recall


def test_purchases_are_sane_and_follow_behaviour(generated):
    events, buys = generated
    bought = np.isin(events.session_keys(), buys.session_ids)
    assert 0.02 <= bought.mean() <= 0.15
    lengths = events.session_lengths()
    assert bought[lengths >= 6].mean() > 3 * bought[lengths <= 2].mean()
    has_cart = (
        np.bincount(
            events.session_index()[events.event_types == "add_to_cart"], minlength=events.n_sessions
        )
        > 0
    )
    assert bought[has_cart].mean() > 2 * bought[~has_cart].mean()
    # Buys come after the session's last click and are of items it clicked.
    last_time = pd.Series(
        events.times[events.session_offsets()[1:] - 1], index=events.session_keys()
    )
    assert (buys.times > last_time.reindex(buys.session_ids).to_numpy()).all()
    clicked = set(zip(events.session_ids.tolist(), events.item_ids.tolist(), strict=True))
    assert all(
        pair in clicked
        for pair in zip(buys.session_ids.tolist(), buys.item_ids.tolist(), strict=True)
    )


def test_users_return_without_overlapping_sessions(generated):
    events, _ = generated
    config = SyntheticConfig()
    offsets = events.session_offsets()
    sessions = pd.DataFrame(
        {
            "user": events.user_ids[offsets[:-1]],
            "start": events.times[offsets[:-1]],
            "end": events.times[offsets[1:] - 1],
        }
    ).sort_values(["user", "start"])
    per_user = sessions.groupby("user").size()
    assert per_user.mean() >= 2.0
    assert (per_user >= 3).sum() > 0.2 * per_user.size
    same_user = sessions["user"].to_numpy()[1:] == sessions["user"].to_numpy()[:-1]
    pause = sessions["start"].to_numpy()[1:] - sessions["end"].to_numpy()[:-1]
    assert (pause[same_user] >= config.min_session_gap_s - 1e-6).all()
    # Every event of a session carries the session's user.
    assert (events.user_ids == np.repeat(events.user_ids[offsets[:-1]], np.diff(offsets))).all()


def test_event_log_wrapper_and_argument_checks():
    log = generate_event_log(50, 10, seed=1, start_time=0.0)
    assert log.events.n_sessions == 50
    assert log.events.times.min() >= 0.0
    with pytest.raises(ValueError):
        generate_sessions(0, 10, seed=1)
