"""Envelope encryption of exchange API secrets."""

from __future__ import annotations

import base64
import os

import pytest

from tradewire.errors import ConfigError
from tradewire.store.crypto import SecretBox, SecretDecryptionError

SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(os.urandom(32))


def _flip(token: str, index: int) -> str:
    """The token with one bit of its binary body flipped at ``index``."""
    version, body = token.split(":", 1)
    blob = bytearray(base64.urlsafe_b64decode(body))
    blob[index] ^= 0x01
    return f"{version}:{base64.urlsafe_b64encode(bytes(blob)).decode()}"


def test_round_trip_returns_the_secret(box: SecretBox) -> None:
    """A sealed secret opens to the same text, including non-ASCII and empty text."""
    for plain in (SECRET, "sécret-ключ-🔑", ""):
        assert box.decrypt(box.encrypt(plain)) == plain


def test_tokens_are_versioned_text_that_never_contains_the_secret(box: SecretBox) -> None:
    """Tokens are 'v1:' + base64, random per call, and do not reveal the secret."""
    first, second = box.encrypt(SECRET), box.encrypt(SECRET)
    assert first.startswith("v1:") and second.startswith("v1:")
    assert first != second
    assert SECRET not in first
    base64.urlsafe_b64decode(first[3:])


@pytest.mark.parametrize(
    "index", [5, 20, 70, 80, -1], ids=["nonce", "wrapped", "nonce2", "body", "tag"]
)
def test_any_altered_byte_is_detected(box: SecretBox, index: int) -> None:
    """Changing any byte of the token makes decryption fail loudly."""
    token = box.encrypt(SECRET)
    with pytest.raises(SecretDecryptionError, match="altered"):
        box.decrypt(_flip(token, index))


def test_a_different_master_key_is_reported_as_such(box: SecretBox) -> None:
    """A token sealed under another master key names the key mismatch."""
    token = box.encrypt(SECRET)
    with pytest.raises(SecretDecryptionError, match="another master key"):
        SecretBox(os.urandom(32)).decrypt(token)


def test_a_forged_key_id_is_still_caught(box: SecretBox) -> None:
    """Copying this key's id onto a foreign token does not make it decrypt."""
    foreign = SecretBox(os.urandom(32)).encrypt(SECRET)
    own_id = base64.urlsafe_b64decode(box.encrypt("x")[3:])[:4]
    blob = own_id + base64.urlsafe_b64decode(foreign[3:])[4:]
    with pytest.raises(SecretDecryptionError, match="altered"):
        box.decrypt("v1:" + base64.urlsafe_b64encode(blob).decode())


@pytest.mark.parametrize(
    "token", ["", "plain-secret", "v2:AAAA", "v1:!!!not base64!!!", "v1:AAAA"]
)
def test_malformed_tokens_are_rejected(box: SecretBox, token: str) -> None:
    """Unknown versions, bad base64 and truncated tokens raise the same clear error."""
    with pytest.raises(SecretDecryptionError):
        box.decrypt(token)


def test_master_key_must_be_32_bytes() -> None:
    """A short master key is a configuration error."""
    with pytest.raises(ConfigError):
        SecretBox(b"short")


def test_repr_shows_only_the_key_fingerprint(box: SecretBox) -> None:
    """The box can be logged: it shows an 8-hex-digit fingerprint, not the key."""
    assert repr(box) == f"SecretBox(key_id={box.key_id})"
    assert len(box.key_id) == 8
