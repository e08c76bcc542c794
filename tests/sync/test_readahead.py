"""Reading a folder ahead in a child process (sync/readahead.py), against real Dovecot."""

import time

import pytest

from mailboxes.providers import get_provider
from mailboxes.providers.base import AuthFailed
from sync import readahead
from tests.mailboxes.helpers import build_email
from tests.mailboxes.test_imap_provider import SINCE, config


def read_here(cfg, limit):
    batches, cursor = [], None
    with get_provider("imap", cfg) as provider:
        while True:
            batch = provider.changes("INBOX", cursor, limit, SINCE)
            batches.append(batch)
            cursor = batch.cursor
            if batch.done:
                return batches


def test_child_reads_the_same_batches_as_the_parent_would(dovecot, smtp_server, account):
    user, password, mailbox = account
    for n in range(7):
        mailbox.deliver(build_email(subject=f"m{n}", message_id=f"m{n}@example.com"))
    cfg = config(dovecot, smtp_server, user, password)
    first, *rest_here = read_here(cfg, limit=2)

    with readahead.ReadAhead("imap", cfg, "INBOX", first.cursor, 2, SINCE) as batches:
        rest_ahead, prepared = zip(*batches, strict=True)

    def refs_and_ids(batches):
        return [[(m.ref, m.message_id) for m in b.messages] for b in batches]

    assert refs_and_ids(rest_ahead) == refs_and_ids(rest_here)
    assert [b.done for b in rest_ahead] == [False, False, True]
    assert rest_ahead[-1].cursor == rest_here[-1].cursor
    assert prepared == (None, None, None)


def wait_for_full_queue(batches):
    deadline = time.monotonic() + 10
    while batches.out.qsize() < readahead.QUEUE_BATCHES and time.monotonic() < deadline:
        time.sleep(0.05)
    assert batches.out.qsize() == readahead.QUEUE_BATCHES


def test_the_child_prepares_the_batches_that_wait_for_a_busy_reader(dovecot, smtp_server, account):
    user, password, mailbox = account
    for n in range(7):
        mailbox.deliver(build_email(message_id=f"m{n}@example.com"))
    cfg = config(dovecot, smtp_server, user, password)
    first = read_here(cfg, limit=2)[0]

    with readahead.ReadAhead(
        "imap",
        cfg,
        "INBOX",
        first.cursor,
        2,
        SINCE,
        prepare=lambda b, _provider, busy: len(b.messages) if busy else None,
    ) as batches:
        wait_for_full_queue(batches)  # this reader is busy elsewhere meanwhile
        prepared = [(len(batch.messages), result) for batch, result in batches]

    # The first went to a waiting reader as it was; the others waited behind it, prepared,
    # and came without the messages they were prepared from.
    assert prepared == [(2, None), (0, 2), (0, 1)]


def test_a_failure_in_the_child_is_raised_in_the_parent(dovecot, smtp_server, account):
    user, password, mailbox = account
    mailbox.deliver(build_email())
    first = read_here(config(dovecot, smtp_server, user, password), limit=1)[0]

    cfg = config(dovecot, smtp_server, user, "wrong")
    with (
        readahead.ReadAhead("imap", cfg, "INBOX", first.cursor, 1, SINCE) as batches,
        pytest.raises(AuthFailed, match="refused the username or password"),
    ):
        list(batches)


def test_closing_stops_the_child_even_before_reading(dovecot, smtp_server, account):
    user, password, mailbox = account
    # More batches than the queue holds: the child waits for the reader until closed.
    for n in range(readahead.QUEUE_BATCHES + 4):
        mailbox.deliver(build_email(message_id=f"m{n}@example.com"))
    cfg = config(dovecot, smtp_server, user, password)
    first = read_here(cfg, limit=1)[0]

    with readahead.ReadAhead("imap", cfg, "INBOX", first.cursor, 1, SINCE) as batches:
        wait_for_full_queue(batches)  # read before anyone asked
        assert batches.child.is_alive()

    assert not batches.child.is_alive()
    assert batches.child.exitcode is not None


def test_mail_read_by_another_session_can_be_fetched_in_full(dovecot, smtp_server, account):
    # The sync's own session selected the folder before the read-ahead session saw new mail.
    user, password, mailbox = account
    mailbox.deliver(build_email(message_id="old@example.com"))
    cfg = config(dovecot, smtp_server, user, password)
    with get_provider("imap", cfg) as provider:
        provider.changes("INBOX", None, 10, SINCE)
        mailbox.deliver(build_email(message_id="new@example.com", text="arrived later"))
        new_ref = read_here(cfg, limit=10)[-1].messages[-1].ref

        raws = provider.fetch_many("INBOX", [new_ref])

    assert b"arrived later" in raws[new_ref]
