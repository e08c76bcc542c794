"""One sync per mailbox: the lease, its fencing, and failures that never pass for success."""

import threading
import time
from datetime import timedelta

import pytest
import time_machine
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from engagements.models import EmailEngagement
from mailboxes.leases import LeaseLost, claim_lease, fence_off, hold_lease, lease_duration
from mailboxes.models import Folder, Mailbox, MessageMeta, SyncLease
from mailboxes.services import reset_sync_state
from sync.services import sync_mailbox
from tests.mailboxes.helpers import SENT_ID, build_email, reply, sync, when_a_batch_is_stored

pytestmark = pytest.mark.django_db(transaction=True)


def replies_logged():
    return EmailEngagement.objects.exclude(message_id=SENT_ID).count()


def test_a_sync_finding_the_lease_held_ends_at_once_and_writes_nothing(connected, tracked, account):
    account[2].deliver(reply(1))
    assert claim_lease(connected.pk) is not None  # another worker's sync is running

    result = sync(connected)

    assert result.already_syncing and result.summary() == "already syncing"
    assert MessageMeta.objects.count() == 0
    assert connected.last_error == ""


def test_the_lease_of_a_dead_sync_is_taken_over_once_it_expires(connected, tracked, account):
    account[2].deliver(reply(1))
    claim_lease(connected.pk)  # ...by a process that then died

    with time_machine.travel(timezone.now() + lease_duration() + timedelta(seconds=1)):
        result = sync(connected)

    assert not result.already_syncing
    assert result.new_messages == 1
    assert replies_logged() == 1


def test_a_sync_that_lost_its_lease_stops_before_its_next_batch(connected, tracked, account):
    for n in range(4):
        account[2].deliver(reply(n))
    batches = []

    def another_sync_takes_over_after_the_first_batch(new_messages, **batch):
        batches.append(new_messages)
        if len(batches) == 1:
            fence_off(connected.pk)  # its lease expired while it was paused; someone took it

    with when_a_batch_is_stored(another_sync_takes_over_after_the_first_batch):
        result = sync_mailbox(connected.pk, limit=1)

    inbox = Folder.objects.get(mailbox=connected, role=Folder.Role.INBOX)
    assert result.error == "another sync took over"
    assert batches == [1] and inbox.synced_count == 1 and MessageMeta.objects.count() == 1
    # The stale sync moved nothing back; the next one carries on from its checkpoint.
    assert sync(connected).new_messages == 3
    assert replies_logged() == 4 and MessageMeta.objects.count() == 4


def test_a_fenced_epoch_cannot_write(connected):
    epoch = claim_lease(connected.pk)
    fence_off(connected.pk)

    with pytest.raises(LeaseLost):
        hold_lease(connected.pk, epoch)


def test_resync_during_a_sync_duplicates_nothing(connected, tracked, account):
    for n in range(3):
        account[2].deliver(reply(n))
    seen = []

    def resync_meanwhile(folder, **batch):
        seen.append(folder)
        if len(seen) == 1:  # another process resyncs as soon as this batch is committed
            transaction.on_commit(lambda: reset_sync_state(connected))

    with when_a_batch_is_stored(resync_meanwhile):
        first = sync_mailbox(connected.pk, limit=1)
    second = sync(connected)

    assert first.error == "another sync took over"
    assert second.new_messages == 3
    assert MessageMeta.objects.count() == 3 and replies_logged() == 3


def test_an_unexpected_error_is_recorded_and_retried_not_hidden(
    connected, tracked, account, client_for, owner
):
    account[2].deliver(reply(1))

    def broken_receiver(**batch):
        raise RuntimeError("receiver bug")

    with when_a_batch_is_stored(broken_receiver):
        result = sync_mailbox(connected.pk)

    connected.refresh_from_db()
    assert "RuntimeError: receiver bug" in result.error
    assert "RuntimeError: receiver bug" in connected.last_error
    assert connected.retry_at is not None and connected.failures == 1
    assert not connected.is_syncing  # the lease went back
    assert MessageMeta.objects.count() == 0  # the batch rolled back whole
    page = client_for(owner).get(reverse("mailboxes:mailbox_detail", args=[connected.pk]))
    assert "last sync failed" in page.content.decode()
    assert "RuntimeError: receiver bug" in page.content.decode()


def test_sync_now_during_a_sync_says_so_and_queues_nothing(connected, client_for, owner):
    claim_lease(connected.pk)

    page = client_for(owner).post(
        reverse("mailboxes:mailbox_sync", args=[connected.pk]), follow=True
    )

    assert "syncing right now" in page.content.decode()
    assert Mailbox.objects.get(pk=connected.pk).sync_queued_at is None


def test_a_finished_sync_gives_the_lease_back(connected, account):
    account[2].deliver(build_email(subject="hello"))

    sync(connected)

    assert not Mailbox.objects.get(pk=connected.pk).is_syncing
    assert claim_lease(connected.pk) is not None


def test_a_slow_sync_keeps_its_expired_lease_while_nobody_claims_it(connected):
    epoch = claim_lease(connected.pk)

    with time_machine.travel(timezone.now() + lease_duration() * 2):
        hold_lease(connected.pk, epoch)  # a long first read: still its own, renewed

    assert Mailbox.objects.get(pk=connected.pk).is_syncing


def test_saving_the_mailbox_meanwhile_does_not_bring_a_released_lease_back(
    connected, account, client_for, owner
):
    mailbox = Mailbox.objects.get(pk=connected.pk)  # loaded while no sync runs...
    account[2].deliver(build_email(subject="hello"))
    sync(connected)  # ...a sync takes the lease and gives it back...

    mailbox.display_name = "Ada"
    mailbox.save()  # ...and a stale copy of the mailbox is saved

    assert not Mailbox.objects.get(pk=connected.pk).is_syncing
    assert claim_lease(connected.pk) is not None


@pytest.mark.skipif(
    connection.vendor == "sqlite", reason="on SQLite only the batches renew the lease"
)
def test_a_sync_that_reads_longer_than_its_lease_keeps_it(settings, google, gmail):
    settings.CRM_SYNC_LEASE_SECONDS = 2
    google.delay = 1.5  # each call: 3 s and more go by between two batches' renewals
    results = []

    def run() -> None:
        try:
            results.append(sync_mailbox(gmail.pk))
        finally:
            connection.close()

    syncing = threading.Thread(target=run)
    claims = []
    started = time.monotonic()
    syncing.start()
    held = SyncLease.objects.filter(mailbox=gmail, expires_at__isnull=False)
    while not held.exists():  # the sync claims it first
        time.sleep(0.01)
    while syncing.is_alive():
        claims.append(claim_lease(gmail.pk))
        time.sleep(0.2)
    took = time.monotonic() - started

    assert results[0].error == "" and took > 2 * 2  # two leases and more
    assert set(claims) == {None}  # never free while the sync read
    gmail.refresh_from_db()
    assert gmail.last_error == "" and gmail.last_synced_at is not None
    assert claim_lease(gmail.pk) is not None  # released at the end
