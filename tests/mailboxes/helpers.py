"""Building and delivering test messages with a plain IMAP client (what a mail server does)."""

from __future__ import annotations

import socket
import threading
from contextlib import contextmanager
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from django.utils import timezone
from imapclient import IMAPClient

from engagements.services import Address, EmailData, log_email
from mailboxes.services import connect_mailbox
from sync.services import sync_mailbox
from sync.signals import batch_stored
from tests.factories import CompanyFactory, ContactEmailFactory, ContactFactory, DealFactory

SENT_ID = "sent-1@threadline.test"  # the tracked email of the `tracked` fixture


def build_email(
    *,
    subject="Hello",
    sender="Ada Lovelace <ada@example.com>",
    to="owner@example.com",
    message_id=None,
    in_reply_to=None,
    references=None,
    text="Hello there",
    html=None,
    attachments=(),
    date=None,
) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(date or timezone.now())
    message["Message-ID"] = f"<{message_id}>" if message_id else make_msgid(domain="example.com")
    if in_reply_to:
        message["In-Reply-To"] = f"<{in_reply_to}>"
    if references:
        message["References"] = " ".join(f"<{r}>" for r in references)
    message.set_content(text)
    if html:
        message.add_alternative(html, subtype="html")
    for filename, content_type, payload in attachments:
        maintype, subtype = content_type.split("/")
        message.add_attachment(payload, maintype=maintype, subtype=subtype, filename=filename)
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


class UserMailbox:
    """A user's mailbox on the test Dovecot, as their own mail client sees it."""

    def __init__(self, server, user, password):
        self.server, self.user, self.password = server, user, password
        self.client = IMAPClient(server.host, server.port, ssl=False)
        self.client.login(user, password)

    def deliver(self, raw: bytes, folder="INBOX", flags=()) -> None:
        self.client.append(folder, raw, flags=flags)

    def state(self, folder="INBOX") -> dict[int, tuple]:
        """UID -> flags, read with a separate session and without touching anything."""
        self.client.select_folder(folder, readonly=True)
        uids = self.client.search(["ALL"])
        if not uids:
            return {}
        return {
            uid: tuple(sorted(d[b"FLAGS"])) for uid, d in self.client.fetch(uids, ["FLAGS"]).items()
        }

    def close(self) -> None:
        self.client.logout()


def imap_form(server, smtp, user, secret, **overrides) -> dict:
    data = {
        "email_address": f"{user}@example.com",
        "imap_host": server.host,
        "imap_port": server.port,
        "imap_security": "plain",
        "smtp_host": smtp.host,
        "smtp_port": smtp.port,
        "smtp_security": "plain",
        "username": user,
        "password": secret,
    }
    return {**data, **overrides}


def reply(n=1, parent=SENT_ID, **kwargs):
    """A reply to the tracked email (or to `parent`, one of its replies)."""
    return build_email(
        subject="Re: Proposal",
        message_id=f"reply-{n}@example.com",
        in_reply_to=parent,
        references=[SENT_ID] if parent == SENT_ID else [SENT_ID, parent],
        **kwargs,
    )


def track_proposal(team, mailbox):
    """An email sent from the CRM through `mailbox` to Ada, logged on her contact, company
    and deal: the tracked thread that reply() answers. Returns (contact, company, deal)."""
    company = CompanyFactory(team=team)
    contact = ContactFactory(team=team, company=company)
    ContactEmailFactory(contact=contact, email="ada@example.com")
    deal = DealFactory(team=team)
    log_email(
        team=team,
        email=EmailData(
            message_id=SENT_ID,
            sender=Address(mailbox.email_address),
            to=(Address("ada@example.com", "Ada"),),
            subject="Proposal",
            sent_at=timezone.now(),
        ),
        direction="out",
        source="crm",
        contacts=[contact],
        companies=[company],
        deals=[deal],
    )
    return contact, company, deal


def connect_imap(server, smtp, user, password, team, owner):
    """Connect a test Dovecot user's mailbox (plain IMAP/SMTP on loopback), checked for real."""
    return connect_mailbox(
        team=team, owner=owner, kind="imap", email_address=f"{user}@example.com",
        provider_settings={
            "imap_host": server.host, "imap_port": server.port, "imap_security": "plain",
            "smtp_host": smtp.host, "smtp_port": smtp.port, "smtp_security": "plain",
            "username": user,
        },
        credentials={"password": password},
    )  # fmt: skip


def connect_oauth(fake, kind, team, owner):
    """Connect `kind` (gmail, graph) with tokens the fake issued, valid for an hour."""
    access, refresh = fake.issue_tokens()
    expires = (timezone.now() + timedelta(hours=1)).isoformat()
    return connect_mailbox(
        team=team, owner=owner, kind=kind, email_address=fake.email, provider_settings={},
        credentials={"access_token": access, "refresh_token": refresh, "expires_at": expires},
    )  # fmt: skip


@contextmanager
def when_a_batch_is_stored(receiver):
    """Run `receiver` in every batch a sync stores, inside its transaction (sync.signals):
    a test's way to stop or observe a sync at a chosen batch."""
    batch_stored.connect(receiver, dispatch_uid="test")
    try:
        yield
    finally:
        batch_stored.disconnect(dispatch_uid="test")


def sync(mailbox, **kwargs):
    """Sync with the real matcher; `mailbox` is refreshed (state, checkpoints, credentials)."""
    result = sync_mailbox(mailbox.pk, **kwargs)
    mailbox.refresh_from_db()
    return result


class CountingListener:
    """Real listening sockets on 127.0.0.1 and ::1 that count the connections they get and
    close each at once (so an IMAP or SMTP client gives up quickly).

    `connections` counts every connection made before it is read, even one its client closed
    before it was accepted: it first connects a probe of its own to each socket and waits
    until the probe, queued behind them, is accepted.
    """

    def __init__(self):
        self._count = 0
        self._probes: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self._sockets = [
            socket.create_server(("127.0.0.1", 0)),
            socket.create_server(("::1", 0), family=socket.AF_INET6),
        ]
        self.port, self.port6 = (s.getsockname()[1] for s in self._sockets)
        for listening in self._sockets:
            threading.Thread(target=self._serve, args=(listening,), daemon=True).start()

    def _serve(self, listening):
        while True:
            try:
                connection, peer = listening.accept()
            except OSError:
                return  # closed
            with self._lock:
                probe = self._probes.pop(peer[1], None)
                if probe is None:
                    self._count += 1
            connection.close()
            if probe is not None:
                probe.set()

    @property
    def connections(self) -> int:
        for listening in self._sockets:
            host, port = listening.getsockname()[:2]
            with socket.socket(listening.family) as probe:
                probe.bind((host, 0))
                accepted = self._probes[probe.getsockname()[1]] = threading.Event()
                probe.connect((host, port))
                assert accepted.wait(5), "the listener did not accept its probe"
        with self._lock:
            return self._count

    def close(self):
        for listening in self._sockets:
            listening.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            listening.close()
