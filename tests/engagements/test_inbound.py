"""BCC and forward logging over a real SMTP conversation (SPEC L4), with smtplib against the
inbound service that `manage.py run_inbound_smtp` runs."""

import smtplib
from email.message import EmailMessage

import pytest

from engagements.models import EmailEngagement, TrackedMessageId
from sync.services import sync_mailbox
from tests.factories import CompanyFactory, ContactEmailFactory, ContactFactory
from tests.mailboxes.helpers import build_email

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def ada(team):
    contact = ContactFactory(team=team, first_name="Ada", company=CompanyFactory(team=team))
    ContactEmailFactory(contact=contact, email="Ada@Example.com", is_primary=True)
    return contact


def deliver(server, sender, recipients, raw):
    with smtplib.SMTP(server.hostname, server.port) as client:
        return client.sendmail(sender, recipients, raw)


def test_bcc_is_logged_on_the_recipients_records_and_its_replies_follow(
    inbound, team, owner, ada, connected, account
):
    raw = build_email(
        sender=f"Owner <{owner.email}>", to="Ada <ada@example.com>", subject="Our offer",
        message_id="bcc-1@mail.example", text="Please find our offer.",
    )  # fmt: skip

    deliver(inbound, owner.email, [team.logging_address], raw)

    logged = EmailEngagement.objects.get(message_id="bcc-1@mail.example")
    assert logged.source == "bcc" and logged.direction == "out"
    assert list(logged.contacts.all()) == [ada]
    assert list(logged.companies.all()) == [ada.company]
    assert logged.body_text.strip() == "Please find our offer."
    assert TrackedMessageId.objects.filter(message_id="bcc-1@mail.example").exists()

    account[2].deliver(
        build_email(message_id="ada-answer@example.com", in_reply_to="bcc-1@mail.example")
    )
    sync_mailbox(connected.pk)
    answer = EmailEngagement.objects.get(message_id="ada-answer@example.com")
    assert answer.thread_id == logged.thread_id


def test_replies_synced_before_the_bcc_are_logged_then(
    inbound, team, owner, ada, connected, account
):
    account[2].deliver(build_email(message_id="early@example.com", in_reply_to="bcc-2@mail.ex"))
    sync_mailbox(connected.pk)
    assert not EmailEngagement.objects.filter(message_id="early@example.com").exists()

    raw = build_email(sender=owner.email, to="ada@example.com", message_id="bcc-2@mail.ex")
    deliver(inbound, owner.email, [team.logging_address], raw)

    assert EmailEngagement.objects.get(message_id="early@example.com").contacts.get() == ada


def test_inline_forward_is_logged_on_the_original_correspondents(inbound, team, owner, ada):
    ContactFactory(team=team, first_name="Bystander")
    raw = build_email(
        sender=owner.email, to=team.logging_address, subject="Fwd: Pricing question",
        message_id="fwd-1@mail.example",
        text=(
            "FYI\n\n---------- Forwarded message ---------\n"
            "From: Ada Lovelace <ada@example.com>\nDate: Mon, 2 Nov 2026 at 10:00\n"
            "Subject: Pricing question\nTo: Owner <owner@example.com>\n\nHow much is it?\n"
        ),
    )  # fmt: skip

    deliver(inbound, owner.email, [team.logging_address], raw)

    logged = EmailEngagement.objects.get(message_id="fwd-1@mail.example")
    assert list(logged.contacts.all()) == [ada]
    assert "How much is it?" in logged.body_text


def test_forward_with_the_original_attached(inbound, team, owner, ada):
    original = EmailMessage()
    original["From"] = "Ada <ada@example.com>"
    original["To"] = owner.email
    original["Subject"] = "Contract"
    original.set_content("Signed copy attached.")
    forward = EmailMessage()
    forward["From"] = owner.email
    forward["To"] = team.logging_address
    forward["Subject"] = "Contract"  # some clients keep the subject as it was
    forward["Message-ID"] = "<fwd-2@mail.example>"
    forward.set_content("See below.")
    forward.add_attachment(original)

    deliver(inbound, owner.email, [team.logging_address], forward.as_bytes())

    assert EmailEngagement.objects.get(message_id="fwd-2@mail.example").contacts.get() == ada


def test_mail_from_someone_outside_the_team_is_refused(inbound, team, outsider, ada):
    raw = build_email(sender=outsider.email, to="ada@example.com", message_id="spam@example.com")

    with pytest.raises(smtplib.SMTPDataError) as refused:
        deliver(inbound, outsider.email, [team.logging_address], raw)

    assert refused.value.smtp_code == 550
    assert b"Only members of the team" in refused.value.smtp_error
    assert not EmailEngagement.objects.exists()


def test_unknown_logging_address_is_refused(inbound, team, owner):
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        deliver(inbound, owner.email, ["log-0000000000@threadline.localhost"], build_email())

    (code, text) = refused.value.recipients["log-0000000000@threadline.localhost"]
    assert code == 550 and b"No such logging address" in text


def test_email_over_the_size_limit_is_refused(inbound, team, owner, ada):
    raw = build_email(sender=owner.email, to="ada@example.com", text="x" * (1024 * 1024 + 10))

    with pytest.raises(smtplib.SMTPException) as refused:
        deliver(inbound, owner.email, [team.logging_address], raw)

    assert getattr(refused.value, "smtp_code", None) == 552
    assert not EmailEngagement.objects.exists()


def test_no_contact_among_the_people_is_refused_with_the_reason(inbound, team, owner):
    raw = build_email(sender=owner.email, to="stranger@example.com")

    with pytest.raises(smtplib.SMTPDataError, match="None of the people"):
        deliver(inbound, owner.email, [team.logging_address], raw)


def test_the_same_email_delivered_twice_is_logged_once(inbound, team, owner, ada):
    raw = build_email(sender=owner.email, to="ada@example.com", message_id="twice@mail.example")

    deliver(inbound, owner.email, [team.logging_address], raw)
    deliver(inbound, owner.email, [team.logging_address], raw)

    assert EmailEngagement.objects.filter(message_id="twice@mail.example").count() == 1
