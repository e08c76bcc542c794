"""Sign-up and login against a hostile visitor: no account enumeration, no lockout of others."""

from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from teams.models import Invitation, Membership
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


def sign_up(client, email, password=PASSWORD):
    return client.post(
        reverse("account_signup"), {"email": email, "password1": password, "password2": password}
    )


def log_in(client, email, password, address):
    return client.post(
        reverse("account_login"), {"login": email, "password": password}, REMOTE_ADDR=address
    )


def test_sign_up_with_a_taken_address_looks_like_any_other_sign_up(client, owner):
    taken = sign_up(client, owner.email)
    fresh = sign_up(client.__class__(), "nobody-yet@example.com")

    assert taken.status_code == fresh.status_code == 302
    assert taken.url == fresh.url == reverse("account_email_verification_sent")
    assert get_user_model().objects.filter(email__iexact=owner.email).count() == 1
    # The owner of the address hears of it; nothing on the page told the visitor.
    assert [m.to for m in mail.outbox] == [[owner.email], ["nobody-yet@example.com"]]


def test_new_account_signs_in_once_its_address_is_confirmed(client):
    sign_up(client, "newcomer@example.com")
    assert client.get(reverse("contacts:contact_list")).status_code == 302  # not signed in yet
    link = next(w for w in mail.outbox[0].body.split() if "/accounts/confirm-email/" in w)

    response = client.post(link, follow=True)

    assert response.status_code == 200
    assert response.redirect_chain[-1][0] == reverse("contacts:contact_list")
    assert Membership.objects.get(user__email="newcomer@example.com").role == "admin"


def test_invited_address_needs_no_confirmation(client, team, owner):
    invitation = Invitation.objects.create(team=team, email="friend@example.com", invited_by=owner)
    client.post(reverse("teams:invitation_accept", args=[invitation.token]))

    sign_up(client, "Friend@example.com")

    assert client.get(reverse("contacts:contact_list")).status_code == 200
    assert mail.outbox == []
    assert Membership.objects.get(user__email__iexact="friend@example.com").team == team


def test_another_address_than_the_invited_one_must_be_confirmed(client, team, owner):
    invitation = Invitation.objects.create(team=team, email="friend@example.com", invited_by=owner)
    client.post(reverse("teams:invitation_accept", args=[invitation.token]))

    sign_up(client, "stranger@example.com")

    assert client.get(reverse("contacts:contact_list")).status_code == 302
    assert [m.to for m in mail.outbox] == [["stranger@example.com"]]


@pytest.mark.parametrize("password", ["newbie.person@example.com", "Newbie.Person@Example.com"])
def test_password_like_the_email_address_is_refused(client, password):
    response = sign_up(client, "newbie.person@example.com", password=password)

    assert response.status_code == 200
    assert "too similar to the email address" in response.content.decode()
    assert not get_user_model().objects.exists()


def test_failed_logins_from_elsewhere_do_not_lock_the_owner_out(client, owner):
    for _ in range(6):
        log_in(client.__class__(), owner.email, "wrong guess", "203.0.113.9")

    response = log_in(client, owner.email, PASSWORD, "198.51.100.4")

    assert response.status_code == 302
    assert client.get(reverse("contacts:contact_list")).status_code == 200


def test_five_failures_from_one_address_make_it_wait_five_minutes(client, owner):
    for _ in range(5):
        log_in(client, owner.email, "wrong guess", "203.0.113.9")

    refused = log_in(client, owner.email, PASSWORD, "203.0.113.9")
    with time_machine.travel(timezone.now() + timedelta(minutes=5, seconds=1)):
        allowed = log_in(client, owner.email, PASSWORD, "203.0.113.9")

    assert refused.status_code == 200
    assert "Too many failed login attempts" in refused.content.decode()
    assert allowed.status_code == 302


def test_ipv4_clients_of_a_dual_stack_server_are_counted_apart(client, owner):
    for _ in range(6):
        log_in(client.__class__(), owner.email, "wrong guess", "::ffff:203.0.113.9")

    response = log_in(client, owner.email, PASSWORD, "::ffff:198.51.100.4")

    assert response.status_code == 302


def test_behind_a_proxy_the_forwarded_client_address_counts(client, owner, settings):
    settings.ALLAUTH_TRUSTED_PROXY_COUNT = 1
    stranger = {"HTTP_X_FORWARDED_FOR": "203.0.113.9"}
    for _ in range(6):
        client.__class__().post(
            reverse("account_login"),
            {"login": owner.email, "password": "wrong guess"},
            REMOTE_ADDR="10.0.0.2",
            **stranger,
        )

    response = client.post(
        reverse("account_login"),
        {"login": owner.email, "password": PASSWORD},
        REMOTE_ADDR="10.0.0.2",
        HTTP_X_FORWARDED_FOR="198.51.100.4",
    )

    assert response.status_code == 302
