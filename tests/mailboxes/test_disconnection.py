"""Disconnection against a real Dovecot (SPEC D1, D2, D4): causes, backoff, one notice,
the banner, refusing to send, and reconnecting without loss or duplicates."""

from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from engagements.models import EmailEngagement
from engagements.sending import Draft, SendError, queue_email
from engagements.services import Address
from mailboxes.models import Mailbox
from mailboxes.services import connect_mailbox
from tests.mailboxes.helpers import SENT_ID, UserMailbox, connect_imap, reply, sync

pytestmark = pytest.mark.django_db(transaction=True)


def test_changed_password_disconnects_at_once_and_tells_the_owner_once(
    connected, dovecot, owner, team, mailoutbox, client_for
):
    dovecot.set_password(connected.settings["username"], "changed-elsewhere")

    result = sync(connected)
    sync(connected)  # the schedule runs again: no second email

    assert "refused the username or password" in result.error
    assert connected.state == "disconnected"
    assert connected.disconnect_cause == "auth_failed"
    assert connected.disconnected_at is not None
    assert len(mailoutbox) == 1
    notice = mailoutbox[0]
    assert notice.to == [owner.email]
    assert connected.email_address in notice.subject
    assert "refused the password" in notice.body and "new password" in notice.body
    assert f"/mailboxes/{connected.pk}/" in notice.body

    page = client_for(owner).get(reverse("contacts:contact_list")).content.decode()
    assert f"{connected.email_address} is disconnected:" in page
    assert f"?reconnect={connected.pk}" in page
    with pytest.raises(SendError, match="is disconnected"):
        queue_email(
            team=team, user=owner, mailbox=connected,
            draft=Draft(to=[Address("ada@example.com")], subject="Hi", body="Hello"),
        )  # fmt: skip


def test_unreachable_server_is_retried_with_backoff_then_disconnected(
    mail_settings, smtp_server, team, owner, tracked, mailoutbox
):
    from tests.servers.dovecot import DovecotServer

    with DovecotServer() as server:
        user, password = server.add_user()
        mailbox = connect_imap(server, smtp_server, user, password, team, owner)
        own = UserMailbox(server, user, password)
        own.deliver(reply(1))
        own.close()
        assert sync(mailbox).error == ""
        server.stop()

        first = sync(mailbox)
        assert mailbox.state == "connected" and mailbox.failures == 1
        assert mailbox.retry_at - timezone.now() > timedelta(minutes=4)
        assert not Mailbox.objects.due(timezone.now()).filter(pk=mailbox.pk).exists()
        assert Mailbox.objects.due(mailbox.retry_at).filter(pk=mailbox.pk).exists()
        with time_machine.travel(timezone.now() + timedelta(hours=2)):
            sync(mailbox)
            assert mailbox.state == "connected" and mailbox.failures == 2
        with time_machine.travel(timezone.now() + timedelta(hours=23, minutes=59)):
            sync(mailbox)
            assert mailbox.state == "connected"
        with time_machine.travel(timezone.now() + timedelta(hours=24, minutes=1)):
            sync(mailbox)
        assert mailbox.state == "disconnected"
        assert mailbox.disconnect_cause == "server_unavailable"
        assert "refused" in first.error or "connect" in first.error
        assert len(mailoutbox) == 1

        server.start()
        own = UserMailbox(server, user, password)
        own.deliver(reply(2))  # arrived while disconnected
        own.close()
        connect_mailbox(
            team=team, owner=owner, kind="imap", email_address=f"{user}@example.com",
            provider_settings=mailbox.settings, credentials={"password": password},
        )  # fmt: skip
        resumed = sync(mailbox)

    assert resumed.error == "" and resumed.new_messages == 1
    assert mailbox.state == "connected" and mailbox.failures == 0 and mailbox.retry_at is None
    assert mailbox.notified_at is None  # a later disconnection is told again
    logged = EmailEngagement.objects.exclude(message_id=SENT_ID)
    assert sorted(logged.values_list("message_id", flat=True)) == [
        "reply-1@example.com",
        "reply-2@example.com",
    ]


def test_the_mailbox_page_names_the_cause_and_the_fix(client_for, owner, connected):
    Mailbox.objects.filter(pk=connected.pk).update(
        state="disconnected", disconnect_cause="auth_failed", disconnected_at=timezone.now(),
        last_error="The IMAP server refused the username or password.",
    )  # fmt: skip
    client = client_for(owner)

    page = client.get(connected.get_absolute_url()).content.decode()
    form = client.get(reverse("mailboxes:mailbox_connect") + f"?reconnect={connected.pk}")

    assert "The mail server refused the password (it may have changed)" in page
    assert "Reconnect it with your new password" in page
    assert "The IMAP server refused the username or password." in page
    assert f'value="{connected.settings["imap_host"]}"' in form.content.decode()
    assert 'name="password"' in form.content.decode()


def test_reconnect_form_is_only_for_ones_own_mailbox(client_for, teammate, connected):
    response = client_for(teammate).get(
        reverse("mailboxes:mailbox_connect") + f"?reconnect={connected.pk}"
    )

    assert response.status_code == 404
