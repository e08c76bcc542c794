import pytest
from django.urls import reverse

from mailboxes.models import Mailbox, MessageMeta
from tests.factories import MembershipFactory
from tests.mailboxes.helpers import build_email, imap_form

pytestmark = pytest.mark.django_db(transaction=True)


def connect(client, dovecot, smtp_server, account, **overrides):
    user, password, _ = account
    return client.post(
        reverse("mailboxes:mailbox_connect"),
        imap_form(dovecot, smtp_server, user, password, **overrides),
    )


def test_owner_connects_a_mailbox_and_the_first_sync_runs(
    mail_settings, client_for, owner, dovecot, smtp_server, account
):
    account[2].deliver(build_email(subject="Hello"))

    response = connect(client_for(owner), dovecot, smtp_server, account)

    mailbox = Mailbox.objects.get()
    assert response.status_code == 302
    assert response.url == mailbox.get_absolute_url()
    assert mailbox.owner == owner
    assert mailbox.settings["imap_host"] == dovecot.host
    assert "password" not in mailbox.settings
    assert MessageMeta.objects.filter(mailbox=mailbox, subject="Hello").exists()
    assert mailbox.progress == (1, 1)


def test_detail_page_shows_progress_and_never_the_password(
    mail_settings, client_for, owner, dovecot, smtp_server, account
):
    client = client_for(owner)
    connect(client, dovecot, smtp_server, account)
    mailbox = Mailbox.objects.get()

    body = client.get(mailbox.get_absolute_url()).content.decode()
    status = client.get(reverse("mailboxes:mailbox_status", args=[mailbox.pk])).json()

    assert "<progress" in body
    assert account[1] not in body
    assert status["folders"][0]["name"] in {"INBOX", "Sent"}
    assert status["is_syncing"] is False


@pytest.mark.parametrize(
    "overrides",
    [{"imap_port": 995}, {"imap_port": 110}, {"imap_host": "pop.example.com"},
     {"imap_host": "pop3.mail.example.org"}],
)  # fmt: skip
def test_pop3_settings_are_refused_with_the_reason(
    mail_settings, client_for, owner, dovecot, smtp_server, account, overrides
):
    response = connect(client_for(owner), dovecot, smtp_server, account, **overrides)

    body = response.content.decode()
    assert response.status_code == 400
    assert "POP3 moves mail off the server onto one device" in body
    assert "IMAP keeps it on the server" in body
    assert "Ask your IT team" in body
    assert not Mailbox.objects.exists()


def test_wrong_password_is_explained_and_nothing_is_saved(
    mail_settings, client_for, owner, dovecot, smtp_server, account
):
    response = connect(client_for(owner), dovecot, smtp_server, account, password="wrong")

    assert response.status_code == 400
    assert "refused the username or password" in response.content.decode()
    assert not Mailbox.objects.exists()


def test_unencrypted_connection_is_refused_by_default(
    client_for, owner, dovecot, smtp_server, account
):
    response = connect(client_for(owner), dovecot, smtp_server, account)

    assert response.status_code == 400
    assert "Unencrypted connections are not allowed" in response.content.decode()
    assert not Mailbox.objects.exists()


def test_sync_now_reads_new_mail(mail_settings, client_for, owner, dovecot, smtp_server, account):
    client = client_for(owner)
    connect(client, dovecot, smtp_server, account)
    mailbox = Mailbox.objects.get()
    account[2].deliver(build_email(subject="Later"))

    response = client.post(reverse("mailboxes:mailbox_sync", args=[mailbox.pk]))

    assert response.status_code == 302
    assert MessageMeta.objects.filter(subject="Later").exists()


def test_sync_now_get_does_not_sync(
    mail_settings, client_for, owner, dovecot, smtp_server, account
):
    client = client_for(owner)
    connect(client, dovecot, smtp_server, account)
    mailbox = Mailbox.objects.get()
    account[2].deliver(build_email(subject="Later"))

    response = client.get(reverse("mailboxes:mailbox_sync", args=[mailbox.pk]))

    assert response.status_code == 405
    assert not MessageMeta.objects.filter(subject="Later").exists()


def test_only_the_owner_can_disconnect(
    mail_settings, client_for, owner, team, dovecot, smtp_server, account
):
    connect(client_for(owner), dovecot, smtp_server, account)
    mailbox = Mailbox.objects.get()
    teammate = MembershipFactory(team=team).user

    refused = client_for(teammate).post(reverse("mailboxes:mailbox_delete", args=[mailbox.pk]))
    done = client_for(owner).post(reverse("mailboxes:mailbox_delete", args=[mailbox.pk]))

    assert refused.status_code == 404
    assert done.status_code == 302
    assert not Mailbox.objects.exists()
    assert not MessageMeta.objects.exists()


def test_empty_list_explains_how_to_connect(client_for, owner):
    body = client_for(owner).get(reverse("mailboxes:mailbox_list")).content.decode()

    assert "No mailbox connected yet" in body
    assert reverse("mailboxes:mailbox_connect") in body
