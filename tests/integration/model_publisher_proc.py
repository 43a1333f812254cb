"""A publisher process that hangs at a chosen step of `publish_model`, to be SIGKILLed.

Usage: ``python -m tests.integration.model_publisher_proc MODEL_DIR VERSION STEP`` with
STEP ``manifest`` (hang after the chunks were acknowledged, before the manifest) or
``pointer`` (after the manifest, before the serving pointer). Settings come from the
``RNNREC_*`` environment. Prints ``HANGING`` once it reached the step.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any

from rnnrec_jax.model_io import load_trained_model
from stream_app import model_registry
from stream_app.settings import load_settings


def main(model_dir: str, version: str, step: str) -> None:
    """Publish ``model_dir`` as ``version`` and hang before ``step`` is written."""

    def hang(*_: Any, **__: Any) -> None:
        print("HANGING", flush=True)
        time.sleep(3600)

    setattr(model_registry, f"_send_{step}", hang)  # publish_model looks it up at call time
    model = dataclasses.replace(load_trained_model(model_dir), version=version)
    model_registry.publish_model(load_settings(), model)


if __name__ == "__main__":
    main(*sys.argv[1:4])
