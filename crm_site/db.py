"""Query helpers that keep large lookups fast on every supported database."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection
from django.db.models.expressions import RawSQL


def any_of(values: Iterable[str]) -> RawSQL | list[str]:
    """A right-hand side for `field__in=` holding thousands of strings.

    On PostgreSQL, one parameter instead of one placeholder per value: the sync's matcher
    asks about a batch's thousands of Message-IDs at once, and building and parsing such a
    statement costs more than running it. The parameter is the values joined by line breaks
    (split again by the server), since the driver formats a list parameter element by
    element, several times slower; values that hold a line break, or are empty, go as a
    list. Elsewhere, the list.
    """
    values = list(values)
    if connection.vendor != "postgresql":
        return values
    joined = "\n".join(values)
    if values and "" not in values and joined.count("\n") == len(values) - 1:
        return RawSQL("SELECT unnest(string_to_array(%s, E'\\n'))", (joined,))
    return RawSQL("SELECT unnest(%s::varchar[])", (values,))
