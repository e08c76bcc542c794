"""Connecting mailboxes, and what the rest of the project does through them: reading raw
copies, sending, the state of a failing or disconnected mailbox. Providers are opened here
(`open_provider`); the sync engine (sync/) drives them through the same function."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.db import models, transaction
from django.urls import reverse
from django.utils import timezone
from django_q.tasks import async_task

from crm_site.emails import send_templated_email
from teams.models import Team

from .crypto import Secret
from .leases import fence_off
from .models import Folder, Mailbox, MessageBody, MessageMeta, QuarantinedMessage
from .providers import get_provider
from .providers.base import (
    AuthFailed,
    MailProvider,
    PartlySent,
    ProviderConfig,
    ProviderError,
    Throttled,
)

logger = logging.getLogger(__name__)

# A connection check runs inside a web request: a server that does not answer must not hold
# the worker for the whole CRM_MAIL_TIMEOUT (syncs, in the task worker, keep that).
CONNECT_CHECK_TIMEOUT = 10

# Attempts to connect a mailbox through the form, per user and per team in a window. Each one
# reaches out to a host and port the user chose: bounded, the form is no network scanner.
CONNECT_ATTEMPTS_PER_USER = 10
CONNECT_ATTEMPTS_PER_TEAM = 30
CONNECT_ATTEMPTS_WINDOW = 10 * 60  # seconds


class ConnectError(Exception):
    """Connecting failed; the message says why in plain words and nothing was saved."""


class TooManyAttempts(ConnectError):
    """Too many connection attempts lately: nothing was tried; `retry_after` in seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def provider_config(mailbox: Mailbox) -> ProviderConfig:
    return _config(
        mailbox.kind, mailbox.email_address, mailbox.settings, mailbox.credentials.reveal()
    )


def push_settings(kind: str) -> dict[str, Any]:
    """Where a provider asks its service to push news of a mailbox's changes: Gmail publishes
    to the Pub/Sub topic, whose push subscription calls our webhook; Graph calls our webhook
    itself. Empty when push is not configured for the kind (the watchers poll)."""
    if kind == "gmail" and settings.CRM_GMAIL_PUSH_TOPIC:
        return {"topic": settings.CRM_GMAIL_PUSH_TOPIC}
    if kind == "graph" and settings.CRM_GRAPH_PUSH:
        return {
            "notification_url": settings.CRM_SITE_URL + reverse("sync:push_graph"),
            "lifecycle_url": settings.CRM_SITE_URL + reverse("sync:push_graph_lifecycle"),
        }
    return {}


def check_config(
    kind: str, email_address: str, provider_settings: dict[str, Any], secret: dict[str, Any]
) -> ProviderConfig:
    """The config of a connection check (connect_mailbox): a sync's, with a timeout short
    enough for a web request."""
    timeout = min(settings.CRM_MAIL_TIMEOUT, CONNECT_CHECK_TIMEOUT)
    return _config(kind, email_address, provider_settings, secret, timeout=timeout)


def _config(
    kind: str,
    email_address: str,
    provider_settings: dict[str, Any],
    secret: dict[str, Any],
    *,
    timeout: float | None = None,
) -> ProviderConfig:
    return ProviderConfig(
        email_address=email_address,
        settings=provider_settings,
        credentials=secret,
        ca_file=settings.CRM_MAIL_CA_FILE,
        allow_plaintext_loopback=settings.CRM_ALLOW_PLAINTEXT_LOOPBACK,
        allow_private_hosts=settings.CRM_ALLOW_PRIVATE_MAIL_HOSTS,
        timeout=settings.CRM_MAIL_TIMEOUT if timeout is None else timeout,
        oauth=settings.CRM_OAUTH.get(kind, {}),
        push=push_settings(kind),
    )


def _count_attempt(key: str) -> tuple[int, int]:
    """Count one attempt under `key` in its window: (attempts so far in the window, seconds
    until the window ends). The window starts at the key's first attempt."""
    now = time.time()
    window = CONNECT_ATTEMPTS_WINDOW
    cache.add(f"{key}:start", now, window)
    cache.add(f"{key}:count", 0, window)
    try:
        # Atomic in Redis; the file cache (one machine, no Redis) may miss a count when two
        # attempts race: a soft limit there, which is enough to stop a scan.
        count = cache.incr(f"{key}:count")
    except ValueError:  # the window ended between the two calls
        cache.set(f"{key}:count", 1, window)
        count = 1
    start = cache.get(f"{key}:start", now)
    return count, max(1, math.ceil(start + window - now))


def _wait(seconds: int) -> str:
    minutes = math.ceil(seconds / 60)
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


def count_connect_attempt(*, team: Team, user: AbstractBaseUser) -> None:
    """Count an attempt by `user` to connect a mailbox (each reaches a mail server); raise
    TooManyAttempts, before anything is tried, once the user or the team is over its limit
    in the window. A user over the limit does not use up the team's attempts."""
    attempts, wait = _count_attempt(f"mailboxes:connect-attempts:user:{user.pk}")
    if attempts > CONNECT_ATTEMPTS_PER_USER:
        raise TooManyAttempts(
            "You have tried to connect a mailbox too many times in a short while: wait "
            f"{_wait(wait)}, then try again.",
            wait,
        )
    attempts, wait = _count_attempt(f"mailboxes:connect-attempts:team:{team.pk}")
    if attempts > CONNECT_ATTEMPTS_PER_TEAM:
        raise TooManyAttempts(
            "Your team has tried to connect mailboxes too many times in a short while: wait "
            f"{_wait(wait)}, then try again.",
            wait,
        )


def save_credentials(mailbox: Mailbox, updated: dict[str, Any] | None) -> None:
    """Keep refreshed OAuth tokens (encrypted, SPEC S1); Microsoft rotates refresh tokens,
    so the newest must always be kept."""
    if updated:
        mailbox.credentials = Secret({**mailbox.credentials.reveal(), **updated})
        mailbox.save(update_fields=["credentials"])


@contextmanager
def open_provider(mailbox: Mailbox) -> Iterator[MailProvider]:
    """A connected provider for the mailbox; tokens it refreshed are saved afterwards."""
    provider = get_provider(mailbox.kind, provider_config(mailbox))
    try:
        with provider:
            yield provider
    finally:
        save_credentials(mailbox, provider.updated_credentials())


def connect_mailbox(
    *,
    team: Team,
    owner: AbstractBaseUser,
    kind: str,
    email_address: str,
    provider_settings: dict[str, Any],
    credentials: dict[str, Any],
) -> Mailbox:
    """Validate a connection for real (SPEC C3) and save the mailbox with its folders.

    Connecting the same address again replaces its settings and credentials (reconnect),
    keeping its sync checkpoints. Servers on non-public addresses are refused unless
    CRM_ALLOW_PRIVATE_MAIL_HOSTS. Raises ConnectError; then nothing is saved.
    """
    config = check_config(kind, email_address, provider_settings, credentials)
    try:
        with get_provider(kind, config) as provider:
            found = provider.check()
            credentials = {**credentials, **(provider.updated_credentials() or {})}
    except ProviderError as exc:
        raise ConnectError(exc.message) from None
    with transaction.atomic():
        mailbox = (
            Mailbox.objects.for_team(team)
            .filter(owner=owner, email_address__iexact=email_address)
            .first()
        ) or Mailbox(team=team, owner=owner, email_address=email_address.lower())
        mailbox.kind = kind
        mailbox.settings = provider_settings
        mailbox.credentials = Secret(credentials)
        mailbox.state = Mailbox.State.CONNECTED
        mailbox.last_error = ""
        # Reconnected: a fresh start for retries and for the next disconnection notice.
        mailbox.disconnect_cause = ""
        mailbox.disconnected_at = mailbox.notified_at = None
        mailbox.failures = 0
        mailbox.failing_since = mailbox.retry_at = None
        mailbox.save()
        wanted = {found.inbox: Folder.Role.INBOX}
        if found.sent_folder:
            wanted[found.sent_folder] = Folder.Role.SENT
        for name, role in wanted.items():
            Folder.objects.update_or_create(
                mailbox=mailbox, name=name, defaults={"team": team, "role": role}
            )
        mailbox.folders.exclude(name__in=wanted).delete()
    return mailbox


def quarantine(meta: MessageMeta, exc: BaseException) -> None:
    """Set a synced message that could not be logged aside, with the reason (the caller, the
    matcher, goes on with the rest of its batch). Failing again counts one more attempt."""
    reason = f"{type(exc).__name__}: {exc}"[:2000]
    row, created = QuarantinedMessage.objects.get_or_create(
        folder_id=meta.folder_id,
        ref=meta.ref,
        defaults={
            "team_id": meta.team_id,
            "mailbox_id": meta.mailbox_id,
            "message_id": meta.message_id,
            "subject": meta.subject,
            "from_address": meta.from_address,
            "reason": reason,
        },
    )
    if not created:
        QuarantinedMessage.objects.filter(pk=row.pk).update(
            attempts=models.F("attempts") + 1, reason=reason, failed_at=timezone.now()
        )


# The longest wait between retries of a failing server.
MAX_RETRY_DELAY = timedelta(hours=4)


# The sync engine's task (sync/tasks.py), queued by name: the engine imports this app.
SYNC_TASK = "sync.tasks.sync_mailbox_task"


def queue_sync(mailbox_id: int) -> bool:
    """Queue a sync of the mailbox unless one is already queued and not yet started; return
    whether this call queued it. A queued sync that has not started within the broker's
    retry window is taken as lost, and may be queued again."""
    now = timezone.now()
    lost = now - timedelta(seconds=int(settings.Q_CLUSTER["retry"]))  # type: ignore[call-overload]
    claimed = (
        Mailbox.objects.filter(pk=mailbox_id)
        .filter(models.Q(sync_queued_at__isnull=True) | models.Q(sync_queued_at__lt=lost))
        .update(sync_queued_at=now)
    )
    if claimed:
        async_task(SYNC_TASK, mailbox_id, group="sync")
    return bool(claimed)


def resync_mailbox(mailbox: Mailbox) -> None:
    """Read the mailbox again from scratch, in the background (repairs a drift): its
    checkpoints and metadata are forgotten, a running sync is fenced off, and a sync queued.
    Email on timelines stays, and is never logged twice."""
    reset_sync_state(mailbox)
    queue_sync(mailbox.pk)


def start_queued_sync(mailbox_id: int) -> None:
    """The queued sync has started: a later request queues another one."""
    Mailbox.objects.filter(pk=mailbox_id).update(sync_queued_at=None)


def retry_delay(failures: int) -> timedelta:
    """Exponential backoff from the sync interval: 5, 10, 20 min ... up to 4 hours."""
    base = timedelta(minutes=settings.CRM_SYNC_INTERVAL_MINUTES)
    return min(base * 2 ** min(failures - 1, 16), MAX_RETRY_DELAY)


def record_failure(mailbox: Mailbox, exc: ProviderError) -> None:
    """Note a failed sync or send (SPEC D1): an authentication failure or revoked access
    disconnects at once; anything else is retried with backoff and disconnects once the
    server has kept failing for CRM_DISCONNECT_AFTER_HOURS. The owner is told once."""
    now = timezone.now()
    with transaction.atomic():
        locked = Mailbox.objects.select_for_update().get(pk=mailbox.pk)
        locked.last_error = exc.message
        locked.last_error_at = now
        locked.failures += 1
        if isinstance(exc, Throttled):
            # The service asked to slow down: wait as long as it says; never a disconnect.
            locked.retry_at = now + timedelta(seconds=exc.retry_after)
            locked.save()
            mailbox.refresh_from_db()
            return
        locked.failing_since = locked.failing_since or now
        giving_up = now - locked.failing_since >= timedelta(
            hours=settings.CRM_DISCONNECT_AFTER_HOURS
        )
        if locked.state == Mailbox.State.CONNECTED and (exc.disconnects or giving_up):
            locked.state = Mailbox.State.DISCONNECTED
            causes = set(Mailbox.Cause.values)
            locked.disconnect_cause = exc.cause if exc.cause in causes else Mailbox.Cause.OTHER
            locked.disconnected_at = now
            locked.retry_at = None
            logger.warning("mailbox %s disconnected: %s", locked.pk, locked.disconnect_cause)
        else:
            locked.retry_at = now + retry_delay(locked.failures)
        locked.save()
        if locked.state == Mailbox.State.DISCONNECTED and locked.notified_at is None:
            transaction.on_commit(lambda: notify_disconnected(locked.pk))
    mailbox.refresh_from_db()


def notify_disconnected(mailbox_id: int) -> None:
    """Email the owner that the mailbox is disconnected, once per disconnection (SPEC D2)."""
    with transaction.atomic():
        mailbox = (
            Mailbox.objects.select_for_update()
            .select_related("owner")
            .filter(pk=mailbox_id, state=Mailbox.State.DISCONNECTED, notified_at__isnull=True)
            .first()
        )
        if mailbox is None or not mailbox.owner.email:
            return
        mailbox.notified_at = timezone.now()
        mailbox.save(update_fields=["notified_at"])
        send_templated_email(
            "mailbox_disconnected",
            [mailbox.owner.email],
            {
                "mailbox": mailbox,
                "link": f"{settings.CRM_SITE_URL}{mailbox.get_absolute_url()}",
            },
        )


# Raw messages read per FETCH when several are needed: bounds memory for large mail.
FETCH_MANY_BYTES = 20 * 1024 * 1024


def fetch_bodies(
    metas: list[MessageMeta], provider: MailProvider, ready: dict[str, bytes] | None = None
) -> dict[int, bytes]:
    """Raw messages by MessageMeta pk: from the body cache, else from `ready` (read ahead,
    by ref) or the server (in as few requests as their sizes allow), and cached (R3).
    Messages gone from the server are missing from the result."""
    if not metas:
        return {}
    cached = {
        body.meta_id: bytes(body.raw)
        for body in MessageBody.objects.filter(meta__in=[m.pk for m in metas])
    }

    def keep(group: list[MessageMeta], raws: dict[str, bytes]) -> None:
        bodies = [
            MessageBody(team_id=m.team_id, meta=m, raw=raws[m.ref]) for m in group if m.ref in raws
        ]
        MessageBody.objects.bulk_create(bodies, ignore_conflicts=True)
        cached.update({body.meta_id: bytes(body.raw) for body in bodies})

    ready = ready or {}
    keep([m for m in metas if m.pk not in cached], ready)
    groups: list[list[MessageMeta]] = []
    size = 0
    for meta in (m for m in metas if m.pk not in cached):
        if not groups or size + meta.size > FETCH_MANY_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(meta)
        size += meta.size
    for group in groups:
        keep(group, provider.fetch_many(group[0].folder.name, [m.ref for m in group]))
    return cached


def reset_sync_state(mailbox: Mailbox) -> None:
    """Forget every checkpoint and the metadata read so far: the next sync starts over.

    Engagements are untouched, and their Message-IDs keep re-read mail from being logged twice.
    """
    with transaction.atomic():
        # A sync running now read from the checkpoints forgotten here: fence it off, so it
        # stops before writing another batch.
        fence_off(mailbox.pk)
        Mailbox.objects.filter(pk=mailbox.pk).update(drift_checked_at=None)
        MessageMeta.objects.filter(mailbox=mailbox).delete()
        mailbox.folders.update(cursor="", synced_count=0, total_count=0, last_synced_at=None)


def delete_mailbox(*, mailbox: Mailbox) -> None:
    """Forget a mailbox, its credentials, metadata and cached bodies; timelines keep their
    engagements (caller has checked the user owns it)."""
    mailbox.delete()


def send_message(
    mailbox: Mailbox,
    raw: bytes,
    *,
    sender: str,
    recipients: list[str],
    message_id: str,
    on_accepted: Callable[[], None] | None = None,
) -> str:
    """Send through the mailbox and file the copy in its sent folder (SPEC L6).

    Raises ProviderError if nothing was sent. Returns a note when it was sent but not to
    everyone, or when the sent-folder copy could not be filed; else "". `on_accepted` is
    called the moment the server has accepted the message (MailProvider.send).
    """
    if mailbox.state != Mailbox.State.CONNECTED:
        raise AuthFailed(
            f"{mailbox.email_address} is disconnected: reconnect it on the Mailboxes page, "
            "then retry."
        )
    notes = []
    sent_folder = mailbox.folders.filter(role=Folder.Role.SENT).first()
    with open_provider(mailbox) as provider:
        try:
            provider.send(raw, sender, recipients, on_accepted)
        except PartlySent as exc:
            notes.append(exc.message)
        except ProviderError as exc:
            if exc.disconnects:
                record_failure(mailbox, exc)  # a changed password shows on sending too
            raise
        if sent_folder is None:
            notes.append("Your mailbox has no sent folder, so no copy was filed.")
        else:
            try:
                provider.file_in_sent(sent_folder.name, raw, message_id)
            except ProviderError as exc:
                logger.warning("filing a sent copy for mailbox %s failed: %s", mailbox.pk, exc)
                notes.append(f"The copy could not be filed in {sent_folder.name}: {exc.message}")
    return " ".join(notes)


def file_sent_copy(mailbox: Mailbox, raw: bytes, message_id: str) -> str:
    """File the copy of a message the server accepted in the sent folder, unless it is
    there already; return a note when it could not be filed, else "". Raises ProviderError
    when the mailbox cannot be reached; a failure that needs the owner disconnects it."""
    sent_folder = mailbox.folders.filter(role=Folder.Role.SENT).first()
    if sent_folder is None:
        return "Your mailbox has no sent folder, so no copy was filed."
    with open_provider(mailbox) as provider:
        try:
            provider.file_in_sent(sent_folder.name, raw, message_id)
        except ProviderError as exc:
            if exc.disconnects:
                record_failure(mailbox, exc)
            raise
    return ""


def find_sent_message(mailbox: Mailbox, message_id: str) -> bool | None:
    """Whether the mailbox's sent folder holds a message with this Message-ID; None when it
    cannot tell (the mailbox has no sent folder). Raises ProviderError; a failure that needs
    the owner disconnects the mailbox, as on sending."""
    sent_folder = mailbox.folders.filter(role=Folder.Role.SENT).first()
    if sent_folder is None:
        return None
    with open_provider(mailbox) as provider:
        try:
            return provider.find_sent(sent_folder.name, message_id)
        except ProviderError as exc:
            if exc.disconnects:
                record_failure(mailbox, exc)
            raise
