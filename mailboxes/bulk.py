"""Writing a batch's metadata in bulk: the rows of 100,000s of messages, and their flags.

Pure computation first (`metadata_rows`, `prepare_batch`: no database, so the read-ahead
child can make them while the sync writes the previous batch), then one write per batch:
COPY on PostgreSQL, bulk_create elsewhere (`insert_metadata`).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.utils import timezone

from .models import Folder, Mailbox, MessageMeta

# A message's free-text columns, and how they are made from a provider's MessageMeta.
_TEXT_COLUMNS = (
    "ref", "message_id", "in_reply_to", "references", "from_name", "from_address", "subject",
    "problems", "thread_hint",
)  # fmt: skip


def _text_values(meta: Any) -> list[str]:
    return [
        meta.ref, meta.message_id[:998], meta.in_reply_to[:998], " ".join(meta.references),
        meta.from_name[:300], meta.from_address[:320], meta.subject[:998],
        "; ".join(meta.problems)[:500], meta.thread_hint[:200],
    ]  # fmt: skip


def _meta_values(mailbox: Mailbox, folder: Folder, meta: Any, now: Any) -> dict[str, Any]:
    """A metadata row's column values (by attname) from a provider's MessageMeta; addresses
    stay (name, email) pairs until written (see _address_list)."""
    return {
        "team_id": mailbox.team_id,
        "mailbox_id": mailbox.pk,
        "folder_id": folder.pk,
        **dict(zip(_TEXT_COLUMNS, _text_values(meta), strict=True)),
        "to": meta.to,
        "cc": meta.cc,
        "sent_at": meta.sent_at,
        "received_at": meta.received_at,
        "size": meta.size,
        "flags": " ".join(meta.flags)[:500],
        "created_at": now,
    }


# Metadata rows ready to write, one per message: PostgreSQL's COPY text, else column values
# for bulk_create.
MetadataRows = list[bytes] | list[dict[str, Any]]

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")


def _copy_escape(text: str) -> str:
    # Most header text has nothing to escape, and searching is cheaper than translating.
    return text.translate(_COPY_ESCAPES) if _COPY_SPECIAL.search(text) else text


def _address_list(pairs: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    """The stored form of To and Cc."""
    return [{"name": name, "email": email} for name, email in pairs]


@functools.lru_cache(maxsize=4096)
def _copy_addresses(pairs: tuple[tuple[str, str], ...]) -> str:
    # The same few lists (the user's own address, none at all) recur on most messages.
    return _copy_escape(json.dumps(_address_list(pairs), ensure_ascii=False))


def _copy_time(value: Any) -> str:
    return "\\N" if value is None else value.isoformat()


@functools.lru_cache(maxsize=256)
def _copy_flags(flags: tuple[str, ...]) -> str:
    # IMAP's system flags start with a backslash; a mailbox has few distinct sets.
    return _copy_escape(" ".join(flags)[:500])


# The columns of a COPY row, in order: the batch's own, a message's free text, its others.
_COPY_COLUMNS = (
    "team_id", "mailbox_id", "folder_id", *_TEXT_COLUMNS,
    "to", "cc", "sent_at", "received_at", "size", "flags", "created_at",
)  # fmt: skip


def metadata_rows(mailbox: Mailbox, folder: Folder, messages: list[Any]) -> MetadataRows:
    """The metadata rows of a provider's messages, ready for `insert_metadata`.

    Pure computation, no database: the read-ahead child makes them while the sync writes
    the previous batch. On PostgreSQL they are COPY's text format, which the sync sends
    as it is instead of formatting 100,000s of rows itself.
    """
    now = timezone.now()
    if connection.vendor != "postgresql":
        return [_meta_values(mailbox, folder, meta, now) for meta in messages]
    # NULL is \N; backslash, tab and line breaks are escaped. (Text cannot hold NUL: the
    # parser never gives one.) Header text seldom holds any of them: it is escaped only
    # when a look at all of a message's text finds one.
    first = f"{mailbox.team_id}\t{mailbox.pk}\t{folder.pk}\t"
    last = f"\t{now.isoformat()}\n"
    lines = []
    tabs = len(_TEXT_COLUMNS) - 1
    for meta in messages:
        text = _text_values(meta)
        joined = "\t".join(text)
        if joined.count("\t") != tabs or "\\" in joined or "\n" in joined or "\r" in joined:
            joined = "\t".join([_copy_escape(value) for value in text])
        others = (
            _copy_addresses(meta.to), _copy_addresses(meta.cc), _copy_time(meta.sent_at),
            _copy_time(meta.received_at), str(meta.size), _copy_flags(meta.flags),
        )  # fmt: skip
        lines.append((first + joined + "\t" + "\t".join(others) + last).encode())
    return lines


@dataclass
class PreparedBatch:
    """What a sync writes and matches of a batch's messages, made without the database (so
    the read-ahead child can make it): their refs, their rows (in the same order), and
    those that answer another message (In-Reply-To, References), the only ones the matcher
    can log (SPEC L2)."""

    refs: list[str]
    rows: MetadataRows
    answers: list[Any]
    # Likely replies the read-ahead child read and parsed, by ref (sync/readahead.py).
    ahead: Any = None


def answers_among(messages: list[Any]) -> list[Any]:
    return [meta for meta in messages if meta.in_reply_to or meta.references]


def prepare_batch(mailbox: Mailbox, folder: Folder, messages: list[Any]) -> PreparedBatch:
    return PreparedBatch(
        refs=[meta.ref for meta in messages],
        rows=metadata_rows(mailbox, folder, messages),
        answers=answers_among(messages),
    )


def insert_metadata(rows: MetadataRows) -> None:
    """Insert metadata rows.

    The initial sync writes every message of the last 60 days, so this skips the ORM's
    per-object work: on PostgreSQL the rows go in with COPY (several times faster than
    INSERT), their keys from the table's identity column; elsewhere (SQLite), bulk_create.
    """
    if not rows:
        return
    if isinstance(rows[0], dict):
        stored = [
            {**row, "to": _address_list(row["to"]), "cc": _address_list(row["cc"])} for row in rows
        ]
        MessageMeta.objects.bulk_create([MessageMeta(**row) for row in stored], batch_size=1000)
        return
    quote = connection.ops.quote_name
    fields = {f.attname: f.column for f in MessageMeta._meta.concrete_fields}
    columns = ", ".join(quote(fields[name]) for name in _COPY_COLUMNS)
    with connection.cursor() as cursor:
        table = quote(MessageMeta._meta.db_table)
        with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            copy.write(b"".join(rows))


# Refs per UPDATE of flags: within every database's limit on query parameters.
FLAG_UPDATE_CHUNK = 500


def update_flags(folder: Folder, updates: dict[str, tuple[str, ...]]) -> None:
    """Store changed flags: one UPDATE per distinct set of flags and chunk of refs ("mark all
    as read" on 20,000 messages is a few queries, not 20,000)."""
    by_flags: dict[str, list[str]] = {}
    for ref, flags in updates.items():
        by_flags.setdefault(" ".join(flags)[:500], []).append(ref)
    for flags, refs in by_flags.items():
        for start in range(0, len(refs), FLAG_UPDATE_CHUNK):
            chunk = refs[start : start + FLAG_UPDATE_CHUNK]
            folder.messages.filter(ref__in=chunk).update(flags=flags)
