"""Hostile attachment names (issue 13) through every path that stores an attachment file: the
sync of a real Dovecot, BCC logging over a real SMTP conversation, a compose upload sent
through a real SMTP server; and the download of what was stored."""

import base64
import re
import smtplib
from email import message_from_bytes, policy
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import quote

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from engagements.models import Attachment, EmailEngagement
from tests.factories import ContactEmailFactory, ContactFactory
from tests.mailboxes.helpers import SENT_ID, reply, sync

pytestmark = pytest.mark.django_db(transaction=True)

BOUNDARY = "=_threadline_test_boundary"
LONG_NAME = "ü" * 296 + ".pdf"  # 300 characters, 596 bytes of UTF-8


def rfc2231_continued(name: str) -> str:
    """`name` as RFC 2231 continuations (filename*0*=UTF-8''...; filename*1*=...), each
    on its own folded line: how mail clients send a name too long for one header line."""
    encoded = [quote(char, safe="") for char in name]
    pieces = ["".join(encoded[i : i + 20]) for i in range(0, len(encoded), 20)]
    charset = ["UTF-8''"] + [""] * len(pieces)
    return ";\r\n ".join(f"filename*{n}*={charset[n]}{piece}" for n, piece in enumerate(pieces))


# Content-Disposition parameters as a sender writes them, the name shown, the name stored.
HOSTILE = [
    ('filename="../../../etc/passwd"', "../../../etc/passwd", "passwd"),
    ('filename="..\\\\..\\\\win.ini"', "..\\..\\win.ini", "win.ini"),
    ('filename="CON.txt"', "CON.txt", "_CON.txt"),
    ("filename*=UTF-8''%E2%82%AC%20rates.pdf", "€ rates.pdf", "rates.pdf"),
    ('filename=""', "attachment", "attachment"),
    # The parser shows a NUL as the replacement character, as it does undecodable bytes.
    ("filename*=UTF-8''bad%00na%0Ame%07.txt", "bad\ufffdna me.txt", "bad_na_me.txt"),
    ('filename="tab\there\x1b[31m.txt"', "tab here[31m.txt", "tab_here_31m.txt"),
    ('filename="<img src=x onerror=alert(1)>.html"', "<img src=x onerror=alert(1)>.html",
     "img_src_x_onerror_alert_1.html"),
    # The parser keeps a name's first 255 characters: checked in assert_stored_safely.
    (rfc2231_continued(LONG_NAME), None, None),
]  # fmt: skip


def mime(message_id: str, attachments, *, sender="Ada Lovelace <ada@example.com>",
         to="owner@example.com", in_reply_to=SENT_ID) -> bytes:  # fmt: skip
    """An email with these (Content-Disposition parameters, payload) attachments, its header
    lines written exactly as given."""
    lines = [
        f"From: {sender}", f"To: {to}", "Subject: Re: Proposal",
        f"Date: {format_datetime(timezone.now())}", f"Message-ID: <{message_id}>",
        *([f"In-Reply-To: <{in_reply_to}>", f"References: <{in_reply_to}>"] if in_reply_to
          else []),
        "MIME-Version: 1.0", f'Content-Type: multipart/mixed; boundary="{BOUNDARY}"', "",
        f"--{BOUNDARY}", "Content-Type: text/plain; charset=utf-8", "", "See attached.",
    ]  # fmt: skip
    for disposition, payload in attachments:
        lines += [
            f"--{BOUNDARY}", "Content-Type: application/octet-stream",
            "Content-Transfer-Encoding: base64", f"Content-Disposition: attachment; {disposition}",
            "", base64.b64encode(payload).decode(),
        ]  # fmt: skip
    lines += [f"--{BOUNDARY}--", ""]
    return "\r\n".join(lines).encode("utf-8")


def assert_stored_safely(attachment: Attachment, team, shown, stored, payload: bytes) -> None:
    """Stored under the team's folder of the media root, under the safe name; shown as sent."""
    from django.conf import settings

    assert re.fullmatch(rf"attachments/team_{team.pk}/[0-9a-f]{{24}}/[^/\\]+", attachment.file.name)
    path = Path(attachment.file.path).resolve()
    assert path.is_relative_to(Path(settings.MEDIA_ROOT).resolve() / "attachments")
    assert path.read_bytes() == payload
    if shown is None:  # the 300-character name
        assert 0 < len(attachment.filename) <= 255 and set(attachment.filename) <= set("ü.pdf")
        assert path.name.startswith("üüü") and len(path.name.encode()) <= 100
    else:
        assert attachment.filename == shown
        assert path.name == stored


@pytest.fixture
def media_blocked(settings, team):
    """The team's attachment folder cannot be created: a plain file is in its place, so the
    file system refuses every attachment of the team (a full disk would do the same)."""
    media = Path(settings.MEDIA_ROOT)
    (media / "attachments").mkdir(parents=True)
    (media / "attachments" / f"team_{team.pk}").write_bytes(b"not a folder")


# -- (a) the sync of a real Dovecot --------------------------------------------------------


def test_replies_with_hostile_attachment_names_are_all_logged_by_the_sync(
    team, owner, tracked, connected, account, client_for
):
    contact = tracked[0]
    user_mailbox = account[2]
    for n, (disposition, _shown, _stored) in enumerate(HOSTILE, 1):
        user_mailbox.deliver(mime(f"hostile-{n}@example.com", [(disposition, b"payload %d" % n)]))
    user_mailbox.deliver(reply(99))  # an innocent reply in the same batch

    result = sync(connected)

    assert result.error == ""
    assert EmailEngagement.objects.filter(message_id="reply-99@example.com").exists()
    for n, (_disposition, shown, stored) in enumerate(HOSTILE, 1):
        engagement = EmailEngagement.objects.get(message_id=f"hostile-{n}@example.com")
        assert engagement.attachments_note == ""
        assert_stored_safely(engagement.attachments.get(), team, shown, stored, b"payload %d" % n)
    page = client_for(owner).get(contact.get_absolute_url()).content.decode()
    for _disposition, shown, _stored in HOSTILE[:-1]:
        assert escape(shown) in page
    assert "<img src=x" not in page


def test_the_next_sync_after_hostile_names_finds_nothing_left_to_do(
    team, tracked, connected, account
):
    account[2].deliver(mime("hostile-1@example.com", [(HOSTILE[0][0], b"x")]))
    sync(connected)
    account[2].deliver(reply(2))

    result = sync(connected)

    assert result.error == ""
    assert EmailEngagement.objects.filter(message_id="reply-2@example.com").exists()
    assert EmailEngagement.objects.filter(message_id="hostile-1@example.com").count() == 1


def test_an_attachment_that_cannot_be_stored_costs_only_itself_in_the_sync(
    team, tracked, connected, account, media_blocked
):
    account[2].deliver(mime("with-file@example.com", [('filename="offer.pdf"', b"%PDF")]))
    account[2].deliver(reply(2))

    result = sync(connected)

    assert result.error == ""
    logged = EmailEngagement.objects.get(message_id="with-file@example.com")
    assert not logged.attachments.exists()
    assert "“offer.pdf”" in logged.attachments_note
    assert "could not be stored" in logged.attachments_note
    innocent = EmailEngagement.objects.get(message_id="reply-2@example.com")
    assert innocent.attachments_note == ""


def test_the_note_on_a_stored_reply_is_shown_on_the_timeline(
    team, owner, tracked, connected, account, media_blocked, client_for
):
    account[2].deliver(mime("with-file@example.com", [('filename="<b>offer</b>.pdf"', b"x")]))

    sync(connected)

    page = client_for(owner).get(tracked[0].get_absolute_url()).content.decode()
    assert "could not be stored" in page
    assert "“&lt;b&gt;offer&lt;/b&gt;.pdf”" in page


# -- (b) BCC logging over SMTP -------------------------------------------------------------


@pytest.fixture
def ada(team):
    contact = ContactFactory(team=team, first_name="Ada")
    ContactEmailFactory(contact=contact, email="ada@example.com", is_primary=True)
    return contact


def bcc(server, team, owner, raw):
    with smtplib.SMTP(server.hostname, server.port) as client:
        client.sendmail(owner.email, [team.logging_address], raw)


def test_bcc_with_hostile_attachment_names_logs_every_attachment(inbound, team, owner, ada):
    attachments = [(disposition, b"payload %d" % n) for n, (disposition, *_) in enumerate(HOSTILE)]
    raw = mime("bcc-1@mail.example", attachments, sender=owner.email, to="Ada <ada@example.com>",
               in_reply_to=None)  # fmt: skip

    bcc(inbound, team, owner, raw)

    logged = EmailEngagement.objects.get(message_id="bcc-1@mail.example")
    assert logged.attachments_note == ""
    stored = list(logged.attachments.order_by("pk"))
    assert len(stored) == len(HOSTILE)
    for n, (attachment, (_disposition, shown, name)) in enumerate(
        zip(stored, HOSTILE, strict=True)
    ):
        assert_stored_safely(attachment, team, shown, name, b"payload %d" % n)


def test_bcc_attachment_that_cannot_be_stored_is_named_in_a_note(
    inbound, team, owner, ada, media_blocked
):
    raw = mime("bcc-2@mail.example", [('filename="../../../etc/passwd"', b"x")],
               sender=owner.email, to="ada@example.com", in_reply_to=None)  # fmt: skip

    bcc(inbound, team, owner, raw)

    logged = EmailEngagement.objects.get(message_id="bcc-2@mail.example")
    assert not logged.attachments.exists()
    assert "“../../../etc/passwd” (" in logged.attachments_note


def test_bcc_attachments_follow_the_teams_attachment_setting(inbound, team, owner, ada):
    team.retention.log_attachments = False
    team.retention.save()
    raw = mime("bcc-3@mail.example", [('filename="a.pdf"', b"x")], sender=owner.email,
               to="ada@example.com", in_reply_to=None)  # fmt: skip

    bcc(inbound, team, owner, raw)

    logged = EmailEngagement.objects.get(message_id="bcc-3@mail.example")
    assert not logged.attachments.exists()
    assert "attachment logging is off" in logged.attachments_note


# -- (c) compose uploads, sent through a real SMTP server ----------------------------------

UPLOADS = [
    # uploaded as, shown as (and sent as), stored as
    ("CON.txt", "CON.txt", "_CON.txt"),
    ("€ rates.pdf", "€ rates.pdf", "rates.pdf"),
    ("ü" * 296 + ".pdf", "ü" * 251 + ".pdf", "ü" * 48 + ".pdf"),  # Django keeps 255 characters
    ("..\\..\\win.ini", "win.ini", "win.ini"),  # Django's upload parser keeps the last part
    ("bell\x07.txt", "bell.txt", "bell.txt"),
]


def test_compose_uploads_with_hostile_names_are_sent_and_stored_safely(
    client_for, owner, team, ada, connected, smtp_server
):
    files = [SimpleUploadedFile(name, b"upload %d" % n) for n, (name, *_) in enumerate(UPLOADS)]

    response = client_for(owner).post(
        reverse("engagements:compose_contact", args=[ada.pk]),
        {"to_contacts": ["ada@example.com"], "subject": "Files", "body": "Here.",
         "attachments": files},
    )  # fmt: skip

    assert response.status_code == 302
    engagement = EmailEngagement.objects.get(subject="Files")
    assert engagement.status == "sent" and engagement.attachments_note == ""
    stored = list(engagement.attachments.order_by("pk"))
    assert len(stored) == len(UPLOADS)
    for n, (attachment, (_name, shown, name)) in enumerate(zip(stored, UPLOADS, strict=True)):
        assert_stored_safely(attachment, team, shown, name, b"upload %d" % n)
    (copy,) = [r for r in smtp_server.received if engagement.message_id.encode() in r.data]
    sent = message_from_bytes(copy.data, policy=policy.default)
    assert [a.get_filename() for a in sent.iter_attachments()] == [s for _n, s, _s in UPLOADS]


# -- downloading what was stored -----------------------------------------------------------


def test_download_offers_the_shown_name_with_an_ascii_fallback(
    team, owner, tracked, connected, account, client_for
):
    account[2].deliver(mime("euro@example.com", [(HOSTILE[3][0], b"rates")]))
    sync(connected)
    attachment = Attachment.objects.get(engagement__message_id="euro@example.com")

    response = client_for(owner).get(attachment.get_absolute_url())

    assert b"".join(response.streaming_content) == b"rates"
    assert response["Content-Disposition"] == (
        "attachment; filename=\"rates.pdf\"; filename*=UTF-8''%E2%82%AC%20rates.pdf"
    )
    assert response["Content-Type"] == "application/octet-stream"


def test_download_of_a_path_name_offers_only_its_last_part(
    team, owner, tracked, connected, account, client_for
):
    account[2].deliver(mime("path@example.com", [(HOSTILE[0][0], b"root:x")]))
    sync(connected)
    attachment = Attachment.objects.get(engagement__message_id="path@example.com")

    response = client_for(owner).get(attachment.get_absolute_url())

    assert response["Content-Disposition"] == 'attachment; filename="passwd"'
