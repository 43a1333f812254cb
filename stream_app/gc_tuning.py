"""Garbage-collector settings for a long-running serving process."""

from __future__ import annotations

import gc


def tune_gc(gen0_threshold: int) -> None:
    """Freeze what is alive now and collect the young generation less often.

    Called once the model is loaded: the model, JAX and Faust objects alive at that
    point are moved out of the collector's reach (``gc.freeze``), so full passes no
    longer walk them. ``gen0_threshold`` 0 keeps Python's own thresholds.
    """
    if gen0_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
