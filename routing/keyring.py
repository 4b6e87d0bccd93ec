"""The only module that holds provider keys in plaintext.

Keys are stored as MultiFernet ciphertext (``PROXY_ENCRYPTION_KEYS``: the first key
encrypts, every key decrypts). Plaintext exists in exactly two places: briefly while a key is
sealed or re-sealed, and inside :class:`ProviderKeyAuth`, the httpx auth hook that writes
the key into the outgoing request's headers. Nothing else in the code base can read it:
the auth object has no public attribute for it and its repr is masked.
"""

from __future__ import annotations

from collections.abc import Generator
from functools import lru_cache

import httpx
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.views.decorators.debug import sensitive_variables


class KeyringError(Exception):
    """A stored key cannot be decrypted with any configured encryption key."""


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def _current() -> MultiFernet:
    # Keyed on the setting's value so tests and rotations that change it take effect.
    return _fernet(tuple(settings.PROXY_ENCRYPTION_KEYS))


@sensitive_variables("plaintext")
def seal(plaintext: str) -> tuple[str, str]:
    """Encrypt a provider key; returns (ciphertext, last four characters for display)."""
    if not plaintext or plaintext != plaintext.strip():
        raise ValueError("A provider key must be non-empty and have no surrounding spaces.")
    return _current().encrypt(plaintext.encode()).decode(), plaintext[-4:]


def _open(ciphertext: str) -> str:
    try:
        return _current().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise KeyringError(
            "A provider key cannot be decrypted with PROXY_ENCRYPTION_KEYS "
            "(was an encryption key removed before rotate_encryption ran?)."
        ) from None


def reseal(ciphertext: str) -> str:
    """Re-encrypt with the newest encryption key (MultiFernet.rotate)."""
    try:
        return _current().rotate(ciphertext.encode()).decode()
    except InvalidToken:
        raise KeyringError("A provider key cannot be decrypted for rotation.") from None


@sensitive_variables("plaintext")
def matches(ciphertext: str, plaintext: str) -> bool:
    """Whether a stored key holds this plaintext (config apply compares without re-sealing)."""
    try:
        return _open(ciphertext) == plaintext
    except KeyringError:
        return False


def is_sealed_with_newest(ciphertext: str) -> bool:
    keys = settings.PROXY_ENCRYPTION_KEYS
    try:
        Fernet(keys[0]).decrypt(ciphertext.encode())
    except InvalidToken:
        return False
    return True


class ProviderKeyAuth(httpx.Auth):
    """Adds a pooled key to an upstream request, the way the provider's API expects it."""

    def __init__(self, ciphertext: str, *, header: str) -> None:
        # Decrypted once when the tenant context is built, not on every request.
        self.__secret = _open(ciphertext)
        self.__secret_bytes = self.__secret.encode()
        self.__header = header

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.__header == "authorization":
            request.headers["Authorization"] = f"Bearer {self.__secret}"
        else:
            request.headers[self.__header] = self.__secret
        yield request

    def scrub(self, text: str) -> str:
        """Remove this key from text that came back from the provider (an echoed error)."""
        return text.replace(self.__secret, "[redacted]") if self.__secret in text else text

    def scrub_bytes(self, data: bytes) -> bytes:
        """The same for an answer's bytes: a provider may quote the key in a 200 body or a
        mid-stream error event as much as in an error status. One substring search per chunk
        when the key is absent, which it always is but for a hostile or careless provider."""
        if self.__secret_bytes in data:
            return data.replace(self.__secret_bytes, b"[redacted]")
        return data

    def __repr__(self) -> str:
        return "<ProviderKeyAuth ••••>"
