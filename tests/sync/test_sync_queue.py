"""One queued sync per mailbox, however often "Sync now", the schedule or a reconnect asks."""

from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import OrmQ

from sync.tasks import sync_all_mailboxes_task, sync_mailbox_task

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def queued_for_real(monkeypatch):
    """Tasks go to the ORM broker's queue instead of running in the caller."""
    monkeypatch.setattr(Conf, "SYNC", False)


@pytest.fixture
def mailbox(connected):
    """A real mailbox on the test Dovecot, connected (connecting queues nothing here)."""
    return connected


def test_sync_now_clicked_30_times_queues_one_sync(queued_for_real, client_for, owner, mailbox):
    client = client_for(owner)

    responses = [
        client.post(reverse("mailboxes:mailbox_sync", args=[mailbox.pk]), follow=True)
        for _ in range(30)
    ]

    assert OrmQ.objects.count() == 1
    assert "Sync started." in responses[0].content.decode()
    assert "already waiting to start" in responses[-1].content.decode()


def test_a_sync_can_be_queued_again_once_the_queued_one_started(
    queued_for_real, client_for, owner, mailbox
):
    client = client_for(owner)
    client.post(reverse("mailboxes:mailbox_sync", args=[mailbox.pk]))
    sync_mailbox_task(mailbox.pk)  # what the worker runs when it takes the task

    client.post(reverse("mailboxes:mailbox_sync", args=[mailbox.pk]))

    assert OrmQ.objects.count() == 2


def test_the_schedule_does_not_queue_a_mailbox_twice(queued_for_real, mailbox):
    first = sync_all_mailboxes_task()
    second = sync_all_mailboxes_task()

    assert OrmQ.objects.count() == 1
    assert first == "queued 1 mailbox sync(s)"
    assert second == "queued 0 mailbox sync(s); 1 already queued"


def test_the_schedule_leaves_watched_mailboxes_to_their_watcher(queued_for_real, mailbox):
    from sync.models import MailboxWatch

    until = timezone.now() + timedelta(seconds=30)
    watch = MailboxWatch.objects.create(mailbox=mailbox, watcher="other:1:abc", expires_at=until)
    watched = sync_all_mailboxes_task()
    watch.expires_at = timezone.now() - timedelta(seconds=1)  # its watcher went silent
    watch.save()
    orphaned = sync_all_mailboxes_task()

    assert watched == "queued 0 mailbox sync(s)"
    assert orphaned == "queued 1 mailbox sync(s)"
    assert OrmQ.objects.count() == 1


def test_a_queued_sync_lost_by_the_broker_is_queued_again_after_its_retry_window(
    queued_for_real, settings, mailbox
):
    sync_all_mailboxes_task()
    later = timezone.now() + timedelta(seconds=settings.Q_CLUSTER["retry"] + 1)

    with time_machine.travel(later):
        sync_all_mailboxes_task()

    assert OrmQ.objects.count() == 2
