"""The sync engine's tests share the mailbox tests' connection listener (the provider fakes
are everyone's: tests/conftest.py)."""

from tests.mailboxes.conftest import listener  # noqa: F401
