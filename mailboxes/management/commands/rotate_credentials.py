from django.core.management.base import BaseCommand

from mailboxes.models import Mailbox


class Command(BaseCommand):
    help = (
        "Re-encrypt every mailbox's credentials with the newest key of CRM_ENCRYPTION_KEYS; "
        "run after adding a key at the front, before removing the old one."
    )

    def handle(self, *args: object, **options: object) -> None:
        count = 0
        # Loading decrypts with whichever key fits; saving encrypts with the newest.
        for mailbox in Mailbox.objects.only("pk", "credentials").iterator(chunk_size=500):
            mailbox.save(update_fields=["credentials"])
            count += 1
        self.stdout.write(f"Re-encrypted the credentials of {count} mailbox(es).")
