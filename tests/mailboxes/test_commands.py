from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django_q.models import Schedule

from engagements.models import EmailEngagement
from mailboxes.models import MessageMeta
from tests.mailboxes.helpers import SENT_ID, reply

pytestmark = pytest.mark.django_db(transaction=True)


def test_resync_rebuilds_without_a_single_duplicate(connected, tracked, account):
    for n in range(3):
        account[2].deliver(reply(n))
    call_command("sync_mailboxes", "--mailbox", str(connected.pk), stdout=StringIO())
    before = set(MessageMeta.objects.values_list("pk", flat=True))
    out = StringIO()

    call_command("resync", str(connected.pk), stdout=out)

    assert "3 read" in out.getvalue()
    assert MessageMeta.objects.count() == 3
    assert not before & set(MessageMeta.objects.values_list("pk", flat=True))
    assert EmailEngagement.objects.exclude(message_id=SENT_ID).count() == 3


def test_resync_needs_ids_or_all():
    with pytest.raises(CommandError, match="--all"):
        call_command("resync")


def test_unknown_mailbox_is_an_error():
    with pytest.raises(CommandError, match="No mailbox with id 999"):
        call_command("sync_mailboxes", "--mailbox", "999")


def test_setup_schedules_is_idempotent(settings):
    settings.CRM_SYNC_INTERVAL_MINUTES = 3

    call_command("setup_schedules", stdout=StringIO())
    call_command("setup_schedules", stdout=StringIO())

    schedules = {s.name: (s.func, s.minutes) for s in Schedule.objects.all()}
    assert schedules == {
        "sync-mailboxes": ("sync.tasks.sync_all_mailboxes_task", 3),
        "retention-purge": ("engagements.tasks.purge_task", 24 * 60),
        "reconcile-outbox": ("engagements.tasks.reconcile_outbox_task", 5),
    }


def test_migrate_creates_the_schedules(settings):
    settings.CRM_PURGE_INTERVAL_MINUTES = 7
    Schedule.objects.all().delete()

    call_command("migrate", verbosity=0)

    schedules = {s.name: (s.func, s.minutes) for s in Schedule.objects.all()}
    assert schedules["retention-purge"] == ("engagements.tasks.purge_task", 7)
    assert schedules["sync-mailboxes"][0] == "sync.tasks.sync_all_mailboxes_task"


def test_scheduled_task_syncs_every_connected_mailbox(connected, tracked, account):
    from sync.tasks import sync_all_mailboxes_task

    account[2].deliver(reply(1))

    summary = sync_all_mailboxes_task()

    assert summary == "queued 1 mailbox sync(s)"
    assert EmailEngagement.objects.filter(message_id="reply-1@example.com").exists()
