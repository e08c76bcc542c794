from django.core.management.base import BaseCommand, CommandError

from engagements.sending import reconcile_outbox


class Command(BaseCommand):
    help = (
        "Queue again the emails a lost task left waiting, and finish or re-send those a dead "
        "worker left sending, checking the sent folder first (the schedule runs it every 5 min)."
    )

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--limit", type=int, default=100, help="emails per run (default 100)")

    def handle(self, *args: object, **options: object) -> None:
        if options["limit"] < 1:
            raise CommandError("--limit must be at least 1.")
        self.stdout.write(reconcile_outbox(limit=options["limit"]).summary())
