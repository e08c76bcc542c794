"""Connection attempts through the connect form are limited per user and per team, and a
connection check never holds a web worker for the whole mail timeout."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.urls import reverse

from mailboxes.providers import get_provider
from mailboxes.services import check_config, count_connect_attempt, provider_config
from tests.factories import MembershipFactory
from tests.mailboxes.helpers import imap_form

pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def attempt(client, listener, **overrides):
    """A valid form for a server on loopback (mail_settings allows it) that closes the
    connection at once: the attempt reaches it and fails quickly."""
    data = {
        "email_address": "owner@example.com",
        "imap_host": "127.0.0.1",
        "imap_port": listener.port,
        "imap_security": "plain",
        "smtp_host": "127.0.0.1",
        "smtp_port": listener.port,
        "smtp_security": "plain",
        "username": "owner",
        "password": "secret",
    }
    return client.post(reverse("mailboxes:mailbox_connect"), {**data, **overrides})


@pytest.fixture
def frozen():
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def test_eleventh_attempt_within_ten_minutes_is_refused_without_connecting(
    mail_settings, frozen, client_for, owner, listener
):
    client = client_for(owner)
    for _ in range(10):
        assert attempt(client, listener).status_code == 400
    reached = listener.connections

    response = attempt(client, listener)

    assert reached >= 10
    assert response.status_code == 429
    assert response["Retry-After"] == "600"
    assert "tried to connect a mailbox too many times" in response.content.decode()
    assert "wait 10 minutes, then try again" in response.content.decode()
    assert listener.connections == reached


def test_attempts_are_allowed_again_once_the_window_has_passed(
    mail_settings, frozen, client_for, owner, listener
):
    client = client_for(owner)
    for _ in range(10):
        attempt(client, listener)
    frozen.shift(timedelta(minutes=4))
    wait = attempt(client, listener)
    frozen.shift(timedelta(minutes=6, seconds=1))
    reached = listener.connections

    response = attempt(client, listener)

    assert wait.status_code == 429
    assert "wait 6 minutes" in wait.content.decode()
    assert response.status_code == 400
    assert "does not answer like an IMAP server" in response.content.decode()
    assert listener.connections > reached


def test_a_teammate_is_refused_once_the_team_used_its_attempts(
    mail_settings, frozen, client_for, team, owner, teammate, listener
):
    for user in (owner, MembershipFactory(team=team).user, MembershipFactory(team=team).user):
        client = client_for(user)
        for _ in range(10):
            assert attempt(client, listener).status_code == 400
    reached = listener.connections

    response = attempt(client_for(teammate), listener)

    assert response.status_code == 429
    assert "Your team has tried to connect mailboxes too many times" in response.content.decode()
    assert listener.connections == reached


def test_another_teams_attempts_do_not_count_against_this_team(
    mail_settings, client_for, team, owner, outsider, listener
):
    for user in (owner, MembershipFactory(team=team).user, MembershipFactory(team=team).user):
        for _ in range(10):
            count_connect_attempt(team=team, user=user)

    response = attempt(client_for(outsider), listener)

    assert response.status_code == 400
    assert listener.connections > 0


def test_refused_attempts_of_one_user_do_not_use_up_the_teams(
    mail_settings, client_for, owner, teammate, listener
):
    client = client_for(owner)
    for _ in range(10):
        attempt(client, listener)
    refused = [attempt(client, listener).status_code for _ in range(25)]
    reached = listener.connections

    response = attempt(client_for(teammate), listener)

    assert set(refused) == {429}
    assert response.status_code == 400
    assert listener.connections > reached


def test_invalid_form_input_is_not_counted_as_an_attempt(
    mail_settings, client_for, owner, listener
):
    client = client_for(owner)
    invalid = [attempt(client, listener, imap_port=995).status_code for _ in range(15)]

    response = attempt(client, listener)

    assert set(invalid) == {400}
    assert response.status_code == 400
    assert "does not answer like an IMAP server" in response.content.decode()
    assert listener.connections > 0


@pytest.mark.parametrize(("mail_timeout", "expected"), [(30, 10), (4, 4)])
def test_the_connection_check_uses_a_short_timeout(
    mail_settings, dovecot, smtp_server, account, mail_timeout, expected
):
    mail_settings.CRM_MAIL_TIMEOUT = mail_timeout
    user, password, _ = account
    form = imap_form(dovecot, smtp_server, user, password)
    provider_settings = {k: v for k, v in form.items() if k not in {"email_address", "password"}}

    config = check_config("imap", form["email_address"], provider_settings, {"password": password})
    with get_provider("imap", config) as provider:
        socket_timeout = provider.client.socket().gettimeout()

    assert config.timeout == expected
    assert socket_timeout == expected


def test_a_sync_keeps_the_configured_mail_timeout(mail_settings, connected):
    mail_settings.CRM_MAIL_TIMEOUT = 30

    config = provider_config(connected)
    with get_provider("imap", config) as provider:
        socket_timeout = provider.client.socket().gettimeout()

    assert config.timeout == 30
    assert socket_timeout == 30
