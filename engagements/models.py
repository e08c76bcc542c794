from __future__ import annotations

import os

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from contacts.models import Company, Contact, Deal
from crm_site.db import any_of
from crm_site.tenancy import TeamScopedQuerySet
from teams.models import Team

from .filenames import storage_name

# The M2M field of EmailEngagement that links it to each kind of record.
RECORD_FIELDS: dict[type[models.Model], str] = {
    Contact: "contacts",
    Company: "companies",
    Deal: "deals",
}


class ThreadQuerySet(TeamScopedQuerySet):
    def on_timeline_of(self, record: models.Model) -> ThreadQuerySet:
        """Threads with a visible engagement on `record`, newest activity first."""
        field = RECORD_FIELDS[type(record)]
        return (
            self.filter(
                **{f"engagements__{field}": record, "engagements__deleted_at__isnull": True}
            )
            .annotate(last_at=models.Max("engagements__sent_at"))
            .order_by("-last_at", "-pk")
        )


class Thread(models.Model):
    """A reference chain of email (SPEC L7): what the timeline groups engagements by."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE)
    subject = models.CharField(max_length=998, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = ThreadQuerySet.as_manager()

    def __str__(self) -> str:
        return self.subject or "(no subject)"


class EmailEngagementQuerySet(TeamScopedQuerySet):
    def visible(self) -> EmailEngagementQuerySet:
        return self.filter(deleted_at__isnull=True)

    def deleted(self) -> EmailEngagementQuerySet:
        return self.filter(deleted_at__isnull=False)

    def on_timeline_of(self, record: models.Model) -> EmailEngagementQuerySet:
        return self.visible().filter(**{RECORD_FIELDS[type(record)]: record})

    def removed_from_timeline_of(self, record: models.Model) -> EmailEngagementQuerySet:
        """Deleted engagements of `record`, still restorable until the purge, newest first."""
        field = RECORD_FIELDS[type(record)]
        return self.deleted().filter(**{field: record}).order_by("-deleted_at", "-pk")


class EmailEngagement(models.Model):
    """One email logged on records' timelines (SPEC L1, L2, L4)."""

    class Direction(models.TextChoices):
        INCOMING = "in", "Received"
        OUTGOING = "out", "Sent"

    class Source(models.TextChoices):
        CRM = "crm", "Sent from the CRM"
        SYNC = "sync", "Logged by mailbox sync"
        LOGGING_ADDRESS = "bcc", "Logged by BCC or forward"
        SEQUENCE = "sequence", "Sent by a sequence"
        IMPORT = "import", "Imported"

    class Status(models.TextChoices):
        QUEUED = "queued", "Waiting to send"
        SENDING = "sending", "Sending…"
        SENT = "sent", "Sent"
        FAILED = "failed", "Not sent"

    team = models.ForeignKey(Team, on_delete=models.CASCADE)
    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="engagements")
    direction = models.CharField(max_length=3, choices=Direction.choices)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.SYNC)
    message_id = models.CharField(max_length=998, help_text="Without angle brackets.")
    in_reply_to = models.CharField(max_length=998, blank=True)
    references = models.TextField(blank=True, help_text="Message-IDs, space separated.")
    from_name = models.CharField(max_length=300, blank=True)
    from_address = models.EmailField(max_length=320)
    # Lists of {"name": ..., "email": ...}: shown, never queried.
    to = models.JSONField(default=list, blank=True)
    cc = models.JSONField(default=list, blank=True)
    subject = models.CharField(max_length=998, blank=True)
    body_text = models.TextField(blank=True)
    body_html = models.TextField(blank=True, help_text="As received; sanitised on display.")
    sent_at = models.DateTimeField()
    attachments_note = models.CharField(
        max_length=300, blank=True, help_text="Why attachments were not logged (SPEC L5)."
    )
    # Email sent from the CRM goes queued -> sending -> sent or failed; logged email is sent.
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SENT)
    status_detail = models.CharField(
        max_length=500, blank=True, help_text="Why sending failed, or what went only partly."
    )
    contacts = models.ManyToManyField(Contact, blank=True, related_name="email_engagements")
    companies = models.ManyToManyField(Company, blank=True, related_name="email_engagements")
    deals = models.ManyToManyField(Deal, blank=True, related_name="email_engagements")
    logged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # Soft delete (SPEC R2): hidden at once, restorable, erased by the purge later.
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    objects = EmailEngagementQuerySet.as_manager()

    class Meta:
        ordering = ["-sent_at", "-pk"]
        constraints = [
            # One engagement per email per team: a message seen twice is logged once.
            models.UniqueConstraint(
                fields=["team", "message_id"], name="engagements_emaileng_team_msgid_uniq"
            ),
        ]
        indexes = [
            # Timeline: a page of threads loads its engagements newest first.
            models.Index(fields=["thread", "sent_at"], name="eng_thread_sent_idx"),
            # Purge (R2): deleted engagements older than the retention period.
            models.Index(fields=["team", "deleted_at"], name="eng_team_deleted_idx"),
        ]

    def __str__(self) -> str:
        return self.subject or "(no subject)"

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

    @property
    def is_pending(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.SENDING)

    @property
    def from_display(self) -> str:
        return f"{self.from_name} <{self.from_address}>" if self.from_name else self.from_address


def attachment_path(instance: Attachment, filename: str) -> str:
    # Team-prefixed random path: names never collide and never leak across teams. Every
    # attachment file is stored through here, so its name is made safe here (filenames.py).
    name = storage_name(filename, instance.content_type)
    return f"attachments/team_{instance.team_id}/{os.urandom(12).hex()}/{name}"


class AttachmentQuerySet(TeamScopedQuerySet):
    def on_timeline_of(self, record: models.Model) -> AttachmentQuerySet:
        field = RECORD_FIELDS[type(record)]
        return self.filter(
            **{f"engagement__{field}": record, "engagement__deleted_at__isnull": True}
        ).select_related("engagement")


class Attachment(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE)
    engagement = models.ForeignKey(
        EmailEngagement, on_delete=models.CASCADE, related_name="attachments"
    )
    file = models.FileField(upload_to=attachment_path, max_length=500)
    # The sender's name for the file, as shown (filenames.display_name); stored under a safe one.
    filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=255, default="application/octet-stream")
    size = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = AttachmentQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "pk"]

    def __str__(self) -> str:
        return self.filename

    def get_absolute_url(self) -> str:
        return reverse("engagements:attachment_download", args=[self.pk])


class TrackedMessageIdQuerySet(TeamScopedQuerySet):
    def matching(self, message_ids: set[str]) -> TrackedMessageIdQuerySet:
        """The tracked ids among `message_ids`: one indexed query for a whole sync batch."""
        return self.filter(message_id__in=any_of(message_ids))


class TrackedMessageId(models.Model):
    """A Message-ID whose replies are logged (SPEC L2): sent from, or logged to, the CRM."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE)
    message_id = models.CharField(max_length=998, help_text="Without angle brackets.")
    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="tracked_ids")
    engagement = models.ForeignKey(
        EmailEngagement, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = TrackedMessageIdQuerySet.as_manager()

    class Meta:
        constraints = [
            # Also the index the matcher uses: team = ? AND message_id IN (...).
            models.UniqueConstraint(
                fields=["team", "message_id"], name="engagements_tracked_team_msgid_uniq"
            ),
        ]

    def __str__(self) -> str:
        return f"<{self.message_id}>"


class OutgoingEmail(models.Model):
    """What sending an engagement needs until it is sent: the message and its envelope.

    The raw message is kept only until it is sent (a retry sends the same bytes, with the
    same Message-ID); the engagement carries the status the timeline shows.
    """

    team = models.ForeignKey(Team, on_delete=models.CASCADE)
    engagement = models.OneToOneField(
        EmailEngagement, on_delete=models.CASCADE, related_name="outgoing"
    )
    mailbox = models.ForeignKey("mailboxes.Mailbox", on_delete=models.CASCADE, related_name="+")
    raw = models.BinaryField(blank=True)
    sender = models.EmailField(max_length=320)
    recipients = models.JSONField(default=list, help_text="Envelope recipients, Bcc included.")
    bcc = models.JSONField(default=list, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    filed_in_sent = models.BooleanField(default=False)
    # When the server accepted the message, written the moment it said so (before the sent
    # copy is filed and the send recorded): a worker that dies after it left an email that
    # went out, which the reconciler records as sent instead of sending it again.
    accepted_at = models.DateTimeField(null=True, blank=True)
    # When the outbox reconciler takes the email over if it is still queued or sending then (its
    # task was lost, or its worker died); null once it is sent or failed. Every change of a
    # pending email's status writes it, so it is also what each claim compares and sets
    # (sending.py).
    reconcile_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = TeamScopedQuerySet.as_manager()

    class Meta:
        indexes = [
            # The reconciler's "due" query; only pending email has a value.
            models.Index(
                fields=["reconcile_at"],
                name="outgoing_reconcile_idx",
                condition=models.Q(reconcile_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"sending of {self.engagement_id}"


class EmailTemplate(models.Model):
    """A reusable email with personalisation tokens (SPEC T1); see engagements/templating.py."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE)
    name = models.CharField(max_length=120)
    subject = models.CharField(max_length=998)
    body = models.TextField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    objects = TeamScopedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="engagements_template_name_uniq")
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("engagements:template_update", args=[self.pk])
