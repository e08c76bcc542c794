"""Sending email from the CRM (SPEC C4, L1, L6, L7, T1).

A send is logged at once as an outgoing engagement with status "queued" (its Message-ID
tracked, so a reply can never be missed), then a django-q task sends it through the user's
mailbox and files the sent-folder copy. A failed send shows as "Not sent" with the reason
and a Retry; the status moves queued -> sending -> sent/failed under a row lock, so a
message is never sent twice.

A broker can lose a task (Redis, a worker killed while holding it, issue 13), and a worker can
die in the middle of a send. Every pending email therefore carries `reconcile_at`, moved on by
each change of its status: the outbox reconciler (`reconcile_outbox`, on a schedule) takes over
an email still queued or sending at that time. Queued, it is queued again. Sending: if the
worker recorded that the server accepted it (`accepted_at`, written the moment the server
said so), it is recorded as sent and its copy filed; otherwise its mailbox's sent folder is
asked for its Message-ID: found, it is recorded as sent; not found, it is sent again (the
same bytes, the same Message-ID).
"""

from __future__ import annotations

import logging
import mimetypes
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email import policy
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Literal

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import models, transaction
from django.utils import timezone
from django_q.tasks import async_task

from contacts.models import Contact
from mailboxes.models import Mailbox
from mailboxes.parsing import ParsedAttachment
from mailboxes.providers.base import ProviderError
from mailboxes.services import file_sent_copy, find_sent_message, send_message
from teams.models import RetentionPolicy, Team

from .models import EmailEngagement, EmailTemplate, OutgoingEmail, TrackedMessageId
from .services import Address, EmailData, log_email
from .templating import Sender, render, token_values

logger = logging.getLogger(__name__)

# References kept on a reply: the thread's first ids and its latest (RFC 5322 suggests
# trimming long chains; the first and the nearest are what matching needs).
MAX_REFERENCES = 20
# Emails the outbox reconciler looks at in one run, oldest first (the rest wait for the next).
RECONCILE_LIMIT = 100
PENDING = (EmailEngagement.Status.QUEUED, EmailEngagement.Status.SENDING)


class SendError(Exception):
    """The email cannot be sent as asked; the message says why in plain words."""


@dataclass
class Draft:
    """What the user wrote, and the records it is sent from (it is logged on all of them)."""

    to: Sequence[Address]
    subject: str
    body: str
    html: str = ""  # an HTML alternative of `body` (simple formatting), or none
    cc: Sequence[Address] = ()
    bcc: Sequence[Address] = ()
    attachments: Sequence[ParsedAttachment] = ()
    reply_to: EmailEngagement | None = None  # "Reply": joins that email's thread (L7)
    contacts: Sequence[models.Model] = ()
    companies: Sequence[models.Model] = ()
    deals: Sequence[models.Model] = ()


def lost_after() -> timedelta:
    """How long a queued or sending email may stay so before its task is taken as lost: the
    broker's retry window, which settings keep longer than the task timeout, after which
    django-q kills the worker; so no worker can still be sending it then."""
    return timedelta(seconds=int(settings.Q_CLUSTER["retry"]))  # type: ignore[call-overload]


def sending_mailbox(user: AbstractBaseUser, team: Team) -> Mailbox | None:
    """The user's mailbox that email from the CRM goes out through (their oldest one)."""
    return Mailbox.objects.for_team(team).filter(owner=user).order_by("created_at", "pk").first()


def cannot_send_reason(mailbox: Mailbox | None) -> str:
    """Why the user cannot send now (SPEC C4), or "" if they can."""
    if mailbox is None:
        return (
            "To send email from Threadline, connect your mailbox first (Mailboxes → Connect "
            "a mailbox). Email then leaves from your own address and replies are logged here."
        )
    if mailbox.state != Mailbox.State.CONNECTED:
        return (
            f"{mailbox.email_address} is disconnected"
            + (f" ({mailbox.last_error})" if mailbox.last_error else "")
            + ". Reconnect it on the Mailboxes page to send."
        )
    return ""


def sender_identity(mailbox: Mailbox) -> Sender:
    owner = mailbox.owner
    name = mailbox.display_name or owner.get_full_name() or ""
    return Sender(name=name, signature=mailbox.signature)


def new_message_id(team: Team) -> str:
    """A unique Message-ID on our own domain, carrying the team (SPEC L1, U)."""
    return f"{secrets.token_hex(16)}.t{team.pk}@{settings.CRM_MAIL_DOMAIN}"


def _header_address(address: Address) -> HeaderAddress:
    return HeaderAddress(display_name=address.name, addr_spec=address.email)


def build_message(
    *,
    sender: Address,
    draft: Draft,
    message_id: str,
    in_reply_to: str = "",
    references: Sequence[str] = (),
) -> EmailMessage:
    """The MIME message (stdlib `email`, SMTP policy): UTF-8 headers and body encoded as
    needed, multipart when it has HTML or attachments. Bcc is never a header: only the
    envelope."""
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = _header_address(sender)
    message["To"] = [_header_address(a) for a in draft.to]
    if draft.cc:
        message["Cc"] = [_header_address(a) for a in draft.cc]
    message["Subject"] = " ".join(draft.subject.split())  # a header is one line
    message["Date"] = format_datetime(timezone.now())
    message["Message-ID"] = f"<{message_id}>"
    if in_reply_to:
        message["In-Reply-To"] = f"<{in_reply_to}>"
    if references:
        message["References"] = " ".join(f"<{r}>" for r in references)
    message.set_content(draft.body)
    if draft.html:
        message.add_alternative(draft.html, subtype="html")
    for attachment in draft.attachments:
        content_type = attachment.content_type or (
            mimetypes.guess_type(attachment.filename)[0] or "application/octet-stream"
        )
        maintype, _, subtype = content_type.partition("/")
        message.add_attachment(
            attachment.payload,
            maintype=maintype,
            subtype=subtype or "octet-stream",
            filename=attachment.filename,
        )
    return message


def _reply_chain(reply_to: EmailEngagement | None) -> tuple[str, list[str]]:
    if reply_to is None:
        return "", []  # a new email never carries old references (L7)
    chain = [*reply_to.references.split(), reply_to.message_id]
    if len(chain) > MAX_REFERENCES:
        chain = chain[:1] + chain[-(MAX_REFERENCES - 1) :]
    return reply_to.message_id, chain


def queue_email(
    *, team: Team, user: AbstractBaseUser, mailbox: Mailbox | None, draft: Draft
) -> EmailEngagement:
    """Log the email as queued on its records and send it in a task. Raises SendError
    (nothing saved) when it cannot be sent: no mailbox, a disconnected one, no recipient."""
    reason = cannot_send_reason(mailbox)
    if reason:
        raise SendError(reason)
    assert mailbox is not None
    if mailbox.team_id != team.pk or mailbox.owner_id != user.pk:
        raise SendError("You can only send from your own mailbox.")
    if not draft.to:
        raise SendError("Add at least one recipient.")
    if draft.reply_to is not None and draft.reply_to.team_id != team.pk:
        raise SendError("That email is not on your team's timelines.")
    identity = sender_identity(mailbox)
    sender = Address(mailbox.email_address, identity.name)
    message_id = new_message_id(team)
    in_reply_to, references = _reply_chain(draft.reply_to)
    raw = build_message(
        sender=sender,
        draft=draft,
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=references,
    ).as_bytes()
    retention, _ = RetentionPolicy.objects.get_or_create(team=team)
    attachments, note = list(draft.attachments), ""
    if attachments and not retention.log_attachments:
        attachments, note = [], "Attachments were sent but not logged: logging is off."
    elif attachments and len(raw) >= retention.attachment_max_bytes:
        attachments, note = [], "Attachments were sent but not logged: the email is too large."
    recipients = list(dict.fromkeys(a.email for a in [*draft.to, *draft.cc, *draft.bcc]))
    with transaction.atomic():
        if draft.reply_to is not None:
            # The reply joins its thread through the tracked id (an engagement logged before
            # tracking existed may lack one).
            TrackedMessageId.objects.get_or_create(
                team=team,
                message_id=draft.reply_to.message_id,
                defaults={"thread_id": draft.reply_to.thread_id, "engagement": draft.reply_to},
            )
        engagement = log_email(
            team=team,
            email=EmailData(
                message_id=message_id,
                sender=sender,
                sent_at=timezone.now(),
                subject=draft.subject,
                to=tuple(draft.to),
                cc=tuple(draft.cc),
                body_text=draft.body,
                body_html=draft.html,
                in_reply_to=in_reply_to,
                references=tuple(references),
            ),
            direction=EmailEngagement.Direction.OUTGOING,
            source=EmailEngagement.Source.CRM,
            contacts=draft.contacts,
            companies=draft.companies,
            deals=draft.deals,
            actor=user,
            attachments=attachments,
            attachments_note=note,
        )
        engagement.status = EmailEngagement.Status.QUEUED
        engagement.save(update_fields=["status"])
        outgoing = OutgoingEmail.objects.create(
            team=team,
            engagement=engagement,
            mailbox=mailbox,
            raw=raw,
            sender=mailbox.email_address,
            recipients=recipients,
            bcc=[a.as_dict() for a in draft.bcc],
            reconcile_at=timezone.now() + lost_after(),
        )
        transaction.on_commit(lambda: _enqueue(outgoing.pk))
    return engagement


def _enqueue(outgoing_id: int) -> None:
    async_task("engagements.tasks.send_email_task", outgoing_id, task_name="send email")


def send_outgoing(outgoing_id: int) -> str:
    """Send one queued email (the task). Returns its status; sends only from "queued"."""
    with transaction.atomic():
        outgoing = (
            OutgoingEmail.objects.select_for_update()
            .select_related("engagement", "mailbox__team")
            .get(pk=outgoing_id)
        )
        engagement = outgoing.engagement
        if engagement.status != EmailEngagement.Status.QUEUED:
            return engagement.status  # sent, being sent, or failed: never twice
        engagement.status = EmailEngagement.Status.SENDING
        engagement.save(update_fields=["status"])
        outgoing.attempts += 1
        outgoing.last_attempt_at = timezone.now()
        outgoing.reconcile_at = outgoing.last_attempt_at + lost_after()
        outgoing.save(update_fields=["attempts", "last_attempt_at", "reconcile_at"])

    def accepted() -> None:
        # Committed at once (this runs outside any transaction): it must outlive the worker.
        # Failing here must not fail the send the server just accepted: without the record,
        # only a worker dying before its end leaves the reconciler to decide (by the sent
        # folder).
        try:
            OutgoingEmail.objects.filter(pk=outgoing.pk).update(accepted_at=timezone.now())
        except Exception:  # noqa: BLE001
            logger.exception("recording that engagement %s was accepted failed", engagement.pk)

    try:
        note = send_message(
            outgoing.mailbox,
            bytes(outgoing.raw),
            sender=outgoing.sender,
            recipients=outgoing.recipients,
            message_id=engagement.message_id,
            on_accepted=accepted,
        )
    except ProviderError as exc:
        logger.warning("sending engagement %s failed: %s", engagement.pk, exc.cause)
        with transaction.atomic():
            engagement.status = EmailEngagement.Status.FAILED
            engagement.status_detail = exc.message[:500]
            engagement.save(update_fields=["status", "status_detail"])
            outgoing.reconcile_at = None
            outgoing.save(update_fields=["reconcile_at"])
        return engagement.status
    with transaction.atomic():
        engagement.status = EmailEngagement.Status.SENT
        engagement.status_detail = note[:500]
        engagement.sent_at = timezone.now()
        engagement.save(update_fields=["status", "status_detail", "sent_at"])
        outgoing.raw = b""  # sent: the timeline has the content, the sent folder the copy
        outgoing.filed_in_sent = not note
        outgoing.reconcile_at = None
        outgoing.save(update_fields=["raw", "filed_in_sent", "reconcile_at"])
    return engagement.status


def can_retry(engagement: EmailEngagement) -> bool:
    """Only a send that failed: one interrupted while sending is the reconciler's, which looks
    in the sent folder first (a blind retry could send it twice)."""
    return engagement.status == EmailEngagement.Status.FAILED


def retry_email(engagement: EmailEngagement) -> None:
    """Queue a failed send again: the same message, the same Message-ID."""
    if not can_retry(engagement):
        raise SendError("Only an email that was not sent can be retried.")
    with transaction.atomic():
        # The outgoing row first, as send_outgoing and the reconciler take it.
        outgoing = OutgoingEmail.objects.select_for_update().get(pk=engagement.outgoing.pk)
        updated = EmailEngagement.objects.filter(pk=engagement.pk, status=engagement.status).update(
            status=EmailEngagement.Status.QUEUED, status_detail=""
        )
        if updated:
            outgoing.reconcile_at = timezone.now() + lost_after()
            outgoing.save(update_fields=["reconcile_at"])
            transaction.on_commit(lambda: _enqueue(outgoing.pk))


# Shown on an interrupted send whose mailbox has no sent folder to look in.
INTERRUPTED_UNKNOWN = (
    "Sending was interrupted, and without a sent folder in your mailbox Threadline cannot tell "
    "whether it went out. Check with the recipient before you retry."
)


@dataclass
class OutboxResult:
    """What one run of the outbox reconciler did."""

    requeued: int = 0  # waiting, their task lost: queued again
    found_sent: int = 0  # interrupted, found in the sent folder: recorded as sent
    accepted: int = 0  # interrupted after the server accepted it: recorded sent, copy filed
    resent: int = 0  # interrupted, not in the sent folder: queued to be sent again
    undecided: int = 0  # interrupted, no sent folder to look in: "Not sent", the user decides
    unreachable: int = 0  # the mailbox could not be asked: looked at again later
    taken: int = 0  # another reconciler or a worker moved it first
    more: bool = False  # the limit was reached: the next run goes on

    def summary(self) -> str:
        return (
            f"outbox: {self.requeued} queued again, {self.found_sent} found in sent, "
            f"{self.resent} sent again, {self.undecided} undecided, "
            f"{self.accepted} recorded as accepted by the server, "
            f"{self.unreachable} mailbox errors" + ("; more left" if self.more else "")
        )


def reconcile_outbox(*, now: datetime | None = None, limit: int = RECONCILE_LIMIT) -> OutboxResult:
    """Take over emails left queued or sending past their `reconcile_at` (a lost task, a dead
    worker), at most `limit`, longest due first; see the module docstring. Emails of a
    disconnected mailbox wait until it is reconnected (the timeline says why meanwhile),
    except those the server accepted, which need no mailbox to be recorded as sent.
    Several may run at once: each email is claimed by a conditional UPDATE of `reconcile_at`.
    """
    now = now or timezone.now()
    result = OutboxResult()
    due = list(
        OutgoingEmail.objects.filter(reconcile_at__lte=now)
        .filter(
            models.Q(mailbox__state=Mailbox.State.CONNECTED) | models.Q(accepted_at__isnull=False)
        )
        .order_by("reconcile_at", "pk")
        .values_list("pk", "reconcile_at", "mailbox_id", "engagement_id", "engagement__status")[
            : limit + 1
        ]
    )
    result.more = len(due) > limit
    due = due[:limit]
    mailboxes = Mailbox.objects.in_bulk({row[2] for row in due})
    unreachable: set[int] = set()  # could not be asked this run: not asked again in it
    for outgoing_id, seen, mailbox_id, engagement_id, status in due:
        if status == EmailEngagement.Status.SENDING and mailbox_id in unreachable:
            result.unreachable += 1
            continue
        claimed_at = now + lost_after()
        with transaction.atomic():
            # Every change of a pending email's status writes reconcile_at (send_outgoing,
            # retry_email, here): unchanged since it was read, nobody else has moved it.
            # (A finished email has nothing to take over: its time is only cleared.)
            claimed = OutgoingEmail.objects.filter(pk=outgoing_id, reconcile_at=seen).update(
                reconcile_at=claimed_at if status in PENDING else None
            )
            if claimed and status == EmailEngagement.Status.QUEUED:
                transaction.on_commit(lambda pk=outgoing_id: _enqueue(pk))
        if not claimed:
            result.taken += 1
        elif status == EmailEngagement.Status.QUEUED:
            logger.info("outbox: the task of engagement %s was lost; queued again", engagement_id)
            result.requeued += 1
        elif status == EmailEngagement.Status.SENDING:
            try:
                outcome = _settle_interrupted(
                    mailboxes[mailbox_id], outgoing_id, engagement_id, claimed_at, now
                )
            except ProviderError as exc:
                # Claimed until claimed_at: asked again after that, whatever the next run is.
                logger.warning("outbox: mailbox %s could not be asked: %s", mailbox_id, exc.cause)
                unreachable.add(mailbox_id)
                result.unreachable += 1
                continue
            setattr(result, outcome, getattr(result, outcome) + 1)
    return result


def _settle_interrupted(
    mailbox: Mailbox, outgoing_id: int, engagement_id: int, claimed_at: datetime, now: datetime
) -> Literal["found_sent", "accepted", "undecided", "resent", "taken"]:
    """Decide a send whose worker died (claimed by the caller until `claimed_at`) from what
    the worker recorded (the server's acceptance) or else the mailbox's sent folder; return
    the OutboxResult field it counts in. Raises ProviderError."""
    message_id, attempted_at, accepted_at, raw = EmailEngagement.objects.filter(
        pk=engagement_id
    ).values_list(
        "message_id", "outgoing__last_attempt_at", "outgoing__accepted_at", "outgoing__raw"
    )[0]
    Status = EmailEngagement.Status
    outcome: Literal["found_sent", "accepted", "undecided", "resent"]
    outgoing_fields: dict[str, object]
    engagement_fields: dict[str, object]
    found = None if accepted_at is not None else find_sent_message(mailbox, message_id)
    if accepted_at is not None:
        # The server accepted it, then the worker died: it went out. It is recorded as sent
        # first; its copy is filed after (below), unless the server filed one.
        outgoing_fields = {"reconcile_at": None}
        engagement_fields = {"status": Status.SENT, "status_detail": "", "sent_at": accepted_at}
        outcome = "accepted"
    elif found:
        # It went out and was filed; only the recording was lost.
        outgoing_fields = {"reconcile_at": None, "raw": b"", "filed_in_sent": True}
        engagement_fields = {"status": Status.SENT, "status_detail": ""}
        engagement_fields["sent_at"] = attempted_at or now  # when the send began
        outcome = "found_sent"
    elif found is None:
        # No sent folder: nothing tells a message that left from one that did not. A person
        # decides (Retry), rather than a guess sending it twice or never.
        outgoing_fields = {"reconcile_at": None}
        engagement_fields = {"status": Status.FAILED, "status_detail": INTERRUPTED_UNKNOWN}
        outcome = "undecided"
    else:
        # Neither accepted nor in the sent folder: sent again, the same bytes with the same
        # Message-ID. The worker records acceptance the moment the server says "250" (or the
        # API answers), before anything else; only a worker that died within that one
        # database write left a delivered message unrecorded, and this sends it a second
        # time: a rare second copy, with the same Message-ID, is the price of never leaving
        # an email unsent without a word. (Gmail and Microsoft 365 also file what they
        # accept themselves, well within lost_after(), which this looked for first.)
        outgoing_fields = {"reconcile_at": now + lost_after()}
        engagement_fields = {"status": Status.QUEUED, "status_detail": ""}
        outcome = "resent"
    with transaction.atomic():
        if not OutgoingEmail.objects.filter(pk=outgoing_id, reconcile_at=claimed_at).update(
            **outgoing_fields
        ):
            return "taken"  # a Retry moved it meanwhile
        EmailEngagement.objects.filter(pk=engagement_id, status=Status.SENDING).update(
            **engagement_fields
        )
        if outcome == "resent":
            transaction.on_commit(lambda: _enqueue(outgoing_id))
    if outcome == "accepted":
        _file_accepted_copy(mailbox, outgoing_id, engagement_id, bytes(raw), message_id)
    logger.info("outbox: interrupted send of engagement %s: %s", engagement_id, outcome)
    return outcome


def _file_accepted_copy(
    mailbox: Mailbox, outgoing_id: int, engagement_id: int, raw: bytes, message_id: str
) -> None:
    """File the sent copy of an email recorded as sent after its worker died; a copy that
    cannot be filed is noted on the email (it was sent all the same)."""
    if not raw:
        return  # the worker finished meanwhile: it filed the copy, or noted why not
    if mailbox.state != Mailbox.State.CONNECTED:
        note = f"No copy was filed in your sent folder: {mailbox.email_address} is disconnected."
    else:
        try:
            note = file_sent_copy(mailbox, raw, message_id)
        except ProviderError as exc:
            note = f"The copy could not be filed in your sent folder: {exc.message}"
    OutgoingEmail.objects.filter(pk=outgoing_id).update(raw=b"", filed_in_sent=not note)
    if note:
        EmailEngagement.objects.filter(pk=engagement_id).update(status_detail=note[:500])


@dataclass
class BulkResult:
    queued: list[EmailEngagement]
    skipped: list[tuple[Contact, str]]  # contact, why


def send_template(
    *,
    team: Team,
    user: AbstractBaseUser,
    mailbox: Mailbox | None,
    template: EmailTemplate,
    contacts: Sequence[Contact],
) -> BulkResult:
    """Send a template to several contacts: each their own email, in its own new thread,
    logged on the contact and their company (SPEC T1)."""
    reason = cannot_send_reason(mailbox)
    if reason:
        raise SendError(reason)
    assert mailbox is not None
    identity = sender_identity(mailbox)
    result = BulkResult(queued=[], skipped=[])
    for contact in contacts:
        address = contact.primary_email
        if not address:
            result.skipped.append((contact, "no email address"))
            continue
        values = token_values(contact=contact, sender=identity)
        draft = Draft(
            to=[Address(address, contact.full_name)],
            subject=render(template.subject, values),
            body=render(template.body, values),
            contacts=[contact],
            companies=[contact.company] if contact.company else [],
        )
        result.queued.append(queue_email(team=team, user=user, mailbox=mailbox, draft=draft))
    return result
