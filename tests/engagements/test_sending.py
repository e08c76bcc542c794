"""Sending from the CRM through a real SMTP server, filing in a real Dovecot (SPEC L1, L6, L7)."""

from email import message_from_bytes, policy

import pytest

from engagements.models import EmailEngagement, OutgoingEmail, TrackedMessageId
from engagements.sending import Draft, SendError, queue_email, retry_email, send_outgoing
from engagements.services import Address
from mailboxes.models import Mailbox
from mailboxes.parsing import ParsedAttachment
from mailboxes.providers import get_provider
from mailboxes.services import provider_config
from sync.services import sync_mailbox
from tests.factories import ContactEmailFactory, ContactFactory
from tests.mailboxes.helpers import UserMailbox, build_email, connect_imap

pytestmark = pytest.mark.django_db(transaction=True)


def received_copies(smtp_server, message_id):
    return [r for r in smtp_server.received if f"<{message_id}>".encode() in r.data]


def messages_in(user_mailbox: UserMailbox, folder: str, message_id: str):
    client = user_mailbox.client
    client.select_folder(folder, readonly=True)
    uids = client.search(["HEADER", "Message-ID", message_id])
    return client.fetch(uids, ["FLAGS", "BODY.PEEK[]"]) if uids else {}


@pytest.fixture
def ada(team):
    contact = ContactFactory(team=team, first_name="Ada", last_name="Lovelace")
    ContactEmailFactory(contact=contact, email="ada@example.com", is_primary=True)
    return contact


def send(connected, owner, team, **fields):
    draft = Draft(**{"to": [Address("ada@example.com", "Ada")], "subject": "Hi", "body": "Hello",
                     **fields})  # fmt: skip
    return queue_email(team=team, user=owner, mailbox=connected, draft=draft)


def test_the_email_on_the_wire(connected, owner, team, ada, smtp_server):
    engagement = send(
        connected, owner, team,
        to=[Address("renee@example.com", "Renée Dupont")],
        cc=[Address("jurgen@example.com", "Jürgen Weiß")],
        bcc=[Address("boss@example.com")],
        subject="Offerta — 10 € di sconto",
        body="Ciao Renée,\nil preventivo è allegato.\n",
        attachments=[ParsedAttachment("preventivo.pdf", "application/pdf", b"%PDF-1.4 fake")],
        contacts=[ada],
    )  # fmt: skip

    (copy,) = received_copies(smtp_server, engagement.message_id)
    assert copy.mail_from == connected.email_address
    assert sorted(copy.rcpt_tos) == ["boss@example.com", "jurgen@example.com", "renee@example.com"]
    head = copy.data.split(b"\r\n\r\n", 1)[0]
    assert b"boss@example.com" not in copy.data  # Bcc is envelope only
    assert b"=?utf-8?" in head.lower() and "€".encode() not in head  # encoded-words, 7-bit
    message = message_from_bytes(copy.data, policy=policy.default)
    assert message["Subject"] == "Offerta — 10 € di sconto"
    assert message["To"].addresses[0].display_name == "Renée Dupont"
    assert message["Message-ID"] == f"<{engagement.message_id}>"
    assert engagement.message_id.endswith("@threadline.localhost")
    assert message["In-Reply-To"] is None and message["References"] is None
    assert message.get_content_type() == "multipart/mixed"
    assert "il preventivo è allegato" in message.get_body(("plain",)).get_content()
    (attachment,) = message.iter_attachments()
    assert attachment.get_filename() == "preventivo.pdf"
    assert attachment.get_content() == b"%PDF-1.4 fake"

    engagement.refresh_from_db()
    assert engagement.status == "sent" and engagement.status_detail == ""
    assert engagement.direction == "out" and engagement.source == "crm"
    assert list(engagement.contacts.all()) == [ada]
    assert engagement.attachments.get().filename == "preventivo.pdf"
    assert TrackedMessageId.objects.filter(message_id=engagement.message_id).exists()
    assert bytes(OutgoingEmail.objects.get(engagement=engagement).raw) == b""


def test_the_sent_copy_is_filed_once_and_not_logged_again(
    connected, owner, team, ada, account, smtp_server
):
    engagement = send(connected, owner, team, contacts=[ada])

    copies = messages_in(account[2], "Sent", engagement.message_id)
    assert len(copies) == 1
    assert b"\\Seen" in next(iter(copies.values()))[b"FLAGS"]

    result = sync_mailbox(connected.pk)

    assert result.error == ""
    assert EmailEngagement.objects.filter(message_id=engagement.message_id).count() == 1


def test_a_copy_the_server_filed_itself_is_not_filed_twice(connected, account):
    raw = build_email(message_id="filed-by-server@example.com")
    account[2].deliver(raw, folder="Sent")

    with get_provider("imap", provider_config(connected)) as provider:
        filed = provider.file_in_sent("Sent", raw, "filed-by-server@example.com")

    assert filed is False
    assert len(messages_in(account[2], "Sent", "filed-by-server@example.com")) == 1


def test_without_special_use_the_copy_goes_to_sent_items(
    mail_settings, dovecot_plain, smtp_server, team, owner
):

    user, password = dovecot_plain.add_user()
    mailbox = connect_imap(dovecot_plain, smtp_server, user, password, team, owner)

    engagement = send(mailbox, owner, team)

    own = UserMailbox(dovecot_plain, user, password)
    try:
        assert len(messages_in(own, "Sent Items", engagement.message_id)) == 1
    finally:
        own.close()


def test_reply_joins_the_thread_and_new_email_does_not(connected, owner, team, tracked):
    ada = tracked[0]
    original = EmailEngagement.objects.get(message_id="sent-1@threadline.test")

    reply = send(connected, owner, team, reply_to=original, subject="Re: Proposal", contacts=[ada])
    fresh = send(connected, owner, team, subject="Proposal", contacts=[ada])

    assert reply.in_reply_to == original.message_id
    assert reply.references.split() == [original.message_id]
    assert reply.thread_id == original.thread_id
    assert fresh.in_reply_to == "" and fresh.references == ""
    assert fresh.thread_id != original.thread_id


def test_failed_send_is_not_sent_and_a_retry_sends_it_once(
    connected, owner, team, ada, smtp_server
):
    smtp_server.refuse.add("ada@example.com")
    try:
        engagement = send(connected, owner, team, contacts=[ada])
        engagement.refresh_from_db()
        assert engagement.status == "failed"
        assert "refused every recipient" in engagement.status_detail
        assert "ada@example.com" in engagement.status_detail
        assert received_copies(smtp_server, engagement.message_id) == []
    finally:
        smtp_server.refuse.discard("ada@example.com")

    retry_email(engagement)

    engagement.refresh_from_db()
    assert engagement.status == "sent"
    assert send_outgoing(engagement.outgoing.pk) == "sent"  # a duplicate task sends nothing
    assert len(received_copies(smtp_server, engagement.message_id)) == 1
    with pytest.raises(SendError):
        retry_email(engagement)


def test_some_recipients_refused_is_sent_with_a_note(connected, owner, team, smtp_server):
    smtp_server.refuse.add("nobody@example.com")
    try:
        engagement = send(
            connected, owner, team,
            to=[Address("ada@example.com"), Address("nobody@example.com")],
        )  # fmt: skip
    finally:
        smtp_server.refuse.discard("nobody@example.com")

    engagement.refresh_from_db()
    assert engagement.status == "sent"
    assert "Not delivered to nobody@example.com" in engagement.status_detail
    assert received_copies(smtp_server, engagement.message_id)[0].rcpt_tos == ["ada@example.com"]


def test_no_mailbox_or_a_disconnected_one_cannot_send(connected, owner, teammate, team):
    with pytest.raises(SendError, match="connect your mailbox"):
        queue_email(team=team, user=teammate, mailbox=None, draft=Draft(to=[], subject="", body=""))
    Mailbox.objects.filter(pk=connected.pk).update(state="disconnected", last_error="Bad password")
    connected.refresh_from_db()

    with pytest.raises(SendError, match="disconnected \\(Bad password\\)"):
        send(connected, owner, team)
    assert not EmailEngagement.objects.filter(source="crm").exists()


def test_end_to_end_send_then_the_reply_is_logged_in_the_same_thread(
    connected, owner, team, ada, account
):
    sent = send(connected, owner, team, subject="Proposal", contacts=[ada])
    account[2].deliver(
        build_email(
            subject="Re: Proposal",
            message_id="ada-answer@example.com",
            in_reply_to=sent.message_id,
            references=[sent.message_id],
            text="Sounds good.",
        )
    )

    sync_mailbox(connected.pk)

    answer = EmailEngagement.objects.get(message_id="ada-answer@example.com")
    assert answer.thread_id == sent.thread_id
    assert answer.direction == "in"
    assert list(answer.contacts.all()) == [ada]
    assert answer.body_text.strip() == "Sounds good."


def test_simple_formatting_is_sent_as_an_html_alternative(connected, owner, team, smtp_server):
    engagement = send(
        connected, owner, team, body="Hello **Ada**", html="<p>Hello <strong>Ada</strong></p>",
        attachments=[ParsedAttachment("a.txt", "text/plain", b"attached")],
    )  # fmt: skip

    message = message_from_bytes(received_copies(smtp_server, engagement.message_id)[0].data,
                                 policy=policy.default)  # fmt: skip
    assert message.get_content_type() == "multipart/mixed"
    assert [p.get_content_type() for p in message.walk()] == [
        "multipart/mixed", "multipart/alternative", "text/plain", "text/html", "text/plain",
    ]  # fmt: skip
    assert message.get_body(("html",)).get_content().strip() == "<p>Hello <strong>Ada</strong></p>"
    assert message.get_body(("plain",)).get_content().strip() == "Hello **Ada**"
    engagement.refresh_from_db()
    assert engagement.body_html == "<p>Hello <strong>Ada</strong></p>"
