"""Mailbox watchers: replies on the timeline within seconds, not at the next scheduled sync.

`manage.py watch_mailboxes` runs one Watcher; run one or many, on one machine or many. Each
round (every CRM_WATCH_TICK_SECONDS) a watcher says it is alive (a Watcher row), renews the
mailboxes it watches (MailboxWatch rows, valid for CRM_WATCH_TTL_SECONDS) and evens out the
load: the connected mailboxes are shared among the watchers seen lately, each keeping at most
its fair share (a watcher over it gives mailboxes back, one under it takes free ones, and the
mailboxes of a watcher that went silent are free once its rows expire).

For each mailbox it watches, a thread keeps a connection waiting for the server to announce a
change of the inbox (IMAP IDLE, with a look at the sent folder's STATUS between two IDLEs), or
keeps the service pushing news of changes to our webhook (Gmail, Microsoft 365: sync/push.py,
which marks the mailbox changed; the watcher looks every second), and runs the incremental
sync when it does. Without either it polls every CRM_WATCH_POLL_SECONDS; with them it syncs
anyway every CRM_SYNC_INTERVAL_MINUTES, as the schedule would.

The syncs are ordinary ones, each under the mailbox's sync lease: a watcher that lost a
mailbox (stopped, then resumed) can still start a sync, which then finds the lease held or is
fenced off, and a sync queued by the schedule or "Sync now" meanwhile ends at once. The syncs,
and all the database work of the mailbox threads, run in CRM_WATCH_SYNCS sync threads: the
mailbox threads only wait on their connections.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TypeVar

from django.conf import settings
from django.db import IntegrityError, close_old_connections, connection, models, transaction
from django.utils import timezone

from mailboxes.leases import holder_name
from mailboxes.models import Folder, Mailbox
from mailboxes.providers.base import MailProvider, ProviderError
from mailboxes.services import open_provider

from .models import MailboxWatch, Watcher
from .push import keep_push
from .services import SyncResult, sync_mailbox

logger = logging.getLogger(__name__)
T = TypeVar("T")

# A sync that found another running (a scheduled one, or one of a watcher that died, until
# its lease expires) is tried again this often, until it runs: what announced the change may
# have come after that sync read the folder.
BUSY_RETRY_SECONDS = 2
# Logins one watcher makes at once when it starts watching many mailboxes.
CONNECTS_AT_ONCE = 8
# The longest wait before reconnecting to a server that keeps failing.
MAX_BACKOFF_SECONDS = 300
# After an announced change that a sync found nothing new for, the wait before one more sync.
SETTLE_SECONDS = 2.0
# How often a watcher looks for mailboxes a push said changed (sync/push.py).
NUDGE_SECONDS = 1.0
# How long a mailbox whose push could not be set up is polled before push is tried again.
PUSH_RETRY_SECONDS = 600


class MailboxThread(threading.Thread):
    """Watches one mailbox until `stop` is set (see the module docstring)."""

    def __init__(self, watcher: MailboxWatcher, mailbox_id: int) -> None:
        super().__init__(name=f"watch mailbox {mailbox_id}", daemon=True)
        self.watcher = watcher
        self.mailbox_id = mailbox_id
        self.stop = threading.Event()
        self.nudged = threading.Event()  # a push said the mailbox changed
        self.push_again_at = 0.0  # monotonic time before which no push is set up
        self.synced_at = 0.0  # monotonic time of the last sync's start

    def run(self) -> None:
        backoff = 1.0
        while not self.stopped():
            try:
                # Database work runs in the sync threads: a thousand mailbox threads
                # starting at once would otherwise open a thousand connections.
                mailbox, inbox, sent = self.watcher.in_sync_thread(_mailbox, self.mailbox_id)
                with open_provider(mailbox) as provider:
                    # Select the inbox first: what arrives from now on is announced by the
                    # next IDLE, what arrived before is read by this sync; the same for the
                    # sent folder's mark. (A few logins at a time: hundreds at once
                    # overwhelm a server's auth.)
                    with self.watcher.connect_slots:
                        announces = inbox is not None and (
                            provider.wait_for_change(inbox.name, 0, self.stopped) is not None
                        )
                        sent_mark = self.sent_mark(provider, sent)
                    self.sync()
                    while not self.stopped():
                        if announces:
                            # IDLE on the inbox, and between two IDLEs a look at the sent
                            # folder (mail the user sent from their own mail client).
                            changed = provider.wait_for_change(
                                inbox.name, self.watcher.sent_check, self.stopped
                            )
                            mark = self.sent_mark(provider, sent)
                            if not changed and mark == sent_mark and not self.due(announces):
                                continue
                            sent_mark = mark
                        else:  # the service pushes to our webhook (nudged), or we poll
                            pushed = self.keep_push(provider)
                            self.nudged.wait(self.interval(pushed))
                        if self.stopped():
                            break
                        self.nudged.clear()  # a push from now on asks for another sync
                        found = self.sync()
                        if announces and changed and not found:
                            # Announced, yet nothing new read: a server may announce mail a
                            # moment before it lists or serves it. Once more, shortly.
                            if self.stop.wait(SETTLE_SECONDS):
                                break
                            self.sync()
                        backoff = 1.0
            except Mailbox.DoesNotExist:
                return  # removed meanwhile; the next round forgets it
            except Exception as exc:  # noqa: BLE001 - a watcher outlives its servers' failures
                if isinstance(exc, ProviderError):
                    # A sync records the failure as any sync's (retried with backoff, or a
                    # disconnection when the password changed, SPEC D1/D2); this connection
                    # waits and tries again.
                    logger.info("watching mailbox %s: %s", self.mailbox_id, exc)
                    self.sync()
                else:
                    logger.exception("watching mailbox %s failed", self.mailbox_id)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            finally:
                connection.close()

    def stopped(self) -> bool:
        return self.stop.is_set() or self.watcher.stopping.is_set()

    def sent_mark(self, provider: MailProvider, sent: Folder | None) -> str | None:
        return provider.folder_mark(sent.name) if sent is not None else None

    def interval(self, announced: bool) -> float:
        """Seconds between syncs when nothing announced a change: the schedule's interval
        for a mailbox whose server announces changes (a safety net), else the poll's."""
        return self.watcher.resync if announced else self.watcher.poll

    def due(self, announced: bool) -> bool:
        return time.monotonic() - self.synced_at >= self.interval(announced)

    def halt(self) -> None:
        self.stop.set()
        self.nudged.set()  # ends a wait for a push at once

    def keep_push(self, provider: MailProvider) -> bool:
        """Push on and renewed where the service offers it (sync/push.py); whether it is on.
        A push that cannot be set up (say, the topic refuses Gmail) leaves the mailbox polled,
        and is tried again later; a mailbox whose access is gone is left to the sync that
        follows (D1)."""
        if time.monotonic() < self.push_again_at:
            return False
        try:
            return self.watcher.in_sync_thread(keep_push, self.mailbox_id, provider)
        except ProviderError as exc:
            if not exc.disconnects:
                logger.warning("mailbox %s: push not set up, polling: %s", self.mailbox_id, exc)
                self.push_again_at = time.monotonic() + PUSH_RETRY_SECONDS
            return False

    def sync(self) -> int:
        """One incremental sync, in one of the watcher's sync threads; again a little later
        while another sync of the mailbox holds its lease. How many new messages it read."""
        self.synced_at = time.monotonic()
        while True:
            result: SyncResult = self.watcher.in_sync_thread(sync_mailbox, self.mailbox_id)
            if result.new_messages or result.error:
                logger.info("mailbox %s: %s", self.mailbox_id, result.summary())
            if not result.already_syncing or self.stop.wait(BUSY_RETRY_SECONDS):
                return result.new_messages


def _mailbox(mailbox_id: int) -> tuple[Mailbox, Folder | None, Folder | None]:
    """The mailbox, its inbox and its sent folder."""
    mailbox = Mailbox.objects.get(pk=mailbox_id)
    folders = {folder.role: folder for folder in mailbox.folders.all()}
    return mailbox, folders.get(Folder.Role.INBOX), folders.get(Folder.Role.SENT)


def _closing(work: Callable[..., T], *args: object) -> T:
    try:
        return work(*args)
    finally:
        connection.close()  # a sync thread holds no database connection between tasks


class MailboxWatcher:
    """One watcher process's work (see the module docstring). `run()` until `stopping` is set,
    then every mailbox it watched is given back at once."""

    def __init__(
        self,
        *,
        tick: float | None = None,
        ttl: float | None = None,
        poll: float | None = None,
        syncs: int | None = None,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.name = f"{holder_name()}:{secrets.token_hex(3)}"
        self.tick = tick if tick is not None else settings.CRM_WATCH_TICK_SECONDS
        self.ttl = timedelta(seconds=ttl if ttl is not None else settings.CRM_WATCH_TTL_SECONDS)
        self.poll = poll if poll is not None else settings.CRM_WATCH_POLL_SECONDS
        self.sent_check = settings.CRM_WATCH_SENT_SECONDS
        # A mailbox whose changes are announced (IDLE, push) is synced anyway this often.
        self.resync = settings.CRM_SYNC_INTERVAL_MINUTES * 60
        if connection.vendor == "sqlite":
            syncs = 1  # one writer at a time anyway
        # The syncs run in a few threads of their own rather than in each mailbox's: what a
        # sync leaves in its thread (malloc's per-thread cache of freed blocks, DEBUG's query
        # log) then stays in these few, not in a thousand (23 MB of 234 at 1,000 mailboxes).
        self.syncs = ThreadPoolExecutor(
            syncs or settings.CRM_WATCH_SYNCS, thread_name_prefix="watcher sync"
        )
        self.connect_slots = threading.BoundedSemaphore(CONNECTS_AT_ONCE)
        self.stopping = threading.Event()
        self.threads: dict[int, MailboxThread] = {}
        self.report = report or (lambda line: logger.info("%s", line))

    def in_sync_thread(self, work: Callable[..., T], *args: object) -> T:
        """`work(*args)` in one of the sync threads (the only ones that use the database,
        CRM_WATCH_SYNCS of them), waiting for its result."""
        return self.syncs.submit(_closing, work, *args).result()

    def run(self) -> None:
        try:
            # Say hello first and claim from the next round on: watchers started together
            # then see each other before taking anything, instead of the first taking all
            # and giving half back a round later.
            Watcher.objects.update_or_create(name=self.name, defaults={"seen_at": timezone.now()})
            next_round = time.monotonic() + self.tick
            while not self.stopping.wait(NUDGE_SECONDS):
                if time.monotonic() >= next_round:
                    self.round()
                    next_round = time.monotonic() + self.tick
                self.wake_changed()
        finally:
            self.shutdown()

    def wake_changed(self) -> None:
        """Wake the threads of the mailboxes a push said changed (sync/push.py `nudge`)."""
        mine = MailboxWatch.objects.filter(watcher=self.name, changed_at__isnull=False)
        changed = dict(mine.values_list("mailbox_id", "changed_at"))
        if not changed:
            return
        # A push that comes after this read has a later time, and stays for the next look.
        mine.filter(changed_at__lte=max(changed.values())).update(changed_at=None)
        for mailbox_id in changed:
            thread = self.threads.get(mailbox_id)
            if thread is not None:
                thread.nudged.set()

    def round(self) -> None:
        """Say this watcher is alive, renew its mailboxes, take or give back to reach its fair
        share, and have a thread for each mailbox it holds and none for the others."""
        now = timezone.now()
        Watcher.objects.update_or_create(name=self.name, defaults={"seen_at": now})
        Watcher.objects.filter(seen_at__lt=now - self.ttl).delete()  # gone silent
        mine = MailboxWatch.objects.filter(watcher=self.name)
        mine.exclude(mailbox__state=Mailbox.State.CONNECTED).delete()
        mine.update(expires_at=now + self.ttl)
        held = set(mine.values_list("mailbox_id", flat=True))
        watchers = Watcher.objects.filter(seen_at__gte=now - self.ttl).count()
        share = math.ceil(Mailbox.objects.connected().count() / max(watchers, 1))
        if len(held) > share:
            extra = sorted(held)[share:]
            mine.filter(mailbox_id__in=extra).delete()
            held -= set(extra)
        elif len(held) < share:
            held |= self._claim(share - len(held), now)
        for mailbox_id in set(self.threads) - held:
            self.threads.pop(mailbox_id).halt()
        for mailbox_id in sorted(held - set(self.threads)):
            thread = self.threads[mailbox_id] = MailboxThread(self, mailbox_id)
            thread.start()
        self.report(f"{self.name}: watching {len(held)} of share {share} ({watchers} watchers)")

    def _claim(self, count: int, now: datetime) -> set[int]:
        """Take up to `count` connected mailboxes nobody watches (or whose watcher went
        silent), in random order so that watchers starting together rarely collide."""
        free = (
            Mailbox.objects.connected()
            .filter(models.Q(watch__isnull=True) | models.Q(watch__expires_at__lt=now))
            .order_by("?")
            .values_list("pk", flat=True)[: count * 2]
        )
        taken: set[int] = set()
        for mailbox_id in free:
            if len(taken) == count:
                break
            claimed = MailboxWatch.objects.filter(mailbox_id=mailbox_id, expires_at__lt=now).update(
                watcher=self.name, expires_at=now + self.ttl
            )
            if not claimed:
                try:
                    with transaction.atomic():
                        MailboxWatch.objects.create(
                            mailbox_id=mailbox_id, watcher=self.name, expires_at=now + self.ttl
                        )
                except IntegrityError:
                    continue  # another watcher took it first
            taken.add(mailbox_id)
        return taken

    def shutdown(self) -> None:
        """Stop every thread and give every mailbox back, so that others watch them now."""
        self.stopping.set()
        for thread in self.threads.values():
            thread.halt()
        for thread in self.threads.values():
            thread.join(timeout=30)
        self.threads.clear()
        self.syncs.shutdown()
        MailboxWatch.objects.filter(watcher=self.name).delete()
        Watcher.objects.filter(name=self.name).delete()
        close_old_connections()
