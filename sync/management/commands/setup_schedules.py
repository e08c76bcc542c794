from django.core.management.base import BaseCommand

from sync.schedules import setup_schedules


class Command(BaseCommand):
    help = (
        "Create or update the django-q2 schedules (mailbox sync, retention purge). "
        "`migrate` does it too; idempotent."
    )

    def handle(self, *args: object, **options: object) -> None:
        for line in setup_schedules():
            self.stdout.write(line)
