"""Push from Gmail and Microsoft 365: replies on the timeline within seconds without polling.

The watcher that holds a Gmail or Microsoft 365 mailbox keeps a push subscription for it
(`keep_push`: Gmail's users.watch publishing to our Pub/Sub topic, a Graph change-notification
subscription), renewed before it expires. The service then calls our webhook (sync/views.py)
when the mailbox changes; the webhook checks the call is genuine (Gmail: the push
subscription's OIDC token; Graph: the subscription's clientState) and `nudge`s the mailbox:
its watcher syncs it within a second, or a worker does when no watcher holds it. The push
only says "something changed": the sync reads what, as any sync does, so a lost, repeated or
forged push can cost a sync, never a reply.
"""

from __future__ import annotations

import hmac
import logging
from datetime import datetime

from django.conf import settings
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from mailboxes.crypto import Secret
from mailboxes.models import Mailbox
from mailboxes.providers import gmail, graph
from mailboxes.providers.base import MailProvider, PushRefused
from mailboxes.services import queue_sync

from .models import MailboxWatch, PushSubscription

logger = logging.getLogger(__name__)

CERTS_CACHE_KEY = "sync:google-push-certs"
# Graph sends notifications in batches; more than this in one request is not Graph.
MAX_NOTIFICATIONS = 1000


def keep_push(mailbox_id: int, provider: MailProvider) -> bool:
    """Have the mailbox's service push its changes, renewing the subscription when it
    expires soon (or Graph asked for it); whether push is on. Raises ProviderError."""
    row = PushSubscription.objects.filter(mailbox_id=mailbox_id).first()
    current = row.state.reveal() if row is not None else None
    state = provider.watch_changes(current)
    if state is None:
        if row is not None:
            row.delete()
        return False
    if state is not current:
        PushSubscription.objects.update_or_create(
            mailbox_id=mailbox_id,
            defaults={
                "state": Secret(state),
                "subscription_id": state.get("id", ""),
                "expires_at": datetime.fromisoformat(state["expires_at"]),
            },
        )
    return True


def nudge(mailbox_ids: list[int]) -> None:
    """These mailboxes changed: the watchers holding them sync them within a second
    (sync/watcher.py reads `changed_at`), and a worker syncs the others."""
    now = timezone.now()
    watched = MailboxWatch.objects.filter(mailbox_id__in=mailbox_ids, expires_at__gt=now)
    held = set(watched.values_list("mailbox_id", flat=True))
    watched.filter(mailbox_id__in=held).update(changed_at=now)
    for mailbox_id in sorted(set(mailbox_ids) - held):
        queue_sync(mailbox_id)


def gmail_pushed(authorization: str, body: bytes) -> int:
    """A Pub/Sub push from Gmail: verified, then the mailboxes with the address it names are
    nudged; how many. Raises PushRefused."""
    if not settings.CRM_GMAIL_PUSH_TOPIC:
        raise PushRefused("Gmail push is not configured")
    audience = settings.CRM_GMAIL_PUSH_AUDIENCE or (
        settings.CRM_SITE_URL + reverse("sync:push_gmail")
    )
    account = settings.CRM_GMAIL_PUSH_SERVICE_ACCOUNT

    def read(certs: dict[str, str]) -> tuple[str, str]:
        return gmail.read_push(
            authorization, body, certs=certs, audience=audience, service_account=account
        )

    try:
        address, _history = read(_google_certs())
    except PushRefused:
        # Google may have started signing with a key it published after our copy was read.
        if not cache.add(f"{CERTS_CACHE_KEY}:reread", True, timeout=60):
            raise
        address, _history = read(_google_certs(fresh=True))
    ids = list(
        Mailbox.objects.connected()
        .filter(kind=Mailbox.Kind.GMAIL, email_address__iexact=address)
        .values_list("pk", flat=True)
    )
    nudge(ids)
    return len(ids)


def _google_certs(*, fresh: bool = False) -> dict[str, str]:
    certs = None if fresh else cache.get(CERTS_CACHE_KEY)
    if certs is None:
        oauth = settings.CRM_OAUTH["gmail"]
        certs, max_age = gmail.fetch_push_certs(oauth["certs_uri"], settings.CRM_MAIL_TIMEOUT)
        cache.set(CERTS_CACHE_KEY, certs, timeout=min(max_age, 3600))
    return certs


def graph_notified(body: bytes) -> tuple[int, int]:
    """Graph's change or lifecycle notifications: each whose subscription and clientState
    match one of ours nudges its mailbox (a lifecycle event first asks for a renewal or a
    new subscription); (accepted, ignored). Raises PushRefused for a body that is not one."""
    items = graph.read_notifications(body)
    if len(items) > MAX_NOTIFICATIONS:
        raise PushRefused(f"{len(items)} notifications in one request")
    named = {item.subscription_id for item in items} - {""}
    rows = {row.subscription_id: row
            for row in PushSubscription.objects.filter(subscription_id__in=named)}  # fmt: skip
    accepted: set[int] = set()
    ignored = 0
    for item in items:
        row = rows.get(item.subscription_id)
        secret = row.state.reveal().get("secret", "") if row is not None else ""
        if not secret or not hmac.compare_digest(secret, item.client_state):
            ignored += 1
            continue
        if item.event == "subscriptionRemoved":
            PushSubscription.objects.filter(pk=row.pk).delete()  # the watcher makes another
        elif item.event == "reauthorizationRequired":
            row.state = Secret({**row.state.reveal(), "renew": True})  # the watcher renews it
            row.save(update_fields=["state"])
        accepted.add(row.mailbox_id)
    if ignored:
        logger.warning("Graph notifications ignored (unknown subscription or clientState): %s",
                       ignored)  # fmt: skip
    nudge(sorted(accepted))
    return len(accepted), ignored
