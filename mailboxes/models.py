from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower
from django.urls import reverse
from django.utils import timezone

from crm_site.tenancy import TeamScopedQuerySet
from teams.models import Team

from .fields import EncryptedSecretField


class MailboxQuerySet(TeamScopedQuerySet):
    def connected(self) -> MailboxQuerySet:
        return self.filter(state=Mailbox.State.CONNECTED)

    def due(self, now: datetime) -> MailboxQuerySet:
        """Connected mailboxes not waiting for a retry (backoff after failures)."""
        return self.connected().filter(
            models.Q(retry_at__isnull=True) | models.Q(retry_at__lte=now)
        )


class Mailbox(models.Model):
    """A mailbox a user connected; provider details live behind `mailboxes.providers`."""

    class Kind(models.TextChoices):
        IMAP = "imap", "IMAP / SMTP"
        GMAIL = "gmail", "Gmail / Google Workspace"
        GRAPH = "graph", "Microsoft 365"

    class State(models.TextChoices):
        CONNECTED = "connected", "Connected"
        DISCONNECTED = "disconnected", "Disconnected"

    class Cause(models.TextChoices):
        # Values are the providers' ProviderError.cause.
        AUTH_FAILED = "auth_failed", "The mail server refused the password (it may have changed)"
        ACCESS_REVOKED = "access_revoked", "Access to the mailbox was revoked"
        MAILBOX_MOVED = "mailbox_moved", "The mailbox was moved to another server"
        SERVER_UNAVAILABLE = "server_unavailable", "The mail server could not be reached"
        TLS_FAILED = "tls_failed", "The mail server's certificate could not be trusted"
        OTHER = "error", "The mail server kept failing"

    team = models.ForeignKey(Team, on_delete=models.CASCADE)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mailboxes"
    )
    kind = models.CharField(max_length=10, choices=Kind.choices)
    email_address = models.EmailField(max_length=320)
    # Passwords or OAuth tokens, encrypted at rest (SPEC S1); never rendered or logged.
    credentials = EncryptedSecretField(editable=False)
    # Provider settings (hosts, ports, security, username): never secret, never queried.
    settings = models.JSONField(default=dict, blank=True)
    display_name = models.CharField(
        max_length=200, blank=True, help_text="The name recipients see on email you send."
    )
    signature = models.TextField(blank=True, help_text="Added by the {signature} token.")
    state = models.CharField(max_length=20, choices=State.choices, default=State.CONNECTED)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    # Disconnection (SPEC D1, D2): why, since when, and whether the owner was told (once).
    disconnect_cause = models.CharField(max_length=30, choices=Cause.choices, blank=True)
    disconnected_at = models.DateTimeField(null=True, blank=True)
    notified_at = models.DateTimeField(null=True, blank=True)
    # Retries of a failing server: consecutive failures, the first of them, the next try.
    failures = models.PositiveIntegerField(default=0)
    failing_since = models.DateTimeField(null=True, blank=True)
    retry_at = models.DateTimeField(null=True, blank=True)
    # The drift check after each sync: what the server has that Threadline did not store.
    drift = models.TextField(blank=True)
    drift_checked_at = models.DateTimeField(null=True, blank=True)
    # When a sync was queued that has not started yet: one queued sync per mailbox, however
    # often "Sync now", the schedule or a reconnect asks (mailboxes.services.queue_sync).
    sync_queued_at = models.DateTimeField(null=True, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = MailboxQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "mailboxes"
        constraints = [
            models.UniqueConstraint(
                "owner", Lower("email_address"), name="mailboxes_mailbox_owner_email_uniq"
            )
        ]

    def __str__(self) -> str:
        return f"{self.email_address} ({self.get_kind_display()})"

    def get_absolute_url(self) -> str:
        return reverse("mailboxes:mailbox_detail", args=[self.pk])

    @property
    def fix(self) -> str:
        """What the owner should do about the disconnection, in plain words."""
        if self.disconnect_cause == self.Cause.AUTH_FAILED:
            return (
                "Reconnect it with your new password (or an app password, if your provider "
                "uses them)."
            )
        if self.disconnect_cause in (self.Cause.ACCESS_REVOKED, self.Cause.MAILBOX_MOVED):
            return "Reconnect it and grant Threadline access again."
        return "Check the server settings with your IT team, then reconnect it."

    @property
    def is_syncing(self) -> bool:
        """A sync holds the lease (a dead one only until it expires). Lists select_related
        `sync_lease`."""
        try:
            lease = self.sync_lease
        except SyncLease.DoesNotExist:
            return False
        return lease.expires_at is not None and lease.expires_at > timezone.now()

    @property
    def progress(self) -> tuple[int, int]:
        """(messages read, messages known) over the synced folders (uses prefetched folders)."""
        folders = list(self.folders.all())
        return sum(f.synced_count for f in folders), sum(f.total_count for f in folders)


class SyncLease(models.Model):
    """The sync lease of one mailbox (mailboxes/leases.py): one sync at a time, fenced by
    epoch. A row of its own, not columns of the mailbox's: a batch locks it while it writes,
    and nothing else (the sender form, failures, queuing) waits on that lock or saves a stale
    copy of it back."""

    mailbox = models.OneToOneField(
        Mailbox, on_delete=models.CASCADE, primary_key=True, related_name="sync_lease"
    )
    holder = models.CharField(max_length=200, blank=True)
    epoch = models.PositiveBigIntegerField(default=0)
    expires_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"sync lease of mailbox {self.mailbox_id}"


class Folder(models.Model):
    """A synced folder of a mailbox and its sync checkpoint (the provider's opaque cursor)."""

    class Role(models.TextChoices):
        INBOX = "inbox", "Inbox"
        SENT = "sent", "Sent"

    team = models.ForeignKey(Team, on_delete=models.CASCADE)
    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="folders")
    name = models.CharField(max_length=500)
    role = models.CharField(max_length=10, choices=Role.choices)
    cursor = models.TextField(blank=True)
    synced_count = models.PositiveIntegerField(default=0)
    total_count = models.PositiveIntegerField(default=0)
    last_synced_at = models.DateTimeField(null=True, blank=True)

    objects = TeamScopedQuerySet.as_manager()

    class Meta:
        ordering = ["role", "name"]
        constraints = [
            models.UniqueConstraint(fields=["mailbox", "name"], name="mailboxes_folder_name_uniq")
        ]

    def __str__(self) -> str:
        return self.name


class MessageMeta(models.Model):
    """Header metadata of one message in one folder (SPEC R4: erased after 60 days).

    Never a body, text or attachment: those live in MessageBody (7 days) or on timelines.
    """

    # An initial sync writes every message of the last 60 days, so each index and database
    # check costs on 100,000s of rows. The folder's constraint is the one that holds the row
    # to its owner: team and mailbox are the folder's own, copied for scoping and the purge,
    # so they are not checked again. Team and folder need no index of their own: the
    # composite ones start with them.
    team = models.ForeignKey(Team, on_delete=models.CASCADE, db_constraint=False, db_index=False)
    mailbox = models.ForeignKey(
        Mailbox, on_delete=models.CASCADE, related_name="messages", db_constraint=False
    )
    folder = models.ForeignKey(
        Folder, on_delete=models.CASCADE, related_name="messages", db_index=False
    )
    ref = models.CharField(max_length=200, help_text="The provider's id in the folder (UID).")
    message_id = models.CharField(max_length=998, blank=True)
    in_reply_to = models.CharField(max_length=998, blank=True)
    references = models.TextField(blank=True)
    from_name = models.CharField(max_length=300, blank=True)
    from_address = models.CharField(max_length=320, blank=True)
    to = models.JSONField(default=list, blank=True)
    cc = models.JSONField(default=list, blank=True)
    subject = models.CharField(max_length=998, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(null=True, blank=True)
    size = models.PositiveBigIntegerField(default=0)
    flags = models.CharField(max_length=500, blank=True)
    problems = models.CharField(max_length=500, blank=True, help_text="Unreadable headers.")
    thread_hint = models.CharField(
        max_length=200, blank=True, help_text="Gmail's threadId or Graph's conversationId: a "
        "hint for support, never used to match (SPEC L2).",
    )  # fmt: skip
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = TeamScopedQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["folder", "ref"], name="mailboxes_msgmeta_folder_ref_uniq"
            )
        ]
        indexes = [
            # Purge (R4) and the support-triage view, newest first.
            models.Index(fields=["team", "created_at"], name="msgmeta_team_created_idx"),
        ]

    def __str__(self) -> str:
        return self.subject or self.message_id or f"message {self.ref}"

    @property
    def reference_ids(self) -> list[str]:
        return [ref for ref in self.references.split() if ref]


class MessageBody(models.Model):
    """The raw copy of a tracked thread's message (SPEC R3: erased after 7 days)."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE)
    meta = models.OneToOneField(MessageMeta, on_delete=models.CASCADE, related_name="body")
    raw = models.BinaryField()
    fetched_at = models.DateTimeField(default=timezone.now)

    objects = TeamScopedQuerySet.as_manager()

    class Meta:
        indexes = [
            # Purge (R3): cached bodies older than the retention period.
            models.Index(fields=["team", "fetched_at"], name="msgbody_team_fetched_idx"),
        ]

    def __str__(self) -> str:
        return f"body of {self.meta_id}"


class QuarantinedMessage(models.Model):
    """A synced message that could not be logged, and why: the rest of its batch was logged
    and the sync went on. Retried on later syncs up to MAX_ATTEMPTS times; shown on the
    mailbox page and in the admin. Headers copied for display: the metadata row may be
    purged first (R4), which ends the retries."""

    MAX_ATTEMPTS = 3

    team = models.ForeignKey(Team, on_delete=models.CASCADE)
    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="quarantined")
    folder = models.ForeignKey(Folder, on_delete=models.CASCADE, related_name="quarantined")
    ref = models.CharField(max_length=200)
    message_id = models.CharField(max_length=998, blank=True)
    subject = models.CharField(max_length=998, blank=True)
    from_address = models.CharField(max_length=320, blank=True)
    reason = models.TextField()
    attempts = models.PositiveSmallIntegerField(default=1)
    failed_at = models.DateTimeField(default=timezone.now)

    objects = TeamScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-failed_at", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["folder", "ref"], name="mailboxes_quarantine_folder_ref_uniq"
            )
        ]

    def __str__(self) -> str:
        return f"{self.subject or self.message_id or self.ref}: {self.reason}"

    @property
    def is_retried(self) -> bool:
        return self.attempts < self.MAX_ATTEMPTS
