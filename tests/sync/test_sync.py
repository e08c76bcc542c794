"""Syncing a real Dovecot mailbox and logging replies to tracked threads (SPEC L2, L3, L5)."""

import dataclasses
from datetime import timedelta

import pytest
from django.utils import timezone

from engagements.matching import reply_chains
from engagements.models import Attachment, EmailEngagement, TrackedMessageId
from engagements.services import Address, EmailData, log_email
from mailboxes.bulk import prepare_batch
from mailboxes.leases import claim_lease
from mailboxes.models import Folder, MessageBody, MessageMeta
from mailboxes.parsing import parse_headers
from mailboxes.services import connect_mailbox, open_provider, reset_sync_state
from sync import readahead
from sync.services import _apply_batch, log_backlog, sync_mailbox
from tests.factories import ContactFactory
from tests.mailboxes.helpers import (
    SENT_ID,
    UserMailbox,
    build_email,
    connect_imap,
    reply,
    sync,
    track_proposal,
    when_a_batch_is_stored,
)
from tests.mailboxes.test_parsing import CORPUS

pytestmark = pytest.mark.django_db(transaction=True)


def test_connect_remembers_inbox_and_sent_folder(connected):
    assert sorted(connected.folders.values_list("name", "role")) == [
        ("INBOX", "inbox"),
        ("Sent", "sent"),
    ]
    assert connected.credentials.reveal()["password"]


def test_reply_is_logged_on_the_threads_records(connected, tracked, account):
    contact, company, deal = tracked
    account[2].deliver(reply(text="Yes, let's talk.", html="<p>Yes, <b>let's</b> talk.</p>"))

    result = sync(connected)

    assert result.error == ""
    engagement = EmailEngagement.objects.get(message_id="reply-1@example.com")
    original = EmailEngagement.objects.get(message_id=SENT_ID)
    assert engagement.thread_id == original.thread_id
    assert engagement.direction == "in"
    assert engagement.from_address == "ada@example.com"
    assert engagement.body_text.strip() == "Yes, let's talk."
    assert "<b>let's</b>" in engagement.body_html
    assert list(engagement.contacts.all()) == [contact]
    assert list(engagement.companies.all()) == [company]
    assert list(engagement.deals.all()) == [deal]


def test_untracked_mail_is_metadata_only(connected, tracked, account):
    account[2].deliver(build_email(subject="Private", message_id="private@example.com"))

    sync(connected)

    meta = MessageMeta.objects.get(message_id="private@example.com")
    assert meta.subject == "Private"
    assert not EmailEngagement.objects.filter(message_id="private@example.com").exists()
    assert not MessageBody.objects.filter(meta=meta).exists()


def test_reply_to_a_reply_in_the_same_batch_is_logged(connected, tracked, account):
    account[2].deliver(reply(1))
    account[2].deliver(reply(2, parent="reply-1@example.com"))

    sync(connected)

    assert set(EmailEngagement.objects.values_list("message_id", flat=True)) == {
        SENT_ID, "reply-1@example.com", "reply-2@example.com",
    }  # fmt: skip


def test_users_own_reply_from_the_sent_folder_is_outgoing(connected, tracked, account):
    own = build_email(
        sender=connected.email_address, subject="Re: Proposal", message_id="mine@example.com",
        in_reply_to=SENT_ID, references=[SENT_ID],
    )  # fmt: skip
    account[2].deliver(own, folder="Sent")

    sync(connected)

    assert EmailEngagement.objects.get(message_id="mine@example.com").direction == "out"


def test_same_message_in_inbox_and_sent_or_delivered_twice_is_logged_once(
    connected, tracked, account
):
    account[2].deliver(reply(1))
    account[2].deliver(reply(1))
    account[2].deliver(reply(1), folder="Sent")

    sync(connected)

    assert EmailEngagement.objects.filter(message_id="reply-1@example.com").count() == 1
    assert MessageMeta.objects.filter(message_id="reply-1@example.com").count() == 3


def test_sync_is_idempotent_and_resync_duplicates_nothing(connected, tracked, account):
    for n in range(3):
        account[2].deliver(reply(n))
    account[2].deliver(build_email(subject="other"))
    first = sync(connected)

    second = sync(connected)
    reset_sync_state(connected)
    third = sync(connected)

    assert (first.new_messages, second.new_messages, third.new_messages) == (4, 0, 4)
    assert EmailEngagement.objects.count() == 4
    assert MessageMeta.objects.count() == 4


@pytest.mark.parametrize("stored_meanwhile", [3, 1])
def test_a_batch_another_sync_stored_meanwhile_is_not_stored_twice(
    connected, tracked, account, stored_meanwhile
):
    account[2].deliver(reply(1))
    account[2].deliver(build_email(subject="other"))
    account[2].deliver(reply(2))
    folder = connected.folders.get(role="inbox")
    since = (timezone.now() - timedelta(days=60)).date()
    with open_provider(connected) as provider:
        stale = provider.changes("INBOX", None, 10, since)  # read, not yet written...
    # ...when another sync stores some or all of the same messages and moves the checkpoint.
    if stored_meanwhile == 3:
        sync(connected)
    else:
        batches = []

        def stop_in_the_second_batch(folder, **batch):
            batches.append(folder)
            if len(batches) == 2:
                raise KeyboardInterrupt("stopped")

        with when_a_batch_is_stored(stop_in_the_second_batch), pytest.raises(KeyboardInterrupt):
            sync_mailbox(connected.pk, limit=1)
    assert folder.messages.count() == stored_meanwhile

    with open_provider(connected) as provider:
        # Written as a read-ahead child hands it over: prepared, without its messages.
        prepared = prepare_batch(connected, folder, stale.messages)
        bare = dataclasses.replace(stale, messages=[])
        epoch = claim_lease(connected.pk)
        added = _apply_batch(connected, folder, bare, provider, "", prepared, epoch=epoch)

    assert added == 3 - stored_meanwhile
    assert folder.messages.count() == 3
    for n in (1, 2):
        assert EmailEngagement.objects.filter(message_id=f"reply-{n}@example.com").count() == 1


def test_sync_never_changes_flags_or_uids(connected, tracked, account):
    account[2].deliver(reply(1))
    account[2].deliver(build_email(subject="seen"), flags=[b"\\Seen", b"\\Flagged"])
    before = account[2].state()

    sync(connected)

    assert EmailEngagement.objects.filter(message_id="reply-1@example.com").exists()
    assert account[2].state() == before


def test_interrupted_sync_resumes_without_loss_or_duplicates(connected, tracked, account):
    for n in range(5):
        account[2].deliver(reply(n))
    calls = []

    def crash_on_second_batch(new_messages, **batch):
        calls.append(new_messages)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")

    with when_a_batch_is_stored(crash_on_second_batch), pytest.raises(KeyboardInterrupt):
        sync_mailbox(connected.pk, limit=2)
    after_crash = EmailEngagement.objects.exclude(message_id=SENT_ID).count()
    sync(connected, limit=2)

    assert after_crash == 2
    assert EmailEngagement.objects.exclude(message_id=SENT_ID).count() == 5
    assert MessageMeta.objects.count() == 5
    connected.refresh_from_db()
    assert not connected.is_syncing


def test_progress_counts_follow_the_batches(connected, tracked, account):
    for n in range(5):
        account[2].deliver(build_email(subject=f"m{n}"))
    seen = []

    def record(folder, **batch):
        folder = Folder.objects.get(pk=folder.pk)
        seen.append((folder.synced_count, folder.total_count))

    with when_a_batch_is_stored(record):
        sync_mailbox(connected.pk, limit=2)

    inbox = connected.folders.get(role="inbox")
    assert seen == [(0, 0), (2, 5), (4, 5)]
    assert (inbox.synced_count, inbox.total_count) == (5, 5)


def test_uidvalidity_change_rereads_the_folder_without_duplicates(connected, tracked, account):
    account[2].deliver(reply(1), folder="Sent")
    sync(connected)
    account[2].client.delete_folder("Sent")
    account[2].client.create_folder("Sent")
    account[2].deliver(reply(1), folder="Sent")
    account[2].deliver(reply(2), folder="Sent")

    sync(connected)

    sent = connected.folders.get(role="sent")
    assert sorted(sent.messages.values_list("ref", flat=True)) == ["1", "2"]
    assert EmailEngagement.objects.exclude(message_id=SENT_ID).count() == 2


def test_attachments_are_logged_under_the_limit(connected, tracked, account):
    account[2].deliver(reply(attachments=[("quote.pdf", "application/pdf", b"%PDF-1.4 quote")]))

    sync(connected)

    attachment = Attachment.objects.get()
    assert attachment.filename == "quote.pdf"
    assert attachment.file.read() == b"%PDF-1.4 quote"
    assert attachment.engagement.attachments_note == ""


def test_attachments_over_the_limit_are_left_out_with_the_reason(connected, tracked, account, team):
    team.retention.attachment_max_mb = 1
    team.retention.save()
    big = b"x" * (1024 * 1024 + 10)
    account[2].deliver(reply(attachments=[("big.bin", "application/octet-stream", big)]))

    sync(connected)

    engagement = EmailEngagement.objects.get(message_id="reply-1@example.com")
    assert not Attachment.objects.exists()
    assert "over the 1 MB limit" in engagement.attachments_note


def test_attachment_logging_can_be_turned_off(connected, tracked, account, team):
    team.retention.log_attachments = False
    team.retention.save()
    account[2].deliver(reply(attachments=[("a.txt", "text/plain", b"a")]))

    sync(connected)

    engagement = EmailEngagement.objects.get(message_id="reply-1@example.com")
    assert not Attachment.objects.exists()
    assert "attachment logging is off" in engagement.attachments_note


def test_malformed_and_huge_messages_are_stored_not_fatal(connected, tracked, account):
    account[2].deliver(b"From: <<<\r\nSubject: =?x?q?broken\r\nReferences: <" + SENT_ID.encode()
                       + b">\r\nContent-Type: multipart/mixed\r\n\r\nno boundary\r\n")  # fmt: skip
    huge = build_email(subject="huge", text="y" * (8 * 1024 * 1024))
    account[2].deliver(huge)

    result = sync(connected)

    assert result.error == ""
    broken = MessageMeta.objects.get(subject__startswith="=?x?q?broken")
    assert "no Message-ID" in broken.problems
    assert MessageMeta.objects.get(subject="huge").size > 8 * 1024 * 1024
    logged = EmailEngagement.objects.exclude(message_id=SENT_ID).get()
    assert logged.message_id.endswith("@invalid")


def test_nul_characters_decoded_from_headers_and_bodies_do_not_stop_the_sync(
    connected, tracked, account
):
    # Mail servers strip raw NUL bytes, but encoded words and quoted-printable decode to
    # them, and PostgreSQL refuses NUL in text: the sync would fail on this mail forever.
    account[2].deliver(
        b"From: =?utf-8?q?Ada=00Lovelace?= <ada@example.com>\r\n"
        b"Subject: =?utf-8?q?Re=3A_Proposal=00?=\r\nMessage-ID: <nul-1@example.com>\r\n"
        b"In-Reply-To: <" + SENT_ID.encode() + b">\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nYes=00 please\r\n"
    )

    result = sync(connected)

    assert result.error == ""
    logged = EmailEngagement.objects.get(message_id="nul-1@example.com")
    assert (logged.subject, logged.from_name) == ("Re: Proposal\ufffd", "Ada\ufffdLovelace")
    assert logged.body_text.strip() == "Yes\ufffd please"
    assert MessageMeta.objects.get(message_id="nul-1@example.com").subject == "Re: Proposal\ufffd"


def test_wrong_password_is_recorded_not_raised(connected, dovecot):
    user = connected.settings["username"]
    dovecot.set_password(user, "changed")

    result = sync(connected)

    connected.refresh_from_db()
    assert "refused the username or password" in result.error
    assert connected.last_error == result.error
    assert connected.last_error_at is not None


def test_server_vanishing_mid_sync_is_recorded_and_resumed(
    mail_settings, smtp_server, team, owner, tracked
):
    from tests.servers.dovecot import DovecotServer

    with DovecotServer() as server:
        user, password = server.add_user()
        client = UserMailbox(server, user, password)
        for n in range(4):
            client.deliver(reply(n))
        client.close()
        mailbox = connect_imap(server, smtp_server, user, password, team, owner)

        def stop_after_first_batch(**batch):
            server.stop()

        with when_a_batch_is_stored(stop_after_first_batch):
            failed = sync_mailbox(mailbox.pk, limit=2)
        logged_before_restart = EmailEngagement.objects.exclude(message_id=SENT_ID).count()
        server.start()
        resumed = sync(mailbox, limit=2)

    assert "connection" in failed.error or "refused" in failed.error
    assert logged_before_restart == 2
    assert resumed.error == ""
    assert EmailEngagement.objects.exclude(message_id=SENT_ID).count() == 4


def test_thread_tracked_after_its_replies_arrived_is_filled_from_the_server(
    connected, account, team
):
    contact = ContactFactory(team=team)
    early = build_email(message_id="early@example.com", in_reply_to="old@threadline.test")
    later = build_email(
        message_id="later@example.com", references=["old@threadline.test", "early@example.com"]
    )
    account[2].deliver(early)
    account[2].deliver(later)
    sync(connected)
    assert not EmailEngagement.objects.exists()
    log_email(
        team=team,
        email=EmailData(message_id="old@threadline.test", sender=Address(connected.email_address),
                        subject="Old", sent_at=timezone.now()),  # fmt: skip
        direction="out", source="crm", contacts=[contact],
    )  # fmt: skip

    first = log_backlog(team, ["old@threadline.test"])
    again = log_backlog(team, ["old@threadline.test"])

    assert (first, again) == (2, 0)
    logged = EmailEngagement.objects.exclude(message_id="old@threadline.test")
    assert sorted(logged.values_list("message_id", flat=True)) == [
        "early@example.com", "later@example.com",
    ]  # fmt: skip
    assert all(list(e.contacts.all()) == [contact] for e in logged)


def test_reconnecting_with_a_new_password_resumes_where_sync_stopped(
    mail_settings, connected, tracked, account, dovecot, smtp_server, team, owner
):
    user, _password, mailbox = account
    mailbox.deliver(reply(1))
    sync(connected)
    dovecot.set_password(user, "new-password")
    mailbox.deliver(reply(2))
    failed = sync(connected)

    again = connect_mailbox(
        team=team, owner=owner, kind="imap", email_address=connected.email_address.upper(),
        provider_settings=connected.settings, credentials={"password": "new-password"},
    )  # fmt: skip
    resumed = sync(again)

    assert again.pk == connected.pk
    assert "refused" in failed.error
    assert resumed.new_messages == 1
    assert EmailEngagement.objects.exclude(message_id=SENT_ID).count() == 2
    assert MessageMeta.objects.count() == 2


def test_a_folder_gone_from_the_server_is_reported_not_fatal(connected, account):
    account[2].deliver(build_email(subject="kept"))
    connected.folders.filter(role="sent").update(name="Removed meanwhile")

    result = sync(connected)

    connected.refresh_from_db()
    assert "refused a command" in result.error
    assert connected.last_error == result.error
    assert MessageMeta.objects.filter(subject="kept").exists()


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is not present beside the repo")
def test_every_corpus_message_is_stored_or_quarantined_and_none_breaks_the_sync(
    connected, account, team
):
    files = sorted(p for p in CORPUS.rglob("*") if p.is_file())
    account[2].client.multiappend("INBOX", [p.read_bytes() for p in files])
    # Track every Message-ID the corpus answers, so each reply is also read and parsed whole.
    thread = log_email(
        team=team,
        email=EmailData(message_id="root@threadline.test", sender=Address("me@example.com"),
                        sent_at=timezone.now()),
        direction="out", source="crm",
    ).thread  # fmt: skip
    headers = [parse_headers(p.read_bytes()) for p in files]
    answered = {i for h in headers for i in (h.in_reply_to, *h.references) if i}
    TrackedMessageId.objects.bulk_create(
        [TrackedMessageId(team=team, message_id=i, thread=thread) for i in answered],
        ignore_conflicts=True,
    )

    result = sync(connected)

    assert result.error == ""
    assert MessageMeta.objects.filter(folder__role="inbox").count() == len(files)
    without_id = MessageMeta.objects.filter(message_id="")
    assert without_id.exists()
    assert all("no Message-ID" in meta.problems for meta in without_id)
    # What the server reports is what counts (it reads bare-CR files its own way).
    replies = MessageMeta.objects.exclude(in_reply_to="", references="")
    expected = len({m.message_id for m in replies if m.message_id}) + sum(
        1 for m in replies if not m.message_id
    )
    assert EmailEngagement.objects.filter(source="sync").count() == expected


def test_reply_deleted_on_the_server_before_it_is_read_is_skipped(connected, account, team):
    account[2].deliver(reply(1))
    account[2].deliver(reply(2))
    sync(connected)  # no thread tracked yet: metadata only
    gone = MessageMeta.objects.get(message_id="reply-1@example.com")
    other = account[2].client
    other.select_folder("INBOX")
    other.delete_messages([int(gone.ref)])
    other.expunge()
    track_proposal(team, connected)  # now both are replies to log, one of them gone

    logged = log_backlog(team, [SENT_ID])

    assert logged == 1
    assert set(EmailEngagement.objects.values_list("message_id", flat=True)) == {
        SENT_ID, "reply-2@example.com",
    }  # fmt: skip
    connected.refresh_from_db()
    assert connected.last_error == ""


def test_a_reply_deleted_between_listing_and_reading_is_skipped_by_the_sync(
    connected, tracked, account
):
    account[2].deliver(reply(1))
    account[2].deliver(reply(2))
    folder = connected.folders.get(role="inbox")
    since = (timezone.now() - timedelta(days=60)).date()
    with open_provider(connected) as provider:
        listed = provider.changes("INBOX", None, 10, since)
        other = account[2].client  # meanwhile, the user deletes the first reply
        other.select_folder("INBOX")
        other.delete_messages([int(listed.messages[0].ref)])
        other.expunge()
        added = _apply_batch(
            connected, folder, listed, provider, "", epoch=claim_lease(connected.pk)
        )

    assert added == 2  # its metadata was listed; its body is gone
    assert set(EmailEngagement.objects.values_list("message_id", flat=True)) == {
        SENT_ID, "reply-2@example.com",
    }  # fmt: skip
    assert not connected.quarantined.exists()


def test_a_reply_listed_before_its_parent_in_a_batch_is_logged(connected, tracked, account):
    account[2].deliver(
        build_email(message_id="child@example.com", in_reply_to="parent@example.com")
    )
    account[2].deliver(build_email(message_id="parent@example.com", in_reply_to=SENT_ID))

    sync(connected)

    child = EmailEngagement.objects.get(message_id="child@example.com")
    parent = EmailEngagement.objects.get(message_id="parent@example.com")
    assert child.thread_id == parent.thread_id


def _two_batches(connected):
    since = (timezone.now() - timedelta(days=60)).date()
    with open_provider(connected) as provider:
        first = provider.changes("INBOX", None, 2, since)
        second = provider.changes("INBOX", first.cursor, 2, since)
    return first, second


def test_the_read_ahead_work_follows_reply_chains_and_reads_the_replies(
    connected, tracked, account
):
    account[2].deliver(reply(1))  # answers the tracked email
    account[2].deliver(build_email(subject="other", message_id="other@example.com"))
    # Answers reply-1 only (no References to the tracked email): a chain across batches.
    account[2].deliver(
        build_email(message_id="reply-2@example.com", in_reply_to="reply-1@example.com", text="2")
    )
    account[2].deliver(build_email(message_id="unrelated@example.com", in_reply_to="x@y.z"))
    first, second = _two_batches(connected)
    chains = reply_chains(connected.team)

    chains.follow(first.messages)
    with open_provider(connected) as provider:
        prepared = readahead.read_likely_replies(chains, provider, "INBOX", second.messages)

    assert list(prepared) == [second.messages[0].ref]
    raw, parsed = prepared[second.messages[0].ref]
    assert b"Message-ID: <reply-2@example.com>" in raw
    assert parsed.text.strip() == "2"


def test_the_read_ahead_work_is_bounded(connected, tracked, account, monkeypatch):
    from engagements import matching

    def read(provider, messages):
        chains = matching.reply_chains(connected.team)
        return readahead.read_likely_replies(chains, provider, "INBOX", messages)

    account[2].deliver(reply(1))
    account[2].deliver(reply(2))
    first, _second = _two_batches(connected)

    unknown_size = [meta._replace(size=0) for meta in first.messages]  # as Graph lists them
    with open_provider(connected) as provider:
        within = read(provider, first.messages)
        unknown = read(provider, unknown_size)
        monkeypatch.setattr(readahead, "AHEAD_MESSAGE_BYTES", first.messages[0].size - 1)
        too_large = read(provider, first.messages)
    monkeypatch.setattr(matching, "CHAINS_TRACKED_IDS", 0)

    assert sorted(within) == sorted(meta.ref for meta in first.messages)
    assert unknown == {}
    assert too_large == {}
    assert matching.reply_chains(connected.team) is None  # one tracked id is too many to copy


def test_a_sync_read_ahead_logs_what_a_sync_read_here_logs(connected, tracked, account):
    # Each answers the one before only: matched through the chain, across batches.
    chain = [reply(1)] + [
        build_email(
            message_id=f"reply-{n}@example.com", in_reply_to=f"reply-{n - 1}@example.com",
            text=f"text {n}",
        )
        for n in range(2, 8)
    ]  # fmt: skip
    for n, raw in enumerate(chain):
        account[2].deliver(raw)
        account[2].deliver(build_email(subject=f"other {n}"))

    result = sync(connected, limit=2)  # 14 messages: 6 batches read ahead

    assert result.new_messages == 14
    logged = EmailEngagement.objects.filter(source="sync")
    assert sorted(logged.values_list("message_id", flat=True)) == [
        f"reply-{n}@example.com" for n in range(1, 8)
    ]
    assert {e.body_text.strip() for e in logged if e.message_id != "reply-1@example.com"} == {
        f"text {n}" for n in range(2, 8)
    }
    assert MessageBody.objects.count() == 7


def test_bodies_read_ahead_are_cached_and_not_read_again(connected, account):
    from mailboxes.services import fetch_bodies

    account[2].deliver(reply(1))
    account[2].deliver(reply(2))
    sync_mailbox(connected.pk)  # metadata only
    first, second = MessageMeta.objects.order_by("ref")

    with open_provider(connected) as provider:
        raws = fetch_bodies([first, second], provider, ready={first.ref: b"read ahead"})

    assert raws[first.pk] == b"read ahead"  # as given, not read from the server
    assert b"reply-2@example.com" in raws[second.pk]
    assert dict(MessageBody.objects.values_list("meta_id", "raw")) == {
        first.pk: b"read ahead", second.pk: raws[second.pk],
    }  # fmt: skip


def test_flags_changed_on_the_server_are_stored_on_the_next_sync(connected, account):
    for n in range(7):
        account[2].deliver(build_email(subject=f"m{n}"))
    sync(connected)
    client = account[2].client
    client.select_folder("INBOX")
    uids = client.search(["ALL"])
    client.add_flags(uids, [b"\\Seen"])  # "mark all as read"
    client.add_flags(uids[:2], [b"\\Flagged"])

    sync(connected)

    stored = sorted(MessageMeta.objects.values_list("flags", flat=True))
    assert stored == ["\\Flagged \\Seen"] * 2 + ["\\Seen"] * 5
