"""The provider interface: what every mail provider offers the sync and send services.

Providers never import models or touch the ORM: they get a `ProviderConfig` and give back
plain dataclasses and named tuples. Parsing raw messages is `mailboxes.parsing`'s job, for
every provider.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple, Protocol


@dataclass(frozen=True)
class ProviderConfig:
    """Everything a provider needs to talk to one mailbox; built by the service."""

    email_address: str
    settings: dict[str, Any]
    credentials: dict[str, Any]
    ca_file: str = ""  # extra trusted CA certificates (self-signed company servers)
    allow_plaintext_loopback: bool = False
    # Mail servers on loopback, private and other non-public addresses (network.py): local
    # test servers and demos only (CRM_ALLOW_PRIVATE_MAIL_HOSTS).
    allow_private_hosts: bool = False
    timeout: float = 30.0
    # OAuth providers: the app's client id/secret and the service's endpoints (settings).
    oauth: dict[str, Any] = field(default_factory=dict)
    # Where the service pushes news of changes (Gmail: the Pub/Sub topic; Microsoft 365: our
    # webhook's URLs); empty when push is not configured (settings).
    push: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FolderInfo:
    name: str
    attributes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Capabilities:
    """What a successful check found (SPEC C3)."""

    server: tuple[str, ...]
    folders: tuple[FolderInfo, ...]
    inbox: str
    sent_folder: str | None


class MessageMeta(NamedTuple):
    """Header metadata of one message in one folder (SPEC R4: never a body).

    A named tuple rather than a dataclass: a large sync makes 100,000s of them and sends
    them between processes (sync/readahead.py), and tuples are built and pickled several times
    faster.
    """

    folder: str
    ref: str  # the provider's id of the message in the folder (IMAP: the UID)
    message_id: str
    in_reply_to: str
    references: tuple[str, ...]
    from_name: str
    from_address: str
    to: tuple[tuple[str, str], ...]
    cc: tuple[tuple[str, str], ...]
    subject: str
    sent_at: datetime | None
    received_at: datetime | None
    size: int
    flags: tuple[str, ...]
    problems: tuple[str, ...] = ()  # why some headers could not be read
    thread_hint: str = ""  # Gmail's threadId, Graph's conversationId: a hint, never the match

    @property
    def reference_ids(self) -> list[str]:
        return list(self.references)


class MessageHeaders(Protocol):
    """What matching reads of a message: a provider's MessageMeta or a saved row."""

    ref: str
    message_id: str
    in_reply_to: str
    size: int

    @property
    def reference_ids(self) -> list[str]: ...


@dataclass
class Batch:
    """One chunk of changes in a folder, and the cursor to ask for the next one."""

    messages: list[MessageMeta]
    cursor: str
    done: bool
    remaining: int = 0
    reset: bool = False  # the folder's identity changed (UIDVALIDITY): forget what was read
    flag_updates: dict[str, tuple[str, ...]] = field(default_factory=dict)


class MailProvider(Protocol):
    """Used as a context manager: one connection for a sync or a check."""

    def __enter__(self) -> MailProvider: ...

    def __exit__(self, *exc: object) -> None: ...

    def check(self) -> Capabilities:
        """Log in, read capabilities and folders, and check sending; raise ProviderError."""
        ...

    def changes(self, folder: str, cursor: str | None, limit: int, since: date) -> Batch:
        """Metadata of at most `limit` messages new since `cursor` (mail since `since` on the
        first run); raise ProviderError."""
        ...

    def fetch_many(self, folder: str, refs: list[str]) -> dict[str, bytes]:
        """Several raw messages in one request, by ref; refs gone from the server are missing."""
        ...

    def count_since(self, folder: str, since: date) -> int | None:
        """How many messages of the folder the server has from `since` on (the drift check);
        None when the provider cannot tell cheaply."""
        ...

    def wait_for_change(
        self, folder: str, seconds: float, stopping: Callable[[], bool]
    ) -> bool | None:
        """Wait up to `seconds` for the server to announce a change in the folder (new,
        deleted or re-flagged mail), on this connection; True when it did, False when the
        time ran out or `stopping()` (asked every second or so) became true. None at once
        when the provider cannot announce changes: the caller polls. Raises ProviderError."""
        ...

    def folder_mark(self, folder: str) -> str | None:
        """A token that changes when mail is added to the folder, read cheaply on this
        connection (how a watcher follows the sent folder between two IDLEs on the inbox);
        None when the provider has none. Raises ProviderError."""
        ...

    def watch_changes(self, current: dict[str, Any] | None) -> dict[str, Any] | None:
        """Have the service push news of this mailbox's changes to our webhook (Gmail's
        users.watch, a Graph subscription), so that the watcher need not poll. `current` is
        what the last call returned: while it is valid for a good while longer it comes back
        as it is; when it expires soon it is renewed, and when the service lost it a new one
        is made. The result holds "expires_at" (ISO 8601) and what the webhook checks. None
        when the provider cannot push or push is not configured: the watcher polls. Raises
        ProviderError."""
        ...

    def send(
        self,
        raw: bytes,
        sender: str,
        recipients: list[str],
        on_accepted: Callable[[], None] | None = None,
    ) -> None:
        """Send a message to `recipients` (the envelope: To, Cc and Bcc). Raises PartlySent
        when some recipients were refused and the others got it; ProviderError otherwise.

        `on_accepted` is called as soon as the service has accepted the message, before
        anything else (an SMTP QUIT, say), so that the caller can record it at once: a worker
        that dies after it is not mistaken for one that never sent."""
        ...

    def updated_credentials(self) -> dict[str, Any] | None:
        """New credentials after a token refresh, to be saved (encrypted); None if nothing
        changed since the last call."""
        ...

    def file_in_sent(self, folder: str, raw: bytes, message_id: str) -> bool:
        """Put a sent message in the sent folder unless it is there already (SPEC L6);
        True if this call filed it. Providers whose servers file sent mail themselves
        return False."""
        ...

    def find_sent(self, folder: str, message_id: str) -> bool:
        """Whether the sent folder holds a message with this Message-ID (without angle
        brackets): how a send interrupted by a dead worker is told apart from one that never
        left. Raises ProviderError when the server cannot be asked."""
        ...


class ProviderError(Exception):
    """A failure in plain words. `permanent` failures need the user; others are retried."""

    permanent = False
    cause = "error"
    # The mailbox cannot work until its owner acts (new password, new consent): disconnect
    # at once (SPEC D1). Other failures are retried with backoff.
    disconnects = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AuthFailed(ProviderError):
    permanent = True
    disconnects = True
    cause = "auth_failed"


class AccessRevoked(ProviderError):
    permanent = True
    disconnects = True
    cause = "access_revoked"


class MailboxMoved(ProviderError):
    permanent = True
    disconnects = True
    cause = "mailbox_moved"


class TlsFailed(ProviderError):
    permanent = True
    cause = "tls_failed"


class WrongProtocol(ProviderError):
    """The server speaks something else (a POP3 server, an HTTP port)."""

    permanent = True
    cause = "wrong_protocol"


class PrivateHost(ProviderError):
    """The server's address is not on the public internet (loopback, a private network, the
    cloud metadata address...), and settings do not allow such servers (network.py)."""

    permanent = True
    cause = "private_host"


class ServerUnavailable(ProviderError):
    cause = "server_unavailable"


class Throttled(ProviderError):
    """The service asks to slow down: retried after `retry_after` seconds, never a disconnect."""

    cause = "throttled"

    def __init__(self, message: str, retry_after: float = 60.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[type, tuple[str, float]]:  # crosses the read-ahead pipe
        return (type(self), (self.message, self.retry_after))


class SyncCrashed(ProviderError):
    """Not the provider's doing: the sync stopped on an unexpected exception (a bug, the
    database). Recorded and retried like a server failure."""

    cause = "other"


class BadMessage(ProviderError):
    permanent = True
    cause = "bad_message"


class PushRefused(Exception):
    """A push request (a webhook call claiming to come from a mail service) that is not what
    it claims to be; the reason in plain words. Never a mailbox's failure."""


class PartlySent(ProviderError):
    """The message went out, but some recipients were refused: never send it again."""

    permanent = True
    cause = "partly_sent"
