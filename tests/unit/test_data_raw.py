"""Raw dataset readers: hand-made files for the quirks, the real files for the counts."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from rnnrec_jax.data.raw import (
    read_diginetica,
    read_taobao_user_behavior,
    read_yoochoose,
    sessionise_by_gap,
)
from tests.unit._shared import require_shared_data

pytestmark = pytest.mark.unit


def write_gzip(path, text: str) -> None:
    with gzip.open(path, "wt") as handle:
        handle.write(text)


def test_yoochoose_times_are_utc_and_categories_strings(tmp_path):
    write_gzip(
        tmp_path / "clicks.csv.gz",
        "session_id,timestamp,item_id,category\n"
        "22,2014-04-06T01:30:36.821Z,214837485,S\n"
        "22,2014-04-06T01:29:05.969Z,214837485,0\n"
        "3,2014-04-01T00:00:00.001Z,7,2053276301\n",
    )
    write_gzip(
        tmp_path / "buys.csv.gz",
        "session_id,timestamp,item_id,price,quantity\n22,2014-04-06T02:00:00.000Z,214837485,0,0\n",
    )
    log = read_yoochoose(tmp_path)
    clicks = log.events
    assert clicks.session_ids.tolist() == ["3", "22", "22"]
    # 2014-04-06T01:29:05.969Z as true UTC (the session-rec files are 2 h earlier).
    assert clicks.times[1] == pytest.approx(1396747745.969, abs=1e-6)
    assert f"{clicks.times[1]:.3f}" == "1396747745.969"
    assert clicks.categories.tolist() == ["2053276301", "0", "S"]
    assert clicks.event_types is None
    assert log.buys.event_types.tolist() == ["purchase"]
    assert log.buys.times[0] == pytest.approx(1396749600.0)


def test_diginetica_times_anchor_on_session_start_day(tmp_path):
    views = tmp_path / "views.csv"
    views.write_text(
        "session_id;user_id;item_id;timeframe;eventdate\n"
        "5;NA;11;690000;2016-05-31\n"
        "5;NA;12;801831;2016-06-01\n"  # crosses midnight: same anchor day
        "6;42;13;1000;2016-01-03\n"
    )
    purchases = tmp_path / "purchases.csv"
    purchases.write_text(
        "sessionId;userId;timeframe;eventdate;ordernumber;itemId\n"
        "5;NA;900000;2016-06-01;1;12\n"
        "99;NA;5;2016-01-01;2;77\n"  # a session without views
    )
    categories = tmp_path / "categories.csv"
    categories.write_text("itemId;categoryId\n11;100\n12;200\n")
    log = read_diginetica(views, purchases, categories)
    may_31 = 1464652800.0  # 2016-05-31T00:00:00Z
    events = log.events
    assert events.session_ids.tolist() == ["5", "5", "6"]
    assert events.times[:2].tolist() == [may_31 + 690.0, may_31 + 801.831]
    assert events.user_ids.tolist() == ["", "", "42"]
    assert events.categories.tolist() == ["100", "200", ""]
    assert set(events.event_types.tolist()) == {"view"}
    assert log.buys.session_ids.tolist() == ["5"]
    assert log.buys.times[0] == may_31 + 900.0
    everything = read_diginetica(views, purchases, viewed_sessions_only=False)
    assert everything.buys.session_keys().tolist() == ["5", "99"]
    assert read_diginetica(views).buys is None


def test_sessionise_by_gap_cuts_on_long_gaps_only():
    users = np.array(["u2", "u1", "u1", "u1", "u2"])
    times = np.array([0.0, 0.0, 1800.0, 3601.0, 10.0])
    # u1: 0 and 1800 are 30 min apart (same session), 3601 is 1801 s later (new one).
    assert sessionise_by_gap(users, times).tolist() == ["u2-0", "u1-0", "u1-0", "u1-1", "u2-0"]


def test_taobao_maps_behaviours_and_separates_buys(tmp_path):
    path = tmp_path / "UserBehavior.csv"
    path.write_text(
        "1,100,9,pv,1000\n"
        "1,101,9,cart,1100\n"
        "1,101,9,buy,1200\n"
        "1,102,8,fav,9000\n"  # > 30 min later: a new session
        "2,100,9,pv,1000\n"
    )
    log = read_taobao_user_behavior(path)
    assert log.events.session_ids.tolist() == ["1-0", "1-0", "1-1", "2-0"]
    assert log.events.event_types.tolist() == ["click", "add_to_cart", "view", "click"]
    assert log.events.user_ids.tolist() == ["1", "1", "1", "2"]
    assert log.buys.session_ids.tolist() == ["1-0"]
    assert log.buys.event_types.tolist() == ["purchase"]
    bad = tmp_path / "bad.csv"
    bad.write_text("1,100,9,like,1000\n")
    with pytest.raises(ValueError, match="like"):
        read_taobao_user_behavior(bad)


@pytest.mark.data
def test_real_yoochoose_counts_match_readme():
    log = read_yoochoose(require_shared_data() / "yoochoose-1pct")
    clicks, buys = log.events, log.buys
    assert (clicks.n_events, clicks.n_sessions) == (276_390, 77_171)
    assert np.unique(clicks.item_ids).size == 18_453
    assert (clicks.session_lengths() >= 2).sum() == 67_900
    assert (buys.n_events, buys.n_sessions) == (9_610, 4_354)
    assert np.isin(buys.session_keys(), clicks.session_keys()).all()
    assert f"{clicks.times.min():.3f}" == "1396321306.083"  # 2014-04-01T03:01:46.083Z


@pytest.mark.data
def test_real_diginetica_counts_match_readme():
    folder = require_shared_data() / "diginetica-sample"
    log = read_diginetica(
        folder / "sample_train-item-views.csv",
        folder / "train-purchases.csv",
        folder / "product-categories.csv.gz",
    )
    assert (log.events.n_events, log.events.n_sessions) == (12_391, 2_986)
    assert np.unique(log.events.item_ids).size == 7_139
    assert (log.buys.n_events, log.buys.n_sessions) == (256, 138)
    assert (log.events.user_ids != "").sum() == 4_710


@pytest.mark.data
@pytest.mark.parametrize(
    ("name", "n_rows", "n_users", "n_buys"),
    [("UserBehavior_sample_a.csv", 9_436, 109, 195), ("UserBehavior_sample_b.csv", 4_061, 41, 73)],
)
def test_real_taobao_counts_match_readme(name, n_rows, n_users, n_buys):
    log = read_taobao_user_behavior(require_shared_data() / "taobao-userbehavior-samples" / name)
    assert log.events.n_events + log.buys.n_events == n_rows
    assert log.buys.n_events == n_buys
    merged = log.merged()
    assert np.unique(merged.user_ids).size == n_users
    # Sessions never hold a gap above 30 min.
    same_session = merged.session_ids[1:] == merged.session_ids[:-1]
    assert (np.diff(merged.times)[same_session] <= 1800).all()
