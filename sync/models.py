"""The sync engine's own bookkeeping: which watcher process watches which mailbox, and the
push subscriptions that tell it of new mail. No customer data: a mailbox's checkpoints,
metadata and lease are the mailboxes app's."""

from __future__ import annotations

from django.db import models

from mailboxes.fields import EncryptedSecretField


class Watcher(models.Model):
    """A running `manage.py watch_mailboxes` process, as of its last round (sync/watcher.py).
    The watchers seen within CRM_WATCH_TTL_SECONDS share the connected mailboxes."""

    name = models.CharField(max_length=200, primary_key=True)
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.name


class MailboxWatch(models.Model):
    """The watcher that watches a mailbox, until `expires_at` (renewed every round; another
    watcher takes the mailbox once it has passed)."""

    mailbox = models.OneToOneField(
        "mailboxes.Mailbox", on_delete=models.CASCADE, primary_key=True, related_name="watch"
    )
    watcher = models.CharField(max_length=200)
    expires_at = models.DateTimeField()
    # A push said the mailbox changed (sync/push.py): its watcher syncs it within a second.
    changed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # Each round: the rows of one watcher (renew, release, count).
            models.Index(fields=["watcher"], name="sync_watch_watcher_idx"),
        ]

    def __str__(self) -> str:
        return f"mailbox {self.mailbox_id} watched by {self.watcher}"


class PushSubscription(models.Model):
    """A mailbox's push from its service (Gmail's users.watch, a Graph subscription), made
    and renewed by the watcher that holds the mailbox and checked by the webhook that
    receives it (sync/push.py). It outlives watchers: a mailbox handed to another watcher
    keeps its subscription."""

    mailbox = models.OneToOneField(
        "mailboxes.Mailbox", on_delete=models.CASCADE, primary_key=True, related_name="push"
    )
    # What the provider returned (MailProvider.watch_changes), encrypted: Graph's clientState
    # is the secret that proves a notification is ours.
    state = EncryptedSecretField()
    # Graph's subscription id, by which its notifications name the mailbox ("" for Gmail,
    # whose pushes name the address).
    subscription_id = models.CharField(max_length=200, blank=True, db_index=True)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"push for mailbox {self.mailbox_id} until {self.expires_at:%Y-%m-%d %H:%M}"
