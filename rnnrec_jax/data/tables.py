"""Reading a delimited data file with a clear error when it is not the expected kind."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd


def read_table(
    path: str | Path, required: Iterable[str], what: str, **read_csv: Any
) -> pd.DataFrame:
    """`pandas.read_csv` that raises `ValueError` naming the file for unreadable content.

    pandas raises `EmptyDataError`, `ParserError`, `UnicodeDecodeError` or, later, a
    `KeyError` on a missing column: none of them says which file or what was expected,
    and the CLI turns `ValueError` into a one-line message.

    Args:
        path: the file (a missing file still raises `FileNotFoundError`).
        required: columns the caller reads.
        what: what the file should be, for the message (e.g. "a YooChoose clicks file").
        **read_csv: passed to `pandas.read_csv`.

    Returns:
        The frame.
    """
    try:
        frame = pd.read_csv(path, **read_csv)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not {what}: {exc}") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns[:8])) or "none"
        raise ValueError(
            f"{path}: not {what}: no column {', '.join(missing)} (columns found: {found})"
        )
    return frame
