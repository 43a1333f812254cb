"""Settings of model distribution: defaults, key file names, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_app.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "RNNREC_MODEL_VERIFY_KEY",
        "RNNREC_MODEL_VERIFY_KEY_FILE",
        "RNNREC_MODEL_SIGNING_KEY",
        "RNNREC_MODEL_SIGNING_KEY_FILE",
        "RNNREC_MODEL_NAME",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    s = load_settings()
    assert s.model_name == "rnnrec" and s.topic("model_updates") == "model-updates"
    assert s.model_verify_key is None and s.model_signing_key is None
    assert (s.model_keep_versions, s.model_chunk_bytes, s.model_follow) == (5, 512 * 1024, True)


def test_key_paths_accept_the_file_spelling_the_manifests_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RNNREC_MODEL_VERIFY_KEY_FILE", "/etc/rnnrec/public.pem")
    monkeypatch.setenv("RNNREC_MODEL_SIGNING_KEY", "/etc/rnnrec/private.pem")
    s = load_settings()
    assert s.model_verify_key == Path("/etc/rnnrec/public.pem")
    assert s.model_signing_key == Path("/etc/rnnrec/private.pem")
    assert load_settings(model_verify_key="/x.pem").model_verify_key == Path("/x.pem")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("RNNREC_MODEL_NAME", "a/b", "a-zA-Z0-9"),
        ("RNNREC_MODEL_KEEP_VERSIONS", "0", "greater than or equal to 1"),
        ("RNNREC_MODEL_CHUNK_BYTES", "10", "greater than or equal to 1024"),
    ],
)
def test_nonsense_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value).startswith(variable + ":") and message in str(caught.value)


def test_a_signer_verifies_with_its_own_key_when_no_verify_key_is_set(tmp_path: Path) -> None:
    # The online trainer holds only the signing key; without this it loaded unsigned
    # versions from the topic and published signed children of them.
    from cryptography.hazmat.primitives import serialization

    from rnnrec_jax.signing import load_public_key, write_keypair
    from stream_app.model_registry import load_verify_key

    private, public = write_keypair(tmp_path / "keys")
    assert load_verify_key(load_settings()) is None
    signer = load_verify_key(load_settings(model_signing_key=str(private)))

    def raw(key: object) -> bytes:
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)  # type: ignore[attr-defined]

    assert raw(signer) == raw(load_public_key(public))
    # A configured verify key still wins.
    _, other_public = write_keypair(tmp_path / "other")
    both = load_settings(model_signing_key=str(private), model_verify_key=str(other_public))
    assert raw(load_verify_key(both)) == raw(load_public_key(other_public))
