"""The sync engine's tests share the mailbox tests' provider fakes."""

from tests.mailboxes.conftest import gmail, google, listener, microsoft, outlook  # noqa: F401
