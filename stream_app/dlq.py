"""Dead letters: what a rejected clickstream record becomes on ``clickstream-dlq``.

The DLQ record keeps the original key and the original bytes, so an operator can
replay it after a fix; only the sizes are bounded (a huge poison message must not make
a huge DLQ record). Header names and values are described by
``schemas/clickstream-dlq-headers.json``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from stream_app.events import Rejection

HEADER_KIND = "rnnrec.error.kind"
HEADER_MESSAGE = "rnnrec.error.message"
HEADER_TOPIC = "rnnrec.source.topic"
HEADER_PARTITION = "rnnrec.source.partition"
HEADER_OFFSET = "rnnrec.source.offset"
HEADER_SIZE = "rnnrec.original.size"
HEADER_SHA256 = "rnnrec.original.sha256"
HEADER_TRUNCATED = "rnnrec.truncated"
HEADER_KEY_SIZE = "rnnrec.original.key_size"
HEADER_KEY_SHA256 = "rnnrec.original.key_sha256"
_MAX_MESSAGE_CHARS = 500
MAX_KEY_BYTES = 4096
"""Longest key a DLQ record keeps. Only the value is bounded on input, and a key near
the broker's record limit made the DLQ record itself too large to send."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record ready to send to the DLQ topic."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def dead_letter(
    key: bytes | None,
    value: bytes | None,
    rejection: Rejection,
    source_topic: str,
    partition: int,
    offset: int,
    max_payload_bytes: int,
) -> DeadLetter:
    """Build the DLQ record for a rejected input record.

    Args:
        key: the original key, kept as is up to `MAX_KEY_BYTES` (a longer one is cut,
            with its size and sha256 in headers).
        value: the original value (None for a tombstone: sent as empty bytes).
        rejection: why it was rejected.
        source_topic: where it came from.
        partition: its source partition.
        offset: its source offset.
        max_payload_bytes: longest copied value; longer values are cut.

    Returns:
        The `DeadLetter`, with size and sha256 of the original value in headers.
    """
    original = value or b""
    truncated = len(original) > max_payload_bytes
    headers = {
        HEADER_KIND: str(rejection.kind),
        HEADER_MESSAGE: rejection.message[:_MAX_MESSAGE_CHARS],
        HEADER_TOPIC: source_topic,
        HEADER_PARTITION: str(partition),
        HEADER_OFFSET: str(offset),
        HEADER_SIZE: str(len(original)),
        HEADER_SHA256: hashlib.sha256(original).hexdigest(),
        HEADER_TRUNCATED: "true" if truncated else "false",
    }
    if key is not None and len(key) > MAX_KEY_BYTES:
        headers[HEADER_KEY_SIZE] = str(len(key))
        headers[HEADER_KEY_SHA256] = hashlib.sha256(key).hexdigest()
        key = key[:MAX_KEY_BYTES]
    return DeadLetter(
        key=key,
        value=original[:max_payload_bytes] if truncated else original,
        headers=[(name, text.encode("utf-8")) for name, text in headers.items()],
    )


def headers_as_dict(headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...]) -> dict:
    """Decode DLQ headers into a ``{name: text}`` dict (for tools and tests)."""
    return {name: raw.decode("utf-8", errors="replace") for name, raw in headers}
