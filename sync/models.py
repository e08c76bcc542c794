"""The sync engine's own bookkeeping: which watcher process watches which mailbox. No
customer data: a mailbox's checkpoints, metadata and lease are the mailboxes app's."""

from __future__ import annotations

from django.db import models


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

    class Meta:
        indexes = [
            # Each round: the rows of one watcher (renew, release, count).
            models.Index(fields=["watcher"], name="sync_watch_watcher_idx"),
        ]

    def __str__(self) -> str:
        return f"mailbox {self.mailbox_id} watched by {self.watcher}"
