"""Microsoft 365 mailboxes through the real O365 client, against a local fake of Microsoft's
OAuth and Graph mail (tests/servers/fake_microsoft.py; fixtures in conftest.py)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from engagements.models import EmailEngagement
from engagements.sending import Draft, queue_email
from engagements.services import Address
from mailboxes.crypto import Secret
from mailboxes.models import Mailbox, MessageBody, MessageMeta
from tests.mailboxes.helpers import build_email, reply, sync, track_proposal

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def ada(team, outlook):
    return track_proposal(team, outlook)[0]


def test_connect_checks_the_token_and_keeps_it_encrypted(outlook, microsoft):
    stored = Mailbox.objects.filter(pk=outlook.pk).values_list("credentials", flat=True).get()

    folders = sorted(outlook.folders.values_list("name", "role"))
    assert folders == [("Inbox", "inbox"), ("SentItems", "sent")]
    assert outlook.credentials.reveal()["refresh_token"] in microsoft.refresh_tokens
    assert all(token not in str(stored) for token in microsoft.refresh_tokens)


def test_initial_sync_by_delta_then_following_the_delta_link(outlook, microsoft, ada):
    microsoft.add_message(reply(1, text="Yes, please."))
    microsoft.add_message(build_email(subject="Private", message_id="private@example.com"))
    old = timezone.now() - timedelta(days=70)
    microsoft.add_message(build_email(message_id="old@example.com", date=old), when=old.timestamp())

    first = sync(outlook)
    microsoft.add_message(reply(2))
    second = sync(outlook)

    assert first.error == "" and first.new_messages == 2
    assert second.new_messages == 1
    assert sorted(MessageMeta.objects.values_list("message_id", flat=True)) == [
        "private@example.com", "reply-1@example.com", "reply-2@example.com",
    ]  # fmt: skip
    logged = EmailEngagement.objects.get(message_id="reply-1@example.com")
    assert logged.body_text.strip() == "Yes, please."
    assert list(logged.contacts.all()) == [ada]
    assert EmailEngagement.objects.filter(message_id="reply-2@example.com").exists()
    private = MessageMeta.objects.get(message_id="private@example.com")
    assert not MessageBody.objects.filter(meta=private).exists()  # never read in full (L3)
    assert MessageMeta.objects.get(message_id="reply-1@example.com").thread_hint.startswith(
        "AAQkConv"
    )
    delta_link = outlook.folders.get(name="Inbox").cursor
    assert "$deltatoken=" in delta_link


def test_expired_delta_token_rereads_cleanly_without_duplicates(outlook, microsoft, ada):
    microsoft.add_message(reply(3))
    sync(outlook)
    microsoft.add_message(reply(4))
    microsoft.expire_delta_tokens()

    result = sync(outlook)

    assert result.error == ""
    assert MessageMeta.objects.filter(message_id="reply-3@example.com").count() == 1
    assert EmailEngagement.objects.filter(message_id="reply-3@example.com").count() == 1
    assert EmailEngagement.objects.filter(message_id="reply-4@example.com").exists()


def test_refresh_rotates_the_refresh_token_and_keeps_the_new_one(outlook, microsoft, ada):
    before = outlook.credentials.reveal()
    microsoft.expire_access_tokens()

    assert sync(outlook).error == ""
    after = outlook.credentials.reveal()
    assert after["access_token"] != before["access_token"]
    assert after["refresh_token"] != before["refresh_token"]
    assert after["refresh_token"] in microsoft.refresh_tokens


def test_revoked_consent_disconnects_as_access_revoked(outlook, microsoft, mailoutbox):
    microsoft.revoke_all()

    result = sync(outlook)

    assert "refused" in result.error
    assert outlook.state == "disconnected" and outlook.disconnect_cause == "access_revoked"
    assert len(mailoutbox) == 1


def test_a_migrated_mailbox_is_named_as_such(outlook, microsoft):
    microsoft.move_mailbox()

    sync(outlook)

    assert outlook.state == "disconnected" and outlook.disconnect_cause == "mailbox_moved"


def test_sending_posts_mime_which_graph_files_once(outlook, microsoft, team, owner, ada):
    microsoft.add_message(reply(5))
    sync(outlook)
    parent = EmailEngagement.objects.get(message_id="reply-5@example.com")

    sent = queue_email(
        team=team, user=owner, mailbox=outlook,
        draft=Draft(to=[Address("ada@example.com", "Ada")], bcc=[Address("boss@example.com")],
                    subject="Re: Proposal", body="Thanks!", reply_to=parent, contacts=[ada]),
    )  # fmt: skip

    sent.refresh_from_db()
    assert sent.status == "sent"
    (copy,) = microsoft.sent
    assert b"In-Reply-To: <reply-5@example.com>" in copy.raw
    assert sorted(microsoft.recipients_of(copy)) == ["ada@example.com", "boss@example.com"]
    sync(outlook)  # Sent Items now holds our own message
    assert EmailEngagement.objects.filter(message_id=sent.message_id).count() == 1
    assert MessageMeta.objects.filter(message_id=sent.message_id, folder__name="SentItems").exists()


def test_a_large_first_sync_reads_ahead_in_a_child(outlook, microsoft, ada):
    for n in range(7):
        microsoft.add_message(reply(10 + n))

    result = sync(outlook, limit=2)

    assert result.error == "" and result.new_messages == 7
    assert EmailEngagement.objects.filter(message_id__startswith="reply-1").count() == 7


def test_a_token_about_to_expire_is_refreshed_first(outlook, microsoft, ada):
    soon = (timezone.now() + timedelta(minutes=2)).isoformat()
    outlook.credentials = Secret({**outlook.credentials.reveal(),
                                                     "expires_at": soon})  # fmt: skip
    outlook.save(update_fields=["credentials"])
    microsoft.log.clear()

    assert sync(outlook).error == ""
    assert microsoft.log[0] == ("POST", "/common/oauth2/v2.0/token")  # before any Graph call
    assert outlook.credentials.reveal()["expires_at"] > soon
