"""shared_data_dir and the tests' skip/fail rule for the shared data."""

from __future__ import annotations

import pytest

from rnnrec_jax.data import paths
from tests.unit._shared import require_shared_data

pytestmark = pytest.mark.unit


def test_environment_variable_wins(monkeypatch, tmp_path):
    monkeypatch.setenv(paths.SHARED_DATA_ENV, str(tmp_path))
    assert paths.shared_data_dir() == tmp_path


def test_default_is_the_sibling_shared_folder_or_none(monkeypatch, tmp_path):
    monkeypatch.delenv(paths.SHARED_DATA_ENV, raising=False)
    monkeypatch.setattr(paths, "_REPO_ROOT", tmp_path / "repo")
    assert paths.shared_data_dir() is None
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert paths.shared_data_dir() == tmp_path / "shared" / "data"


def test_missing_data_skips_locally_and_fails_under_ci(monkeypatch, tmp_path):
    monkeypatch.setenv(paths.SHARED_DATA_ENV, str(tmp_path / "absent"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_shared_data()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        require_shared_data()
