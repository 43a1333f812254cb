"""Ed25519 signatures over model manifests.

The publisher (trainer, ``rnnrec model publish``) holds the private key; workers hold
only the public key and refuse unsigned or wrongly signed manifests when one is
configured. The signature covers the canonical JSON of the manifest without its
``signature`` field (`rnnrec_jax.artifact.canonical_json`): the manifest lists the
sha256 of every chunk and of the whole params, so signing it signs the model.

``signature`` field: ``{"alg": "ed25519", "key_id": <16 hex of sha256(public key)>,
"value": <base64 signature>}``.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from rnnrec_jax.artifact import BadSignature, UnsignedArtifact, canonical_json

__all__ = [
    "PRIVATE_KEY_FILE",
    "PUBLIC_KEY_FILE",
    "SIGNATURE_FIELD",
    "KeyFileError",
    "is_signed",
    "key_id",
    "load_private_key",
    "load_public_key",
    "sign_manifest",
    "signed_bytes",
    "verify_manifest",
    "write_keypair",
]

SIGNATURE_FIELD = "signature"
ALGORITHM = "ed25519"
PRIVATE_KEY_FILE = "model-signing-key.pem"
PUBLIC_KEY_FILE = "model-verify-key.pem"


class KeyFileError(ValueError):
    """A key file is missing, unreadable or not an Ed25519 key (one-line message)."""


def signed_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: canonical JSON of the manifest minus its signature."""
    return canonical_json({k: v for k, v in manifest.items() if k != SIGNATURE_FIELD})


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key (16 hex characters)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def is_signed(manifest: Mapping[str, Any]) -> bool:
    """Whether the manifest carries a signature field (valid or not)."""
    return isinstance(manifest.get(SIGNATURE_FIELD), Mapping)


def sign_manifest(manifest: Mapping[str, Any], private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """A copy of ``manifest`` with an Ed25519 signature (an old signature is replaced).

    Args:
        manifest: the manifest (plain JSON types).
        private_key: the publisher's key (`load_private_key`).

    Returns:
        The signed manifest.
    """
    signature = private_key.sign(signed_bytes(manifest))
    signed = {k: v for k, v in manifest.items() if k != SIGNATURE_FIELD}
    signed[SIGNATURE_FIELD] = {
        "alg": ALGORITHM,
        "key_id": key_id(private_key.public_key()),
        "value": base64.b64encode(signature).decode("ascii"),
    }
    return signed


def verify_manifest(manifest: Mapping[str, Any], public_key: Ed25519PublicKey) -> None:
    """Check the manifest's signature.

    Raises:
        UnsignedArtifact: no signature field.
        BadSignature: malformed, another algorithm, or not made by ``public_key``'s
            private key over these exact bytes.
    """
    field = manifest.get(SIGNATURE_FIELD)
    if field is None:
        raise UnsignedArtifact("the manifest is unsigned and a verify key is configured")
    if not isinstance(field, Mapping) or field.get("alg") != ALGORITHM:
        raise BadSignature("the manifest signature is malformed or not ed25519")
    try:
        signature = base64.b64decode(str(field.get("value", "")), validate=True)
        public_key.verify(signature, signed_bytes(manifest))
    except (InvalidSignature, ValueError) as exc:
        expected = key_id(public_key)
        raise BadSignature(
            f"the manifest signature does not verify (signed by key {field.get('key_id')!r}, "
            f"verify key {expected!r}): {type(exc).__name__}"
        ) from None


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Load an unencrypted PEM Ed25519 private key.

    Raises:
        KeyFileError: unreadable, not PEM, encrypted, or not Ed25519.
    """
    data = _read(Path(path), "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is a {type(key).__name__}, not an Ed25519 private key")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Load a PEM Ed25519 public key.

    Raises:
        KeyFileError: unreadable, not PEM, or not Ed25519.
    """
    data = _read(Path(path), "verify key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} is a {type(key).__name__}, not an Ed25519 public key")
    return key


def write_keypair(directory: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Generate an Ed25519 key pair into ``directory`` (created if missing).

    The private key file is created with mode 0600 from the start (never briefly
    readable by others); the public key is 0644. Existing files are never overwritten.

    Returns:
        ``(private key path, public key path)``.

    Raises:
        KeyFileError: a key file already exists or cannot be written.
    """
    root = Path(directory)
    private_path, public_path = root / PRIVATE_KEY_FILE, root / PUBLIC_KEY_FILE
    for path in (private_path, public_path):
        if path.exists():
            raise KeyFileError(f"{path} already exists; remove it or choose another directory")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private_pem)
        fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(public_pem)
        os.chmod(private_path, 0o600)  # a umask cannot have widened it, but be explicit
    except OSError as exc:
        raise KeyFileError(f"cannot write keys to {root}: {exc.strerror or exc}") from None
    return private_path, public_path
