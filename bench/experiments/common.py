"""Shared loaders for the scratch experiments (yoochoose-1pct split)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pandas as pd

from rnnrec_jax.data.events import read_split_tsv

SPLIT = Path("/work/shared/data/yoochoose-1pct/split")
RAW = Path("/work/shared/data/yoochoose-1pct")


@cache
def split(name: str):
    """Reads one split file as SessionEvents."""
    return read_split_tsv(SPLIT / f"{name}.tsv")


@cache
def first_buy_times() -> dict[str, float]:
    """Session id -> epoch seconds of the first buy (buys.csv.gz)."""
    b = pd.read_csv(RAW / "buys.csv.gz", usecols=["session_id", "timestamp"])
    t = pd.to_datetime(b["timestamp"], utc=True)
    secs = (t - pd.Timestamp("1970-01-01", tz="UTC")).dt.total_seconds()
    first = secs.groupby(b["session_id"].astype(str)).min()
    return {str(k): float(v) for k, v in first.items()}
