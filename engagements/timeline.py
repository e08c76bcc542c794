"""Assembling a record's timeline page in a fixed number of queries."""

from __future__ import annotations

from dataclasses import dataclass

from django.core.paginator import Page, Paginator
from django.db import models
from django.db.models import Prefetch

from teams.models import Team

from .models import RECORD_FIELDS, Attachment, EmailEngagement, Thread

THREADS_PER_PAGE = 10
ATTACHMENTS_SHOWN = 20
REMOVED_SHOWN = 5


@dataclass
class Timeline:
    threads: Page  # each Thread carries `.shown`: its visible engagements, newest first
    attachments: list[Attachment]
    attachment_count: int
    recently_removed: list[EmailEngagement]  # restorable from the page (SPEC R2)


def build_timeline(team: Team, record: models.Model, page_number: str | int | None) -> Timeline:
    """A page of `record`'s threads with their engagements and the record's attachments.

    Seven queries whatever the number of engagements: thread count, thread page, engagements
    of those threads, their attachments, the Attachments section and its count, and the
    recently removed engagements.
    """
    threads = Thread.objects.for_team(team).on_timeline_of(record)
    page = Paginator(threads, THREADS_PER_PAGE).get_page(page_number)
    engagements = (
        EmailEngagement.objects.for_team(team)
        .on_timeline_of(record)
        .filter(thread__in=[thread.pk for thread in page.object_list])
        .prefetch_related(Prefetch("attachments", queryset=Attachment.objects.order_by("pk")))
        .order_by("-sent_at", "-pk")
    )
    by_thread: dict[int, list[EmailEngagement]] = {}
    for engagement in engagements:
        by_thread.setdefault(engagement.thread_id, []).append(engagement)
    for thread in page.object_list:
        thread.shown = by_thread.get(thread.pk, [])
        _note_newcomers(thread.shown)
    attachments = Attachment.objects.for_team(team).on_timeline_of(record)
    return Timeline(
        threads=page,
        attachments=list(attachments[:ATTACHMENTS_SHOWN]),
        attachment_count=attachments.count(),
        recently_removed=list(
            EmailEngagement.objects.for_team(team).removed_from_timeline_of(record)[:REMOVED_SHOWN]
        ),
    )


def timeline_version(team: Team, record: models.Model) -> str:
    """A token that changes whenever `record`'s timeline would show something else: an email
    logged, removed or restored, or a send that moved on (waiting, sent, not sent). The open
    page compares it to the one it was rendered with (one query, on the record's index)."""
    Status = EmailEngagement.Status
    pending = models.Q(status__in=[Status.QUEUED, Status.SENDING])
    counts = (
        EmailEngagement.objects.for_team(team)
        .filter(**{RECORD_FIELDS[type(record)]: record})
        .aggregate(
            newest=models.Max("pk"),
            shown=models.Count("pk", filter=models.Q(deleted_at__isnull=True)),
            pending=models.Count("pk", filter=pending),
            failed=models.Count("pk", filter=models.Q(status=Status.FAILED)),
        )
    )
    return "{newest}.{shown}.{pending}.{failed}".format_map(
        {key: value or 0 for key, value in counts.items()}
    )


def _addresses(engagement: EmailEngagement) -> set[str]:
    return {a["email"].lower() for a in [*engagement.to, *engagement.cc] if a.get("email")}


def _note_newcomers(shown: list[EmailEngagement]) -> None:
    """Mark each email that brought someone new into its thread (SPEC L7) with `.newcomers`.

    Email that replies to or forwards an earlier message keeps its references, so it stays
    in that thread even when re-addressed to a new contact; the timeline says so.
    """
    seen: set[str] = set()
    for position, engagement in enumerate(reversed(shown)):  # oldest first
        addresses = _addresses(engagement) | {engagement.from_address.lower()}
        engagement.newcomers = sorted(addresses - seen) if position else []
        seen |= addresses
