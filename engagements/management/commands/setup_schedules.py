from django.conf import settings
from django.core.management.base import BaseCommand
from django_q.models import Schedule

SCHEDULES = {
    # name: (function, minutes between runs)
    "sync-mailboxes": ("mailboxes.tasks.sync_all_mailboxes_task", "CRM_SYNC_INTERVAL_MINUTES"),
    "retention-purge": ("engagements.tasks.purge_task", "CRM_PURGE_INTERVAL_MINUTES"),
}


class Command(BaseCommand):
    help = "Create or update the django-q2 schedules (run on every deploy; idempotent)."

    def handle(self, *args: object, **options: object) -> None:
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
            self.stdout.write(f"schedule {name}: {func} every {minutes} min")
