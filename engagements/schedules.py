"""The recurring background jobs (django-q2 schedules), kept in code (STYLE 7).

They are upserted by name after every `migrate` (a post_migrate handler in apps.py), so no
deployment can forget them; `manage.py setup_schedules` does the same by hand.
"""

from __future__ import annotations

from django.conf import settings
from django_q.models import Schedule

SCHEDULES = {
    # name: (function, setting holding the minutes between runs)
    "sync-mailboxes": ("mailboxes.tasks.sync_all_mailboxes_task", "CRM_SYNC_INTERVAL_MINUTES"),
    "retention-purge": ("engagements.tasks.purge_task", "CRM_PURGE_INTERVAL_MINUTES"),
}


def setup_schedules() -> list[str]:
    """Create or update every schedule by its stable name; return one line per schedule."""
    lines = []
    for name, (func, minutes_setting) in SCHEDULES.items():
        minutes = getattr(settings, minutes_setting)
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
