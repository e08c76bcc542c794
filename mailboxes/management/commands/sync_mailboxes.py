from django.core.management.base import BaseCommand, CommandError

from mailboxes.models import Mailbox
from mailboxes.tasks import run_sync


class Command(BaseCommand):
    help = "Sync connected mailboxes now, in this process (the scheduled task does the same)."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--mailbox", type=int, action="append", help="mailbox id (repeat)")

    def handle(self, *args: object, **options: object) -> None:
        ids = options["mailbox"] or list(Mailbox.objects.connected().values_list("pk", flat=True))
        missing = set(ids) - set(Mailbox.objects.filter(pk__in=ids).values_list("pk", flat=True))
        if missing:
            raise CommandError(f"No mailbox with id {', '.join(map(str, sorted(missing)))}.")
        for mailbox_id in ids:
            result = run_sync(mailbox_id)
            status = (
                "already syncing"
                if result.already_syncing
                else f"error: {result.error}"
                if result.error
                else f"{result.new_messages} new"
            )
            self.stdout.write(f"mailbox {mailbox_id}: {status}")
