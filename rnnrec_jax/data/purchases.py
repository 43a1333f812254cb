"""Inputs and labels for purchase prediction without leakage (ANCHORS.md "Purchase prediction").

A session's label is whether it has any buy. Its inputs are its events timed strictly
before its first buy (all its events when it has none): in 90 % of YooChoose buy
sessions the buy follows the last click, but the rest have clicks after the first
buy, which would leak the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rnnrec_jax.data.events import SessionEvents


@dataclass(frozen=True, eq=False)
class PurchaseInputs:
    """The prediction point and label of each usable session.

    Attributes:
        session_ids: '<U' id per included session (table order of the events).
        session_number: int64 position of each included session in the events' table.
        last_event_index: int64 row (in the events' arrays) of the last event usable as
            input: the prediction is made right after it.
        n_inputs: int64 number of usable events (>= 1; the session's first `n_inputs`).
        labels: int8, 1 when the session has any buy.
        excluded_session_ids: sessions whose first buy is at or before their first
            event: no event precedes the buy, so there is nothing to predict from.
            They are left out (all are positives; see `n_excluded`).
    """

    session_ids: np.ndarray
    session_number: np.ndarray
    last_event_index: np.ndarray
    n_inputs: np.ndarray
    labels: np.ndarray
    excluded_session_ids: np.ndarray

    @property
    def n_sessions(self) -> int:
        """Number of included sessions."""
        return int(self.session_ids.size)

    @property
    def n_excluded(self) -> int:
        """Number of sessions left out because they have no event before the first buy."""
        return int(self.excluded_session_ids.size)


def first_buy_times(buys: SessionEvents | None) -> pd.Series:
    """Return the time of each session's first buy.

    Args:
        buys: the buys, or None.

    Returns:
        float64 Series indexed by session id.
    """
    if buys is None or buys.n_events == 0:
        return pd.Series(dtype=np.float64)
    # Buys are sorted by time within session, so the first row is the first buy.
    return pd.Series(buys.session_start_times(), index=buys.session_keys().astype(object))


def purchase_inputs(events: SessionEvents, buys: SessionEvents | None) -> PurchaseInputs:
    """Find each session's prediction point: its last event strictly before its first buy.

    Args:
        events: the sessions to score (e.g. the split's `test`).
        buys: the raw buys (all buy rows, not filtered by the split), or None.

    Returns:
        `PurchaseInputs` for the sessions with at least one usable event.
    """
    keys = events.session_keys()
    offsets = events.session_offsets()
    first_buy = first_buy_times(buys).reindex(keys.astype(object)).to_numpy(dtype=np.float64)
    labels = (~np.isnan(first_buy)).astype(np.int8)
    # NaN (no buy) compares False, so those sessions keep every event.
    before_buy = ~(events.times >= np.repeat(first_buy, events.session_lengths()))
    # Events are time-ordered within a session, so the usable ones form a prefix.
    n_inputs = np.bincount(events.session_index()[before_buy], minlength=keys.size)
    included = n_inputs > 0
    return PurchaseInputs(
        session_ids=keys[included],
        session_number=np.flatnonzero(included).astype(np.int64),
        last_event_index=(offsets[:-1] + n_inputs - 1)[included].astype(np.int64),
        n_inputs=n_inputs[included].astype(np.int64),
        labels=labels[included],
        excluded_session_ids=keys[~included],
    )
