from __future__ import annotations

from typing import Any

from django.db import models

from .crypto import Secret, decrypt, encrypt


class EncryptedSecretField(models.TextField):
    """Stores a `Secret` encrypted with the configured Fernet keys; the database never sees
    the plain value, and the Python value never prints it."""

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Secret | None:
        return None if value is None else decrypt(value)

    def to_python(self, value: Any) -> Secret | None:
        if value is None or isinstance(value, Secret):
            return value
        if isinstance(value, dict):
            return Secret(value)
        return decrypt(value)

    def get_prep_value(self, value: Any) -> str | None:
        value = self.to_python(value)
        return None if value is None else encrypt(value)

    def value_to_string(self, obj: models.Model) -> str:
        # Serialisation (dumpdata) keeps the ciphertext, never the plain value.
        value = self.value_from_object(obj)
        return "" if value is None else encrypt(value)
