from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from crm_site.tenancy import TeamScopedQuerySet
from teams.models import Team

from .fields import EncryptedSecretField


class Mailbox(models.Model):
    """A mailbox a user connected; provider details live behind `mailboxes.providers`."""

    class Kind(models.TextChoices):
        IMAP = "imap", "IMAP / SMTP"
        GMAIL = "gmail", "Gmail / Google Workspace"
        GRAPH = "graph", "Microsoft 365"

    class State(models.TextChoices):
        CONNECTED = "connected", "Connected"
        DISCONNECTED = "disconnected", "Disconnected"

    team = models.ForeignKey(Team, on_delete=models.CASCADE)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mailboxes"
    )
    kind = models.CharField(max_length=10, choices=Kind.choices)
    email_address = models.EmailField(max_length=320)
    # Passwords or OAuth tokens, encrypted at rest (SPEC S1); never rendered or logged.
    credentials = EncryptedSecretField(editable=False)
    state = models.CharField(max_length=20, choices=State.choices, default=State.CONNECTED)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = TeamScopedQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "mailboxes"
        constraints = [
            models.UniqueConstraint(
                "owner", Lower("email_address"), name="mailboxes_mailbox_owner_email_uniq"
            )
        ]

    def __str__(self) -> str:
        return f"{self.email_address} ({self.get_kind_display()})"
