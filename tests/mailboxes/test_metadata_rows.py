"""Metadata rows written as the sync writes them (COPY text on PostgreSQL, bulk_create
elsewhere) read back exactly as given."""

from datetime import UTC, datetime

import pytest

from mailboxes.bulk import insert_metadata, metadata_rows
from mailboxes.models import MessageMeta
from mailboxes.providers.base import MessageMeta as ProviderMeta

pytestmark = pytest.mark.django_db(transaction=True)

AWKWARD = [
    "back\\slash \\N \\t literally",
    "tab\there, line\nbreak, return\r, both\r\n",
    'quotes " \' and {"json": [1]}',
    "Renée Dupont, Jürgen Weiß, 李伟, emoji 📬",
    "",
]


def provider_meta(n, text):
    return ProviderMeta(
        # A different value in every column, so a column written into another shows.
        folder="INBOX", ref=str(n), message_id=f"{n}.{text}@example.com", in_reply_to=f"r:{text}",
        references=(f"a{n}@example.com", text), from_name=f"n:{text}",
        from_address=f"{n}@example.com", to=((f"t:{text}", "to@example.com"),),
        cc=(("", f"cc\\{n}@example.com"),), subject=f"s:{text}",
        sent_at=datetime(2026, 11, 1, 9, 30, n, tzinfo=UTC) if n % 2 else None,
        received_at=datetime(2026, 11, 1, 9, 31, tzinfo=UTC), size=n * 1000,
        flags=("\\Seen", "$Label\\1"), problems=(f"p:{text}",), thread_hint=f"h:{text}",
    )  # fmt: skip


def test_awkward_values_read_back_as_given(connected):
    folder = connected.folders.get(role="inbox")
    metas = [provider_meta(n, text) for n, text in enumerate(AWKWARD)]

    insert_metadata(metadata_rows(connected, folder, metas))

    stored = {row.ref: row for row in folder.messages.all()}
    assert len(stored) == len(AWKWARD)
    for meta in metas:
        row = stored[meta.ref]
        text = meta.subject[2:]
        assert (row.team_id, row.mailbox_id) == (connected.team_id, connected.pk)
        assert row.message_id == meta.message_id
        assert (row.subject, row.from_name, row.in_reply_to, row.thread_hint) == (
            f"s:{text}", f"n:{text}", f"r:{text}", f"h:{text}",
        )  # fmt: skip
        assert row.references == f"a{meta.ref}@example.com {text}"
        assert row.to == [{"name": f"t:{text}", "email": "to@example.com"}]
        assert row.cc == [{"name": "", "email": f"cc\\{meta.ref}@example.com"}]
        assert (row.sent_at, row.received_at, row.size) == (
            meta.sent_at, meta.received_at, meta.size,
        )  # fmt: skip
        assert row.flags == "\\Seen $Label\\1"
        assert row.problems == f"p:{text}"
    assert MessageMeta.objects.filter(created_at__isnull=True).count() == 0


def test_rows_name_every_column_of_the_model(connected):
    from mailboxes.bulk import _COPY_COLUMNS, _meta_values

    folder = connected.folders.get(role="inbox")
    columns = {f.attname for f in MessageMeta._meta.concrete_fields if not f.primary_key}
    assert sorted(_COPY_COLUMNS) == sorted(columns)
    assert sorted(_meta_values(connected, folder, provider_meta(1, ""), None)) == sorted(columns)
