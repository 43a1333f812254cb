"""Every shipped config builds, states its command, and the default is the chosen one."""

import importlib
import pkgutil

import pytest

import rnnrec_jax.configs
from rnnrec_jax.config import ModelConfig, TrainConfig

NAMES = sorted(m.name for m in pkgutil.iter_modules(rnnrec_jax.configs.__path__))


@pytest.mark.parametrize("name", NAMES)
def test_config_builds_and_documents_its_command(name: str) -> None:
    module = importlib.import_module(f"rnnrec_jax.configs.{name}")
    model, train = module.get_config()
    assert isinstance(model, ModelConfig) and isinstance(train, TrainConfig)
    if name != "tiny":  # the test and demo config has no benchmark figure
        assert ".venv/bin/" in (module.__doc__ or ""), f"{name}: no command in the docstring"


def test_default_is_the_recency_recipe() -> None:
    from rnnrec_jax.configs import default, narm_cos_recent

    assert default.get_config() == narm_cos_recent.get_config()
    _, train = default.get_config()
    assert train.recency_days == 2.0 and train.label_smoothing == 0.2
