"""A sync process killed at any moment loses nothing and duplicates nothing (real processes).

`manage.py sync_mailboxes` runs against the real Dovecot and the test database, and is
SIGKILLed at seeded random moments, 30 times; its lease is then let expire (as time would)
and the next run carries on. PostgreSQL only (tests/processes.py).
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from django.db import connection, transaction
from django.utils import timezone

from engagements.models import EmailEngagement
from mailboxes.leases import claim_lease, release_lease
from mailboxes.models import Mailbox, MessageMeta, SyncLease
from mailboxes.services import reset_sync_state
from tests.mailboxes.helpers import SENT_ID, build_email, reply
from tests.processes import ROOT, child_environment, left_behind, needs_a_shared_database

KILLS = 30
REPLIES = 60
OTHERS = 2340
BATCH = 20

pytestmark = [pytest.mark.django_db(transaction=True), needs_a_shared_database]


def _wait_until_it_holds_the_lease(mailbox: Mailbox, process: subprocess.Popen) -> None:
    """Until the process has started its sync (Django's start-up takes a second or so)."""
    holder = f":{process.pid}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        if SyncLease.objects.filter(mailbox=mailbox, holder__endswith=holder).exists():
            return
        time.sleep(0.02)


def _wait_until_waiting_on_locks(count: int) -> None:
    deadline = time.monotonic() + 60
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            # In a transaction, PostgreSQL keeps the first snapshot of the activity it read.
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
            if cursor.fetchone()[0] >= count:
                return
            time.sleep(0.05)
    pytest.fail(f"{count} processes never waited on the lease's lock")


def _sync_command(mailbox: Mailbox) -> list[str]:
    return [
        sys.executable, "manage.py", "sync_mailboxes",
        "--mailbox", str(mailbox.pk), "--batch-size", str(BATCH),
    ]  # fmt: skip


def test_a_sync_killed_30_times_at_random_loses_and_duplicates_nothing(connected, tracked, account):
    others = iter(range(OTHERS))
    for n in range(REPLIES):  # the replies spread over the folder, among the others
        account[2].deliver(reply(n))
        for other in itertools.islice(others, OTHERS // REPLIES):
            account[2].deliver(build_email(subject=f"other {other}"))
    rng = random.Random(1213)
    mark = f"kill-{os.getpid()}"
    env = child_environment(mark)

    kills = 0
    while kills < KILLS:
        process = subprocess.Popen(
            _sync_command(connected), cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        _wait_until_it_holds_the_lease(connected, process)
        time.sleep(rng.uniform(0, 0.1))
        if process.poll() is not None:
            # It finished first (a fast machine): read it all again, and go on killing.
            reset_sync_state(Mailbox.objects.get(pk=connected.pk))
            continue
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        kills += 1
        assert left_behind(mark, seconds=5) == [], "a killed sync left a process behind"
        # The dead sync's lease would expire in minutes: let it expire now.
        SyncLease.objects.filter(mailbox=connected).update(expires_at=timezone.now())

    final = subprocess.run(
        _sync_command(connected), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )

    assert final.returncode == 0, final.stderr
    assert "error" not in final.stdout, final.stdout
    metas = Counter(MessageMeta.objects.values_list("folder_id", "message_id"))
    assert sum(metas.values()) == REPLIES + OTHERS
    assert [key for key, count in metas.items() if count > 1] == []
    logged = Counter(
        EmailEngagement.objects.exclude(message_id=SENT_ID).values_list("message_id", flat=True)
    )
    assert logged == Counter({f"reply-{n}@example.com": 1 for n in range(REPLIES)})
    assert not Mailbox.objects.get(pk=connected.pk).is_syncing


def test_two_syncs_started_together_store_everything_once(connected, tracked, account):
    env = child_environment(f"overlap-{os.getpid()}")
    delivered = 0
    outputs = []

    for round_ in range(3):
        for n in range(10):
            account[2].deliver(reply(round_ * 10 + n))
            for other in range(30):
                account[2].deliver(build_email(subject=f"round {round_} other {n}.{other}"))
        delivered += 10 * 31
        release_lease(connected.pk, claim_lease(connected.pk))  # the lease row exists
        # A starting line: both processes boot (a second or so each) and wait on this lock
        # in their claim; released, they claim at the same moment.
        with transaction.atomic():
            SyncLease.objects.select_for_update().get(mailbox=connected)
            pair = [
                subprocess.Popen(
                    _sync_command(connected),
                    cwd=ROOT,
                    env=env,
                    text=True,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )  # fmt: skip
                for _ in range(2)
            ]
            _wait_until_waiting_on_locks(2)
        outputs += [process.communicate(timeout=300) for process in pair]
        assert [process.returncode for process in pair] == [0, 0], outputs

    reported = [stdout.strip().split(": ", 1)[1] for stdout, _err in outputs]
    assert reported.count("already syncing") == 3, reported  # one of each pair
    assert all(r.endswith(" new") for r in reported if r != "already syncing"), reported
    metas = Counter(MessageMeta.objects.values_list("folder_id", "message_id"))
    assert sum(metas.values()) == delivered
    assert [key for key, count in metas.items() if count > 1] == []
    logged = Counter(
        EmailEngagement.objects.exclude(message_id=SENT_ID).values_list("message_id", flat=True)
    )
    assert logged == Counter({f"reply-{n}@example.com": 1 for n in range(30)})
