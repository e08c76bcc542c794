"""Personas (STYLE section 8): owner (team admin), teammate (same team), outsider (other team)."""

from __future__ import annotations

import os

import pytest
from django.test import Client

from teams.models import Membership

from .factories import MembershipFactory, TeamFactory

# Playwright's sync API runs an event loop in the main thread; the ORM calls made by the test
# body and by pytest-django never run concurrently with it.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(autouse=True)
def _fast_and_isolated(settings, tmp_path):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
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
