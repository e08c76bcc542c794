"""django-q2 entry points: thin, ids in, a summary string out."""

from __future__ import annotations

from django.utils import timezone

from mailboxes.models import Mailbox
from mailboxes.services import queue_sync, start_queued_sync
from teams.models import Team

from .services import log_backlog, sync_mailbox


def sync_mailbox_task(mailbox_id: int) -> str:
    start_queued_sync(mailbox_id)
    return f"mailbox {mailbox_id}: {sync_mailbox(mailbox_id).summary()}"


def sync_all_mailboxes_task() -> str:
    """Queue a sync of every connected mailbox not waiting for a retry, unless a watcher
    watches it (sync/watcher.py): the schedule's entry point, and the fallback for mailboxes
    no watcher holds."""
    now = timezone.now()
    ids = list(
        Mailbox.objects.due(now).exclude(watch__expires_at__gt=now).values_list("pk", flat=True)
    )
    queued = sum(queue_sync(mailbox_id) for mailbox_id in ids)
    waiting = f"; {len(ids) - queued} already queued" if queued < len(ids) else ""
    return f"queued {queued} mailbox sync(s){waiting}"


def log_backlog_task(team_id: int, message_ids: list[str]) -> str:
    """Log the replies synced before these ids' thread was tracked (queued by BCC logging)."""
    team = Team.objects.filter(pk=team_id).first()
    if team is None:
        return f"team {team_id} is gone"
    return f"logged {log_backlog(team, message_ids)} earlier reply(ies)"
