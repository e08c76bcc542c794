"""Logging email on records, soft delete and restore (SPEC L1, L2, R2)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from mailboxes.parsing import ParsedAttachment
from teams.models import Team

from .filenames import display_name, safe_content_type
from .models import Attachment, EmailEngagement, Thread, TrackedMessageId

logger = logging.getLogger(__name__)

# EmailEngagement.attachments_note's max_length.
MAX_NOTE_CHARS = 300


@dataclass(frozen=True)
class Address:
    email: str
    name: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "email": self.email}


@dataclass(frozen=True)
class EmailData:
    """An email to log, in provider-neutral form (Message-IDs without angle brackets)."""

    message_id: str
    sender: Address
    sent_at: datetime
    subject: str = ""
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    body_text: str = ""
    body_html: str = ""
    in_reply_to: str = ""
    references: tuple[str, ...] = field(default_factory=tuple)


def normalize_message_id(value: str) -> str:
    return value.strip().strip("<>").strip()


def _ancestors(email: EmailData) -> list[str]:
    """The ids an email answers, nearest first (In-Reply-To, then References newest first)."""
    ids = [email.in_reply_to, *reversed(email.references)]
    return [i for i in (normalize_message_id(i) for i in ids if i) if i]


def _check_same_team(team: Team, records: Iterable[models.Model]) -> None:
    for record in records:
        if record.team_id != team.pk:  # type: ignore[attr-defined]
            raise ValueError(f"{record!r} belongs to another team")


@dataclass
class LogItem:
    """One email to log with `log_emails`, and the records it goes on."""

    email: EmailData
    direction: str
    contacts: Sequence[models.Model] = ()
    companies: Sequence[models.Model] = ()
    deals: Sequence[models.Model] = ()
    attachments: Sequence[ParsedAttachment] = ()
    attachments_note: str = ""


def log_email(
    *,
    team: Team,
    email: EmailData,
    direction: str,
    source: str,
    contacts: Iterable[models.Model] = (),
    companies: Iterable[models.Model] = (),
    deals: Iterable[models.Model] = (),
    actor: AbstractBaseUser | None = None,
    attachments: Iterable[ParsedAttachment] = (),
    attachments_note: str = "",
) -> EmailEngagement:
    """Log one email on the given records and track its Message-ID; see `log_emails`."""
    item = LogItem(email, direction, list(contacts), list(companies), list(deals),
                   list(attachments), attachments_note)  # fmt: skip
    return log_emails(team=team, items=[item], source=source, actor=actor)[0]


@transaction.atomic
def log_emails(
    *, team: Team, items: Sequence[LogItem], source: str, actor: AbstractBaseUser | None = None
) -> list[EmailEngagement]:
    """Log emails on records and track their Message-IDs, in a fixed number of queries.

    Idempotent: a Message-ID logged before gets the new records added, not a second
    engagement. Each email joins the thread of its nearest tracked ancestor (an earlier item
    of the same call counts), else starts one. Raises ValueError, before writing anything, if
    a record belongs to another team or an email has no Message-ID.
    """
    message_ids = []
    for item in items:
        _check_same_team(team, [*item.contacts, *item.companies, *item.deals])
        message_id = normalize_message_id(item.email.message_id)
        if not message_id:
            raise ValueError("an email needs a Message-ID to be logged")
        message_ids.append(message_id)
    engagements = {
        e.message_id: e
        for e in EmailEngagement.objects.for_team(team).filter(message_id__in=message_ids)
    }
    wanted = {a for item in items for a in _ancestors(item.email)}
    threads = dict(
        TrackedMessageId.objects.for_team(team)
        .matching(wanted)
        .values_list("message_id", "thread_id")
    )
    new: list[tuple[LogItem, EmailEngagement]] = []
    for item, message_id in zip(items, message_ids, strict=True):
        if message_id in engagements:
            continue
        email = item.email
        thread_id = next((threads[a] for a in _ancestors(email) if a in threads), None)
        if thread_id is None:
            thread_id = Thread.objects.create(team=team, subject=email.subject[:998]).pk
        threads[message_id] = thread_id
        engagements[message_id] = EmailEngagement(
            team=team,
            thread_id=thread_id,
            direction=item.direction,
            source=source,
            message_id=message_id,
            in_reply_to=normalize_message_id(email.in_reply_to),
            references=" ".join(normalize_message_id(r) for r in email.references),
            from_name=email.sender.name,
            from_address=email.sender.email,
            to=[a.as_dict() for a in email.to],
            cc=[a.as_dict() for a in email.cc],
            subject=email.subject[:998],
            body_text=email.body_text,
            body_html=email.body_html,
            sent_at=email.sent_at,
            logged_by=actor,
            attachments_note=item.attachments_note[:MAX_NOTE_CHARS],
        )
        new.append((item, engagements[message_id]))
    if new:
        try:
            with transaction.atomic():
                # PostgreSQL and SQLite return the new keys.
                EmailEngagement.objects.bulk_create([e for _, e in new])
        except IntegrityError:
            # Another worker logged one of them meanwhile: go one by one, using its row.
            if len(items) == 1:
                engagement = EmailEngagement.objects.get(team=team, message_id=message_ids[0])
                _link_records(items, [engagement])
                return [engagement]
            return [log_emails(team=team, items=[i], source=source, actor=actor)[0] for i in items]
        attachments = _store_attachments(team, new)
        try:
            Attachment.objects.bulk_create(attachments)
        except Exception:
            for attachment in attachments:  # no file without its row
                with suppress(Exception):
                    attachment.file.delete(save=False)
            raise
        # A no-op for ids tracked already (say, sent from the CRM before being synced).
        TrackedMessageId.objects.bulk_create(
            [
                TrackedMessageId(
                    team=team,
                    message_id=engagement.message_id,
                    thread_id=engagement.thread_id,
                    engagement=engagement,
                )
                for _, engagement in new
            ],
            ignore_conflicts=True,
        )
    result = [engagements[message_id] for message_id in message_ids]
    _link_records(items, result)
    return result


def _store_attachments(
    team: Team, new: Sequence[tuple[LogItem, EmailEngagement]]
) -> list[Attachment]:
    """Store the new engagements' attachment files; their rows, to insert.

    The file name is made safe where every attachment file is stored (Attachment's
    upload_to, see filenames.py). An attachment that still cannot be stored costs only
    itself: it is left out and its engagement's `attachments_note` says so (one UPDATE per
    such engagement).
    """
    attachments: list[Attachment] = []
    for item, engagement in new:
        skipped: list[tuple[str, str]] = []
        for part in item.attachments:
            content_type = safe_content_type(part.content_type)
            attachment = Attachment(
                team=team,
                engagement=engagement,
                filename=display_name(part.filename, content_type),
                content_type=content_type,
                size=len(part.payload),
            )
            try:
                attachment.file.save(part.filename, ContentFile(part.payload), save=False)
            except Exception as exc:  # noqa: BLE001 - whatever the storage raises, see above
                logger.warning(
                    "attachment %r of engagement %s not stored: %r",
                    attachment.filename,
                    engagement.pk,
                    exc,
                )
                skipped.append((attachment.filename, _failure_reason(exc)))
                continue
            attachments.append(attachment)
        if skipped:
            note = f"{engagement.attachments_note} {_skipped_note(skipped)}".strip()
            engagement.attachments_note = note[:MAX_NOTE_CHARS]
            engagement.save(update_fields=["attachments_note"])
    return attachments


def _failure_reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:60]  # "No space left on device"
    return "the file store refused it"


def _skipped_note(skipped: Sequence[tuple[str, str]]) -> str:
    """Which attachments were not stored and why, in at most MAX_NOTE_CHARS characters."""
    intro = (
        "This attachment could not be stored and is not logged: "
        if len(skipped) == 1
        else "These attachments could not be stored and are not logged: "
    )
    entries = [
        f"“{name if len(name) <= 60 else name[:59] + '…'}” ({reason})" for name, reason in skipped
    ]
    for shown in range(len(entries), 0, -1):
        more = len(entries) - shown
        note = intro + "; ".join(entries[:shown]) + (f"; and {more} more" if more else "") + "."
        if len(note) <= MAX_NOTE_CHARS:
            return note
    return f"Not logged: {len(entries)} attachments could not be stored."


def _link_records(items: Sequence[LogItem], engagements: Sequence[EmailEngagement]) -> None:
    """Put each engagement on its item's records: one insert per kind of record."""
    for name in ("contacts", "companies", "deals"):
        m2m = EmailEngagement._meta.get_field(name)
        through = m2m.remote_field.through
        column = m2m.m2m_reverse_name()
        rows = {
            (engagement.pk, record.pk)
            for item, engagement in zip(items, engagements, strict=True)
            for record in getattr(item, name)
        }
        through.objects.bulk_create(
            [through(emailengagement_id=e, **{column: r}) for e, r in rows],
            ignore_conflicts=True,
        )


def delete_engagement(*, engagement: EmailEngagement, actor: AbstractBaseUser) -> None:
    """Hide an engagement at once; the purge erases it after the retention period (R2)."""
    now = timezone.now()
    if EmailEngagement.objects.filter(pk=engagement.pk, deleted_at__isnull=True).update(
        deleted_at=now, deleted_by=actor
    ):
        engagement.deleted_at, engagement.deleted_by = now, actor


def restore_engagement(*, engagement: EmailEngagement) -> bool:
    """Bring a deleted engagement back onto its timelines. False if the purge erased it
    meanwhile (an UPDATE, never a save(): that would insert a half engagement again)."""
    restored = EmailEngagement.objects.filter(pk=engagement.pk, deleted_at__isnull=False).update(
        deleted_at=None, deleted_by=None
    )
    engagement.deleted_at = engagement.deleted_by = None
    return bool(restored)
