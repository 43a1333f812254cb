"""A seeded generator of e-commerce sessions with the structure real clickstreams have.

What it models, and why (each is something a test or a benchmark leans on):

* item popularity is Zipf-skewed (a popularity baseline is weak but not useless);
* items live in clusters and each item has a few preferred successors within its
  cluster, followed most of the time: a sparse Markov chain that a sequence model
  (or a most-frequent-successor baseline) can learn, far better than popularity;
* sessions sometimes go back to an earlier item and sometimes jump anywhere by
  popularity; with the defaults ~10 % of events repeat the previous item and, once
  those are removed, ~13 % of next items were already seen in the session (YooChoose:
  12 % and 13 %);
* session lengths are geometric (mean ~4; YooChoose's is 3.6), dwell times
  log-normal, a few minutes per session;
* users return: each user has several sessions, separated by at least
  `min_session_gap_s`, because the streaming service keys state by user;
* buys depend on behaviour: longer sessions, revisits, add-to-cart events and
  "buyable" items raise the chance that a session ends in a purchase.

`generate_sessions` returns `(events, buys)`, like the raw readers' `EventLog`:
browsing events (types `click` and `add_to_cart`) and purchases (type `purchase`),
each a `SessionEvents` with `user_ids`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rnnrec_jax.data.events import EventLog, SessionEvents

DEFAULT_START_TIME = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the generator; the defaults give YooChoose-like statistics.

    Attributes:
        zipf_exponent: popularity of the item at popularity rank r is ∝ r**-exponent;
            0.6 puts ~15 % of events on the top 1 % of 20k items (YooChoose's
            training split: 11 % on the top 1 % of 6.4k items).
        cluster_size: mean number of items per cluster (successors stay in-cluster).
        n_successors: preferred successors per item.
        successor_skew: successor j of an item is chosen ∝ (j + 1)**-skew.
        follow_prob: chance that the next event follows a preferred successor.
        revisit_prob: chance that it returns to an earlier item of the session.
            The rest (1 - follow - revisit) jumps to an item drawn by popularity.
        mean_session_length: mean of the geometric session length (>= 1).
        max_session_length: longest session generated.
        median_dwell_s: median seconds between two events of a session.
        dwell_sigma: log-normal sigma of that gap.
        span_days: session starts are spread over this many days.
        sessions_per_user: mean sessions per user.
        min_session_gap_s: a user's next session starts at least this long after
            the previous one ends (matches the 30 min sessionisation of Taobao).
        cart_prob: chance that an event is an add-to-cart.
        cart_prob_revisit: the same chance for an event that revisits an item.
        buy_intercept, buy_per_log_length, buy_per_revisit, buy_per_cart: the
            logistic model of "session ends in a purchase".
        item_buyability_sigma: spread of per-item purchase propensity (logit units),
            averaged over the session's items.
        median_buy_delay_s: median delay from the last event to the purchase.
    """

    zipf_exponent: float = 0.6
    cluster_size: int = 40
    n_successors: int = 6
    successor_skew: float = 1.0
    follow_prob: float = 0.7
    revisit_prob: float = 0.12
    mean_session_length: float = 4.0
    max_session_length: int = 200
    median_dwell_s: float = 50.0
    dwell_sigma: float = 1.0
    span_days: float = 30.0
    sessions_per_user: float = 3.0
    min_session_gap_s: float = 45 * 60.0
    cart_prob: float = 0.03
    cart_prob_revisit: float = 0.2
    buy_intercept: float = -4.6
    buy_per_log_length: float = 0.8
    buy_per_revisit: float = 0.25
    buy_per_cart: float = 1.4
    item_buyability_sigma: float = 0.7
    median_buy_delay_s: float = 300.0


def _zipf_weights(n: int, exponent: float) -> np.ndarray:
    return 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent


def _successor_table(
    rng: np.random.Generator, popularity: np.ndarray, config: SyntheticConfig
) -> np.ndarray:
    # Cluster items, then draw each item's successors from its own cluster by
    # popularity: one searchsorted over the cumulative popularity of the items
    # sorted by cluster, restricted to the item's cluster's slice of it.
    n_items = popularity.size
    n_clusters = max(1, n_items // max(1, config.cluster_size))
    cluster = rng.integers(n_clusters, size=n_items)
    by_cluster = np.argsort(cluster, kind="stable")
    cumulative = np.concatenate(([0.0], np.cumsum(popularity[by_cluster])))
    cluster_bounds = np.searchsorted(cluster[by_cluster], np.arange(n_clusters + 1))
    low = cumulative[cluster_bounds[cluster]]
    high = cumulative[cluster_bounds[cluster + 1]]
    draws = low[:, None] + rng.random((n_items, config.n_successors)) * (high - low)[:, None]
    position = np.searchsorted(cumulative, draws, side="right") - 1
    position = np.clip(
        position, cluster_bounds[cluster][:, None], cluster_bounds[cluster + 1][:, None] - 1
    )
    return by_cluster[position]


def _user_session_starts(
    rng: np.random.Generator,
    n_sessions: int,
    durations: np.ndarray,
    start_time: float,
    config: SyntheticConfig,
) -> tuple[np.ndarray, np.ndarray]:
    # Users have Zipf-ish activity, so some return often and most rarely.
    n_users = max(1, round(n_sessions / config.sessions_per_user))
    activity = _zipf_weights(n_users, 0.6)
    user = np.searchsorted(np.cumsum(activity), rng.random(n_sessions) * activity.sum())
    user = np.minimum(user, n_users - 1)
    wanted = rng.random(n_sessions) * config.span_days * 86_400.0
    order = np.lexsort((wanted, user))
    user_sorted, wanted_sorted = user[order], wanted[order]
    # Push sessions later where needed so that a user's sessions never overlap:
    # start_k = max(wanted_k, start_{k-1} + duration_{k-1} + gap) per user, which is
    # D_k + cummax_j<=k(wanted_j - D_j) with D the per-user cumulative push.
    push = np.zeros(n_sessions)
    push[1:] = durations[order][:-1] + config.min_session_gap_s
    first_of_user = np.ones(n_sessions, dtype=bool)
    first_of_user[1:] = user_sorted[1:] != user_sorted[:-1]
    push[first_of_user] = 0.0
    cumulative_push = pd.Series(push).groupby(user_sorted).cumsum().to_numpy()
    latest = pd.Series(wanted_sorted - cumulative_push).groupby(user_sorted).cummax().to_numpy()
    starts = np.empty(n_sessions)
    starts[order] = start_time + cumulative_push + latest
    return starts, user


def generate_sessions(
    n_sessions: int,
    n_items: int,
    seed: int,
    start_time: float = DEFAULT_START_TIME,
    config: SyntheticConfig | None = None,
) -> tuple[SessionEvents, SessionEvents]:
    """Generate sessions of returning users over a catalogue, with purchases.

    Args:
        n_sessions: number of sessions (every one has at least one event).
        n_items: catalogue size; item ids are the strings `100000000 + k`, numbered
            independently of popularity.
        seed: the random seed; equal arguments give equal output.
        start_time: epoch seconds of the earliest possible session start.
        config: generator settings (defaults: `SyntheticConfig()`).

    Returns:
        `(events, buys)`: browsing events (`click`/`add_to_cart`) and purchases
        (`purchase`, timed after the session's last event), both sorted, with
        `user_ids`. Session ids are decimal strings numbered in start-time order.
    """
    if n_sessions < 1 or n_items < 2:
        raise ValueError("need n_sessions >= 1 and n_items >= 2")
    config = config or SyntheticConfig()
    rng = np.random.default_rng(seed)

    popularity = _zipf_weights(n_items, config.zipf_exponent)[rng.permutation(n_items)]
    cumulative_popularity = np.cumsum(popularity)
    successors = _successor_table(rng, popularity, config)
    successor_choice = np.cumsum(_zipf_weights(config.n_successors, config.successor_skew))
    successor_choice /= successor_choice[-1]
    buyability = rng.normal(0.0, config.item_buyability_sigma, size=n_items)

    def popular_items(size: int) -> np.ndarray:
        draws = rng.random(size) * cumulative_popularity[-1]
        return np.minimum(np.searchsorted(cumulative_popularity, draws), n_items - 1)

    lengths = np.minimum(
        rng.geometric(1.0 / max(config.mean_session_length, 1.0), size=n_sessions),
        config.max_session_length,
    )
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    n_events = int(offsets[-1])
    items = np.empty(n_events, dtype=np.int64)
    is_revisit = np.zeros(n_events, dtype=bool)
    items[offsets[:-1]] = popular_items(n_sessions)
    # One vectorised step per position: all sessions still running advance together.
    for step in range(1, int(lengths.max())):
        running = np.flatnonzero(lengths > step)
        here = offsets[running] + step
        previous = items[here - 1]
        mode = rng.random(running.size)
        follow = mode < config.follow_prob
        revisit = ~follow & (mode < config.follow_prob + config.revisit_prob)
        jump = ~follow & ~revisit
        slot = np.searchsorted(successor_choice, rng.random(int(follow.sum())))
        items[here[follow]] = successors[previous[follow], slot]
        back = (rng.random(int(revisit.sum())) * step).astype(np.int64)
        items[here[revisit]] = items[offsets[running[revisit]] + back]
        is_revisit[here[revisit]] = True
        items[here[jump]] = popular_items(int(jump.sum()))

    cart = rng.random(n_events) < np.where(is_revisit, config.cart_prob_revisit, config.cart_prob)
    dwell = np.exp(
        np.log(config.median_dwell_s) + config.dwell_sigma * rng.standard_normal(n_events)
    ).clip(1.0, 1800.0)
    dwell[offsets[:-1]] = 0.0  # the first event is the session start
    session_of_event = np.repeat(np.arange(n_sessions), lengths)
    since_start = np.cumsum(dwell) - np.repeat(np.cumsum(dwell)[offsets[:-1]], lengths)
    durations = since_start[offsets[1:] - 1]
    starts, user = _user_session_starts(rng, n_sessions, durations, start_time, config)
    times = starts[session_of_event] + since_start

    starts_at = offsets[:-1]
    logit = (
        config.buy_intercept
        + config.buy_per_log_length * np.log(lengths)
        + config.buy_per_revisit * np.add.reduceat(is_revisit.astype(np.float64), starts_at)
        + config.buy_per_cart * np.add.reduceat(cart.astype(np.float64), starts_at)
        + np.add.reduceat(buyability[items], starts_at) / lengths
    )
    bought = rng.random(n_sessions) < 1.0 / (1.0 + np.exp(-logit))
    buy_delay = np.exp(np.log(config.median_buy_delay_s) + 0.8 * rng.standard_normal(n_sessions))
    # A buying session buys what it put in the cart, or else its last item.
    last_event = offsets[1:] - 1
    has_cart = np.add.reduceat(cart.astype(np.int64), starts_at) > 0
    buy_rows = np.concatenate(
        (
            np.flatnonzero(cart & bought[session_of_event]),
            last_event[bought & ~has_cart],
        )
    )
    buy_sessions = session_of_event[buy_rows]
    buy_times = times[last_event[buy_sessions]] + buy_delay[buy_sessions]

    # Number sessions by start time, as YooChoose's ids grow with time.
    session_number = np.empty(n_sessions, dtype=np.int64)
    session_number[np.argsort(starts, kind="stable")] = np.arange(n_sessions)
    session_ids = (session_number + 1).astype(str)
    user_of_session = (user + 1).astype(str)
    item_ids = (items + 100_000_000).astype(str)
    events = SessionEvents.from_arrays(
        session_ids[session_of_event],
        item_ids,
        times,
        event_types=np.where(cart, "add_to_cart", "click"),
        user_ids=user_of_session[session_of_event],
    )
    buys = SessionEvents.from_arrays(
        session_ids[buy_sessions],
        item_ids[buy_rows],
        buy_times,
        event_types=np.full(buy_rows.size, "purchase"),
        user_ids=user_of_session[buy_sessions],
    )
    return events, buys


def generate_event_log(
    n_sessions: int,
    n_items: int,
    seed: int,
    start_time: float = DEFAULT_START_TIME,
    config: SyntheticConfig | None = None,
) -> EventLog:
    """`generate_sessions` packed as an `EventLog` (same arguments and output)."""
    events, buys = generate_sessions(n_sessions, n_items, seed, start_time, config)
    return EventLog(events=events, buys=buys)
