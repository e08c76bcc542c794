"""A listener that counts connections (the Gmail and Microsoft 365 fakes: tests/conftest.py)."""

import pytest

from tests.mailboxes.helpers import CountingListener


@pytest.fixture
def listener():
    """Something listening on loopback (IPv4 and IPv6) that counts connections to it."""
    server = CountingListener()
    yield server
    server.close()
