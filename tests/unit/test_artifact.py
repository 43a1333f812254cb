"""Model artifacts (manifest + chunks), their validation, and manifest signatures."""

from __future__ import annotations

import copy
import dataclasses
import json
import stat
from pathlib import Path

import jax
import numpy as np
import pytest

from rnnrec_jax import models
from rnnrec_jax.artifact import (
    ArtifactNonFinite,
    ArtifactShapeMismatch,
    BadSignature,
    ChunkChecksumMismatch,
    CorruptArtifact,
    MalformedManifest,
    MissingChunk,
    TotalChecksumMismatch,
    UnsignedArtifact,
    VocabularyMismatch,
    canonical_json,
    pack_model,
    rejection_reason,
    unpack_model,
)
from rnnrec_jax.checkpoint import (
    CheckpointError,
    ChecksumMismatch,
    NonFiniteParams,
    ShapeMismatch,
    serialize_params,
    sha256_hex,
)
from rnnrec_jax.config import ModelConfig, TrainConfig
from rnnrec_jax.data.vocabulary import ItemVocabulary
from rnnrec_jax.model_io import TrainedModel
from rnnrec_jax.signing import (
    KeyFileError,
    is_signed,
    load_private_key,
    load_public_key,
    sign_manifest,
    verify_manifest,
    write_keypair,
)

CFG = ModelConfig(item_capacity=64, hidden_sizes=(16,), purchase_head=True)
CHUNK = 4096


def make_model(cfg: ModelConfig = CFG, seed: int = 1, n_items: int = 20) -> TrainedModel:
    params = jax.tree_util.tree_map(np.asarray, models.init_params(cfg, jax.random.PRNGKey(seed)))
    vocab = ItemVocabulary([f"item{i}" for i in range(n_items)], capacity=cfg.item_capacity)
    return TrainedModel(
        params=params,
        model_cfg=cfg,
        vocab=vocab,
        version="3",
        train_cfg=TrainConfig(),
        purchase_calibration=(1.5, -0.25),
        metrics={"valid": {"recall@20": np.float32(0.5), "mrr@20": 0.25}, "epochs": (1, 2)},
        parent_version="2",
        created=123.0,
    )


@pytest.fixture(scope="module")
def model() -> TrainedModel:
    return make_model()


@pytest.fixture(scope="module")
def packed(model: TrainedModel) -> tuple[dict, list[bytes]]:
    return pack_model(model, chunk_bytes=CHUNK, name="rnnrec")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object]:
    private, public = write_keypair(tmp_path_factory.mktemp("keys") / "k")
    return load_private_key(private), load_public_key(public)


def assert_same_params(a: dict, b: dict) -> None:
    leaves_a = jax.tree_util.tree_leaves_with_path(a)
    leaves_b = dict(jax.tree_util.tree_leaves_with_path(b))
    assert len(leaves_a) == len(leaves_b)
    for path, leaf in leaves_a:
        np.testing.assert_array_equal(np.asarray(leaf), np.asarray(leaves_b[path]))


# ------------------------------------------------------------------ round trip


def test_pack_then_unpack_gives_back_the_same_model(
    model: TrainedModel, packed: tuple[dict, list[bytes]]
) -> None:
    manifest, chunks = packed
    assert len(chunks) == manifest["chunk_count"] > 1
    assert all(len(c) <= CHUNK for c in chunks)
    assert manifest["model"] == "rnnrec" and manifest["version"] == "3"
    assert manifest["parent_version"] == "2"
    assert manifest["sha256"] == sha256_hex(serialize_params(model.params))
    assert manifest["layout"]["item_out"] == {"shape": [64, 16], "dtype": "float32"}
    # Plain JSON: what a reader parses is what was packed.
    assert json.loads(canonical_json(manifest)) == manifest

    back = unpack_model(manifest, chunks)
    assert_same_params(model.params, back.params)
    assert back.model_cfg == model.model_cfg and back.train_cfg == model.train_cfg
    assert back.vocab == model.vocab
    assert back.purchase_calibration == (1.5, -0.25)
    assert back.metrics["valid"]["recall@20"] == pytest.approx(0.5)
    assert (back.version, back.parent_version, back.sha256) == ("3", "2", manifest["sha256"])


def test_same_model_packs_to_the_same_chunks(model: TrainedModel) -> None:
    a, chunks_a = pack_model(model, chunk_bytes=CHUNK, created=1.0)
    b, chunks_b = pack_model(copy.deepcopy(model), chunk_bytes=CHUNK, created=1.0)
    assert chunks_a == chunks_b and canonical_json(a) == canonical_json(b)


def test_chunk_size_must_be_positive(model: TrainedModel) -> None:
    with pytest.raises(ValueError, match="chunk_bytes"):
        pack_model(model, chunk_bytes=0)


# ------------------------------------------------------------------ refusals


def corrupt(packed: tuple[dict, list[bytes]]) -> tuple[dict, list]:
    manifest, chunks = packed
    return copy.deepcopy(manifest), list(chunks)


def test_missing_chunk_is_refused(packed: tuple[dict, list[bytes]]) -> None:
    manifest, chunks = corrupt(packed)
    chunks[1] = None
    with pytest.raises(MissingChunk, match="chunk 1"):
        unpack_model(manifest, chunks)
    with pytest.raises(MissingChunk):
        unpack_model(manifest, chunks[:-2])  # a truncated list


def test_extra_chunks_are_refused(packed: tuple[dict, list[bytes]]) -> None:
    manifest, chunks = corrupt(packed)
    with pytest.raises(CorruptArtifact):
        unpack_model(manifest, [*chunks, b"more"])


def test_corrupt_chunk_is_refused(packed: tuple[dict, list[bytes]]) -> None:
    manifest, chunks = corrupt(packed)
    flipped = bytearray(chunks[0])
    flipped[100] ^= 0xFF
    chunks[0] = bytes(flipped)
    with pytest.raises(ChunkChecksumMismatch, match="chunk 0") as caught:
        unpack_model(manifest, chunks)
    assert isinstance(caught.value, ChecksumMismatch)


def test_wrong_total_checksum_is_refused(packed: tuple[dict, list[bytes]]) -> None:
    manifest, chunks = corrupt(packed)
    manifest["sha256"] = "0" * 64
    with pytest.raises(TotalChecksumMismatch):
        unpack_model(manifest, chunks)


def test_chunks_reordered_consistently_still_fail_the_total(packed: tuple[dict, list]) -> None:
    # Each chunk matches its listed hash, but the whole is another byte string.
    manifest, chunks = corrupt(packed)
    chunks[0], chunks[1] = chunks[1], chunks[0]
    hashes = manifest["chunk_sha256"]
    hashes[0], hashes[1] = hashes[1], hashes[0]
    with pytest.raises(TotalChecksumMismatch):
        unpack_model(manifest, chunks)


def test_nan_params_are_refused(model: TrainedModel) -> None:
    params = copy.deepcopy(model.params)
    params["item_bias"][3] = np.nan
    manifest, chunks = pack_model(dataclasses.replace(model, params=params), chunk_bytes=CHUNK)
    with pytest.raises(ArtifactNonFinite, match="item_bias") as caught:
        unpack_model(manifest, chunks)
    assert isinstance(caught.value, NonFiniteParams)


def test_params_of_another_shape_than_the_config_are_refused(model: TrainedModel) -> None:
    params = copy.deepcopy(model.params)
    params["item_bias"] = params["item_bias"][:-1]
    manifest, chunks = pack_model(dataclasses.replace(model, params=params), chunk_bytes=CHUNK)
    with pytest.raises(ArtifactShapeMismatch, match="item_bias") as caught:
        unpack_model(manifest, chunks)
    assert isinstance(caught.value, ShapeMismatch)


def test_params_of_another_config_are_refused(model: TrainedModel) -> None:
    other = make_model(dataclasses.replace(CFG, hidden_sizes=(8,)))
    manifest, chunks = pack_model(dataclasses.replace(other, model_cfg=CFG), chunk_bytes=CHUNK)
    with pytest.raises(ArtifactShapeMismatch):
        unpack_model(manifest, chunks)


def test_layout_lying_about_the_arrays_is_refused(packed: tuple[dict, list[bytes]]) -> None:
    # The manifest claims what the config builds, the bytes hold something else.
    model = make_model()
    params = copy.deepcopy(model.params)
    params["item_bias"] = params["item_bias"].astype(np.float64)
    manifest, chunks = pack_model(dataclasses.replace(model, params=params), chunk_bytes=CHUNK)
    manifest["layout"]["item_bias"]["dtype"] = "float32"
    with pytest.raises(ArtifactShapeMismatch, match="item_bias"):
        unpack_model(manifest, chunks)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda v: v.update(capacity=128), "capacity"),
        (lambda v: v["items"].__setitem__(1, v["items"][0]), "duplicate"),
        (lambda v: v["items"].__setitem__(2, ""), "non-empty"),
        (lambda v: v.update(items=[f"i{n}" for n in range(64)], counts=[1] * 64), "fit"),
    ],
    ids=["capacity", "duplicate", "empty-id", "too-many"],
)
def test_inconsistent_vocabulary_is_refused(
    packed: tuple[dict, list[bytes]], change: object, message: str
) -> None:
    manifest, chunks = corrupt(packed)
    change(manifest["vocabulary"])  # type: ignore[operator]
    with pytest.raises(VocabularyMismatch, match=message):
        unpack_model(manifest, chunks)


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.update(format="something-else/9"),
        lambda m: m.pop("chunk_sha256"),
        lambda m: m.update(chunk_count="3"),
        lambda m: m.update(chunk_count=m["chunk_count"] + 1),
        lambda m: m["config"].update(model={"no_such_field": 1}),
        lambda m: m["config"].update(format="other"),
    ],
    ids=["format", "no-hashes", "count-type", "count-vs-hashes", "config-field", "config-format"],
)
def test_malformed_manifest_is_refused(packed: tuple[dict, list[bytes]], change: object) -> None:
    manifest, chunks = corrupt(packed)
    change(manifest)  # type: ignore[operator]
    with pytest.raises(MalformedManifest):
        unpack_model(manifest, chunks)


def test_every_refusal_is_a_checkpoint_error_with_a_bounded_reason() -> None:
    kinds = {
        MalformedManifest: "malformed_manifest",
        MissingChunk: "missing_chunk",
        ChunkChecksumMismatch: "chunk_checksum",
        TotalChecksumMismatch: "checksum",
        CorruptArtifact: "corrupt",
        ArtifactShapeMismatch: "shape_mismatch",
        ArtifactNonFinite: "non_finite",
        VocabularyMismatch: "vocabulary_mismatch",
        UnsignedArtifact: "unsigned",
        BadSignature: "bad_signature",
    }
    for cls, kind in kinds.items():
        assert issubclass(cls, CheckpointError)
        assert rejection_reason(cls("x")) == kind
    assert rejection_reason(ShapeMismatch("x")) == "shape_mismatch"
    assert rejection_reason(RuntimeError("x")) == "error"


# ------------------------------------------------------------------ signatures


def test_signed_manifest_verifies_and_unpacks(
    packed: tuple[dict, list[bytes]], keys: tuple
) -> None:
    private, public = keys
    manifest, chunks = packed
    signed = sign_manifest(manifest, private)
    assert is_signed(signed) and not is_signed(manifest)
    # Verification is over canonical JSON: key order and a JSON round trip do not matter.
    reordered = json.loads(json.dumps(dict(reversed(list(signed.items())))))
    verify_manifest(reordered, public)
    assert unpack_model(reordered, chunks, public_key=public).version == "3"


def test_unsigned_manifest_is_refused_when_a_key_is_required(
    packed: tuple[dict, list[bytes]], keys: tuple
) -> None:
    manifest, chunks = packed
    with pytest.raises(UnsignedArtifact):
        unpack_model(manifest, chunks, public_key=keys[1])


def test_tampered_or_foreign_signatures_are_refused(
    packed: tuple[dict, list[bytes]], keys: tuple, tmp_path: Path
) -> None:
    private, public = keys
    manifest, chunks = packed
    signed = sign_manifest(manifest, private)
    tampered = copy.deepcopy(signed)
    tampered["metrics"]["valid"]["recall@20"] = 0.99
    with pytest.raises(BadSignature):
        verify_manifest(tampered, public)
    other_private, _ = write_keypair(tmp_path / "other")
    foreign = sign_manifest(manifest, load_private_key(other_private))
    with pytest.raises(BadSignature, match="does not verify"):
        unpack_model(foreign, chunks, public_key=public)
    garbled = copy.deepcopy(signed)
    garbled["signature"]["value"] = "not base64!"
    with pytest.raises(BadSignature):
        verify_manifest(garbled, public)
    wrong_alg = copy.deepcopy(signed)
    wrong_alg["signature"]["alg"] = "rsa"
    with pytest.raises(BadSignature, match="ed25519"):
        verify_manifest(wrong_alg, public)


def test_keygen_writes_a_private_key_only_its_owner_can_read(tmp_path: Path) -> None:
    private, public = write_keypair(tmp_path / "new" / "dir")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) & 0o077 == 0o044
    assert b"PRIVATE KEY" in private.read_bytes() and b"PUBLIC KEY" in public.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        write_keypair(tmp_path / "new" / "dir")


def test_unreadable_or_wrong_key_files_give_one_line_errors(tmp_path: Path) -> None:
    private, public = write_keypair(tmp_path / "k")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key\n")
    for loader, path, message in [
        (load_public_key, tmp_path / "missing.pem", "cannot read"),
        (load_public_key, junk, "not a PEM public key"),
        (load_private_key, junk, "not an unencrypted PEM private key"),
        (load_public_key, private, "not a PEM public key"),
        (load_private_key, public, "not an unencrypted PEM private key"),
    ]:
        with pytest.raises(KeyFileError, match=message) as caught:
            loader(path)
        assert "\n" not in str(caught.value)


def test_a_checkpoint_whose_params_do_not_fit_its_config_is_refused_at_load(
    tmp_path: Path, model: TrainedModel
) -> None:
    # Its checksums are intact; before, a worker or the trainer found out at warm-up.
    from rnnrec_jax.model_io import load_trained_model, save_trained_model

    wider = dataclasses.replace(model.model_cfg, hidden_sizes=(24,))
    save_trained_model(tmp_path / "m", model.params, wider, model.vocab, version="w")
    with pytest.raises(CheckpointError, match=r"parameter|params differ"):
        load_trained_model(tmp_path / "m")
    save_trained_model(tmp_path / "ok", model.params, model.model_cfg, model.vocab, version="o")
    assert load_trained_model(tmp_path / "ok").version == "o"
