"""The Gmail and Microsoft 365 fakes and a mailbox connected to each (tests/servers/)."""

import pytest

from tests.mailboxes.helpers import CountingListener, connect_oauth
from tests.servers.fake_google import FakeGoogle
from tests.servers.fake_microsoft import FakeMicrosoft


@pytest.fixture
def google(settings):
    with FakeGoogle() as fake:
        settings.CRM_OAUTH = {"gmail": fake.crm_oauth}
        yield fake


@pytest.fixture
def gmail(google, team, owner):
    return connect_oauth(google, "gmail", team, owner)


@pytest.fixture
def microsoft(settings):
    with FakeMicrosoft() as fake:
        settings.CRM_OAUTH = {"graph": fake.crm_oauth}
        yield fake


@pytest.fixture
def outlook(microsoft, team, owner):
    return connect_oauth(microsoft, "graph", team, owner)


@pytest.fixture
def listener():
    """Something listening on loopback (IPv4 and IPv6) that counts connections to it."""
    server = CountingListener()
    yield server
    server.close()
