"""The recurring background jobs (django-q2 schedules), kept in code (STYLE 7).

They are upserted by name after every `migrate` (a post_migrate handler in apps.py), so no
deployment can forget them; `manage.py setup_schedules` does the same by hand.
"""

from __future__ import annotations

from django.conf import settings
from django_q.models import Schedule

# A lost send is taken over lost_after() (11 minutes by default) after it was queued or began,
# and then within this many minutes: no operator needs to tune it.
RECONCILE_OUTBOX_MINUTES = 5

SCHEDULES: dict[str, tuple[str, str | int]] = {
    # name: (function, minutes between runs or the setting holding them)
    "sync-mailboxes": ("sync.tasks.sync_all_mailboxes_task", "CRM_SYNC_INTERVAL_MINUTES"),
    "retention-purge": ("engagements.tasks.purge_task", "CRM_PURGE_INTERVAL_MINUTES"),
    "reconcile-outbox": ("engagements.tasks.reconcile_outbox_task", RECONCILE_OUTBOX_MINUTES),
}


def setup_schedules() -> list[str]:
    """Create or update every schedule by its stable name; return one line per schedule."""
    lines = []
    for name, (func, every) in SCHEDULES.items():
        minutes = every if isinstance(every, int) else getattr(settings, every)
        Schedule.objects.update_or_create(
            name=name,
            defaults={
                "func": func,
                "schedule_type": Schedule.MINUTES,
                "minutes": minutes,
                "repeats": -1,
            },
        )
        lines.append(f"schedule {name}: {func} every {minutes} min")
    return lines
