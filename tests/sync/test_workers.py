"""The scaled-out setup: several qcluster processes share the work through one Redis (broker
and cache) and one PostgreSQL, as `REDIS_URL` makes them (issue 14). Real processes, real
servers; PostgreSQL only (tests/processes.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter

import pytest
import redis
from django.utils import timezone
from django_q.models import Schedule, Task

from engagements.models import EmailEngagement
from mailboxes.models import Mailbox, MessageMeta
from tests.mailboxes.helpers import SENT_ID, UserMailbox, build_email, connect_imap, track_proposal
from tests.processes import (
    ROOT,
    child_environment,
    kill_command,
    left_behind,
    needs_a_shared_database,
    start_command,
)

pytestmark = [pytest.mark.django_db(transaction=True), needs_a_shared_database]

MAILBOXES = 6
REPLIES = 3  # per mailbox
CLUSTERS = 2


def _environment(redis_server, mark: str) -> dict[str, str]:
    return {**child_environment(mark), "REDIS_URL": redis_server.url, "CRM_Q_WORKERS": "2"}


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_two_clusters_on_redis_sync_every_mailbox_once(
    mail_settings, dovecot, smtp_server, redis_server, team, owner
):
    mailboxes = []
    for number in range(MAILBOXES):
        user, password = dovecot.add_user()
        own = UserMailbox(dovecot, user, password)
        for n in range(REPLIES):
            own.deliver(build_email(message_id=f"m{number}-r{n}@example.com", in_reply_to=SENT_ID))
            own.deliver(build_email(subject=f"other {number}.{n}"))
        own.close()
        mailboxes.append(connect_imap(dovecot, smtp_server, user, password, team, owner))
    track_proposal(team, mailboxes[0])
    pushed = _calls(redis_server, "rpush")
    Schedule.objects.all().delete()  # the clusters run what this test queues, nothing else
    mark = f"workers-{os.getpid()}"
    env = _environment(redis_server, mark)
    clusters = [start_command("qcluster", env=env) for _ in range(CLUSTERS)]
    try:
        # What the schedule does, in a process of its own: the tasks go to Redis.
        queued = _manage(env, "shell", "--no-imports", "-c", _QUEUE_ALL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if Task.objects.filter(func="sync.tasks.sync_mailbox_task").count() >= MAILBOXES:
                break
            time.sleep(0.2)
    finally:
        for cluster in clusters:
            kill_command(cluster)
    assert left_behind(mark) == [], "a cluster left a process behind"

    assert queued == f"queued {MAILBOXES} mailbox sync(s)"
    assert _calls(redis_server, "rpush") - pushed >= MAILBOXES  # they went through Redis
    runs = list(Task.objects.filter(func="sync.tasks.sync_mailbox_task"))
    assert sorted(run.args[0] for run in runs) == sorted(m.pk for m in mailboxes)  # once each
    assert all(run.success and "error" not in run.result for run in runs), [r.result for r in runs]
    # Several workers ran at once: some two syncs overlapped in time.
    overlapping = [
        (a.args[0], b.args[0])
        for a in runs
        for b in runs
        if a.pk < b.pk and a.started < b.stopped and b.started < a.stopped
    ]
    assert overlapping, [(run.started, run.stopped) for run in runs]
    assert all(m.last_synced_at for m in Mailbox.objects.filter(pk__in=[m.pk for m in mailboxes]))
    metas = Counter(MessageMeta.objects.values_list("folder_id", "message_id"))
    assert sum(metas.values()) == MAILBOXES * REPLIES * 2 and max(metas.values()) == 1
    logged = Counter(
        EmailEngagement.objects.exclude(message_id=SENT_ID).values_list("message_id", flat=True)
    )
    assert logged == Counter(
        {f"m{number}-r{n}@example.com": 1 for number in range(MAILBOXES) for n in range(REPLIES)}
    )


def _calls(redis_server, command: str) -> int:
    stats = redis.Redis.from_url(redis_server.url).info("commandstats")
    return stats.get(f"cmdstat_{command}", {}).get("calls", 0)


_QUEUE_ALL = "from sync.tasks import sync_all_mailboxes_task as queue; print(queue())"

# Counts connection attempts for one user in this process and prints what happened.
_ATTEMPTS = """
from django.contrib.auth import get_user_model
from mailboxes.services import TooManyAttempts, count_connect_attempt
from teams.models import Team
user = get_user_model().objects.get(pk={user})
team = Team.objects.get(pk={team})
try:
    for _ in range({count}):
        count_connect_attempt(team=team, user=user)
    print("allowed")
except TooManyAttempts:
    print("refused")
"""


def test_connection_attempts_are_counted_across_processes_in_redis(redis_server, team, owner):
    from mailboxes.services import CONNECT_ATTEMPTS_PER_USER

    env = _environment(redis_server, f"attempts-{os.getpid()}-{timezone.now().timestamp()}")
    first = CONNECT_ATTEMPTS_PER_USER // 2
    script = _ATTEMPTS.format(user=owner.pk, team=team.pk, count=first)
    rest = _ATTEMPTS.format(user=owner.pk, team=team.pk, count=CONNECT_ATTEMPTS_PER_USER - first)
    one_more = _ATTEMPTS.format(user=owner.pk, team=team.pk, count=1)

    def attempts(script: str) -> str:
        return _manage(env, "shell", "--no-imports", "-c", script)

    assert attempts(script) == "allowed"
    assert attempts(rest) == "allowed"  # the limit, reached in two processes
    assert attempts(one_more) == "refused"
    keys = redis.Redis.from_url(redis_server.url).keys(f"*connect-attempts:user:{owner.pk}*")
    assert keys  # counted in Redis, which every machine shares, not in a local file
