"""Mailbox watchers (`manage.py watch_mailboxes`, sync/watcher.py) as real processes against
the real Dovecot and PostgreSQL: replies logged within seconds of arriving, a fair share of
the mailboxes each, and a watcher killed, stopped or added without a reply lost or logged
twice (issue 14). PostgreSQL only (tests/processes.py)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from engagements.models import EmailEngagement
from mailboxes.leases import claim_lease, release_lease
from mailboxes.models import MessageMeta, SyncLease
from sync.models import MailboxWatch
from tests.mailboxes.helpers import SENT_ID, UserMailbox, build_email, connect_imap, track_proposal
from tests.processes import (
    child_environment,
    kill_command,
    left_behind,
    needs_a_shared_database,
    start_command,
    wait_until,
)

pytestmark = [pytest.mark.django_db(transaction=True), needs_a_shared_database]

MAILBOXES = 6
TTL = 4  # seconds a silent watcher keeps its mailboxes (30 in production)
LEASE = 15  # seconds a sync's lease lasts (300 in production)
ARRIVAL_TO_TIMELINE = 10  # seconds: the promise
SENT_CHECK = 3  # seconds between looks at a sent folder (20 in production)


class Watchers:
    """`watch_mailboxes` processes started here, each in a session of its own."""

    def __init__(self, tmp_path, mark: str) -> None:
        self.env = {
            **child_environment(mark),
            "CRM_WATCH_TICK_SECONDS": "1",
            "CRM_WATCH_TTL_SECONDS": str(TTL),
            "CRM_WATCH_POLL_SECONDS": "30",
            "CRM_WATCH_SENT_SECONDS": str(SENT_CHECK),
            "CRM_SYNC_INTERVAL_MINUTES": "60",
            "CRM_SYNC_LEASE_SECONDS": str(LEASE),
        }
        self.tmp_path = tmp_path
        self.mark = mark
        self.processes: list[subprocess.Popen] = []

    def start(self) -> subprocess.Popen:
        log = (self.tmp_path / f"watcher-{len(self.processes)}.log").open("w")
        process = start_command("watch_mailboxes", env=self.env, output=log)
        self.processes.append(process)
        return process

    def signal(self, process: subprocess.Popen, signum: int) -> None:
        os.killpg(process.pid, signum)

    def close(self) -> None:
        for process in self.processes:
            kill_command(process)


def holders() -> dict[int, str]:
    """Mailbox -> the watcher that holds it now."""
    now = timezone.now()
    return dict(
        MailboxWatch.objects.filter(expires_at__gt=now).values_list("mailbox_id", "watcher")
    )


def shares() -> list[int]:
    return sorted(Counter(holders().values()).values())


def by_pid(process: subprocess.Popen) -> set[int]:
    return {m for m, watcher in holders().items() if f":{process.pid}:" in watcher}


def deliver_and_time(accounts, numbers, label: str, folder: str = "INBOX") -> list[float]:
    """Deliver a reply to the tracked thread into each of these mailboxes' `folder`; the
    seconds each took to reach the timeline."""
    sent = {}
    for number in numbers:
        message_id = f"{label}-{number}@example.com"
        raw = build_email(message_id=message_id, in_reply_to=SENT_ID)
        accounts[number].deliver(raw, folder=folder)
        sent[message_id] = time.monotonic()
    arrived = {}

    def all_logged():
        for message_id in EmailEngagement.objects.filter(message_id__in=sent).values_list(
            "message_id", flat=True
        ):
            arrived.setdefault(message_id, time.monotonic())
        return len(arrived) == len(sent)

    wait_until(all_logged, LEASE + 30, f"replies {label} logged")
    return [arrived[m] - sent[m] for m in sent]


@pytest.fixture
def watched(mail_settings, dovecot, smtp_server, team, owner):
    accounts, mailboxes = [], []
    for _ in range(MAILBOXES):
        user, password = dovecot.add_user()
        accounts.append(UserMailbox(dovecot, user, password))
        mailboxes.append(connect_imap(dovecot, smtp_server, user, password, team, owner))
    track_proposal(team, mailboxes[0])
    yield accounts, mailboxes
    for account in accounts:
        account.close()


def test_watchers_share_the_mailboxes_and_survive_kill_stop_and_add(watched, tmp_path):
    accounts, mailboxes = watched
    mark = f"watchers-{os.getpid()}"
    watchers = Watchers(tmp_path, mark)
    # A sync that died holding mailbox 0's lease for 12 s more, and a reply that came then.
    release_lease(mailboxes[0].pk, claim_lease(mailboxes[0].pk))
    claim_lease(mailboxes[0].pk)
    free_at = timezone.now() + timedelta(seconds=12)
    SyncLease.objects.filter(mailbox=mailboxes[0]).update(expires_at=free_at)
    accounts[0].deliver(build_email(message_id="while-held@example.com", in_reply_to=SENT_ID))
    try:
        first, second = watchers.start(), watchers.start()
        wait_until(lambda: shares() == [3, 3], 30, "two watchers holding 3 mailboxes each")
        # The watcher's first sync of mailbox 0 waits for that lease, then reads the reply.
        logged = wait_until(
            lambda: EmailEngagement.objects.filter(message_id="while-held@example.com").first(),
            40, "the reply that came while the lease was held",
        )  # fmt: skip
        assert logged.created_at >= free_at

        # Replies reach the timeline within seconds of arriving.
        latencies = deliver_and_time(accounts, range(MAILBOXES), "live")
        assert max(latencies) < ARRIVAL_TO_TIMELINE, latencies
        # So does mail sent from the user's own mail client, filed in the sent folder (which
        # the inbox's IDLE does not announce): at the next look at that folder, not at the
        # next scheduled sync (an hour away here).
        own = deliver_and_time(accounts, range(MAILBOXES), "own", folder="Sent")
        assert max(own) < SENT_CHECK + ARRIVAL_TO_TIMELINE, own

        # One watcher killed: the other holds its mailboxes once they expire.
        orphans = by_pid(first)
        killed_at = time.monotonic()
        watchers.signal(first, signal.SIGKILL)
        first.wait(timeout=30)
        wait_until(lambda: len(by_pid(second)) == MAILBOXES, 60, "the survivor holding all")
        takeover = time.monotonic() - killed_at
        numbers = [n for n, mailbox in enumerate(mailboxes) if mailbox.pk in orphans]
        assert len(numbers) == 3
        after_kill = deliver_and_time(accounts, numbers, "after-kill")
        # Killed in the middle of a sync, it left that mailbox's lease held until it expires.
        assert max(after_kill) < LEASE + ARRIVAL_TO_TIMELINE, after_kill

        # A watcher added: the load evens out again.
        third = watchers.start()
        wait_until(lambda: shares() == [3, 3] and by_pid(third), 120, "rebalanced over 2")

        # A watcher stopped past its time: the other takes its mailboxes, and once resumed
        # it gets its share back without any mailbox watched twice.
        watchers.signal(second, signal.SIGSTOP)
        wait_until(lambda: len(by_pid(third)) == MAILBOXES, 30, "the third holding all")
        watchers.signal(second, signal.SIGCONT)
        wait_until(lambda: shares() == [3, 3] and by_pid(second), 60, "rebalanced after resume")
        after_stop = deliver_and_time(accounts, range(MAILBOXES), "after-stop")
        assert max(after_stop) < ARRIVAL_TO_TIMELINE, after_stop
        expected = math.ceil(MAILBOXES / 2)
        assert shares() == [expected, expected]
    finally:
        watchers.close()
    assert left_behind(mark) == [], "a watcher left a process behind"

    print(f"arrival to timeline: max {max(latencies):.2f} s; takeover {takeover:.1f} s")
    logged = Counter(
        EmailEngagement.objects.exclude(message_id=SENT_ID).values_list("message_id", flat=True)
    )
    assert sum(logged.values()) == MAILBOXES * 3 + 3 + 1 and max(logged.values()) == 1
    metas = Counter(MessageMeta.objects.values_list("folder_id", "message_id"))
    assert max(metas.values()) == 1
