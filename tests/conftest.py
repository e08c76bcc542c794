"""Personas (STYLE section 8): owner (team admin), teammate (same team), outsider (other team)."""

from __future__ import annotations

import os

import pytest
from django.core.cache import cache
from django.test import Client

from teams.models import Membership

from .factories import (
    MembershipFactory,
    TeamFactory,
)
from .mailboxes.helpers import UserMailbox, connect_imap, connect_oauth, track_proposal
from .servers.fake_google import FakeGoogle
from .servers.fake_microsoft import FakeMicrosoft

# Playwright's sync API runs an event loop in the main thread; the ORM calls made by the test
# body and by pytest-django never run concurrently with it.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(autouse=True)
def _fast_and_isolated(settings, tmp_path):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Rate-limit counts (logins, connection attempts) start from zero in every test.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "threadline-tests",
        }
    }
    cache.clear()
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture
def team(db):
    return TeamFactory(name="Acme")


@pytest.fixture
def other_team(db):
    return TeamFactory(name="Rival")


@pytest.fixture
def owner(team):
    return MembershipFactory(team=team, role=Membership.Role.ADMIN).user


@pytest.fixture
def teammate(team):
    return MembershipFactory(team=team, role=Membership.Role.MEMBER).user


@pytest.fixture
def outsider(other_team):
    return MembershipFactory(team=other_team, role=Membership.Role.ADMIN).user


@pytest.fixture
def client_for():
    def make(user) -> Client:
        client = Client()
        client.force_login(user)
        return client

    return make


@pytest.fixture(autouse=True)
def _tasks_run_inline(monkeypatch):
    # django-q2 reads its settings once, at import: run queued tasks in the caller (STYLE 7).
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)


# Real mail servers, started once per test session (tests/servers).


@pytest.fixture(scope="session")
def dovecot():
    from .servers.dovecot import DovecotServer

    with DovecotServer(special_use=True) as server:
        yield server


@pytest.fixture(scope="session")
def dovecot_plain():
    """A server without SPECIAL-USE, whose sent folder is only named "Sent Items"."""
    from .servers.dovecot import DovecotServer

    with DovecotServer(special_use=False) as server:
        yield server


@pytest.fixture(scope="session")
def smtp_server(dovecot, dovecot_plain):
    from .servers.smtp import SmtpServer

    def check(user, password):
        return password in {dovecot.users.get(user), dovecot_plain.users.get(user)}

    with SmtpServer(check_login=check) as server:
        yield server


@pytest.fixture(scope="session")
def redis_server():
    """A real Redis, for the scaled-out setup (REDIS_URL: broker and cache)."""
    from .servers.redis import RedisServer

    with RedisServer() as server:
        yield server


@pytest.fixture
def mail_settings(settings):
    settings.CRM_ALLOW_PLAINTEXT_LOOPBACK = True
    settings.CRM_ALLOW_PRIVATE_MAIL_HOSTS = True
    return settings


# -- a user's real mailbox, connected (shared by the mailboxes and engagements tests) ------


@pytest.fixture
def account(dovecot):
    """A fresh user on the test Dovecot: (user, password, their own IMAP session)."""
    user, password = dovecot.add_user()
    mailbox = UserMailbox(dovecot, user, password)
    yield user, password, mailbox
    mailbox.close()


@pytest.fixture
def connected(mail_settings, dovecot, smtp_server, account, team, owner):
    user, password, _ = account
    return connect_imap(dovecot, smtp_server, user, password, team, owner)


@pytest.fixture
def tracked(team, connected):
    """An email sent from the CRM to Ada, logged on her contact, company and deal."""
    return track_proposal(team, connected)


# The Gmail and Microsoft 365 fakes and a mailbox connected to each (tests/servers/).


@pytest.fixture
def google(settings):
    with FakeGoogle() as fake:
        settings.CRM_OAUTH = {**settings.CRM_OAUTH, "gmail": fake.crm_oauth}
        yield fake


@pytest.fixture
def gmail(google, team, owner):
    return connect_oauth(google, "gmail", team, owner)


@pytest.fixture
def microsoft(settings):
    with FakeMicrosoft() as fake:
        settings.CRM_OAUTH = {**settings.CRM_OAUTH, "graph": fake.crm_oauth}
        yield fake


@pytest.fixture
def outlook(microsoft, team, owner):
    return connect_oauth(microsoft, "graph", team, owner)
