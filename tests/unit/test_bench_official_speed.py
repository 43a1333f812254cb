"""The side-by-side speed bench maps configs to the official code and reads its epochs."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_official_speed as bench

from rnnrec_jax.configs import default, gru4rec_yoochoose


def test_official_parameters_follow_the_rnnrec_config() -> None:
    mc, tc = gru4rec_yoochoose.get_config()
    params = bench.official_params(mc, tc, epochs=3)
    assert params == {
        "layers": [480],
        "loss": "cross-entropy",
        "batch_size": 48,
        "dropout_p_embed": 0.0,
        "dropout_p_hidden": 0.2,
        "learning_rate": 0.07,
        "momentum": 0.0,
        "sample_alpha": 0.2,
        "n_sample": 2048,
        "embedding": 0,
        "constrained_embedding": True,
        "n_epochs": 3,
        "logq": 1.0,
    }


def test_configs_without_an_official_equivalent_are_refused() -> None:
    mc, tc = default.get_config()
    with pytest.raises(SystemExit, match="no official equivalent"):
        bench.official_params(mc, tc, epochs=3)
    mc, tc = gru4rec_yoochoose.get_config()
    with pytest.raises(SystemExit, match="no official equivalent"):
        bench.official_params(dataclasses.replace(mc, cell="lstm"), tc, epochs=3)


FAKE_TORCH = "__version__ = 'fake'\ndef get_num_threads():\n    return 2\ndef device(name):\n    return name\n"
FAKE_PANDAS = "def read_csv(path, sep, dtype):\n    return open(path).read()\n"
FAKE_GRU4REC = """
class GRU4Rec:
    def __init__(self, device, layers, n_epochs, **kwargs):
        assert device == "cpu" and layers == [480], (device, layers)
        self.n_epochs = n_epochs
        self.epochs_printed = int(kwargs["batch_size"] == 48) + n_epochs - 1
    def fit(self, data):
        assert data.startswith("SessionId")
        for e in range(self.epochs_printed):
            print("Epoch{} --> loss: 6.5 \\t({:.2f}s) \\t[70.00 mb/s | 3500 e/s]".format(e + 1, 30 + e))
"""


def _fake_official(folder: Path) -> Path:
    # Stands in for the external program (and its torch and pandas) only, printing
    # what the official fit() prints, so the bench's side of the protocol is tested.
    folder.mkdir()
    (folder / "gru4rec_pytorch.py").write_text(FAKE_GRU4REC)
    (folder / "torch.py").write_text(FAKE_TORCH)
    (folder / "pandas.py").write_text(FAKE_PANDAS)
    return folder


def test_epoch_lines_parse_as_the_official_code_prints_them() -> None:
    out = (
        "Created sample store with 4882 batches of samples (type=GPU)\n"
        "Epoch1 --> loss: 7.123456 \t(31.50s) \t[91.50 mb/s | 4367 e/s]\n"
        "Epoch2 --> loss: 6.736292 \t(38.94s) \t[74.60 mb/s | 3528 e/s]\n"
    )
    found = [(int(m.group(1)), float(m.group(2))) for m in bench.EPOCH_LINE.finditer(out)]
    assert found == [(1, 31.5), (2, 38.94)]


def test_the_official_run_gets_the_parameters_and_its_epochs_are_read(tmp_path: Path) -> None:
    folder = _fake_official(tmp_path / "official")
    data = tmp_path / "train.tsv"
    data.write_text("SessionId\tItemId\tTime\n1\t2\t3.0\n")
    mc, tc = gru4rec_yoochoose.get_config()
    params = bench.official_params(mc, tc, epochs=3)
    assert bench.run_official(sys.executable, folder, data, params) == [30.0, 31.0, 32.0]


def test_a_short_official_run_is_an_error(tmp_path: Path) -> None:
    folder = _fake_official(tmp_path / "official")
    data = tmp_path / "train.tsv"
    data.write_text("SessionId\tItemId\tTime\n")
    mc, tc = gru4rec_yoochoose.get_config()
    params = bench.official_params(mc, dataclasses.replace(tc, batch_size=32), epochs=3)
    # The fake prints one epoch fewer for this batch size: refused, with the output.
    with pytest.raises(SystemExit, match="official run failed"):
        bench.run_official(sys.executable, folder, data, params)
