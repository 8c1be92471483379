"""Envelope encryption of exchange API secrets (AES-256-GCM).

Each secret gets its own random 256-bit data key; the secret is sealed with the data key and the
data key is sealed (wrapped) with the master key, both with AES-256-GCM and random 96-bit nonces.
Why envelope rather than one AES-GCM layer under the master key: the master key only ever seals
random keys (never attacker-influenced text, never more than one message per data key, so nonce
reuse limits are irrelevant), and a master-key rotation only has to rewrap the 48-byte data keys;
a KMS can later replace the wrapping step without changing the stored format.

Token format (text, safe in any column or log redaction)::

    v1:<base64url( key_id[4] | wrap_nonce[12] | wrapped_key[48] | nonce[12] | ciphertext+tag )>

``key_id`` is a fingerprint of the master key (HMAC, reveals nothing about the key) so that a
token sealed under another master key is reported as such instead of as tampering. Every header
byte is authenticated (it is the associated data of both seals).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tradewire.errors import ConfigError, SecretDecryptionError

VERSION = "v1"
_KEY_BYTES = 32
_NONCE_BYTES = 12
_KEY_ID_BYTES = 4
_WRAPPED_BYTES = _KEY_BYTES + 16  # key + GCM tag
_HEADER_BYTES = _KEY_ID_BYTES + _NONCE_BYTES + _WRAPPED_BYTES + _NONCE_BYTES
_WRAP_AAD = b"tradewire/secret/v1/data-key"
_DATA_AAD = b"tradewire/secret/v1/secret"


class SecretBox:
    """Seals and opens API secrets under a 32-byte master key."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != _KEY_BYTES:
            raise ConfigError(f"the master key must be {_KEY_BYTES} bytes, got {len(master_key)}")
        self._master = AESGCM(master_key)
        digest = hmac.new(master_key, b"tradewire/key-id", hashlib.sha256).digest()
        self._key_id = digest[:_KEY_ID_BYTES]

    def __repr__(self) -> str:
        return f"SecretBox(key_id={self._key_id.hex()})"

    @property
    def key_id(self) -> str:
        """Fingerprint of the master key (hex), safe to log."""
        return self._key_id.hex()

    def encrypt(self, plaintext: str) -> str:
        """A new token for ``plaintext`` (different every call)."""
        data_key = AESGCM.generate_key(bit_length=_KEY_BYTES * 8)
        wrap_nonce, nonce = os.urandom(_NONCE_BYTES), os.urandom(_NONCE_BYTES)
        head = self._key_id + wrap_nonce
        wrapped = self._master.encrypt(wrap_nonce, data_key, _WRAP_AAD + head)
        header = head + wrapped + nonce
        sealed = AESGCM(data_key).encrypt(nonce, plaintext.encode("utf-8"), _DATA_AAD + header)
        return f"{VERSION}:{base64.urlsafe_b64encode(header + sealed).decode('ascii')}"

    def decrypt(self, token: str) -> str:
        """The plaintext of a token; ``SecretDecryptionError`` if it cannot be trusted."""
        blob = _decode(token)
        key_id, rest = blob[:_KEY_ID_BYTES], blob[_KEY_ID_BYTES:]
        if not hmac.compare_digest(key_id, self._key_id):
            raise SecretDecryptionError(
                f"secret was encrypted under another master key (key id {key_id.hex()}, "
                f"this key is {self.key_id}); check TRADEWIRE_MASTER_KEY"
            )
        wrap_nonce = rest[:_NONCE_BYTES]
        wrapped = rest[_NONCE_BYTES : _NONCE_BYTES + _WRAPPED_BYTES]
        header = blob[:_HEADER_BYTES]
        nonce, sealed = header[-_NONCE_BYTES:], blob[_HEADER_BYTES:]
        try:
            data_key = self._master.decrypt(wrap_nonce, wrapped, _WRAP_AAD + key_id + wrap_nonce)
            plaintext = AESGCM(data_key).decrypt(nonce, sealed, _DATA_AAD + header)
        except InvalidTag:
            raise SecretDecryptionError("secret failed authentication: it was altered") from None
        try:
            return plaintext.decode("utf-8")
        except UnicodeDecodeError:  # pragma: no cover - authenticated, so only a sealing bug
            raise SecretDecryptionError("secret is not UTF-8 text") from None


def _decode(token: str) -> bytes:
    version, sep, body = token.partition(":")
    if not sep or version != VERSION:
        raise SecretDecryptionError(f"unknown secret format (expected {VERSION}:...)")
    try:
        blob = base64.urlsafe_b64decode(body.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise SecretDecryptionError("secret token is not valid base64") from None
    if len(blob) < _HEADER_BYTES + 16:
        raise SecretDecryptionError("secret token is truncated")
    return blob
