from django.core.management.base import BaseCommand, CommandError

from mailboxes.models import Mailbox
from mailboxes.services import reset_sync_state
from sync.services import sync_mailbox


class Command(BaseCommand):
    help = (
        "Rebuild mailboxes' sync state from scratch: forget checkpoints and metadata, then sync "
        "again. Email already on timelines is recognised by Message-ID and never duplicated."
    )

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("mailbox_ids", nargs="*", type=int)
        parser.add_argument("--all", action="store_true", help="every connected mailbox")

    def handle(self, *args: object, **options: object) -> None:
        ids = options["mailbox_ids"]
        if options["all"]:
            ids = list(Mailbox.objects.connected().values_list("pk", flat=True))
        elif not ids:
            raise CommandError("Name mailbox ids, or pass --all.")
        mailboxes = Mailbox.objects.in_bulk(ids)
        missing = sorted(set(ids) - set(mailboxes))
        if missing:
            raise CommandError(f"No mailbox with id {', '.join(map(str, missing))}.")
        for mailbox_id in ids:
            reset_sync_state(mailboxes[mailbox_id])
            result = sync_mailbox(mailbox_id)
            status = result.summary("read")
            self.stdout.write(f"mailbox {mailbox_id} resynced: {status}")
