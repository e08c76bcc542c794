"""The drift check: mail the server has that Threadline did not store is flagged within one
sync, with the numbers, and reading the mailbox again repairs it without a duplicate."""

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from engagements.models import EmailEngagement
from mailboxes.models import Mailbox, MessageMeta
from mailboxes.services import resync_mailbox
from sync.services import DRIFT_CHECK_INTERVAL
from tests.mailboxes.helpers import SENT_ID, build_email, reply, sync

pytestmark = pytest.mark.django_db(transaction=True)


def deliver(account, replies=5, others=55):
    for n in range(replies):
        account[2].deliver(reply(n))
    for n in range(others):
        account[2].deliver(build_email(subject=f"other {n}"))


def test_a_mailbox_in_step_shows_no_drift(connected, tracked, account):
    deliver(account)
    sync(connected)

    with time_machine.travel(timezone.now() + DRIFT_CHECK_INTERVAL):
        sync(connected)

    checked = Mailbox.objects.get(pk=connected.pk)
    assert checked.drift == "" and checked.drift_checked_at > timezone.now()


def test_rows_lost_behind_the_syncs_back_are_flagged_by_the_next_sync_that_checks(
    connected, tracked, account, client_for, owner
):
    deliver(account)
    sync(connected)
    lost = MessageMeta.objects.order_by("pk").values_list("pk", flat=True)[:50]
    MessageMeta.objects.filter(pk__in=list(lost)).delete()
    sync(connected)  # counted a moment ago: not counted again within the hour
    assert Mailbox.objects.get(pk=connected.pk).drift == ""

    with time_machine.travel(timezone.now() + DRIFT_CHECK_INTERVAL):
        result = sync(connected)

    drift = Mailbox.objects.get(pk=connected.pk).drift
    assert result.error == ""
    assert "INBOX: the server has 60 messages since" in drift and "Threadline has 10" in drift
    page = client_for(owner).get(reverse("mailboxes:mailbox_detail", args=[connected.pk]))
    assert "Degraded: mail missing" in page.content.decode()
    assert "Read the mailbox again" in page.content.decode()


def test_reading_the_mailbox_again_repairs_the_drift_without_duplicates(
    connected, tracked, account, client_for, owner
):
    deliver(account)
    sync(connected)
    MessageMeta.objects.filter(
        pk__in=list(MessageMeta.objects.values_list("pk", flat=True)[:50])
    ).delete()
    with time_machine.travel(timezone.now() + DRIFT_CHECK_INTERVAL):
        sync(connected)
    assert Mailbox.objects.get(pk=connected.pk).drift

    response = client_for(owner).post(reverse("mailboxes:mailbox_resync", args=[connected.pk]))

    assert response.status_code == 302
    assert Mailbox.objects.get(pk=connected.pk).drift == ""
    assert MessageMeta.objects.count() == 60
    assert MessageMeta.objects.values("message_id").distinct().count() == 60
    replies = EmailEngagement.objects.exclude(message_id=SENT_ID)
    assert replies.count() == 5 and replies.values("message_id").distinct().count() == 5


def test_only_the_owner_can_read_the_mailbox_again(connected, client_for, teammate):
    response = client_for(teammate).post(reverse("mailboxes:mailbox_resync", args=[connected.pk]))

    assert response.status_code == 404


def test_resync_service_is_idempotent(connected, tracked, account):
    deliver(account, replies=2, others=3)
    sync(connected)

    resync_mailbox(connected)
    resync_mailbox(connected)

    assert MessageMeta.objects.count() == 5
    assert EmailEngagement.objects.exclude(message_id=SENT_ID).count() == 2


@pytest.mark.parametrize("kind", ["gmail", "graph"])
def test_oauth_mailboxes_are_checked_for_drift_too(kind, request):
    fake = request.getfixturevalue("google" if kind == "gmail" else "microsoft")
    mailbox = request.getfixturevalue(kind if kind == "gmail" else "outlook")
    for n in range(12):
        fake.add_message(build_email(subject=f"m{n}"))
    sync(mailbox)
    assert Mailbox.objects.get(pk=mailbox.pk).drift == ""
    inbox = mailbox.folders.get(role="inbox")
    lost = list(inbox.messages.values_list("pk", flat=True)[:5])
    MessageMeta.objects.filter(pk__in=lost).delete()

    with time_machine.travel(timezone.now() + DRIFT_CHECK_INTERVAL):
        sync(mailbox)

    drift = Mailbox.objects.get(pk=mailbox.pk).drift
    assert f"{inbox.name}: the server has 12 messages since" in drift
    assert "Threadline has 7" in drift
