"""django-q2 entry points: thin, ids in, a summary string out."""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import import_string
from django_q.tasks import async_task

from .models import Mailbox
from .services import SyncResult, sync_mailbox


def run_sync(mailbox_id: int) -> SyncResult:
    """Sync one mailbox with the configured matcher (CRM_SYNC_MATCHER)."""
    return sync_mailbox(mailbox_id, on_batch=import_string(settings.CRM_SYNC_MATCHER))


def sync_mailbox_task(mailbox_id: int) -> str:
    result = run_sync(mailbox_id)
    if result.error:
        return f"mailbox {mailbox_id}: {result.error}"
    return f"mailbox {mailbox_id}: {result.new_messages} new message(s)"


def sync_all_mailboxes_task() -> str:
    """Queue a sync of every connected mailbox not waiting for a retry (the schedule's entry
    point)."""
    ids = list(Mailbox.objects.due(timezone.now()).values_list("pk", flat=True))
    for mailbox_id in ids:
        async_task("mailboxes.tasks.sync_mailbox_task", mailbox_id, group="sync")
    return f"queued {len(ids)} mailbox sync(s)"
