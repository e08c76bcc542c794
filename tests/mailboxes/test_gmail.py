"""Gmail mailboxes through the real google-api-python-client and google-auth, against a local
fake of Google's OAuth and Gmail API (tests/servers/fake_google.py; fixtures in conftest.py)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from engagements.models import EmailEngagement
from engagements.sending import Draft, queue_email
from engagements.services import Address
from mailboxes.crypto import Secret
from mailboxes.models import Mailbox, MessageBody, MessageMeta
from sync.services import sync_mailbox
from tests.mailboxes.helpers import build_email, reply, sync, track_proposal, when_a_batch_is_stored

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def ada(team, gmail):
    return track_proposal(team, gmail)[0]


def test_connect_checks_the_token_and_keeps_it_encrypted(gmail, google):
    stored = Mailbox.objects.filter(pk=gmail.pk).values_list("credentials", flat=True).get()

    assert sorted(gmail.folders.values_list("name", "role")) == [("INBOX", "inbox"),
                                                                  ("SENT", "sent")]  # fmt: skip
    assert gmail.credentials.reveal()["refresh_token"] in google.refresh_tokens
    assert all(token not in str(stored) for token in google.refresh_tokens | google.access_tokens)


def test_initial_sync_reads_60_days_and_logs_only_tracked_replies(gmail, google, ada):
    google.add_message(reply(1, text="Yes, please."))
    google.add_message(build_email(subject="Private", message_id="private@example.com"))
    old = timezone.now() - timedelta(days=70)
    google.add_message(build_email(message_id="old@example.com", date=old), when=old.timestamp())

    result = sync(gmail)

    assert result.error == ""
    assert sorted(MessageMeta.objects.values_list("message_id", flat=True)) == [
        "private@example.com", "reply-1@example.com",
    ]  # fmt: skip
    logged = EmailEngagement.objects.get(message_id="reply-1@example.com")
    assert logged.body_text.strip() == "Yes, please."
    assert list(logged.contacts.all()) == [ada]
    meta = MessageMeta.objects.get(message_id="reply-1@example.com")
    assert meta.flags == "INBOX UNREAD" and meta.folder.name == "INBOX"
    stored = next(m for m in google.messages.values() if m.id == meta.ref)
    assert meta.thread_hint == stored.thread_id  # a hint only: matching is by headers
    private = MessageMeta.objects.get(message_id="private@example.com")
    assert not MessageBody.objects.filter(meta=private).exists()  # never read in full (L3)


def test_later_syncs_follow_the_history(gmail, google, ada):
    listing = ("GET", "/gmail/v1/users/me/messages")
    sync(gmail)
    assert google.log.count(listing) == 2  # the first sync lists INBOX and SENT
    google.add_message(reply(2))

    result = sync(gmail)

    assert result.new_messages == 1
    assert EmailEngagement.objects.filter(message_id="reply-2@example.com").exists()
    assert google.log.count(("GET", "/gmail/v1/users/me/history")) == 2  # INBOX and SENT
    assert google.log.count(listing) == 2  # no listing again


def test_expired_history_rereads_cleanly_without_duplicates(gmail, google, ada):
    google.add_message(reply(3))
    sync(gmail)
    google.add_message(reply(4))
    google.forget_history_before(google.history_id + 1)

    result = sync(gmail)

    assert result.error == ""
    assert MessageMeta.objects.filter(message_id="reply-3@example.com").count() == 1
    assert EmailEngagement.objects.filter(message_id="reply-3@example.com").count() == 1
    assert EmailEngagement.objects.filter(message_id="reply-4@example.com").exists()


def test_an_expired_access_token_is_refreshed_and_kept(gmail, google, ada):
    before = gmail.credentials.reveal()["access_token"]
    google.expire_access_tokens()

    assert sync(gmail).error == ""
    after = gmail.credentials.reveal()
    assert after["access_token"] != before and after["access_token"] in google.access_tokens
    assert after["refresh_token"] in google.refresh_tokens


def test_revoked_access_disconnects_with_the_cause(gmail, google, mailoutbox):
    google.revoke_all()

    result = sync(gmail)

    assert "revoked" in result.error
    assert gmail.state == "disconnected" and gmail.disconnect_cause == "access_revoked"
    assert len(mailoutbox) == 1


def test_sending_goes_through_gmail_which_files_it_once(gmail, google, team, owner, ada):
    google.add_message(reply(5))
    sync(gmail)
    parent = EmailEngagement.objects.get(message_id="reply-5@example.com")

    sent = queue_email(
        team=team, user=owner, mailbox=gmail,
        draft=Draft(to=[Address("ada@example.com", "Ada")], bcc=[Address("boss@example.com")],
                    subject="Re: Proposal", body="Thanks!", reply_to=parent, contacts=[ada]),
    )  # fmt: skip

    sent.refresh_from_db()
    assert sent.status == "sent"
    (copy,) = google.sent
    assert f"<{sent.message_id}>".encode() in copy.raw
    assert sorted(google.recipients_of(copy)) == ["ada@example.com", "boss@example.com"]
    (replied,) = [m for m in google.messages.values()
                  if m.headers.get("message-id") == "<reply-5@example.com>"]  # fmt: skip
    assert copy.thread_id == replied.thread_id
    sync(gmail)  # the SENT label now holds our own message
    assert EmailEngagement.objects.filter(message_id=sent.message_id).count() == 1
    assert MessageMeta.objects.filter(message_id=sent.message_id, folder__name="SENT").exists()


def test_a_large_first_sync_reads_ahead_in_a_child(gmail, google, ada):
    for n in range(7):
        google.add_message(reply(10 + n))

    result = sync(gmail, limit=2)

    assert result.error == "" and result.new_messages == 7
    assert EmailEngagement.objects.filter(message_id__startswith="reply-1").count() == 7


def test_an_interrupted_first_sync_resumes_after_the_last_message_read(gmail, google, ada):
    for n in range(5):
        google.add_message(reply(20 + n), when=1_800_000_000 + n)  # oldest first: 20, 21, ...
    calls = []

    def stop_after_first_batch(logged, **batch):
        calls.append(logged)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")

    with when_a_batch_is_stored(stop_after_first_batch), pytest.raises(KeyboardInterrupt):
        sync_mailbox(gmail.pk, limit=2)
    resumed = sync(gmail, limit=2)

    assert calls[0] == ["reply-20@example.com", "reply-21@example.com"]
    assert resumed.error == "" and resumed.new_messages == 3
    assert MessageMeta.objects.count() == 5
    assert EmailEngagement.objects.filter(message_id__startswith="reply-2").count() == 5


def test_an_expired_token_is_refreshed_before_the_first_call(gmail, google, ada):
    past = (timezone.now() - timedelta(minutes=1)).isoformat()
    gmail.credentials = Secret({**gmail.credentials.reveal(), "expires_at": past})
    gmail.save(update_fields=["credentials"])
    google.log.clear()

    assert sync(gmail).error == ""
    assert google.log[0] == ("POST", "/token")
    assert gmail.credentials.reveal()["expires_at"] > past
