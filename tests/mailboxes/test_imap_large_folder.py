"""A 20,000-message folder on the real Dovecot (issue 13): however many UIDs a read involves,
no command line the provider sends is longer than MAX_COMMAND_BYTES."""

from dataclasses import dataclass

import pytest

from mailboxes.providers import get_provider
from mailboxes.providers.base import ProviderConfig
from mailboxes.providers.imap import MAX_COMMAND_BYTES
from tests.mailboxes.helpers import UserMailbox
from tests.mailboxes.maildir import load_inbox
from tests.mailboxes.test_imap_provider import SINCE, config

LARGE = 20_000
EVERY_THIRD = range(1, LARGE + 1, 3)  # 6,667 UIDs: no two in a row, nothing to compact


@dataclass
class LargeInbox:
    config: ProviderConfig
    owner: UserMailbox  # the user's own mail client
    cursor: str  # a sync's cursor


@pytest.fixture(scope="module")
def large_inbox(dovecot, smtp_server):
    """A user's INBOX of LARGE unread messages, synced once (loaded and read once a module)."""
    user, password = dovecot.add_user()
    load_inbox(dovecot, user, LARGE)
    cfg = config(dovecot, smtp_server, user, password)
    with get_provider("imap", cfg) as provider:
        synced = provider.changes("INBOX", None, LARGE, SINCE)
    assert (len(synced.messages), synced.done) == (LARGE, True)
    owner = UserMailbox(dovecot, user, password)
    owner.client.select_folder("INBOX")
    yield LargeInbox(cfg, owner, synced.cursor)
    owner.close()


@pytest.fixture
def inbox(large_inbox):
    """The large INBOX, its cursor past whatever earlier tests changed."""
    with get_provider("imap", large_inbox.config) as provider:
        large_inbox.cursor = provider.changes("INBOX", large_inbox.cursor, LARGE, SINCE).cursor
    return large_inbox


def longest_line(provider) -> list[int]:
    """Records the length of the longest line the provider sends from now on, in [0]."""
    imap = provider.client._imap  # imaplib's connection under imapclient: a spy, no stand-in
    longest = [0]
    send = imap.send

    def recording(data):
        longest[0] = max(longest[0], *(len(line) + 2 for line in data.split(b"\r\n")))
        return send(data)

    imap.send = recording
    return longest


def test_marking_every_message_read_is_reported_by_the_next_changes(inbox):
    inbox.owner.client.add_flags("1:*", [b"\\Seen"], silent=True)

    with get_provider("imap", inbox.config) as provider:
        longest = longest_line(provider)
        batch = provider.changes("INBOX", inbox.cursor, 2000, SINCE)

    assert batch.done
    assert len(batch.flag_updates) == LARGE
    assert all("\\Seen" in flags for flags in batch.flag_updates.values())
    assert longest[0] <= MAX_COMMAND_BYTES


def test_flags_changed_on_every_third_message_are_reported_by_the_next_changes(inbox):
    inbox.owner.client.add_flags(list(EVERY_THIRD), [b"\\Flagged"], silent=True)

    with get_provider("imap", inbox.config) as provider:
        longest = longest_line(provider)
        batch = provider.changes("INBOX", inbox.cursor, 2000, SINCE)

    assert set(batch.flag_updates) == {str(uid) for uid in EVERY_THIRD}
    assert all("\\Flagged" in flags for flags in batch.flag_updates.values())
    assert longest[0] <= MAX_COMMAND_BYTES


def test_metadata_of_scattered_messages_is_read_in_commands_within_the_bound(inbox):
    with get_provider("imap", inbox.config) as provider:
        provider._select("INBOX")
        longest = longest_line(provider)
        metas = provider._fetch_meta("INBOX", list(EVERY_THIRD))

    assert [meta.ref for meta in metas] == [str(uid) for uid in EVERY_THIRD]
    assert all(meta.message_id == f"bulk-{int(meta.ref) - 1}@example.com" for meta in metas)
    assert longest[0] <= MAX_COMMAND_BYTES


def test_scattered_messages_are_fetched_whole_in_commands_within_the_bound(inbox):
    refs = [str(uid) for uid in range(1, 6001, 3)]  # 2,000, as one batch of tracked replies

    with get_provider("imap", inbox.config) as provider:
        longest = longest_line(provider)
        raws = provider.fetch_many("INBOX", refs)

    assert sorted(raws, key=int) == refs
    assert all(f"Message number {int(ref) - 1}.".encode() in raws[ref] for ref in refs)
    assert longest[0] <= MAX_COMMAND_BYTES
