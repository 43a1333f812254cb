"""Purchase prediction on top of a frozen next-item model (ANCHORS.md "Purchase prediction").

Task: after each event of a session, the probability that the session ends in a buy.
Evaluation reads it at the session's last event strictly before its first buy
(`rnnrec_jax.data.purchases.purchase_inputs`), so this module trains on the same kind
of point.

Serving keeps, per user, a small fixed-size float32 vector of running session
statistics (`N_STATS` floats) beside the recurrent state and updates it event by
event with `purchase_features_update`; `purchase_probability` turns the frozen GRU's
top-layer hidden state plus those statistics into a calibrated probability. Both are
pure `jax.numpy`, jittable and batchable (leading axes broadcast).

Pieces:

* `PriorTables`: item and category buy-rate priors learned from TRAINING sessions
  only, smoothed towards the base rate (Bayesian average with `smoothing` pseudo
  sessions) and stored as logits: P(item bought | item clicked), P(session buys |
  item clicked), log item popularity, P(session buys | category clicked).
* the running statistics (`STATS_*` layout): counts, times, dwell, revisits over a
  window of the last `WINDOW` items, sums and maxima of the priors, special-offer and
  missing-category counts. `batch_stats` computes the same vector for every event of
  many sessions at once with numpy (training data); it equals running the update.
* `stats_features`: the derived feature vector (`FEATURE_NAMES`).
* the classifier: logistic regression or a one-hidden-layer MLP over the
  standardised features and (optionally) the standardised hidden state, trained with
  optax (Adam, L2, weighted BCE, early stopping on validation AUC), followed by a
  calibration map fitted on held-out data: Platt scaling, or a monotone
  (pool-adjacent-violators) binning interpolated between bin centres.
* `PurchaseModel`: params pytree + prior tables + JSON metadata, round-tripping
  through `to_arrays()` / `from_arrays()` (flat numpy dict, npz-ready).

Training rows use out-of-fold priors (`out_of_fold_event_priors`): a training
session's own label never enters the prior values it is trained on, so the weights
learnt for the priors transfer to unseen sessions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from rnnrec_jax import calibration
from rnnrec_jax.data.events import SessionEvents
from rnnrec_jax.data.purchases import first_buy_times
from rnnrec_jax.metrics import roc_auc

Array = jax.Array
Params = dict[str, Any]

SECONDS_PER_DAY = 86_400.0
MAX_GAP_S = 3_600.0
"""Gaps between events are clipped to this before `log1p` (a long pause is a pause)."""
WINDOW = 32
"""Number of recent items the running statistics remember for revisit counting."""
SPECIAL_CATEGORY = "S"
MISSING_CATEGORY = "0"

# ----------------------------------------------------------------- stats layout
STATS_COUNT = 0
STATS_START_DAY = 1
STATS_START_SEC = 2
STATS_LAST_DAY = 3
STATS_LAST_SEC = 4
STATS_DWELL_SUM = 5
STATS_LAST_LOG_GAP = 6
STATS_MAX_LOG_GAP = 7
STATS_N_REPEAT = 8
STATS_MAX_ITEM_COUNT = 9
STATS_BUY_SUM = 10
STATS_BUY_MAX = 11
STATS_BUY_LAST = 12
STATS_SESS_SUM = 13
STATS_SESS_MAX = 14
STATS_CAT_SUM = 15
STATS_CAT_MAX = 16
STATS_N_SPECIAL = 17
STATS_N_MISSING = 18
STATS_POP_SUM = 19
STATS_REPEAT_BUY_MAX = 20
STATS_WINDOW = 21
N_STATS = STATS_WINDOW + WINDOW
"""Length of the per-user statistics vector (float32)."""
NO_VALUE = -30.0
"""Stand-in for "no value yet" in running maxima (a logit far below any prior)."""

FEATURE_NAMES: tuple[str, ...] = (
    "log_count",
    "log_distinct",
    "repeat_share",
    "log_max_item_count",
    "log_duration",
    "mean_log_gap",
    "last_log_gap",
    "max_log_gap",
    "hour_sin",
    "hour_cos",
    "weekday_sin",
    "weekday_cos",
    "item_buy_mean",
    "item_buy_max",
    "item_buy_last",
    "item_session_mean",
    "item_session_max",
    "category_mean",
    "category_max",
    "special_share",
    "missing_category_share",
    "popularity_mean",
    "repeated_item_buy_max",
    "has_repeat",
)
N_FEATURES = len(FEATURE_NAMES)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def split_epoch_seconds(times: np.ndarray) -> np.ndarray:
    """Split float64 epoch seconds into float32 `[day, second of day]` pairs.

    float32 cannot hold epoch seconds to the millisecond (its step near 1.4e9 is
    128 s), so the running statistics keep day numbers and seconds of the day
    separately; both are exact enough in float32 (days are integers < 2**24, seconds
    of day step ~8 ms).

    Args:
        times: epoch seconds (UTC), any shape.

    Returns:
        float32 array of shape `times.shape + (2,)`.
    """
    t = np.asarray(times, np.float64)
    day = np.floor(t / SECONDS_PER_DAY)
    return np.stack([day, t - day * SECONDS_PER_DAY], axis=-1).astype(np.float32)


# ------------------------------------------------------------------- priors


@dataclass(frozen=True, eq=False)
class PriorTables:
    """Buy-rate priors learned from training sessions (logit scale).

    Attributes:
        item_buy: float32 (capacity,) logit P(item bought | clicked in a session).
        item_session: float32 (capacity,) logit P(session buys | item clicked).
        item_log_count: float32 (capacity,) log(1 + training sessions clicking it).
        category_session: float32 (n_categories + 1,) logit P(session buys | category
            clicked); row 0 is the unknown category.
        categories: category strings of rows 1.. (index = position + 1).
    """

    item_buy: np.ndarray
    item_session: np.ndarray
    item_log_count: np.ndarray
    category_session: np.ndarray
    categories: tuple[str, ...]

    def category_index(self, categories: np.ndarray | None, n: int | None = None) -> np.ndarray:
        """Map category strings to table rows (0 for unknown or None).

        Args:
            categories: '<U' categories, or None (all unknown; then `n` is the length).
            n: number of rows when `categories` is None.

        Returns:
            int32 row per entry.
        """
        if categories is None:
            return np.zeros(int(n or 0), np.int32)
        lookup = pd.Series(np.arange(1, len(self.categories) + 1), index=list(self.categories))
        idx = lookup.reindex(np.asarray(categories).astype(str)).to_numpy()
        return np.nan_to_num(idx, nan=0).astype(np.int32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat numpy dict (categories as a '<U' array)."""
        return {
            "item_buy": self.item_buy,
            "item_session": self.item_session,
            "item_log_count": self.item_log_count,
            "category_session": self.category_session,
            "categories": np.asarray(self.categories, dtype=str),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> PriorTables:
        """Inverse of `to_arrays`."""
        return cls(
            item_buy=np.asarray(arrays["item_buy"], np.float32),
            item_session=np.asarray(arrays["item_session"], np.float32),
            item_log_count=np.asarray(arrays["item_log_count"], np.float32),
            category_session=np.asarray(arrays["category_session"], np.float32),
            categories=tuple(str(c) for c in np.asarray(arrays["categories"]).tolist()),
        )

    def jax_tables(self) -> dict[str, Array]:
        """The numeric tables as jax arrays (what `purchase_features_update` reads)."""
        return {
            "item_buy": jnp.asarray(self.item_buy),
            "item_session": jnp.asarray(self.item_session),
            "item_log_count": jnp.asarray(self.item_log_count),
            "category_session": jnp.asarray(self.category_session),
        }


@dataclass(frozen=True)
class TrainingEvents:
    """Training or evaluation events prepared for the purchase model.

    Attributes:
        items: int32 (N,) item index in the next-item vocabulary (0 = unknown).
        times: float64 (N,) epoch seconds.
        offsets: int64 (S+1,) session boundaries (events time-ordered inside).
        session_ids: '<U' (S,) session ids.
        categories: '<U' (N,) category per event, or None.
        labels: int8 (S,) 1 when the session has a buy.
        n_inputs: int64 (S,) usable events (before the first buy); may be 0.
        bought: bool (N,) the event's item is among the session's bought items.
    """

    items: np.ndarray
    times: np.ndarray
    offsets: np.ndarray
    session_ids: np.ndarray
    categories: np.ndarray | None
    labels: np.ndarray
    n_inputs: np.ndarray
    bought: np.ndarray

    @property
    def n_sessions(self) -> int:
        """Number of sessions."""
        return int(self.offsets.size - 1)

    def session_index(self) -> np.ndarray:
        """Session number of every event."""
        return np.repeat(np.arange(self.n_sessions), np.diff(self.offsets))

    def position(self) -> np.ndarray:
        """0-based position of every event inside its session."""
        return np.arange(self.items.size) - np.repeat(self.offsets[:-1], np.diff(self.offsets))

    def usable(self) -> np.ndarray:
        """bool (N,): the event precedes its session's first buy."""
        return self.position() < np.repeat(self.n_inputs, np.diff(self.offsets))

    def prediction_points(self) -> np.ndarray:
        """int64 event row of each session's prediction point (-1 when n_inputs == 0)."""
        return np.where(self.n_inputs > 0, self.offsets[:-1] + self.n_inputs - 1, -1)


def prepare_events(
    events: SessionEvents,
    buys: SessionEvents | None,
    encode: Any,
    categories: np.ndarray | None = None,
) -> TrainingEvents:
    """Encode a split's sessions and attach labels, usable prefixes and bought flags.

    Args:
        events: the sessions (e.g. `train_tr`), grouped and time-ordered.
        buys: the raw buys (all buy rows), or None.
        encode: callable item ids -> int32 indices of the next-item vocabulary.
        categories: '<U' category per event (e.g. from `attach_categories`), or None.

    Returns:
        `TrainingEvents` in the table order of `events`.
    """
    keys = events.session_keys()
    lengths = events.session_lengths()
    first_buy = first_buy_times(buys).reindex(keys.astype(object)).to_numpy(np.float64)
    labels = np.isfinite(first_buy).astype(np.int8)
    before = ~(events.times >= np.repeat(first_buy, lengths))
    n_inputs = np.bincount(events.session_index()[before], minlength=keys.size).astype(np.int64)
    bought = np.zeros(events.n_events, bool)
    if buys is not None and buys.n_events:
        pairs = pd.MultiIndex.from_arrays([buys.session_ids, buys.item_ids]).unique()
        bought = pd.MultiIndex.from_arrays([events.session_ids, events.item_ids]).isin(pairs)
    return TrainingEvents(
        items=np.asarray(encode(events.item_ids), np.int32),
        times=events.times.astype(np.float64),
        offsets=events.session_offsets().astype(np.int64),
        session_ids=keys,
        categories=None if categories is None else np.asarray(categories).astype(str),
        labels=labels,
        n_inputs=n_inputs,
        bought=np.asarray(bought, bool),
    )


def attach_categories(events: SessionEvents, raw_clicks: SessionEvents) -> np.ndarray:
    """Category of each event, joined from the raw clicks by (session, time to the ms).

    Args:
        events: split events (a subset of the raw clicks, same sessions and times).
        raw_clicks: `read_yoochoose_clicks` output (with `categories`).

    Returns:
        '<U' category per event ('' where no raw click matches).
    """
    if raw_clicks.categories is None:
        raise ValueError("raw_clicks has no categories")
    raw = pd.DataFrame(
        {
            "s": raw_clicks.session_ids,
            "t": np.round(raw_clicks.times * 1e3).astype(np.int64),
            "c": raw_clicks.categories,
        }
    ).drop_duplicates(["s", "t"])
    key = pd.MultiIndex.from_arrays([raw["s"], raw["t"]])
    lookup = pd.Series(raw["c"].to_numpy(), index=key)
    want = pd.MultiIndex.from_arrays(
        [events.session_ids, np.round(events.times * 1e3).astype(np.int64)]
    )
    return lookup.reindex(want).fillna("").to_numpy(dtype=str)


def build_priors(
    data: TrainingEvents,
    capacity: int,
    *,
    smoothing: float = 20.0,
    session_mask: np.ndarray | None = None,
    categories: tuple[str, ...] | None = None,
) -> PriorTables:
    """Smoothed buy-rate priors from the usable events of (a subset of) training sessions.

    Each (session, item) pair counts once. With `m = smoothing` pseudo observations at
    the global rate r: `p = (positives + m r) / (observations + m)`.

    Args:
        data: training events (`prepare_events`).
        capacity: item table size (indices >= capacity are ignored).
        smoothing: pseudo-count m of the Bayesian average.
        session_mask: bool (S,) sessions to learn from (default all).
        categories: category vocabulary to use (default: the categories seen).

    Returns:
        `PriorTables`.
    """
    use = data.usable()
    sess = data.session_index()
    if session_mask is not None:
        use &= np.asarray(session_mask, bool)[sess]
    frame = pd.DataFrame(
        {
            "s": sess[use],
            "item": data.items[use],
            "bought": data.bought[use],
            "y": data.labels[sess[use]].astype(np.float64),
        }
    )
    pairs = frame.drop_duplicates(["s", "item"])
    pairs = pairs[(pairs["item"] > 0) & (pairs["item"] < capacity)]
    n_obs = np.bincount(pairs["item"], minlength=capacity)[:capacity].astype(np.float64)
    n_bought = np.bincount(pairs["item"], weights=pairs["bought"], minlength=capacity)[:capacity]
    n_pos = np.bincount(pairs["item"], weights=pairs["y"], minlength=capacity)[:capacity]
    session_rate = float(data.labels[np.unique(frame["s"])].mean()) if len(frame) else 0.05
    buy_rate = float(n_bought.sum() / max(n_obs.sum(), 1.0))
    m = float(smoothing)
    denom = np.maximum(n_obs + m, 1e-12)
    seen = n_obs + m > 0  # with m = 0, unseen items fall back to the base rates
    item_buy = _logit(np.where(seen, (n_bought + m * buy_rate) / denom, buy_rate))
    item_session = _logit(np.where(seen, (n_pos + m * session_rate) / denom, session_rate))
    if data.categories is not None:
        cats = data.categories[use]
        if categories is None:
            categories = tuple(sorted(set(cats.tolist()) - {""}))
        cat_frame = pd.DataFrame({"s": frame["s"], "c": cats, "y": frame["y"]})
        cat_pairs = cat_frame.drop_duplicates(["s", "c"])
        grouped = cat_pairs.groupby("c")["y"].agg(["sum", "size"])
        grouped = grouped.reindex(list(categories)).fillna(0.0)
        rate = (grouped["sum"].to_numpy() + m * session_rate) / (grouped["size"].to_numpy() + m)
        category_session = np.concatenate([[_logit(np.array(session_rate))], _logit(rate)])
    else:
        categories = ()
        category_session = _logit(np.array([session_rate]))
    return PriorTables(
        item_buy=item_buy.astype(np.float32),
        item_session=item_session.astype(np.float32),
        item_log_count=np.log1p(n_obs).astype(np.float32),
        category_session=np.asarray(category_session, np.float32).reshape(-1),
        categories=tuple(categories),
    )


@dataclass(frozen=True)
class EventPriors:
    """Per-event prior values and category flags (the inputs of the statistics)."""

    item_buy: np.ndarray
    item_session: np.ndarray
    item_log_count: np.ndarray
    category_session: np.ndarray
    special: np.ndarray
    missing: np.ndarray


def _category_flags(data: TrainingEvents) -> tuple[np.ndarray, np.ndarray]:
    if data.categories is None:
        z = np.zeros(data.items.size, np.float32)
        return z, z
    return (
        (data.categories == SPECIAL_CATEGORY).astype(np.float32),
        (data.categories == MISSING_CATEGORY).astype(np.float32),
    )


def event_priors(data: TrainingEvents, tables: PriorTables) -> EventPriors:
    """Look up the prior values of every event in one set of tables.

    Args:
        data: the events.
        tables: the priors.

    Returns:
        `EventPriors` (float32 arrays of length N).
    """
    items = np.where(data.items < tables.item_buy.size, data.items, 0)
    cat = tables.category_index(data.categories, data.items.size)
    special, missing = _category_flags(data)
    return EventPriors(
        tables.item_buy[items],
        tables.item_session[items],
        tables.item_log_count[items],
        tables.category_session[cat],
        special,
        missing,
    )


def session_folds(session_ids: np.ndarray, n_folds: int, seed: int = 0) -> np.ndarray:
    """Deterministic fold (0..n_folds-1) of each session id (a keyed hash of the id).

    Seeds 0 to 9,999; the hash key is 16 characters (seed 0's key is the one used for
    every reported figure; it was "{seed:05d}" cut to 16, which gave seeds 0-9 one key).
    """
    if not 0 <= seed < 10_000:
        raise ValueError(f"fold seed must be in 0..9999, got {seed}")
    key = f"rnnrec-fold-{seed:04d}"
    hashed = pd.util.hash_array(np.asarray(session_ids).astype(str).astype(object), hash_key=key)
    return (hashed % np.uint64(n_folds)).astype(np.int64)


def out_of_fold_event_priors(
    data: TrainingEvents,
    capacity: int,
    *,
    smoothing: float = 20.0,
    n_folds: int = 5,
    seed: int = 0,
    prior_data: TrainingEvents | None = None,
) -> EventPriors:
    """Per-event priors where each session's values come from the other folds' sessions.

    Folds are assigned by session id, so when the priors are learned from a larger
    table (`prior_data`, e.g. all raw clicks of the training period) a session's own
    clicks and label are still excluded from its values.

    Args:
        data: training events (the rows that get prior values).
        capacity: item table size.
        smoothing: Bayesian-average pseudo-count.
        n_folds: number of session folds.
        seed: fold assignment seed.
        prior_data: events the priors are learned from (default `data`).

    Returns:
        `EventPriors` for every event of `data`.
    """
    source = data if prior_data is None else prior_data
    fold = session_folds(data.session_ids, n_folds, seed)
    source_fold = session_folds(source.session_ids, n_folds, seed)
    fold_of_event = fold[data.session_index()]
    all_cats = build_priors(source, capacity, smoothing=smoothing).categories
    parts = {k: np.zeros(data.items.size, np.float32) for k in ("b", "s", "c", "g")}
    for k in range(n_folds):
        tables = build_priors(
            source,
            capacity,
            smoothing=smoothing,
            session_mask=source_fold != k,
            categories=all_cats,
        )
        ep = event_priors(data, tables)
        sel = fold_of_event == k
        parts["b"][sel] = ep.item_buy[sel]
        parts["s"][sel] = ep.item_session[sel]
        parts["c"][sel] = ep.item_log_count[sel]
        parts["g"][sel] = ep.category_session[sel]
    special, missing = _category_flags(data)
    return EventPriors(parts["b"], parts["s"], parts["c"], parts["g"], special, missing)


def training_period_sessions(
    raw_clicks: SessionEvents, cut: float, exclude: np.ndarray | None = None
) -> SessionEvents:
    """Raw sessions wholly before `cut` (optionally minus some session ids).

    Args:
        raw_clicks: raw clicks (with categories).
        cut: epoch seconds; sessions with any click at or after it are dropped.
        exclude: session ids to drop as well (e.g. the evaluation sessions).

    Returns:
        The kept sessions' clicks.
    """
    last = np.maximum.reduceat(raw_clicks.times, raw_clicks.session_offsets()[:-1])
    keep = last < cut
    if exclude is not None:
        keep &= ~np.isin(raw_clicks.session_keys(), np.asarray(exclude).astype(str))
    return raw_clicks.filter_sessions(keep)


# -------------------------------------------------------------- running statistics


def initial_stats(batch_shape: tuple[int, ...] = ()) -> Array:
    """Statistics of an empty session: zeros, running maxima at `NO_VALUE`.

    Args:
        batch_shape: leading shape (e.g. `(n_users,)`).

    Returns:
        float32 array `batch_shape + (N_STATS,)`.
    """
    s = np.zeros(N_STATS, np.float32)
    for i in (STATS_BUY_MAX, STATS_SESS_MAX, STATS_CAT_MAX, STATS_REPEAT_BUY_MAX):
        s[i] = NO_VALUE
    return jnp.broadcast_to(jnp.asarray(s), (*batch_shape, N_STATS))


def _update_from_values(
    stats: Array,
    item: Array,
    day: Array,
    sec: Array,
    buy: Array,
    sess: Array,
    log_count: Array,
    cat: Array,
    special: Array,
    missing: Array,
) -> Array:
    """Core update from already looked-up values (all inputs broadcast over batch)."""
    item_f = item.astype(jnp.float32)
    count = stats[..., STATS_COUNT]
    first = count == 0
    gap = (day - stats[..., STATS_LAST_DAY]) * SECONDS_PER_DAY + (sec - stats[..., STATS_LAST_SEC])
    log_gap = jnp.where(first, 0.0, jnp.log1p(jnp.clip(gap, 0.0, MAX_GAP_S)))
    window = stats[..., STATS_WINDOW:]
    in_window = (window == item_f[..., None]) & (item_f[..., None] > 0)
    n_same = jnp.sum(in_window, axis=-1).astype(jnp.float32)
    repeat = n_same > 0
    new_window = jnp.concatenate([window[..., 1:], item_f[..., None]], axis=-1)
    head = [
        count + 1.0,
        jnp.where(first, day, stats[..., STATS_START_DAY]),
        jnp.where(first, sec, stats[..., STATS_START_SEC]),
        day,
        sec,
        stats[..., STATS_DWELL_SUM] + log_gap,
        log_gap,
        jnp.maximum(stats[..., STATS_MAX_LOG_GAP], log_gap),
        stats[..., STATS_N_REPEAT] + repeat.astype(jnp.float32),
        jnp.maximum(stats[..., STATS_MAX_ITEM_COUNT], n_same + 1.0),
        stats[..., STATS_BUY_SUM] + buy,
        jnp.maximum(stats[..., STATS_BUY_MAX], buy),
        buy,
        stats[..., STATS_SESS_SUM] + sess,
        jnp.maximum(stats[..., STATS_SESS_MAX], sess),
        stats[..., STATS_CAT_SUM] + cat,
        jnp.maximum(stats[..., STATS_CAT_MAX], cat),
        stats[..., STATS_N_SPECIAL] + special,
        stats[..., STATS_N_MISSING] + missing,
        stats[..., STATS_POP_SUM] + log_count,
        jnp.where(
            repeat,
            jnp.maximum(stats[..., STATS_REPEAT_BUY_MAX], buy),
            stats[..., STATS_REPEAT_BUY_MAX],
        ),
    ]
    head = jnp.stack(jnp.broadcast_arrays(*head), axis=-1)
    return jnp.concatenate([head, new_window], axis=-1).astype(jnp.float32)


def purchase_features_update(
    stats: Array,
    item_idx: Array,
    time: Array,
    tables: Mapping[str, Array],
    category_idx: Array | None = None,
    special: Array | None = None,
    missing: Array | None = None,
) -> Array:
    """Advance the running statistics by one event (jittable, batchable).

    Args:
        stats: float32 `(..., N_STATS)` current statistics (`initial_stats` for a new
            session).
        item_idx: int `(...)` item index in the next-item vocabulary (0 = unknown).
        time: float32 `(..., 2)` `[day, second of day]` from `split_epoch_seconds`.
        tables: `PriorTables.jax_tables()`.
        category_idx: int `(...)` row of the event's category (`PriorTables.category_index`),
            or None (unknown category).
        special: float `(...)` 1 when the event's category is a special offer ('S').
        missing: float `(...)` 1 when the event's category is missing ('0').

    Returns:
        The updated float32 statistics, same shape as `stats`.
    """
    item_idx = jnp.asarray(item_idx, jnp.int32)
    capacity = tables["item_buy"].shape[0]
    safe = jnp.where((item_idx >= 0) & (item_idx < capacity), item_idx, 0)
    cat = jnp.zeros_like(safe) if category_idx is None else jnp.asarray(category_idx, jnp.int32)
    zero = jnp.zeros(safe.shape, jnp.float32)
    time = jnp.asarray(time, jnp.float32)
    return _update_from_values(
        stats,
        safe,
        time[..., 0],
        time[..., 1],
        tables["item_buy"][safe],
        tables["item_session"][safe],
        tables["item_log_count"][safe],
        tables["category_session"][cat],
        zero if special is None else jnp.asarray(special, jnp.float32),
        zero if missing is None else jnp.asarray(missing, jnp.float32),
    )


def _segment_cummax(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Running maximum restarting at each session start (values float64)."""
    # Offset each session by a large multiple of its number so a plain cummax works.
    span = float(np.nanmax(np.abs(values))) * 2.0 + 1.0 if values.size else 1.0
    sess = np.repeat(np.arange(lengths.size), lengths).astype(np.float64)
    shifted = values + sess * span * 4.0
    return np.maximum.accumulate(shifted) - sess * span * 4.0


def batch_stats(
    items: np.ndarray,
    times: np.ndarray,
    offsets: np.ndarray,
    priors: EventPriors,
) -> np.ndarray:
    """The running statistics after every event, for many sessions at once (numpy).

    Equals applying `purchase_features_update` event by event from `initial_stats()`
    (up to float32 rounding of times).

    Args:
        items: int (N,) item indices, sessions contiguous and time-ordered.
        times: float64 (N,) epoch seconds.
        offsets: int64 (S+1,) session boundaries.
        priors: per-event prior values (`event_priors` / `out_of_fold_event_priors`).

    Returns:
        float32 (N, N_STATS): row i = statistics after event i.
    """
    items = np.asarray(items, np.int64)
    n = items.size
    lengths = np.diff(offsets)
    starts = np.repeat(offsets[:-1], lengths)
    pos = np.arange(n) - starts
    sess = np.repeat(np.arange(lengths.size), lengths)
    out = np.zeros((n, N_STATS), np.float64)
    dt = split_epoch_seconds(times).astype(np.float64)
    # Gaps from the float32 [day, second] pairs, as the running update sees them.
    gap = np.zeros(n)
    gap[1:] = (dt[1:, 0] - dt[:-1, 0]) * SECONDS_PER_DAY + (dt[1:, 1] - dt[:-1, 1])
    log_gap = np.where(pos == 0, 0.0, np.log1p(np.clip(gap, 0.0, MAX_GAP_S)))

    def cumsum(v: np.ndarray) -> np.ndarray:
        c = np.cumsum(v, dtype=np.float64)
        base = np.concatenate([[0.0], c])[starts]
        return c - base

    def cummax(v: np.ndarray) -> np.ndarray:
        return _segment_cummax(np.asarray(v, np.float64), offsets, lengths)

    # Occurrences of the same item among the previous WINDOW events of the session.
    n_same = np.zeros(n)
    window = np.zeros((n, WINDOW))
    for lag in range(1, WINDOW + 1):
        ok = pos >= lag
        idx = np.flatnonzero(ok)
        prev = items[idx - lag]
        n_same[idx] += (prev == items[idx]) & (items[idx] > 0)
        if lag <= WINDOW - 1:
            window[idx, WINDOW - 1 - lag] = prev
    window[:, WINDOW - 1] = items
    repeat = n_same > 0
    out[:, STATS_COUNT] = pos + 1
    out[:, STATS_START_DAY] = dt[starts, 0]
    out[:, STATS_START_SEC] = dt[starts, 1]
    out[:, STATS_LAST_DAY] = dt[:, 0]
    out[:, STATS_LAST_SEC] = dt[:, 1]
    out[:, STATS_DWELL_SUM] = cumsum(log_gap)
    out[:, STATS_LAST_LOG_GAP] = log_gap
    out[:, STATS_MAX_LOG_GAP] = cummax(log_gap)
    out[:, STATS_N_REPEAT] = cumsum(repeat.astype(np.float64))
    out[:, STATS_MAX_ITEM_COUNT] = cummax(n_same + 1.0)
    out[:, STATS_BUY_SUM] = cumsum(priors.item_buy)
    out[:, STATS_BUY_MAX] = cummax(priors.item_buy)
    out[:, STATS_BUY_LAST] = priors.item_buy
    out[:, STATS_SESS_SUM] = cumsum(priors.item_session)
    out[:, STATS_SESS_MAX] = cummax(priors.item_session)
    out[:, STATS_CAT_SUM] = cumsum(priors.category_session)
    out[:, STATS_CAT_MAX] = cummax(priors.category_session)
    out[:, STATS_N_SPECIAL] = cumsum(priors.special)
    out[:, STATS_N_MISSING] = cumsum(priors.missing)
    out[:, STATS_POP_SUM] = cumsum(priors.item_log_count)
    out[:, STATS_REPEAT_BUY_MAX] = cummax(
        np.where(repeat, priors.item_buy.astype(np.float64), NO_VALUE)
    )
    out[:, STATS_WINDOW:] = window
    del sess
    return out.astype(np.float32)


def stats_features(stats: Array) -> Array:
    """Derived feature vector (`FEATURE_NAMES`) of running statistics (jittable).

    Args:
        stats: float32 `(..., N_STATS)`.

    Returns:
        float32 `(..., N_FEATURES)`.
    """
    s = jnp.asarray(stats, jnp.float32)
    n = jnp.maximum(s[..., STATS_COUNT], 1.0)
    n_rep = s[..., STATS_N_REPEAT]
    duration = (s[..., STATS_LAST_DAY] - s[..., STATS_START_DAY]) * SECONDS_PER_DAY + (
        s[..., STATS_LAST_SEC] - s[..., STATS_START_SEC]
    )
    hour_angle = 2.0 * jnp.pi * s[..., STATS_LAST_SEC] / SECONDS_PER_DAY
    # 1970-01-01 (day 0) was a Thursday; the phase only has to be consistent.
    day_angle = 2.0 * jnp.pi * jnp.mod(s[..., STATS_LAST_DAY], 7.0) / 7.0
    has_repeat = (n_rep > 0).astype(jnp.float32)
    repeat_buy = jnp.where(has_repeat > 0, s[..., STATS_REPEAT_BUY_MAX], s[..., STATS_BUY_MAX])
    feats = [
        jnp.log1p(n),
        jnp.log1p(n - n_rep),
        n_rep / n,
        jnp.log(jnp.maximum(s[..., STATS_MAX_ITEM_COUNT], 1.0)),
        jnp.log1p(jnp.maximum(duration, 0.0)),
        s[..., STATS_DWELL_SUM] / jnp.maximum(n - 1.0, 1.0),
        s[..., STATS_LAST_LOG_GAP],
        s[..., STATS_MAX_LOG_GAP],
        jnp.sin(hour_angle),
        jnp.cos(hour_angle),
        jnp.sin(day_angle),
        jnp.cos(day_angle),
        s[..., STATS_BUY_SUM] / n,
        s[..., STATS_BUY_MAX],
        s[..., STATS_BUY_LAST],
        s[..., STATS_SESS_SUM] / n,
        s[..., STATS_SESS_MAX],
        s[..., STATS_CAT_SUM] / n,
        s[..., STATS_CAT_MAX],
        s[..., STATS_N_SPECIAL] / n,
        s[..., STATS_N_MISSING] / n,
        s[..., STATS_POP_SUM] / n,
        repeat_buy,
        has_repeat,
    ]
    return jnp.stack(feats, axis=-1)


# ------------------------------------------------------------------- classifier


@dataclass(frozen=True)
class PurchaseConfig:
    """Hyper-parameters of the purchase classifier (JSON-serialisable).

    Attributes:
        hidden_units: 0 for logistic regression, else units of the MLP's hidden layer.
        n_bags: MLP only: train this many MLPs (own init, Poisson(1) bootstrap row
            weights) and average their logits (bagging; 1 = a single MLP).
        use_hidden: feed the frozen GRU hidden state (else statistics only).
        features: names of the `FEATURE_NAMES` used (default all).
        l2: L2 penalty on weights (mean over rows of the weighted BCE + l2 * |w|^2).
        hidden_l2_scale: extra multiplier of the L2 on the hidden-state weights.
        learning_rate: Adam step size.
        max_steps: full-batch steps.
        eval_every: steps between validation AUC checks (early stopping).
        patience: checks without improvement before stopping.
        seed: init seed.
        smoothing: prior pseudo-count.
        points: training rows: 'final' (each session's prediction point), 'prefixes'
            (every usable prefix, weight 1/n per session) or 'mixed' (both, half weight).
        calibration: 'platt' or 'binning'.
    """

    hidden_units: int = 0
    n_bags: int = 1
    use_hidden: bool = True
    features: tuple[str, ...] = FEATURE_NAMES
    l2: float = 1e-3
    hidden_l2_scale: float = 1.0
    learning_rate: float = 0.03
    max_steps: int = 1500
    eval_every: int = 25
    patience: int = 8
    seed: int = 0
    smoothing: float = 20.0
    points: Literal["final", "prefixes", "mixed"] = "final"
    calibration: Literal["platt", "binning"] = "platt"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out = dict(self.__dict__)
        out["features"] = list(self.features)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PurchaseConfig:
        """Inverse of `to_dict`."""
        data = dict(data)
        data["features"] = tuple(data.get("features", FEATURE_NAMES))
        return cls(**data)


def feature_columns(names: tuple[str, ...]) -> np.ndarray:
    """int32 column indices of the named features in `stats_features` output."""
    return np.array([FEATURE_NAMES.index(n) for n in names], np.int32)


def raw_logit(params: Params, hidden: Array | None, stats: Array) -> Array:
    """Uncalibrated purchase logit (jittable).

    Args:
        params: classifier params (see `fit_classifier`).
        hidden: `(..., H)` frozen GRU top-layer state, or None when unused.
        stats: `(..., N_STATS)` running statistics.

    Returns:
        `(...)` logits.
    """
    x = stats_features(stats)[..., params["feature_columns"]]
    x = (x - params["feature_mean"]) / params["feature_scale"]
    if "hidden_mean" in params:
        if hidden is None:
            raise ValueError("this purchase model needs the GRU hidden state")
        h = (jnp.asarray(hidden, jnp.float32) - params["hidden_mean"]) / params["hidden_scale"]
        x = jnp.concatenate([x, h], axis=-1)
    return _member_logits(params, x).mean(axis=-1)


def _member_logits(params: Params, x: Array) -> Array:
    """Logits of each bagged member `(..., K)` (K = 1 without bagging)."""
    if "w1" not in params:
        return (x @ params["w"] + params["b"])[..., None]
    if params["w1"].ndim == 2:
        hid = jax.nn.relu(x @ params["w1"] + params["b1"])
        return (hid @ params["w"] + params["b"])[..., None]
    hid = jax.nn.relu(jnp.einsum("...i,kiu->...ku", x, params["w1"]) + params["b1"])
    return jnp.einsum("...ku,ku->...k", hid, params["w"]) + params["b"]


def calibrate(params: Params, logit: Array) -> Array:
    """Map raw logits to probabilities with the fitted calibration (jittable)."""
    if "calib_x" in params:
        return jnp.interp(logit, params["calib_x"], params["calib_y"])
    return jax.nn.sigmoid(params["platt_a"] * logit + params["platt_b"])


def purchase_probability(params: Params, hidden: Array | None, stats: Array) -> Array:
    """Calibrated purchase probability from the hidden state and statistics (jittable).

    Args:
        params: `PurchaseModel.params`.
        hidden: `(..., H)` GRU top-layer hidden state after the latest event (None
            when the model does not use it).
        stats: `(..., N_STATS)` running statistics after the latest event.

    Returns:
        `(...)` probabilities in [0, 1].
    """
    return calibrate(params, raw_logit(params, hidden, stats))


def fit_classifier(
    cfg: PurchaseConfig,
    stats: np.ndarray,
    hidden: np.ndarray | None,
    labels: np.ndarray,
    weights: np.ndarray,
    valid: tuple[np.ndarray, np.ndarray | None, np.ndarray] | None = None,
    *,
    fixed_steps: int | None = None,
) -> tuple[Params, dict[str, Any]]:
    """Train the classifier (full batch, Adam, L2), early stopping on validation AUC.

    Args:
        cfg: hyper-parameters.
        stats: float32 (R, N_STATS) statistics at the training rows.
        hidden: float32 (R, H) hidden states at the rows (ignored unless cfg.use_hidden).
        labels: (R,) 0/1.
        weights: (R,) row weights.
        valid: (stats, hidden, labels) of validation prediction points, or None.
        fixed_steps: train exactly this many steps (no early stopping).

    Returns:
        (params without calibration, info: best_step, best_valid_auc, history).
    """
    cols = feature_columns(cfg.features)
    feats = np.asarray(stats_features(jnp.asarray(stats)))[:, cols].astype(np.float64)
    w_np = np.asarray(weights, np.float64)
    mean = (feats * w_np[:, None]).sum(0) / w_np.sum()
    scale = np.sqrt(((feats - mean) ** 2 * w_np[:, None]).sum(0) / w_np.sum())
    scale = np.where(scale > 1e-6, scale, 1.0)
    fixed: Params = {
        "feature_columns": jnp.asarray(cols),
        "feature_mean": jnp.asarray(mean, jnp.float32),
        "feature_scale": jnp.asarray(scale, jnp.float32),
    }
    n_in = cols.size
    if cfg.use_hidden:
        if hidden is None:
            raise ValueError("use_hidden needs hidden states")
        h = np.asarray(hidden, np.float64)
        hm = (h * w_np[:, None]).sum(0) / w_np.sum()
        hs = np.sqrt(((h - hm) ** 2 * w_np[:, None]).sum(0) / w_np.sum())
        fixed["hidden_mean"] = jnp.asarray(hm, jnp.float32)
        fixed["hidden_scale"] = jnp.asarray(np.where(hs > 1e-6, hs, 1.0), jnp.float32)
        n_in += h.shape[1]
    key = jax.random.PRNGKey(cfg.seed)
    trainable: Params = {}
    rate = float(np.average(labels, weights=w_np))
    bias0 = float(np.log(rate / (1 - rate)))
    bags = cfg.n_bags if cfg.hidden_units > 0 else 1
    if cfg.hidden_units > 0:
        k1, k2 = jax.random.split(key)
        u = cfg.hidden_units
        lead = (bags,) if bags > 1 else ()
        trainable["w1"] = jax.random.normal(k1, (*lead, n_in, u)) * np.sqrt(2.0 / n_in)
        trainable["b1"] = jnp.zeros((*lead, u))
        trainable["w"] = jax.random.normal(k2, (*lead, u)) * np.sqrt(1.0 / u)
        trainable["b"] = jnp.full(lead, bias0, jnp.float32)
    else:
        trainable["w"] = jnp.zeros(n_in)
        trainable["b"] = jnp.asarray(bias0, jnp.float32)
    # Row weights per member: Poisson(1) bootstrap draws when bagging.
    member_w = np.ones((1, w_np.size))
    if bags > 1:
        member_w = np.random.default_rng(cfg.seed).poisson(1.0, (bags, w_np.size))
    member_w = member_w * w_np[None, :]
    # L2 multiplier per input row of the first layer: hidden-state inputs can be scaled.
    row_scale = np.ones(n_in, np.float32)
    row_scale[cols.size :] = cfg.hidden_l2_scale
    row_scale_j = jnp.asarray(row_scale)

    def design(st: np.ndarray, hd: np.ndarray | None) -> Array:
        """Standardised inputs, computed once (the loop then only does matmuls)."""
        x = np.asarray(stats_features(jnp.asarray(st)))[:, cols]
        x = (x - mean) / scale
        if cfg.use_hidden:
            h = (np.asarray(hd, np.float64) - np.asarray(fixed["hidden_mean"])) / np.asarray(
                fixed["hidden_scale"]
            )
            x = np.concatenate([x, h], axis=1)
        return jnp.asarray(x, jnp.float32)

    def head(tp: Params, x: Array) -> Array:
        return _member_logits(tp, x).mean(axis=-1)

    x_train = design(stats, hidden)
    y = jnp.asarray(labels, jnp.float32)
    w = jnp.asarray(member_w.T, jnp.float32)  # (R, K)

    def loss_fn(tp: Params, x: Array, y: Array, w: Array) -> Array:
        logits = _member_logits(tp, x)
        bce = optax.sigmoid_binary_cross_entropy(logits, y[:, None])
        loss = jnp.mean(jnp.sum(w * bce, axis=0) / jnp.sum(w, axis=0))
        first = tp["w1"] if "w1" in tp else tp["w"]
        scale_rows = row_scale_j[:, None] if first.ndim >= 2 else row_scale_j
        reg = jnp.sum(scale_rows * first**2) / bags
        if "w1" in tp:
            reg = reg + jnp.sum(tp["w"] ** 2) / bags
        return loss + cfg.l2 * reg

    opt = optax.adam(cfg.learning_rate)
    opt_state = opt.init(trainable)

    @jax.jit
    def run(tp: Params, state: Any, x: Array, y: Array, w: Array) -> tuple[Params, Any, Array]:
        def body(carry: tuple, _: None) -> tuple[tuple, Array]:
            tp, state = carry
            loss, g = jax.value_and_grad(loss_fn)(tp, x, y, w)
            upd, state = opt.update(g, state, tp)
            return (optax.apply_updates(tp, upd), state), loss

        (tp, state), losses = jax.lax.scan(body, (tp, state), None, length=cfg.eval_every)
        return tp, state, losses[-1]

    score_valid = None
    if valid is not None:
        vs, vh, vy = valid
        x_valid = design(vs, vh)
        head_jit = jax.jit(head)

        def score_valid(tp: Params) -> Array:
            return head_jit(tp, x_valid)

    n_steps = fixed_steps if fixed_steps is not None else cfg.max_steps
    best = (-np.inf, 0, trainable)
    history = []
    bad = 0
    step = 0
    while step < n_steps:
        trainable, opt_state, loss = run(trainable, opt_state, x_train, y, w)
        step += cfg.eval_every
        rec = {"step": step, "loss": float(loss)}
        if score_valid is not None:
            auc = roc_auc(vy, np.asarray(score_valid(trainable), np.float64))
            rec["valid_auc"] = auc
            if fixed_steps is None:
                if auc > best[0] + 1e-5:
                    best = (auc, step, trainable)
                    bad = 0
                else:
                    bad += 1
                    if bad >= cfg.patience:
                        history.append(rec)
                        break
        history.append(rec)
    if fixed_steps is not None or score_valid is None:
        best = (history[-1].get("valid_auc", float("nan")), step, trainable)
    params = {**fixed, **jax.tree_util.tree_map(jnp.asarray, best[2])}
    info = {"best_step": best[1], "best_valid_auc": float(best[0]), "history": history}
    return params, info


def fit_platt(logits: np.ndarray, labels: np.ndarray, l2: float = 1e-4) -> tuple[float, float]:
    """Platt scaling p = sigmoid(a * logit + b) (`rnnrec_jax.calibration.fit_platt`).

    Args:
        logits: raw logits on held-out rows.
        labels: 0/1 outcomes.
        l2: small ridge towards (1, 0) for stability.

    Returns:
        (a, b).
    """
    return calibration.fit_platt(logits, labels, l2)


def fit_binning(
    logits: np.ndarray, labels: np.ndarray, n_bins: int = 10, prior_strength: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """Monotone histogram binning: equal-count bins, pooled until non-decreasing.

    Each bin's rate is smoothed towards the overall rate with `prior_strength` pseudo
    rows; adjacent violators are pooled (PAV on bins). The calibration map
    interpolates linearly between the bins' mean logits.

    Args:
        logits: raw logits on held-out rows.
        labels: 0/1 outcomes.
        n_bins: initial equal-count bins.
        prior_strength: pseudo-count towards the overall rate.

    Returns:
        (knot logits, knot probabilities), both increasing, float32.
    """
    x = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.float64)
    order = np.argsort(x, kind="mergesort")
    rate = y.mean()
    blocks = []  # [sum_x, sum_y, count]
    for part in np.array_split(order, n_bins):
        if part.size:
            blocks.append([x[part].sum(), y[part].sum(), float(part.size)])

    def value(b: list[float]) -> float:
        return (b[1] + prior_strength * rate) / (b[2] + prior_strength)

    pooled: list[list[float]] = []
    for b in blocks:
        pooled.append(list(b))
        while len(pooled) > 1 and value(pooled[-2]) >= value(pooled[-1]):
            last = pooled.pop()
            pooled[-1] = [pooled[-1][i] + last[i] for i in range(3)]
    kx = np.array([b[0] / b[2] for b in pooled])
    ky = np.array([value(b) for b in pooled])
    if kx.size == 1:
        kx = np.array([kx[0] - 1.0, kx[0] + 1.0])
        ky = np.array([ky[0], ky[0]])
    return kx.astype(np.float32), ky.astype(np.float32)


def with_calibration(
    params: Params, logits: np.ndarray, labels: np.ndarray, kind: str = "platt"
) -> Params:
    """Return params with a calibration fitted on held-out (logit, label) pairs."""
    out = {k: v for k, v in params.items() if not k.startswith(("calib_", "platt_"))}
    if kind == "platt":
        a, b = fit_platt(logits, labels)
        out["platt_a"] = jnp.asarray(a, jnp.float32)
        out["platt_b"] = jnp.asarray(b, jnp.float32)
    elif kind == "binning":
        kx, ky = fit_binning(logits, labels)
        out["calib_x"] = jnp.asarray(kx)
        out["calib_y"] = jnp.asarray(ky)
    else:
        raise ValueError(f"unknown calibration {kind!r}")
    return out


def category_inputs(
    tables: PriorTables, categories: np.ndarray | None, n: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Host-side category inputs of `purchase_features_update` for raw category strings.

    Args:
        tables: the prior tables (category vocabulary).
        categories: '<U' category per event (YooChoose: '0', 'S', '1'-'12', brand id),
            or None when the stream carries none (then `n` gives the count).
        n: number of events when `categories` is None.

    Returns:
        (int32 category rows, float32 special-offer flags, float32 missing flags).
    """
    if categories is None:
        z = np.zeros(int(n or 0), np.float32)
        return np.zeros(int(n or 0), np.int32), z, z
    cats = np.asarray(categories).astype(str)
    return (
        tables.category_index(cats),
        (cats == SPECIAL_CATEGORY).astype(np.float32),
        (cats == MISSING_CATEGORY).astype(np.float32),
    )


@jax.jit
def serve_step(
    params: Params,
    tables: Mapping[str, Array],
    stats: Array,
    hidden: Array | None,
    item_idx: Array,
    time: Array,
    category_idx: Array,
    special: Array,
    missing: Array,
) -> tuple[Array, Array]:
    """One serving event: update the statistics, then read the probability (jitted).

    Args:
        params: `PurchaseModel.params`.
        tables: `PriorTables.jax_tables()`.
        stats: `(B, N_STATS)` statistics before the event (`initial_stats` at a new
            session; reset them where the GRU state is reset).
        hidden: `(B, H)` GRU top-layer state AFTER this event (None if unused).
        item_idx, time, category_idx, special, missing: as `purchase_features_update`.

    Returns:
        (new statistics, `(B,)` purchase probabilities).
    """
    stats = purchase_features_update(stats, item_idx, time, tables, category_idx, special, missing)
    return stats, purchase_probability(params, hidden, stats)


# ------------------------------------------------------------------ model bundle


@dataclass
class PurchaseModel:
    """Everything serving needs: classifier params, prior tables, metadata.

    Attributes:
        params: classifier + calibration params (pytree of arrays).
        tables: prior tables.
        config: the classifier hyper-parameters.
        meta: JSON-ready extra information (training summary).
    """

    params: Params
    tables: PriorTables
    config: PurchaseConfig
    meta: dict[str, Any] = field(default_factory=dict)

    def probability(self, hidden: Array | None, stats: Array) -> Array:
        """`purchase_probability` with this model's params."""
        return purchase_probability(self.params, hidden, stats)

    def metadata(self) -> dict[str, Any]:
        """JSON metadata (config, layout constants, extra meta)."""
        return {
            "format": "rnnrec.purchase_model",
            "version": 1,
            "n_stats": N_STATS,
            "window": WINDOW,
            "feature_names": list(FEATURE_NAMES),
            "config": self.config.to_dict(),
            "meta": self.meta,
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat numpy dict (`params/...`, `tables/...`, `metadata` JSON string)."""
        out = {f"params/{k}": np.asarray(v) for k, v in self.params.items()}
        out.update({f"tables/{k}": v for k, v in self.tables.to_arrays().items()})
        out["metadata"] = np.asarray(json.dumps(self.metadata(), sort_keys=True))
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> PurchaseModel:
        """Inverse of `to_arrays` (e.g. from `np.load(path)`)."""
        meta = json.loads(str(np.asarray(arrays["metadata"])))
        if meta.get("format") != "rnnrec.purchase_model" or meta.get("n_stats") != N_STATS:
            raise ValueError("not a compatible purchase model")
        params = {
            k.split("/", 1)[1]: jnp.asarray(v) for k, v in arrays.items() if k.startswith("params/")
        }
        tables = PriorTables.from_arrays(
            {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("tables/")}
        )
        return cls(params, tables, PurchaseConfig.from_dict(meta["config"]), meta["meta"])


# --------------------------------------------------------- frozen next-item glue


def hidden_states(
    model_cfg: Any,
    model_params: Params,
    items: np.ndarray,
    times: np.ndarray,
    offsets: np.ndarray,
    *,
    batch_size: int = 512,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-layer hidden state and joint-head logit after every event (frozen model).

    Sessions are run from a zero state in batches of similar length (padded to
    powers of two, so few shapes are compiled).

    Args:
        model_cfg: the next-item `ModelConfig`.
        model_params: its params.
        items: int32 (N,) item indices.
        times: float64 (N,) epoch seconds.
        offsets: int64 (S+1,) session boundaries.
        batch_size: sessions per batch.

    Returns:
        (float32 (N, H) hidden states, float32 (N,) joint purchase-head logits; zeros
        when the model has no purchase head).
    """
    from rnnrec_jax import models

    lengths = np.diff(offsets)
    n_h = model_cfg.hidden_sizes[-1]
    hid = np.zeros((items.size, n_h), np.float32)
    logit_out = np.zeros(items.size, np.float32)
    t0 = float(times.min()) if times.size else 0.0
    order = np.argsort(lengths, kind="stable")

    @jax.jit
    def run(p: Params, it: Array, tm: Array) -> tuple[Array, Array]:
        carry = models.initial_carry(model_cfg, it.shape[0])

        def step(c: Any, x: tuple) -> tuple[Any, tuple]:
            c, _, lg = models.encode_step(model_cfg, p, c, x[0], x[1])
            return c, (c["h"][-1], lg)

        _, (hs, lg) = jax.lax.scan(step, carry, (it.T, tm.T))
        return jnp.swapaxes(hs, 0, 1), lg.T

    for b0 in range(0, order.size, batch_size):
        sess = order[b0 : b0 + batch_size]
        max_len = int(lengths[sess].max())
        width = 1 << int(np.ceil(np.log2(max(max_len, 1))))
        rows = np.full(batch_size, -1)
        rows[: sess.size] = sess
        pos = np.arange(width)
        valid = (rows[:, None] >= 0) & (pos[None, :] < lengths[np.maximum(rows, 0)][:, None])
        ev = np.where(valid, offsets[np.maximum(rows, 0)][:, None] + pos[None, :], 0)
        it = np.where(valid, items[ev], 0).astype(np.int32)
        tm = np.where(valid, times[ev] - t0, 0.0).astype(np.float32)
        hs, lg = run(model_params, jnp.asarray(it), jnp.asarray(tm))
        hs, lg = np.asarray(hs), np.asarray(lg)
        hid[ev[valid]] = hs[valid]
        logit_out[ev[valid]] = lg[valid]
    return hid, logit_out


def training_rows(
    data: TrainingEvents, points: str = "final"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which events become training rows, with labels and weights.

    Args:
        data: training events.
        points: 'final' (the prediction point of each session: what is evaluated),
            'prefixes' (every event before the first buy, each session weighted 1 in
            total, i.e. 1/n_inputs per row, so long sessions do not dominate) or
            'mixed' (half of each).

    Returns:
        (event rows int64, labels int8, weights float32).
    """
    has = data.n_inputs > 0
    final = data.prediction_points()[has]
    final_y = data.labels[has]
    if points == "final":
        return final, final_y, np.ones(final.size, np.float32)
    use = np.flatnonzero(data.usable())
    sess = data.session_index()[use]
    w = 1.0 / data.n_inputs[sess]
    if points == "prefixes":
        return use, data.labels[sess], w.astype(np.float32)
    if points == "mixed":
        rows = np.concatenate([final, use])
        y = np.concatenate([final_y, data.labels[sess]])
        weights = np.concatenate([np.full(final.size, 0.5), 0.5 * w])
        return rows, y, weights.astype(np.float32)
    raise ValueError(f"unknown points {points!r}")
