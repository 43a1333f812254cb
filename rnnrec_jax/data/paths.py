"""Where the shared, read-only real data lives (never copied into the repository)."""

from __future__ import annotations

import os
from pathlib import Path

SHARED_DATA_ENV = "RNNREC_SHARED_DATA"

# rnnrec_jax/data/paths.py -> the repository root is three levels up.
_REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path | None:
    """Locate the shared data folder.

    Returns:
        `$RNNREC_SHARED_DATA` when set, else `<repo>/../shared/data` when it exists,
        else None (e.g. on a user's machine without the research-only data).
    """
    configured = os.environ.get(SHARED_DATA_ENV)
    if configured:
        return Path(configured)
    default = _REPO_ROOT.parent / "shared" / "data"
    return default if default.is_dir() else None
