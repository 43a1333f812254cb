"""Checkpoint save/load: round trips, damage detection and crash safety."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnnrec_jax import checkpoint as ckpt

pytestmark = pytest.mark.unit


def make_params(seed: int = 0, capacity: int = 12, hidden: int = 4) -> dict:
    rng = np.random.default_rng(seed)
    # Nested like flax params: {"params": {"module": {"kernel": ...}}}.
    return {
        "params": {
            "embedding": {"embedding": rng.normal(size=(capacity, hidden)).astype(np.float32)},
            "gru": {
                "ir": {"kernel": rng.normal(size=(hidden, hidden)).astype(np.float32)},
                "hn": {"bias": rng.normal(size=(hidden,)).astype(np.float32)},
            },
            "out_bias": np.zeros((capacity,), np.float32),
        }
    }


def save(root: Path, version: int | str, params: dict | None = None, **kw) -> Path:
    return ckpt.save_checkpoint(
        root,
        make_params(version if isinstance(version, int) else 0) if params is None else params,
        version=version,
        vocabulary={"items": {"a": 1, "b": 2}, "capacity": 12},
        config={"hidden": 4, "loss": "ce"},
        metrics={"recall@20": 0.5},
        **kw,
    )


def assert_tree_equal(a, b) -> None:
    ja, jb = jax.tree_util.tree_structure(a), jax.tree_util.tree_structure(b)
    assert ja == jb
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        assert np.asarray(x).dtype == np.asarray(y).dtype


def test_round_trip_with_metadata_and_opt_state(tmp_path: Path) -> None:
    params = make_params()
    opt = optax.adam(1e-3)
    opt_state = opt.init(params)
    path = save(tmp_path, 1, params, opt_state=opt_state, parent_version=None, created=123.0)
    assert path == tmp_path / "ckpt-1"
    loaded = ckpt.load_checkpoint(tmp_path, template=params, opt_state_template=opt_state)
    assert_tree_equal(loaded.params, params)
    assert_tree_equal(loaded.opt_state, opt_state)
    assert loaded.version == 1 and loaded.parent_version is None and loaded.created == 123.0
    assert loaded.vocabulary == {"items": {"a": 1, "b": 2}, "capacity": 12}
    assert loaded.config["loss"] == "ce" and loaded.metrics == {"recall@20": 0.5}
    # Without a template nested dicts come back as nested dicts.
    assert_tree_equal(ckpt.load_checkpoint(path).params, params)
    # Serving can skip the optimiser state.
    assert ckpt.load_checkpoint(path, load_opt_state=False).opt_state is None


def test_serialize_is_deterministic_and_round_trips_bfloat16() -> None:
    params = make_params()
    params["params"]["half"] = jnp.arange(6, dtype=jnp.bfloat16).reshape(2, 3)
    data = ckpt.serialize_params(params)
    assert data == ckpt.serialize_params(jax.tree_util.tree_map(np.array, params))
    back = ckpt.deserialize_params(data, template=params, expected_sha256=ckpt.sha256_hex(data))
    assert_tree_equal(back, jax.tree_util.tree_map(np.asarray, params))
    with pytest.raises(ckpt.ChecksumMismatch):
        ckpt.deserialize_params(data, expected_sha256="0" * 64)


def test_deserialize_rejects_damage_without_filesystem() -> None:
    params = make_params()
    data = ckpt.serialize_params(params)
    with pytest.raises(ckpt.CorruptCheckpoint):
        ckpt.deserialize_params(data[: len(data) // 2])
    with pytest.raises(ckpt.CorruptCheckpoint):
        ckpt.deserialize_params(b"not a zip")
    bad = make_params()
    bad["params"]["out_bias"][3] = np.inf
    with pytest.raises(ckpt.NonFiniteParams, match="out_bias"):
        ckpt.deserialize_params(ckpt.serialize_params(bad))
    wrong = make_params(capacity=13)
    with pytest.raises(ckpt.ShapeMismatch, match="embedding"):
        ckpt.deserialize_params(ckpt.serialize_params(wrong), template=params)


def test_pickled_object_arrays_are_refused() -> None:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        member = io.BytesIO()
        np.lib.format.write_array(member, np.array([{"x": 1}], dtype=object), allow_pickle=True)
        zf.writestr("params/evil.npy", member.getvalue())
    with pytest.raises(ckpt.CorruptCheckpoint, match="unreadable"):
        ckpt.deserialize_params(buf.getvalue())


def test_truncated_arrays_file(tmp_path: Path) -> None:
    path = save(tmp_path, 1)
    arrays = path / ckpt.ARRAYS_FILE
    arrays.write_bytes(arrays.read_bytes()[:-100])
    with pytest.raises(ckpt.CorruptCheckpoint, match="truncated"):
        ckpt.load_checkpoint(tmp_path)


@pytest.mark.parametrize("where", [0.5, 0.9])
def test_flipped_byte_in_arrays(tmp_path: Path, where: float) -> None:
    path = save(tmp_path, 1)
    arrays = path / ckpt.ARRAYS_FILE
    data = bytearray(arrays.read_bytes())
    data[int(len(data) * where)] ^= 0x01
    arrays.write_bytes(bytes(data))
    with pytest.raises(ckpt.ChecksumMismatch):
        ckpt.load_checkpoint(tmp_path)


def test_edited_metadata_is_detected(tmp_path: Path) -> None:
    path = save(tmp_path, 1)
    meta_path = path / ckpt.META_FILE
    meta = json.loads(meta_path.read_text())
    meta["metrics"]["recall@20"] = 0.99  # valid JSON, but not what was written
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ckpt.ChecksumMismatch, match=r"meta\.json"):
        ckpt.load_checkpoint(tmp_path)
    meta_path.write_text("{ not json")
    with pytest.raises(ckpt.CorruptCheckpoint):
        ckpt.load_checkpoint(tmp_path)


def test_wrong_shape_against_template(tmp_path: Path) -> None:
    save(tmp_path, 1, make_params(capacity=20))
    with pytest.raises(ckpt.ShapeMismatch, match=r"embedding.*float32\[20, 4\].*float32\[12, 4\]"):
        ckpt.load_checkpoint(tmp_path, template=make_params(capacity=12))
    template = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), make_params(capacity=20)
    )
    del template["params"]["out_bias"]
    with pytest.raises(ckpt.ShapeMismatch, match="lacks"):
        ckpt.load_checkpoint(tmp_path, template=template)


def test_nan_params_are_refused_on_save_and_load(tmp_path: Path) -> None:
    bad = make_params()
    bad["params"]["gru"]["hn"]["bias"][0] = np.nan
    with pytest.raises(ckpt.NonFiniteParams, match="gru/hn/bias"):
        save(tmp_path, 1, bad)
    assert ckpt.latest_checkpoint(tmp_path) is None
    # A NaN that got in anyway (e.g. written by an older tool) is caught on load.
    nan_flat = ckpt.flatten_tree({"params": bad})
    good = save(tmp_path, 2)
    data = ckpt._write_npz(nan_flat)
    (good / ckpt.ARRAYS_FILE).write_bytes(data)
    meta = json.loads((good / ckpt.META_FILE).read_text())
    meta["arrays"].update(size=len(data), sha256=ckpt.sha256_hex(data))
    meta["sha256"] = ckpt._meta_digest(meta)
    (good / ckpt.META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ckpt.NonFiniteParams, match=r"1 NaN/inf"):
        ckpt.load_checkpoint(tmp_path)


def test_kill_during_final_rename_keeps_previous(tmp_path: Path, monkeypatch) -> None:
    save(tmp_path, 1)
    real_replace = os.replace

    def killed(src, dst) -> None:
        raise KeyboardInterrupt("simulated kill -9 at the rename")

    monkeypatch.setattr(ckpt.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, 2)
    monkeypatch.setattr(ckpt.os, "replace", real_replace)
    loaded = ckpt.load_checkpoint(tmp_path, template=make_params(1))
    assert loaded.version == 1
    assert_tree_equal(loaded.params, make_params(1))
    # The next save cleans up the leftover temp dir and succeeds.
    save(tmp_path, 2)
    assert ckpt.load_checkpoint(tmp_path).version == 2
    assert not list(tmp_path.glob(".tmp-*"))


def test_kill_before_pointer_swap_keeps_previous(tmp_path: Path, monkeypatch) -> None:
    save(tmp_path, 1)
    real_replace = os.replace

    def kill_on_pointer(src, dst) -> None:
        if Path(dst).name == ckpt.POINTER:
            raise KeyboardInterrupt("simulated kill -9 before the pointer swap")
        real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", kill_on_pointer)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, 2)
    monkeypatch.setattr(ckpt.os, "replace", real_replace)
    assert (tmp_path / "ckpt-2").is_dir()  # written, but never committed
    assert ckpt.load_checkpoint(tmp_path).version == 1
    save(tmp_path, 2)  # retrying the same version replaces the uncommitted copy
    assert ckpt.load_checkpoint(tmp_path).version == 2


def test_keep_last_n_and_immutable_current(tmp_path: Path) -> None:
    for v in range(1, 6):
        save(tmp_path, v, parent_version=v - 1 if v > 1 else None, created=1000.0 + v, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt-4", "ckpt-5"]
    assert ckpt.load_checkpoint(tmp_path).parent_version == 4
    assert ckpt.load_checkpoint(tmp_path / "ckpt-4").version == 4
    with pytest.raises(FileExistsError):
        save(tmp_path, 5)
    with pytest.raises(ValueError, match="version"):
        save(tmp_path, "../escape")


def test_missing_checkpoint_is_a_named_error(tmp_path: Path) -> None:
    with pytest.raises(ckpt.CorruptCheckpoint):
        ckpt.load_checkpoint(tmp_path / "nothing")
    path = save(tmp_path, 1)
    (path / ckpt.ARRAYS_FILE).unlink()
    with pytest.raises(ckpt.CorruptCheckpoint, match="missing"):
        ckpt.load_checkpoint(tmp_path)


def test_an_earlier_kept_version_is_never_overwritten_with_other_params(tmp_path: Path) -> None:
    # Only the current version was protected: saving version 1 again with other
    # params replaced the kept checkpoint 1 that a rollback would go back to.
    first = save(tmp_path, 1, created=1000.0)
    before = (first / ckpt.ARRAYS_FILE).read_bytes()
    save(tmp_path, 2, created=1001.0)
    with pytest.raises(FileExistsError, match="other params"):
        save(tmp_path, 1, params=make_params(7), created=1002.0)
    assert (first / ckpt.ARRAYS_FILE).read_bytes() == before
    assert ckpt.load_checkpoint(tmp_path).version == 2
    # The same params again are the same version: allowed (the pointer moves back).
    save(tmp_path, 1, created=1003.0)
    assert ckpt.load_checkpoint(tmp_path).version == 1
