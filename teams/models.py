from __future__ import annotations

import secrets
from datetime import timedelta

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from crm_site.tenancy import TeamScopedQuerySet

INVITATION_LIFETIME = timedelta(days=14)


def _new_token() -> str:
    return secrets.token_urlsafe(32)


def new_logging_token() -> str:
    # Lower-case letters and digits: the local part of an email address, case-insensitive.
    return secrets.token_hex(10)


class Team(models.Model):
    name = models.CharField(max_length=120)
    logging_token = models.CharField(
        max_length=40, unique=True, default=new_logging_token, editable=False
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def logging_address(self) -> str:
        """Where team members BCC or forward email to log it (SPEC L4)."""
        return f"log-{self.logging_token}@{settings.CRM_MAIL_DOMAIN}"


class Membership(models.Model):
    class Role(models.TextChoices):
        ADMIN = "admin", "Admin"
        MEMBER = "member", "Member"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    # One team per user in v1: the middleware reads the single membership.
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    joined_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = TeamScopedQuerySet.as_manager()

    class Meta:
        ordering = ["joined_at"]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"

    @property
    def is_admin(self) -> bool:
        return self.role == self.Role.ADMIN


class InvitationQuerySet(TeamScopedQuerySet):
    def pending(self) -> InvitationQuerySet:
        return self.filter(
            accepted_at__isnull=True, created_at__gte=timezone.now() - INVITATION_LIFETIME
        )


class Invitation(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    token = models.CharField(max_length=64, unique=True, default=_new_token, editable=False)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    accepted_at = models.DateTimeField(null=True, blank=True)

    objects = InvitationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                "team",
                Lower("email"),
                condition=models.Q(accepted_at__isnull=True),
                name="teams_invitation_team_email_uniq",
            )
        ]

    def __str__(self) -> str:
        return f"Invitation of {self.email} to {self.team}"

    def is_usable(self) -> bool:
        return self.accepted_at is None and timezone.now() < self.created_at + INVITATION_LIFETIME


class RetentionPolicy(models.Model):
    """How long a team's mail data is kept (SPEC R1-R4, L5); edited in the Django admin.

    It lives in `teams` because the mailboxes (cache, metadata) and engagements (timeline)
    apps both obey it, and both may import `teams`.
    """

    team = models.OneToOneField(Team, on_delete=models.CASCADE, related_name="retention")
    body_cache_days = models.PositiveIntegerField(
        default=7,
        validators=[MinValueValidator(1), MaxValueValidator(3650)],
        help_text="R3: bodies of synced email in the sync cache are erased this many days "
        "after they were fetched (default 7).",
    )
    metadata_days = models.PositiveIntegerField(
        default=60,
        validators=[MinValueValidator(1), MaxValueValidator(3650)],
        help_text="R4: header metadata of synced email is erased this many days after it was "
        "stored (default 60); the first sync reads this many days back.",
    )
    deleted_engagement_days = models.PositiveIntegerField(
        default=90,
        validators=[MinValueValidator(0), MaxValueValidator(3650)],
        help_text="R2: a deleted engagement stays restorable this many days, then is erased with "
        "its attachments (default 90). Sequence email is never erased (R1).",
    )
    log_attachments = models.BooleanField(
        default=True, help_text="L5: store attachments of logged email on the records (default on)."
    )
    attachment_max_mb = models.PositiveIntegerField(
        default=50,
        validators=[MinValueValidator(1), MaxValueValidator(1024)],
        help_text="L5: email larger than this (in MB) is logged without its attachments "
        "(default 50).",
    )

    objects = TeamScopedQuerySet.as_manager()

    class Meta:
        verbose_name = "retention policy"
        verbose_name_plural = "retention policies"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(body_cache_days__gte=1, metadata_days__gte=1),
                name="teams_retentionpolicy_days_chk",
            )
        ]

    def __str__(self) -> str:
        return f"Retention for {self.team}"

    @property
    def attachment_max_bytes(self) -> int:
        return self.attachment_max_mb * 1024 * 1024
