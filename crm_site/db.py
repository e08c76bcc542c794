"""Query helpers that keep large lookups fast on every supported database."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection
from django.db.models.expressions import RawSQL


def any_of(values: Iterable[str]) -> RawSQL | list[str]:
    """A right-hand side for `field__in=` holding thousands of strings.

    On PostgreSQL, one array parameter (`IN (SELECT unnest(%s))`) instead of one placeholder
    per value: the sync's matcher asks about a batch's thousands of Message-IDs at once, and
    building and parsing such a statement costs more than running it. Elsewhere, the list.
    """
    values = list(values)
    if connection.vendor == "postgresql":
        return RawSQL("SELECT unnest(%s::varchar[])", (values,))
    return values
