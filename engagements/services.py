"""Logging email on records, soft delete and restore (SPEC L1, L2, R2)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from mailboxes.parsing import ParsedAttachment
from teams.models import Team

from .models import Attachment, EmailEngagement, Thread, TrackedMessageId


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


def _thread_for(team: Team, email: EmailData) -> Thread:
    """The thread of the nearest tracked ancestor (In-Reply-To, then References newest first)."""
    ancestors = [normalize_message_id(email.in_reply_to)] if email.in_reply_to else []
    ancestors += [normalize_message_id(ref) for ref in reversed(email.references)]
    ancestors = [a for a in ancestors if a]
    if ancestors:
        found = {
            tracked.message_id: tracked.thread
            for tracked in TrackedMessageId.objects.for_team(team)
            .matching(set(ancestors))
            .select_related("thread")
        }
        for ancestor in ancestors:
            if ancestor in found:
                return found[ancestor]
    return Thread.objects.create(team=team, subject=email.subject[:998])


def _check_same_team(team: Team, records: Iterable[models.Model]) -> None:
    for record in records:
        if record.team_id != team.pk:  # type: ignore[attr-defined]
            raise ValueError(f"{record!r} belongs to another team")


@transaction.atomic
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
    """Log `email` on the given records and track its Message-ID; idempotent.

    The same Message-ID logged again adds the records to the existing engagement instead of
    creating a second one. Raises ValueError if a record belongs to another team.
    """
    contacts, companies, deals = list(contacts), list(companies), list(deals)
    _check_same_team(team, [*contacts, *companies, *deals])
    message_id = normalize_message_id(email.message_id)
    if not message_id:
        raise ValueError("an email needs a Message-ID to be logged")
    engagement = EmailEngagement.objects.for_team(team).filter(message_id=message_id).first()
    if engagement is None:
        thread = _thread_for(team, email)
        try:
            with transaction.atomic():
                engagement = EmailEngagement.objects.create(
                    team=team,
                    thread=thread,
                    direction=direction,
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
                    attachments_note=attachments_note[:300],
                )
                Attachment.objects.bulk_create(
                    Attachment(
                        team=team,
                        engagement=engagement,
                        filename=item.filename,
                        content_type=item.content_type[:255],
                        size=len(item.payload),
                        file=ContentFile(item.payload, name=item.filename),
                    )
                    for item in attachments
                )
        except IntegrityError:
            # Logged concurrently by another worker: use that row.
            engagement = EmailEngagement.objects.get(team=team, message_id=message_id)
        # One statement, and a no-op when the id is already tracked.
        TrackedMessageId.objects.bulk_create(
            [
                TrackedMessageId(
                    team=team,
                    message_id=message_id,
                    thread_id=engagement.thread_id,
                    engagement=engagement,
                )
            ],
            ignore_conflicts=True,
        )
    engagement.contacts.add(*contacts)
    engagement.companies.add(*companies)
    engagement.deals.add(*deals)
    return engagement


def delete_engagement(*, engagement: EmailEngagement, actor: AbstractBaseUser) -> None:
    """Hide an engagement at once; the purge erases it after the retention period (R2)."""
    if engagement.deleted_at is None:
        engagement.deleted_at = timezone.now()
        engagement.deleted_by = actor
        engagement.save(update_fields=["deleted_at", "deleted_by"])


def restore_engagement(*, engagement: EmailEngagement) -> None:
    """Bring a deleted engagement back onto its timelines."""
    engagement.deleted_at = None
    engagement.deleted_by = None
    engagement.save(update_fields=["deleted_at", "deleted_by"])
