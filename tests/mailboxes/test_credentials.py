"""Mailbox credentials are encrypted at rest, rotate with new keys and never show (SPEC S1)."""

from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection
from django.urls import reverse

from mailboxes.crypto import CredentialsUnreadable, Secret
from mailboxes.models import Mailbox
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "hunter2-very-secret"


@pytest.fixture
def mailbox(team, owner):
    return Mailbox.objects.create(
        team=team,
        owner=owner,
        kind=Mailbox.Kind.IMAP,
        email_address="owner@example.com",
        credentials=Secret({"username": "owner", "password": PASSWORD}),
    )


def stored_ciphertext(mailbox):
    with connection.cursor() as cursor:
        cursor.execute("SELECT credentials FROM mailboxes_mailbox WHERE id = %s", [mailbox.pk])
        return cursor.fetchone()[0]


def test_database_holds_only_ciphertext(mailbox):
    raw = stored_ciphertext(mailbox)

    assert PASSWORD not in raw
    assert "owner" not in raw
    assert Mailbox.objects.get().credentials.reveal()["password"] == PASSWORD


def test_secret_never_prints_itself(mailbox):
    loaded = Mailbox.objects.get()

    assert PASSWORD not in repr(loaded.credentials)
    assert PASSWORD not in str(loaded.credentials)
    assert PASSWORD not in repr(loaded.__dict__)


def test_rotation_re_encrypts_with_the_new_key(mailbox, settings):
    old_key = settings.CRM_ENCRYPTION_KEYS[0]
    new_key = Fernet.generate_key().decode()
    before = stored_ciphertext(mailbox)
    settings.CRM_ENCRYPTION_KEYS = [new_key, old_key]

    call_command("rotate_credentials", stdout=StringIO())
    settings.CRM_ENCRYPTION_KEYS = [new_key]

    assert stored_ciphertext(mailbox) != before
    assert Mailbox.objects.get().credentials.reveal()["password"] == PASSWORD


def test_unknown_key_gives_a_clear_error(mailbox, settings):
    settings.CRM_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    with pytest.raises(CredentialsUnreadable, match="CRM_ENCRYPTION_KEYS"):
        Mailbox.objects.get()


def test_admin_never_shows_credentials(client, mailbox):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))

    change = client.get(reverse("admin:mailboxes_mailbox_change", args=[mailbox.pk]))
    listing = client.get(reverse("admin:mailboxes_mailbox_changelist"))

    assert change.status_code == listing.status_code == 200
    for page in (change, listing):
        body = page.content.decode()
        assert PASSWORD not in body
        assert stored_ciphertext(mailbox) not in body
