"""IMAP/SMTP provider (imapclient for IMAP, smtplib for SMTP).

The user's mailbox is never changed: folders are selected read-only, messages are read with
BODY.PEEK, and no flag is set or cleared (SPEC U).
"""

from __future__ import annotations

import contextlib
import functools
import imaplib
import itertools
import json
import os
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from ipaddress import ip_address
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from imapclient.response_parser import parse_fetch_response

from ..parsing import parse_headers
from . import network
from .base import (
    AuthFailed,
    BadMessage,
    Batch,
    Capabilities,
    FolderInfo,
    MessageMeta,
    PartlySent,
    ProviderConfig,
    ProviderError,
    ServerUnavailable,
    TlsFailed,
    WrongProtocol,
)

HEADER_FIELDS = "FROM TO CC SUBJECT DATE MESSAGE-ID IN-REPLY-TO REFERENCES"
META_ITEMS_TEXT = f"(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS ({HEADER_FIELDS})])"
RAW_ITEMS_TEXT = "(BODY.PEEK[])"

# The longest command line sent, tag and CRLF included: RFC 7162 section 4 asks clients to
# keep theirs to about 8,192 octets. Servers refuse longer ones and may drop the connection
# (Dovecot at 64 KiB, "Too long argument", issue 13: one FETCH of the 14,000 UIDs changed by
# "mark all as read"); some set lower limits.
MAX_COMMAND_BYTES = 8000
# Room kept for a command's tag and the spaces around it (imaplib's tags are four letters
# and a counter, ours "TL" and a counter).
TAG_BYTES = 24

# Sent folder names to try when the server has no SPECIAL-USE (SPEC L6, U), in order.
LOCALISED_SENT_NAMES = (
    "sent items", "sent mail", "sent messages", "posta inviata", "inviata", "inviati",
    "gesendet", "gesendete elemente", "gesendete objekte", "envoyés", "éléments envoyés",
    "enviados", "elementos enviados", "verzonden", "verzonden items", "enviadas", "wysłane",
)  # fmt: skip

SECURITY_CHOICES = ("ssl", "starttls", "plain")
# Seconds to wait for the answer to an SMTP QUIT: by then the message was accepted or not.
QUIT_WAIT = 5
# How long a message the server listed but could not serve is asked for again, at every
# reading of its folder, before it is taken as gone (the drift check reports what is missing).
UNANSWERED_FOR = timedelta(days=1)


@dataclass(frozen=True)
class ImapSettings:
    """The provider settings stored on the mailbox (Mailbox.settings)."""

    imap_host: str
    imap_port: int
    imap_security: str
    smtp_host: str
    smtp_port: int
    smtp_security: str
    username: str

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImapSettings:
        return cls(
            imap_host=str(data["imap_host"]).strip().lower(),
            imap_port=int(data["imap_port"]),
            imap_security=str(data["imap_security"]),
            smtp_host=str(data["smtp_host"]).strip().lower(),
            smtp_port=int(data["smtp_port"]),
            smtp_security=str(data["smtp_security"]),
            username=str(data["username"]),
        )


@dataclass
class _Cursor:
    uidvalidity: int
    last_uid: int = 0
    modseq: int | None = None  # HIGHESTMODSEQ when the folder was last fully read
    start_modseq: int | None = None  # HIGHESTMODSEQ when the current reading began
    start_uid: int = 0  # last UID read before the current reading began
    # UIDs the server listed but did not answer FETCH for (announced before it could serve
    # them), with when that was first seen (epoch seconds): asked again at each reading.
    unanswered: dict[str, float] = field(default_factory=dict)

    @classmethod
    def load(cls, text: str | None) -> _Cursor | None:
        return cls(**json.loads(text)) if text else None

    def dump(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def describe_network_error(exc: BaseException, host: str, port: int) -> ProviderError:
    """Turn a socket/TLS exception into a plain-words ProviderError (SPEC C3)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TlsFailed(
            f"The security certificate of {host} could not be verified "
            f"({exc.verify_message}). Check the host name, or ask your IT team whether the "
            "server uses a certificate your organisation issued itself."
        )
    if isinstance(exc, ssl.SSLError):
        return TlsFailed(
            f"Could not set up a secure connection with {host}:{port}. Check that the port "
            "matches the security setting (usually 993 for SSL/TLS and 143 for STARTTLS)."
        )
    if isinstance(exc, socket.gaierror):
        return ServerUnavailable(f"The host name {host} was not found. Check its spelling.")
    if isinstance(exc, TimeoutError | socket.timeout):
        return ServerUnavailable(
            f"{host}:{port} did not answer in time. Check the host and port, and that no "
            "firewall blocks the connection."
        )
    if isinstance(exc, ConnectionRefusedError):
        return ServerUnavailable(f"{host} refused the connection on port {port}. Check the port.")
    return ServerUnavailable(f"The connection to {host}:{port} failed ({exc}).")


def tls_context(ca_file: str = "") -> ssl.SSLContext:
    """The TLS context of every IMAP and SMTP connection: the system's CA certificates, and
    `ca_file`'s when given. One per process, shared by all connections (so never changed
    once made): each context keeps its own copy of the CA store, 0.8 MB and 25 ms to load,
    which a watcher holding 1,000 connections paid a thousand times. A `ca_file` replaced
    on disk is read again."""
    version = os.stat(ca_file).st_mtime_ns if ca_file else 0
    return _tls_context(ca_file, version)


@functools.lru_cache(maxsize=4)
def _tls_context(ca_file: str, version: int) -> ssl.SSLContext:
    """`version` (the file's modification time) is only part of the cache key."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


# imaplib and smtplib open their sockets in one overridable method each (imaplib's
# _create_socket, smtplib's _get_socket, which SMTP_SSL already overrides to wrap TLS): ours
# open them through network.connect, which refuses non-public servers before anything is sent.


class _IMAP4(imaplib.IMAP4):
    """imaplib's connection, opened by network.connect; TLS from the start with a context."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float | None,
        ssl_context: ssl.SSLContext | None,
        allow_private_hosts: bool,
    ) -> None:
        self.ssl_context = ssl_context
        self.allow_private_hosts = allow_private_hosts
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        sock = network.connect(
            self.host, self.port, timeout=timeout, allow_private=self.allow_private_hosts
        )
        if self.ssl_context is None:
            return sock
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


class _IMAPClient(IMAPClient):
    """IMAPClient over _IMAP4 (imapclient builds its connection in `_create_IMAP4`)."""

    def __init__(self, host: str, port: int, *, allow_private_hosts: bool, **kwargs: Any) -> None:
        self.allow_private_hosts = allow_private_hosts
        super().__init__(host, port=port, **kwargs)

    def _create_IMAP4(self) -> imaplib.IMAP4:  # noqa: N802 - imapclient's name
        return _IMAP4(
            self.host,
            self.port,
            timeout=self._timeout.connect,
            ssl_context=self.ssl_context if self.ssl else None,
            allow_private_hosts=self.allow_private_hosts,
        )


class _SMTP(smtplib.SMTP):
    """smtplib's connection, opened by network.connect."""

    def __init__(self, host: str, port: int, *, allow_private_hosts: bool, **kwargs: Any) -> None:
        self.allow_private_hosts = allow_private_hosts
        super().__init__(host, port, **kwargs)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return network.connect(host, port, timeout=timeout, allow_private=self.allow_private_hosts)


class _SMTP_SSL(smtplib.SMTP_SSL, _SMTP):  # noqa: N801 - as smtplib's
    """SMTP_SSL's _get_socket wraps what its super(), _SMTP's, opened."""

    def __init__(self, host: str, port: int, *, allow_private_hosts: bool, **kwargs: Any) -> None:
        self.allow_private_hosts = allow_private_hosts
        smtplib.SMTP_SSL.__init__(self, host, port, **kwargs)


# A refused LOGIN that says the server, not the password, is the trouble (RFC 5530 codes;
# Dovecot's "Temporary authentication failure").
_TEMPORARY_LOGIN_FAILURE = re.compile(r"\[(UNAVAILABLE|SERVERBUG|INUSE)\]|temporar", re.I)


class ImapProvider:
    """One IMAP connection for the duration of a `with` block."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.settings = ImapSettings.from_dict(config.settings)
        self._client: IMAPClient | None = None
        self._selected: tuple[str, dict[bytes, Any]] | None = None
        # The folder this session has selected since the last wait_for_change found it so:
        # its server-side state is current, and re-selecting it would swallow the changes
        # a NOOP reports.
        self._watched: str | None = None
        self._pending: dict[tuple[str, int], list[int]] = {}
        self._fresh: set[str] = set()

    # -- connection -------------------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext:
        return tls_context(self.config.ca_file)

    def _check_security(self, host: str, security: str) -> None:
        if security not in SECURITY_CHOICES:
            raise ValueError(f"unknown security {security!r}")
        if security == "plain" and not (self.config.allow_plaintext_loopback and is_loopback(host)):
            raise TlsFailed("Unencrypted connections are not allowed: choose SSL/TLS or STARTTLS.")

    def __enter__(self) -> ImapProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            with contextlib.suppress(IMAPClientError, OSError, imaplib.IMAP4.error):
                self._client.logout()
            self._client = None

    @property
    def client(self) -> IMAPClient:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> IMAPClient:
        s = self.settings
        self._check_security(s.imap_host, s.imap_security)
        try:
            client = _IMAPClient(
                s.imap_host,
                s.imap_port,
                ssl=s.imap_security == "ssl",
                ssl_context=self._ssl_context() if s.imap_security == "ssl" else None,
                timeout=self.config.timeout,
                allow_private_hosts=self.config.allow_private_hosts,
            )
            if s.imap_security == "starttls":
                client.starttls(self._ssl_context())
        except imaplib.IMAP4.error:
            # imaplib does not say what it got instead of an IMAP greeting: look again.
            if self._greeting().startswith(b"+OK"):
                raise WrongProtocol(pop3_explanation(s.imap_host)) from None
            raise WrongProtocol(
                f"{s.imap_host}:{s.imap_port} does not answer like an IMAP server. Check the "
                "port (usually 993 for SSL/TLS, 143 for STARTTLS)."
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise describe_network_error(exc, s.imap_host, s.imap_port) from None
        try:
            client.login(s.username, self.config.credentials["password"])
        except LoginError as exc:
            if _TEMPORARY_LOGIN_FAILURE.search(str(exc)):
                # RFC 5530: the server could not check the password just now (busy, its
                # password database down): not the user's password, no disconnection.
                raise ServerUnavailable(
                    f"{s.imap_host} could not check the password just now; Threadline "
                    "tries again shortly."
                ) from None
            raise AuthFailed(
                "The IMAP server refused the username or password. Check them; some "
                "providers need an app password instead of your usual one."
            ) from None
        except (OSError, IMAPClientError) as exc:
            raise describe_network_error(exc, s.imap_host, s.imap_port) from None
        if client.has_capability("CONDSTORE"):
            # Makes SELECT report HIGHESTMODSEQ: the cheap "anything changed?" check (P1).
            client.enable("CONDSTORE")
        return client

    def _greeting(self) -> bytes:
        """The first line the IMAP host/port sends, or b"" if it cannot be read."""
        s = self.settings
        try:
            with network.connect(
                s.imap_host,
                s.imap_port,
                timeout=min(5, self.config.timeout),
                allow_private=self.config.allow_private_hosts,
            ) as raw:
                sock = raw
                if s.imap_security == "ssl":
                    sock = self._ssl_context().wrap_socket(raw, server_hostname=s.imap_host)
                return sock.recv(200)
        except (OSError, ssl.SSLError):
            return b""

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run an IMAP command, mapping a dropped connection or a refused command (a folder
        deleted meanwhile, say) to ServerUnavailable: the sync records it and tries later."""
        try:
            return fn(*args, **kwargs)
        except (OSError, imaplib.IMAP4.abort) as exc:
            self._client = None
            self._selected = self._watched = None  # a new connection selects nothing yet
            s = self.settings
            raise describe_network_error(exc, s.imap_host, s.imap_port) from None
        except imaplib.IMAP4.error as exc:
            raise ServerUnavailable(f"The IMAP server refused a command: {exc}") from None

    # -- check ------------------------------------------------------------------------
    def check(self) -> Capabilities:
        capabilities = tuple(c.decode() for c in self._call(self.client.capabilities))
        folders = tuple(
            FolderInfo(name=name, attributes=tuple(a.decode() for a in flags))
            for flags, _delimiter, name in self._call(self.client.list_folders)
        )
        self.check_smtp()
        return Capabilities(
            server=capabilities,
            folders=folders,
            inbox="INBOX",
            sent_folder=find_sent_folder(folders),
        )

    def check_smtp(self) -> None:
        """Log in to the SMTP server and out again."""
        with self.smtp() as _connection:
            pass

    def smtp(self) -> smtplib.SMTP:
        s = self.settings
        self._check_security(s.smtp_host, s.smtp_security)
        try:
            private = self.config.allow_private_hosts
            if s.smtp_security == "ssl":
                connection: smtplib.SMTP = _SMTP_SSL(
                    s.smtp_host, s.smtp_port, timeout=self.config.timeout,
                    context=self._ssl_context(), allow_private_hosts=private,
                )  # fmt: skip
            else:
                connection = _SMTP(
                    s.smtp_host, s.smtp_port, timeout=self.config.timeout,
                    allow_private_hosts=private,
                )  # fmt: skip
                if s.smtp_security == "starttls":
                    connection.starttls(context=self._ssl_context())
            connection.login(s.username, self.config.credentials["password"])
        except smtplib.SMTPAuthenticationError:
            raise AuthFailed(
                "The SMTP server refused the username or password. Check them; some "
                "providers need an app password instead of your usual one."
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise WrongProtocol(
                f"The SMTP server {s.smtp_host} does not accept logins on port {s.smtp_port}; "
                "try the submission port 587 with STARTTLS, or 465 with SSL/TLS."
            ) from None
        except smtplib.SMTPException as exc:
            raise ServerUnavailable(f"The SMTP server {s.smtp_host} answered: {exc}") from None
        except (OSError, ssl.SSLError) as exc:
            raise describe_network_error(exc, s.smtp_host, s.smtp_port) from None
        return connection

    # -- sync -------------------------------------------------------------------------
    def _select(self, folder: str) -> dict[bytes, Any]:
        if self._selected is None or self._selected[0] != folder:
            if folder != self._watched:
                self._watched = None
            info = self._call(self.client.select_folder, folder, readonly=True)
            self._selected = (folder, info)
        return self._selected[1]

    # Untagged responses that say the selected folder changed (RFC 3501 7.3-7.4).
    CHANGE_RESPONSES = frozenset({b"EXISTS", b"EXPUNGE", b"FETCH", b"RECENT"})
    # How often a wait looks at `stopping`: IDLE itself stays on, only the socket read ends.
    IDLE_SLICE = 1.0

    def wait_for_change(
        self, folder: str, seconds: float, stopping: Callable[[], bool]
    ) -> bool | None:
        """IDLE (RFC 2177) on the folder, selected read-only, for up to `seconds`: the caller
        re-issues it well within the 29 minutes a server may allow one. None when the server
        has no IDLE."""
        if not self._call(self.client.has_capability, "IDLE"):
            return None
        if self._watched != folder:
            self._select(folder)
            self._watched = folder
        # What changed since this connection's last command (a sync in between, say): a
        # server need not announce it when IDLE starts (Dovecot does not); NOOP's answer
        # does. A SELECT here instead would count it as already there, and tell nothing.
        changed = self._announces_change(self._call(self.client.noop)[1])
        if changed or seconds <= 0:
            if changed:
                self._selected = None  # what SELECT said is stale for changes()
            return changed
        self._call(self.client.idle)
        try:
            deadline = time.monotonic() + seconds
            while not changed and not stopping():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                responses = self._call(self.client.idle_check, timeout=min(self.IDLE_SLICE, left))
                changed = self._announces_change(responses)
        finally:
            if self._client is not None:  # not dropped meanwhile
                self._call(self.client.idle_done)
        if changed:
            self._selected = None  # what SELECT said is stale for changes()
        return changed

    def watch_changes(self, current: dict[str, Any] | None) -> dict[str, Any] | None:
        return None  # IMAP announces changes on the connection itself (wait_for_change)

    def folder_mark(self, folder: str) -> str | None:
        """STATUS UIDVALIDITY UIDNEXT, on this connection: one round trip, no SELECT."""
        status = self._call(self.client.folder_status, folder, [b"UIDVALIDITY", b"UIDNEXT"])
        return f"{int(status.get(b'UIDVALIDITY', 0))}:{int(status.get(b'UIDNEXT', 0))}"

    def _announces_change(self, responses: list[Any]) -> bool:
        return any(
            isinstance(item, tuple) and len(item) > 1 and item[1] in self.CHANGE_RESPONSES
            for item in responses
        )

    def changes(self, folder: str, cursor: str | None, limit: int, since: date) -> Batch:
        # Each reading of a folder starts with a fresh SELECT: that is what reports new mail
        # (UIDNEXT, HIGHESTMODSEQ). Its later batches reuse it, since a SELECT of a large
        # maildir folder costs the server a rescan.
        if folder not in self._fresh:
            if self._unchanged(folder, _Cursor.load(cursor)):
                return Batch(messages=[], cursor=cursor or "", done=True)
            self._selected = None
            self._fresh.add(folder)
        info = self._select(folder)
        uidvalidity = int(info[b"UIDVALIDITY"])
        uidnext = int(info.get(b"UIDNEXT", 0))
        modseq = info.get(b"HIGHESTMODSEQ")
        modseq = int(modseq) if modseq is not None else None
        state = _Cursor.load(cursor)
        reset = state is not None and state.uidvalidity != uidvalidity
        if state is None or reset:
            state = _Cursor(uidvalidity=uidvalidity)
            self._pending.pop((folder, uidvalidity), None)
        if state.start_modseq is None:
            state.start_modseq = modseq  # changes after this are seen by the next reading
            state.start_uid = state.last_uid

        key = (folder, uidvalidity)
        pending = self._pending_uids(folder, state, uidnext, since)
        chunk, rest = pending[:limit], pending[limit:]
        if rest:
            self._pending[key] = rest
        else:
            self._pending.pop(key, None)
        messages = self._fetch_answered(folder, state, chunk, last=not rest)
        if chunk:
            state.last_uid = max(chunk)
        flag_updates: dict[str, tuple[str, ...]] = {}
        if not rest:
            flag_updates = self._flag_changes(state, modseq)
            state.modseq, state.start_modseq = state.start_modseq, None
            self._fresh.discard(folder)  # the next reading starts with a new SELECT
        return Batch(
            messages=messages,
            cursor=state.dump(),
            done=not rest,
            remaining=len(rest),
            reset=reset,
            flag_updates=flag_updates,
        )

    def count_since(self, folder: str, since: date) -> int | None:
        """Messages with an internal date from `since` on: ESEARCH's COUNT (RFC 4731) where
        offered, else the length of a plain SEARCH."""
        self._select(folder)
        if self.client.has_capability("ESEARCH"):
            imap = self.client._imap
            criteria = f"SINCE {since.strftime('%d-%b-%Y')}"
            typ, _data = self._call(imap.uid, "SEARCH", "RETURN", "(COUNT)", criteria)
            # imaplib keeps the answer, an untagged ESEARCH response, aside by its name.
            answer = b" ".join(d for d in imap.untagged_responses.pop("ESEARCH", []) if d)
            found = re.search(rb"\bCOUNT (\d+)", answer)
            if typ == "OK":
                return int(found.group(1)) if found else 0
        return len(self._call(self.client.search, ["SINCE", since]))

    def _unchanged(self, folder: str, state: _Cursor | None) -> bool:
        """True when STATUS shows nothing new since the cursor (P1): no SELECT needed, which
        on a large folder is the expensive part of an idle sync."""
        if state is None or state.modseq is None or state.start_modseq is not None:
            return False
        if state.unanswered:
            return False  # mail the server listed but could not serve yet is asked again
        if self._selected is not None and self._selected[0] == folder:
            return False  # STATUS of the selected folder may lag: RFC 3501 6.3.10
        status = self._call(
            self.client.folder_status, folder, [b"UIDVALIDITY", b"UIDNEXT", b"HIGHESTMODSEQ"]
        )
        return (
            int(status.get(b"UIDVALIDITY", -1)) == state.uidvalidity
            and int(status.get(b"UIDNEXT", 0)) - 1 <= state.last_uid
            and int(status.get(b"HIGHESTMODSEQ", -1)) == state.modseq
        )

    def _pending_uids(self, folder: str, state: _Cursor, uidnext: int, since: date) -> list[int]:
        key = (folder, state.uidvalidity)
        if key in self._pending:
            return self._pending[key]
        if uidnext and uidnext - 1 <= state.last_uid:
            return []  # nothing new: no SEARCH needed
        criteria: list[Any] = ["SINCE", since]
        if state.last_uid:
            criteria = ["UID", f"{state.last_uid + 1}:*", *criteria]
        uids = self._call(self.client.search, criteria)
        return sorted(uid for uid in uids if uid > state.last_uid)

    def _flag_changes(self, state: _Cursor, modseq: int | None) -> dict[str, tuple[str, ...]]:
        """Flags changed since the last full read, with CONDSTORE (RFC 7162) when offered.

        One `UID FETCH 1:<n> (UID FLAGS) (CHANGEDSINCE <modseq>)`: a short command however
        many messages changed ("mark all as read" changes every one), answered by the changed
        messages only, and read by the bulk reader (imapclient's parser costs ~10x).
        Messages after `start_uid` were read in this reading and came with their flags.
        """
        since = state.modseq
        if not (since and modseq and modseq > since and state.start_uid):
            return {}
        imap = self.client._imap
        items = f"(UID FLAGS) (CHANGEDSINCE {since})"
        changed: dict[str, tuple[str, ...]] = {}
        for line, _ in self._call(_fetch_responses, imap, f"1:{state.start_uid}", items):
            uid, flags = _UID.search(line), _FLAGS.search(line)
            if uid is not None and flags is not None and int(uid[1]) <= state.start_uid:
                changed[uid[1].decode()] = _kept_flags(flags[1])
        return changed

    def _fetch_answered(
        self, folder: str, state: _Cursor, chunk: list[int], *, last: bool
    ) -> list[MessageMeta]:
        """The metadata of `chunk`, and on a reading's last batch of the UIDs still waiting.
        A UID the server listed but did not answer for (some servers announce mail before
        they can serve it) is asked again after a NOOP, then at every reading of the folder
        for UNANSWERED_FOR: never skipped because it came early."""
        retry = [int(uid) for uid in state.unanswered if int(uid) not in chunk] if last else []
        wanted = sorted(chunk + retry)
        messages = self._fetch_meta(folder, wanted) if wanted else []
        missing = set(wanted) - {int(meta.ref) for meta in messages}
        if missing:
            self._call(self.client.noop)
            messages += self._fetch_meta(folder, sorted(missing))
            messages.sort(key=lambda meta: int(meta.ref))
            missing -= {int(meta.ref) for meta in messages}
        now = time.time()
        for uid in set(retry) - missing:
            state.unanswered.pop(str(uid))
        for uid in missing:
            first = state.unanswered.setdefault(str(uid), now)
            if now - first > UNANSWERED_FOR.total_seconds():
                del state.unanswered[str(uid)]  # gone for good (expunged meanwhile)
        return messages

    def _fetch_meta(self, folder: str, uids: list[int]) -> list[MessageMeta]:
        """Header metadata of `uids`, read straight off the connection.

        imapclient's generic response parser builds a Python object for every token and
        costs about 7x the transfer itself on large folders (see bench/), and imaplib's
        reader matches several patterns on every line; this bulk fetch reads each message's
        response as two lines around one literal (`_fetch_responses`): a regex over the
        short item list, and the header block to `parsing.parse_headers`.
        """
        imap = self.client._imap  # imapclient's underlying imaplib connection
        wanted = set(uids)
        metas: dict[int, MessageMeta] = {}
        for uid_set in uid_sets(uids, META_ITEMS_TEXT):
            for items, header in self._call(_fetch_responses, imap, uid_set):
                meta = meta_from_items(folder, items, header)
                if meta is not None and int(meta.ref) in wanted:
                    metas[int(meta.ref)] = meta
        return [metas[uid] for uid in sorted(metas)]

    def fetch_many(self, folder: str, refs: list[str]) -> dict[str, bytes]:
        """Raw messages by ref, in as few FETCHes as the command length allows, read with
        BODY.PEEK (flags untouched). Refs no longer on the server are missing."""
        self._select(folder)
        uids = [int(ref) for ref in refs]
        fetched = self._fetch_raw(uids)
        missing = [uid for uid in uids if uid not in fetched]
        if missing:
            # Mail that arrived after this session's SELECT (another session read its
            # headers) is unknown here until the server is polled: NOOP, then ask again.
            self._call(self.client.noop)
            fetched.update(self._fetch_raw(missing))
        # A message expunged by another session can still answer, with a NIL body.
        return {str(uid): raw for uid, raw in fetched.items() if raw is not None}

    def _fetch_raw(self, uids: list[int]) -> dict[int, bytes | None]:
        """BODY[] of `uids` by UID (None for a NIL body); UIDs that do not answer are missing."""
        imap = self.client._imap
        wanted = set(uids)
        fetched: dict[int, bytes | None] = {}
        for uid_set in uid_sets(uids, RAW_ITEMS_TEXT):
            for uid, data in self._call(_uid_fetch, imap, uid_set, RAW_ITEMS_TEXT).items():
                if uid in wanted and b"BODY[]" in data:
                    body = data[b"BODY[]"]
                    fetched[uid] = None if body is None else bytes(body)
        return fetched

    def updated_credentials(self) -> dict[str, Any] | None:
        return None  # a password does not change by itself

    # -- sending ----------------------------------------------------------------------
    def send(
        self,
        raw: bytes,
        sender: str,
        recipients: list[str],
        on_accepted: Callable[[], None] | None = None,
    ) -> None:
        """Submit a message through the mailbox's SMTP server (bcc only in `recipients`)."""
        connection = self.smtp()
        try:
            try:
                refused = connection.sendmail(sender, recipients, raw)
                if on_accepted is not None:
                    on_accepted()  # the server said 250 to the message: before the QUIT
            except smtplib.SMTPRecipientsRefused as exc:
                raise BadMessage(
                    "The SMTP server refused every recipient: " + _smtp_refusals(exc.recipients)
                ) from None
            except smtplib.SMTPSenderRefused as exc:
                raise BadMessage(
                    f"The SMTP server refused to send as {sender}: {_smtp_text(exc.smtp_error)}"
                ) from None
            except smtplib.SMTPDataError as exc:
                raise BadMessage(
                    f"The SMTP server refused the message: {_smtp_text(exc.smtp_error)}"
                ) from None
            except smtplib.SMTPException as exc:
                raise ServerUnavailable(f"Sending failed: {exc}") from None
            except OSError as exc:
                s = self.settings
                raise describe_network_error(exc, s.smtp_host, s.smtp_port) from None
        finally:
            _say_goodbye(connection)
        if refused:
            # Sent to the others: reported, not raised (a retry would send them a copy again).
            raise PartlySent("Not delivered to " + _smtp_refusals(refused))

    def file_in_sent(self, folder: str, raw: bytes, message_id: str) -> bool:
        """Copy a sent message into the sent folder with \\Seen (SPEC L6: the one write),
        unless the server filed it there itself. True if this call filed it."""
        if self.find_sent(folder, message_id):
            return False
        self._call(self.client.append, folder, raw, flags=["\\Seen"])
        return True

    def find_sent(self, folder: str, message_id: str) -> bool:
        """`UID SEARCH HEADER Message-ID <id>` in the sent folder, selected read-only. Only
        what was filed is found: a message the SMTP server accepted just before the worker
        died, and that nobody appended, is not (the reconciler decides what that means)."""
        self._selected = self._watched = None
        self._call(self.client.select_folder, folder, readonly=True)
        return bool(self._call(self.client.search, ["HEADER", "Message-ID", message_id]))


def _say_goodbye(connection: smtplib.SMTP) -> None:
    """QUIT, whose answer (or its absence) never undoes what the server accepted before it:
    a server that takes the message and then hangs costs QUIT_WAIT seconds, not a failed
    send that a retry would send twice."""
    with contextlib.suppress(smtplib.SMTPException, OSError):
        if connection.sock is not None:
            connection.sock.settimeout(min(connection.timeout, QUIT_WAIT))
        connection.quit()
    connection.close()


def _smtp_text(error: bytes | str) -> str:
    return error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error)


def _smtp_refusals(refused: dict[str, tuple[int, bytes]]) -> str:
    return "; ".join(
        f"{address} ({code} {_smtp_text(text)})" for address, (code, text) in refused.items()
    )


# \Recent belongs to one IMAP session, not to the message: it is not kept.
_SESSION_FLAGS = {"\\Recent"}


_UID = re.compile(rb"\bUID (\d+)")
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")
_INTERNALDATE = re.compile(rb'\bINTERNALDATE "([^"]+)"')
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")


_MONTHS = {
    month.encode(): number
    for number, month in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1
    )
}
_INTERNALDATE_PARTS = re.compile(
    rb" ?(\d{1,2})-(\w{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"
)


def parse_internaldate(value: bytes) -> datetime | None:
    """An IMAP INTERNALDATE ("26-Nov-2026 10:00:00 +0100") in UTC, without strptime's cost."""
    match = _INTERNALDATE_PARTS.fullmatch(value)
    if match is None or match.group(2) not in _MONTHS:
        return None
    day, month, year, hour, minute, second, sign, off_h, off_m = match.groups()
    offset = timedelta(hours=int(off_h), minutes=int(off_m)) * (-1 if sign == b"-" else 1)
    try:
        local = datetime(int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second),
                         tzinfo=UTC)  # fmt: skip
    except ValueError:
        return None
    return local - offset


def uid_sets(uids: Iterable[int], items: str) -> list[str]:
    """`uids` (any order, repeats allowed) as compact IMAP sequence sets ("1:500,502,510:900"),
    ascending, and as many as it takes for each `<tag> UID FETCH <set> <items>` line to stay
    within MAX_COMMAND_BYTES: the one way UIDs go into a command (STYLE 4b)."""
    room = MAX_COMMAND_BYTES - TAG_BYTES - len(f"UID FETCH  {items}\r\n")
    ordered = sorted(set(uids))
    if not ordered:
        return []
    sets: list[str] = []
    parts: list[str] = []
    used = -1  # the first part has no comma before it
    start = previous = ordered[0]
    for uid in [*ordered[1:], None]:
        if uid == previous + 1:
            previous = uid
            continue
        part = str(start) if start == previous else f"{start}:{previous}"
        if parts and used + 1 + len(part) > room:
            sets.append(",".join(parts))
            parts, used = [], -1
        parts.append(part)
        used += 1 + len(part)
        if uid is not None:
            start = previous = uid
    sets.append(",".join(parts))
    return sets


_fetch_tags = itertools.count(1)


def _fetch_responses(
    imap: imaplib.IMAP4, uids: str, items: str = META_ITEMS_TEXT
) -> list[tuple[bytes, bytes]]:
    """(item list, first literal) of each message of a `UID FETCH <uids> <items>`, META_ITEMS
    by default (the literal is then the header block).

    Sent and read with imaplib's public send/readline/read, under a tag of our own (imaplib's
    are its 4-letter prefix and a number). A response is one line, or a line that ends in a
    literal `{n}` and its continuation; the first literal is the header block (an empty
    block may come as ""). Untagged responses of other kinds (EXISTS, EXPUNGE) are skipped.
    """
    tag = b"TL%d" % next(_fetch_tags)
    imap.send(b"%s UID FETCH %s %s\r\n" % (tag, uids.encode(), items.encode()))
    responses = []
    while True:
        line = imap.readline()
        if not line:
            raise imaplib.IMAP4.abort("the server closed the connection during a FETCH")
        if line.startswith(tag + b" "):
            if line[len(tag) + 1 : len(tag) + 3] != b"OK":
                raise imaplib.IMAP4.error(line.decode("utf-8", "replace").strip())
            return responses
        header = None
        while line.endswith(b"}\r\n"):
            start = line.rindex(b"{")
            literal = imap.read(int(line[start + 1 : -3]))
            header = literal if header is None else header
            line = line[:start] + imap.readline()
        if line.startswith(b"* ") and b" FETCH " in line[:40]:
            responses.append((line, header or b""))


def _uid_fetch(imap: imaplib.IMAP4, uids: str, items: str) -> dict[int, dict[bytes, Any]]:
    """`UID FETCH <uids> <items>` through imaplib, parsed by imapclient's parser, by UID.
    (imapclient's own fetch takes only lists of single UIDs, which it sends uncompacted.)"""
    typ, data = imap.uid("FETCH", uids, items)
    if typ != "OK":
        raise imaplib.IMAP4.error(f"FETCH refused: {data!r}")
    return parse_fetch_response(data, True, True)  # type: ignore[no-any-return]


# The item list as Dovecot and most servers order it, read by one match; any other order
# by the item patterns above.
_ITEMS_IN_ORDER = re.compile(
    rb'\* \d+ FETCH \(UID (\d+) FLAGS \(([^)]*)\) INTERNALDATE "([^"]+)" RFC822\.SIZE (\d+) '
)


@functools.lru_cache(maxsize=256)
def _kept_flags(flags: bytes) -> tuple[str, ...]:
    # A mailbox has few distinct sets of flags.
    return tuple(sorted(set(flags.decode().split()) - _SESSION_FLAGS))


def meta_from_items(folder: str, items: bytes, header: bytes) -> MessageMeta | None:
    """MessageMeta from one FETCH response's item list and header block (None if no UID)."""
    in_order = _ITEMS_IN_ORDER.match(items)
    if in_order is not None:
        uid, flags, internaldate, size = in_order.groups()
    else:
        found = [pattern.search(items) for pattern in (_UID, _FLAGS, _INTERNALDATE, _SIZE)]
        if found[0] is None:
            return None
        uid, flags, internaldate, size = (m.group(1) if m else None for m in found)
    fields = parse_headers(header)
    return MessageMeta(
        folder,
        uid.decode(),
        fields.message_id,
        fields.in_reply_to,
        fields.references,
        fields.from_name,
        fields.from_address,
        fields.to,
        fields.cc,
        fields.subject,
        fields.sent_at,
        parse_internaldate(internaldate) if internaldate else None,
        int(size) if size else 0,
        _kept_flags(flags) if flags is not None else (),
        tuple(fields.problems),
    )


def find_sent_folder(folders: tuple[FolderInfo, ...]) -> str | None:
    """RFC 6154 `\\Sent`, else a name containing "sent", else a common localised name."""
    for folder in folders:
        if "\\Sent" in folder.attributes:
            return folder.name
    for folder in folders:
        if "sent" in folder.name.lower().rsplit("/", 1)[-1]:
            return folder.name
    by_name = {folder.name.lower().rsplit("/", 1)[-1]: folder.name for folder in folders}
    for name in LOCALISED_SENT_NAMES:
        if name in by_name:
            return by_name[name]
    return None


def pop3_explanation(host: str) -> str:
    """SPEC C2: why POP3 cannot work, and what to ask for."""
    return (
        f"{host} looks like a POP3 server. Threadline needs IMAP: it must be able to read your "
        "mail on the server at any time, and POP3 moves mail off the server onto one device, "
        "while IMAP keeps it on the server. Ask your IT team to enable IMAP for your mailbox "
        "and for its settings: the IMAP host and port (usually 993 with SSL/TLS) and the SMTP "
        "host and port (usually 587 with STARTTLS or 465 with SSL/TLS)."
    )
