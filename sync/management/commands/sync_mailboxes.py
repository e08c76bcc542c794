from django.core.management.base import BaseCommand, CommandError

from mailboxes.models import Mailbox
from sync.services import SYNC_BATCH_SIZE, sync_mailbox


class Command(BaseCommand):
    help = "Sync connected mailboxes now, in this process (the scheduled task does the same)."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--mailbox", type=int, action="append", help="mailbox id (repeat)")
        parser.add_argument(
            "--batch-size",
            type=int,
            default=SYNC_BATCH_SIZE,
            help=f"messages read and committed together (default {SYNC_BATCH_SIZE})",
        )

    def handle(self, *args: object, **options: object) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        ids = options["mailbox"] or list(Mailbox.objects.connected().values_list("pk", flat=True))
        missing = set(ids) - set(Mailbox.objects.filter(pk__in=ids).values_list("pk", flat=True))
        if missing:
            raise CommandError(f"No mailbox with id {', '.join(map(str, sorted(missing)))}.")
        for mailbox_id in ids:
            result = sync_mailbox(mailbox_id, limit=options["batch_size"])
            status = result.summary("new")
            self.stdout.write(f"mailbox {mailbox_id}: {status}")
