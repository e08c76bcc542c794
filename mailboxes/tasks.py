"""django-q2 entry points: thin, ids in, a summary string out."""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import import_string

from .models import Mailbox
from .services import SYNC_BATCH_SIZE, SyncResult, queue_sync, start_queued_sync, sync_mailbox


def run_sync(mailbox_id: int, limit: int = SYNC_BATCH_SIZE) -> SyncResult:
    """Sync one mailbox with the configured matcher (CRM_SYNC_MATCHER)."""
    return sync_mailbox(mailbox_id, on_batch=import_string(settings.CRM_SYNC_MATCHER), limit=limit)


def sync_mailbox_task(mailbox_id: int) -> str:
    start_queued_sync(mailbox_id)
    return f"mailbox {mailbox_id}: {run_sync(mailbox_id).summary()}"


def sync_all_mailboxes_task() -> str:
    """Queue a sync of every connected mailbox not waiting for a retry (the schedule's entry
    point)."""
    ids = list(Mailbox.objects.due(timezone.now()).values_list("pk", flat=True))
    queued = sum(queue_sync(mailbox_id) for mailbox_id in ids)
    waiting = f"; {len(ids) - queued} already queued" if queued < len(ids) else ""
    return f"queued {queued} mailbox sync(s){waiting}"
