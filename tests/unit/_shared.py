"""Locating the shared real data from tests: skip without it, fail under CI."""

from __future__ import annotations

from pathlib import Path

import pytest

from rnnrec_jax.data.paths import shared_data_dir
from tests.ci import in_ci


def require_shared_data() -> Path:
    """Return the shared data folder, or skip the test (fail it under CI).

    Returns:
        The folder holding `yoochoose-1pct/`, `diginetica-sample/`, ...
    """
    directory = shared_data_dir()
    if directory is None or not directory.is_dir():
        reason = "shared data not found: set RNNREC_SHARED_DATA or provide ../shared/data"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    return directory
