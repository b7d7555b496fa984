"""The sealed archive's format: keys as text, what goes into a sealed box, and opening it.

Sealed boxes (libsodium `crypto_box_seal`): anyone with the public key can seal, only the
holder of the private key can open. No I/O here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

KEY_BYTES = 32
PUBLIC_LABEL = "archive_public_key"
PRIVATE_LABEL = "archive_private_key"
FORMAT_VERSION = 1


class ArchiveKeyError(ValueError):
    """A key that is not a base64 Curve25519 key; the message names what is expected."""


def _decode_key(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise ArchiveKeyError(
            f"not a {what}: expected the 44-character base64 key printed by chaperone keygen"
        )
    return raw


def parse_public_key(text: str) -> bytes:
    return _decode_key(text, "public key")


def is_public_key(text: str) -> bool:
    try:
        parse_public_key(text)
    except ArchiveKeyError:
        return False
    return True


def parse_private_key(text: str) -> bytes:
    """The private key from a file: the bare key, or keygen's `archive_private_key: ...` line."""
    for line in text.splitlines():
        label, sep, value = line.partition(":")
        if sep and label.strip() == PRIVATE_LABEL:
            return _decode_key(value, "private key")
    stripped = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if len(stripped) == 1:
        return _decode_key(stripped[0], "private key")
    raise ArchiveKeyError(
        f"no private key found: expected the key alone or a line '{PRIVATE_LABEL}: ...'"
    )


def key_id(public_key: bytes) -> str:
    """A short fingerprint naming which key sealed a row (safe to show and store)."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def public_key_of(private_key: bytes) -> bytes:
    return bytes(PrivateKey(private_key).public_key)


def keypair_text(private_key: bytes) -> str:
    """What `chaperone keygen` prints for a private key."""
    public = base64.b64encode(public_key_of(private_key)).decode()
    private = base64.b64encode(private_key).decode()
    return (
        "# Chaperone archive key pair (Curve25519, libsodium sealed boxes).\n"
        f"# Put the public key in config as retention.{PUBLIC_LABEL}.\n"
        "# Keep the private key offline: it opens every archived message.\n"
        f"{PUBLIC_LABEL}: {public}\n"
        f"{PRIVATE_LABEL}: {private}\n"
    )


def archive_record(
    event: dict[str, Any], decrypted: dict[str, Any] | None, archived_at_ms: int
) -> dict[str, Any]:
    """What is sealed for one message: its metadata and its content (decrypted when the bot
    could; otherwise the encrypted event as the homeserver holds it)."""
    record: dict[str, Any] = {
        "v": FORMAT_VERSION,
        "room_id": event.get("room_id"),
        "event_id": event.get("event_id"),
        "sender": event.get("sender"),
        "origin_server_ts": event.get("origin_server_ts"),
        "archived_at": archived_at_ms,
    }
    source = decrypted if decrypted is not None else event
    encrypted = event.get("type") == "m.room.encrypted"
    record["type"] = source.get("type")
    record["content"] = source.get("content", {})
    record["encrypted"] = encrypted
    # False only for an encrypted message the bot never had the key for: then the content is
    # the ciphertext, which a member's key backup can still open.
    record["readable"] = decrypted is not None or not encrypted
    return record


def seal(public_key: bytes, record: dict[str, Any]) -> bytes:
    data = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return bytes(SealedBox(PublicKey(public_key)).encrypt(data.encode()))


def open_sealed(private_key: bytes, sealed: bytes) -> dict[str, Any] | None:
    """The record, or None when this key cannot open it."""
    try:
        data = SealedBox(PrivateKey(private_key)).decrypt(sealed)
    except CryptoError:
        return None
    record: dict[str, Any] = json.loads(data)
    return record
