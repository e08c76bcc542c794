"""Fixtures shared by the engagements tests."""

import pytest

from engagements.inbound import inbound_server
from tests.servers.dovecot import free_port


@pytest.fixture
def inbound(settings):
    """The BCC/forward logging SMTP service (run_inbound_smtp's), on a free loopback port."""
    settings.CRM_INBOUND_MAX_MB = 1
    server = inbound_server("127.0.0.1", free_port())
    server.start()
    yield server
    server.stop()
