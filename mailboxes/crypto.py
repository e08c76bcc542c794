"""Encryption at rest of mailbox credentials (SPEC S1).

Keys come from `CRM_ENCRYPTION_KEYS` (Fernet keys, newest first). Encryption uses the newest;
decryption tries each, so a key can be rotated in: put the new key first, run
`manage.py rotate_credentials`, then drop the old key.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver


class CredentialsUnreadable(Exception):
    """Stored credentials cannot be decrypted with any configured key."""


@lru_cache(maxsize=1)
def _fernet() -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.encode()) for key in settings.CRM_ENCRYPTION_KEYS])
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(
            "CRM_ENCRYPTION_KEYS must be Fernet keys (32 url-safe base64-encoded bytes)."
        ) from exc


@receiver(setting_changed)
def _forget_keys(*, setting: str, **kwargs: Any) -> None:
    if setting == "CRM_ENCRYPTION_KEYS":
        _fernet.cache_clear()


class Secret:
    """Decrypted credentials that never print themselves: only `reveal()` gives them out."""

    __slots__ = ("_value",)

    def __init__(self, value: dict[str, Any]) -> None:
        self._value = dict(value)

    def reveal(self) -> dict[str, Any]:
        return dict(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return "Secret(********)"

    __str__ = __repr__


def encrypt(secret: Secret) -> str:
    return _fernet().encrypt(json.dumps(secret.reveal()).encode()).decode()


def decrypt(token: str) -> Secret:
    try:
        return Secret(json.loads(_fernet().decrypt(token.encode())))
    except InvalidToken:
        raise CredentialsUnreadable(
            "Stored credentials cannot be decrypted: is the key that encrypted them still in "
            "CRM_ENCRYPTION_KEYS?"
        ) from None
