"""Whether the tests run under CI, where a missing dependency fails instead of skipping."""

from __future__ import annotations

import os


def in_ci() -> bool:
    """True when ``CI`` is set to a true value (``1``, ``true``, ``yes``; any case)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
