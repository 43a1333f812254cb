"""Readers for the raw public datasets in `shared/data` (see its README).

Each returns an `EventLog`: browsing events plus buys, both as `SessionEvents`
with times in float epoch seconds (UTC). Column quirks of each source are
handled here so nothing downstream needs to know them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rnnrec_jax.data.events import EventLog, SessionEvents
from rnnrec_jax.data.tables import read_table

TAOBAO_BEHAVIOR_TYPES: dict[str, str] = {
    "pv": "click",
    "cart": "add_to_cart",
    "buy": "purchase",
    "fav": "view",
}
"""Taobao `behavior` → our event type (a favourite is a soft signal, kept as a view)."""

DEFAULT_SESSION_GAP_S = 30 * 60.0


def iso_to_epoch_seconds(timestamps: pd.Series) -> np.ndarray:
    """Parse ISO-8601 UTC timestamps (e.g. `2014-04-06T01:29:05.969Z`).

    Args:
        timestamps: strings with a `Z` (or explicit offset) suffix.

    Returns:
        float64 epoch seconds. The GRU4Rec reference preprocessing read these as
        local time (the session-rec files are 2 h early); this is true UTC.
    """
    parsed = pd.to_datetime(timestamps, utc=True, format="ISO8601")
    # Integer nanoseconds then one division: the float is the nearest double to the
    # exact millisecond value, so "%.3f" renders the original digits back.
    return parsed.dt.as_unit("ns").astype("int64").to_numpy() / 1e9


def read_yoochoose_clicks(path: str | Path) -> SessionEvents:
    """Read YooChoose `clicks.csv.gz` (`session_id,timestamp,item_id,category`).

    Args:
        path: the clicks file (gzip or plain).

    Returns:
        Clicks sorted by (session, time), with `categories` as strings (`0`, `S`,
        `1`-`12` or a brand id) and no event types (all are clicks).
    """
    frame = read_table(
        path, ("session_id", "timestamp", "item_id", "category"), "a YooChoose clicks file",
        dtype=str, keep_default_na=False,
    )  # fmt: skip
    return SessionEvents.from_arrays(
        frame["session_id"],
        frame["item_id"],
        iso_to_epoch_seconds(frame["timestamp"]),
        categories=frame["category"],
    )


def read_yoochoose_buys(path: str | Path) -> SessionEvents:
    """Read YooChoose `buys.csv.gz` (`session_id,timestamp,item_id,price,quantity`).

    Price and quantity are dropped: about 64 % of rows have both 0, and a buy is a
    buy regardless (data README).

    Args:
        path: the buys file.

    Returns:
        Buys sorted by (session, time), event type `purchase`.
    """
    frame = read_table(
        path, ("session_id", "timestamp", "item_id"), "a YooChoose buys file",
        dtype=str, keep_default_na=False,
    )  # fmt: skip
    return SessionEvents.from_arrays(
        frame["session_id"],
        frame["item_id"],
        iso_to_epoch_seconds(frame["timestamp"]),
        event_types=np.full(len(frame), "purchase"),
    )


def read_yoochoose(directory: str | Path) -> EventLog:
    """Read a YooChoose folder holding `clicks.csv.gz` and `buys.csv.gz`.

    Args:
        directory: e.g. `shared/data/yoochoose-1pct`.

    Returns:
        `EventLog(events=clicks, buys=buys)`.
    """
    directory = Path(directory)
    return EventLog(
        events=read_yoochoose_clicks(directory / "clicks.csv.gz"),
        buys=read_yoochoose_buys(directory / "buys.csv.gz"),
    )


def _epoch_seconds_of_date(dates: pd.Series) -> np.ndarray:
    parsed = pd.to_datetime(dates, format="%Y-%m-%d", utc=True)
    return parsed.dt.as_unit("s").astype("int64").to_numpy().astype(np.float64)


def read_diginetica(
    views_path: str | Path,
    purchases_path: str | Path | None = None,
    categories_path: str | Path | None = None,
    *,
    viewed_sessions_only: bool = True,
) -> EventLog:
    """Read DIGINETICA (CIKM Cup 2016) item views and purchases (`;`-separated).

    Diginetica gives only a date per row and `timeframe`, ms since the session's
    first event; a row's date can be later than the session's start (sessions cross
    midnight). So every event of a session is timed as midnight UTC of the session's
    earliest date (over its views and purchases) plus its timeframe: ordering and
    gaps are exact, the time of day is not known (it reads as just after midnight).

    Args:
        views_path: `*train-item-views.csv` (`session_id;user_id;item_id;timeframe;eventdate`).
        purchases_path: `train-purchases.csv`
            (`sessionId;userId;timeframe;eventdate;ordernumber;itemId`), or None.
        categories_path: `product-categories.csv[.gz]` (`itemId;categoryId`), or None.
        viewed_sessions_only: keep only purchases of sessions that have views (the
            full purchase file covers many sessions absent from a views sample).

    Returns:
        `EventLog` with views (type `view`) and purchases (type `purchase`, or None
        without a purchases file). Missing user ids (`NA`) become ''.
    """
    views = pd.read_csv(views_path, sep=";", dtype=str, keep_default_na=False)
    views = views.rename(columns={"session_id": "session", "user_id": "user", "item_id": "item"})
    purchases = None
    if purchases_path is not None:
        purchases = pd.read_csv(purchases_path, sep=";", dtype=str, keep_default_na=False)
        purchases = purchases.rename(
            columns={"sessionId": "session", "userId": "user", "itemId": "item"}
        )
        if viewed_sessions_only:
            purchases = purchases[purchases["session"].isin(views["session"])]
    parts = [views] if purchases is None else [views, purchases]
    dated = pd.concat([p[["session", "eventdate"]] for p in parts], ignore_index=True)
    session_start_day = (
        pd.Series(_epoch_seconds_of_date(dated["eventdate"]), index=dated["session"])
        .groupby(level=0)
        .min()
    )

    category_of_item = None
    if categories_path is not None:
        categories = pd.read_csv(categories_path, sep=";", dtype=str, keep_default_na=False)
        category_of_item = categories.drop_duplicates("itemId").set_index("itemId")["categoryId"]

    def to_events(frame: pd.DataFrame, event_type: str) -> SessionEvents:
        day = session_start_day.reindex(frame["session"]).to_numpy()
        times = day + frame["timeframe"].astype(np.int64).to_numpy() / 1e3
        categories = None
        if category_of_item is not None:
            categories = category_of_item.reindex(frame["item"]).fillna("").to_numpy(dtype=str)
        return SessionEvents.from_arrays(
            frame["session"],
            frame["item"],
            times,
            event_types=np.full(len(frame), event_type),
            user_ids=frame["user"].replace("NA", ""),
            categories=categories,
        )

    return EventLog(
        events=to_events(views, "view"),
        buys=None if purchases is None else to_events(purchases, "purchase"),
    )


def sessionise_by_gap(
    user_ids: np.ndarray, times: np.ndarray, session_gap_s: float = DEFAULT_SESSION_GAP_S
) -> np.ndarray:
    """Cut each user's time-ordered history into sessions at gaps above a threshold.

    Args:
        user_ids: '<U' user id per event.
        times: epoch seconds per event.
        session_gap_s: a gap strictly longer than this starts a new session.

    Returns:
        '<U' session id per event (input order): `<user>-<k>`, k counting the user's
        sessions from 0, zero-padded so that ids sort in time order.
    """
    user_ids = np.asarray(user_ids).astype(str)
    times = np.asarray(times, dtype=np.float64)
    order = np.lexsort((times, user_ids))
    users, t = user_ids[order], times[order]
    new_user = np.ones(users.size, dtype=bool)
    new_user[1:] = users[1:] != users[:-1]
    new_session = new_user.copy()
    new_session[1:] |= np.diff(t) > session_gap_s
    session_number = np.cumsum(new_session) - 1
    # The user's k-th session: global session number minus that of the user's first.
    first_of_user = session_number[new_user]
    k = session_number - np.repeat(
        first_of_user, np.diff(np.append(np.flatnonzero(new_user), users.size))
    )
    width = len(str(int(k.max()))) if k.size else 1
    sorted_ids = np.char.add(np.char.add(users, "-"), np.char.zfill(k.astype(str), width))
    session_ids = np.empty_like(sorted_ids)
    session_ids[order] = sorted_ids
    return session_ids


def read_taobao_user_behavior(
    path: str | Path, *, session_gap_s: float = DEFAULT_SESSION_GAP_S
) -> EventLog:
    """Read Taobao `UserBehavior.csv` (no header: `user,item,category,behavior,ts`).

    Each user's history is cut into sessions at gaps longer than `session_gap_s`,
    counting every behaviour (a buy 10 minutes after a cart add is the same visit).

    Args:
        path: the CSV file.
        session_gap_s: inactivity gap that ends a session, in seconds.

    Returns:
        `EventLog`: `events` holds click/add_to_cart/view rows, `buys` the purchases,
        both with `user_ids` and `categories`. Outlier timestamps (before the
        dataset's nominal start) are kept as they are.
    """
    frame = pd.read_csv(
        path,
        header=None,
        names=["user", "item", "category", "behavior", "timestamp"],
        dtype={"user": str, "item": str, "category": str, "behavior": str},
        keep_default_na=False,
    )
    unknown = set(frame["behavior"].unique()) - set(TAOBAO_BEHAVIOR_TYPES)
    if unknown:
        raise ValueError(f"unknown Taobao behaviours {sorted(unknown)}")
    event_types = frame["behavior"].map(TAOBAO_BEHAVIOR_TYPES).to_numpy(dtype=str)
    times = frame["timestamp"].to_numpy(dtype=np.float64)
    users = frame["user"].to_numpy(dtype=str)
    sessions = sessionise_by_gap(users, times, session_gap_s)
    is_buy = event_types == "purchase"

    def select(mask: np.ndarray) -> SessionEvents:
        return SessionEvents.from_arrays(
            sessions[mask],
            frame["item"].to_numpy(dtype=str)[mask],
            times[mask],
            event_types=event_types[mask],
            user_ids=users[mask],
            categories=frame["category"].to_numpy(dtype=str)[mask],
        )

    return EventLog(events=select(~is_buy), buys=select(is_buy))
