import signal

from django.core.management.base import BaseCommand

from sync.watcher import MailboxWatcher


class Command(BaseCommand):
    help = (
        "Watch a fair share of the connected mailboxes and sync each as soon as its server "
        "announces new mail (IMAP IDLE; others are polled). Run one or more, anywhere; stop "
        "with SIGTERM or Ctrl-C, which hands the mailboxes to the other watchers at once."
    )

    def handle(self, *args: object, **options: object) -> None:
        watcher = MailboxWatcher(report=self._report)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: watcher.stopping.set())
        self.stdout.write(f"watcher {watcher.name} started")
        watcher.run()
        self.stdout.write(f"watcher {watcher.name} stopped")

    def _report(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()
