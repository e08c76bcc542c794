"""One owner per mailbox: the sync lease (holder, epoch, expiry) kept on the mailbox's row.

A sync claims the lease before it reads, renews it with every batch it writes, and releases
it at the end. Each claim sets a new epoch, and every batch checks, in its own transaction
and before it writes anything, that its epoch still holds (fencing): a sync that was paused
or lost its lease (it expired and another took it, or a resync forgot the checkpoints) cannot
store a batch or move a checkpoint. A process that dies holding the lease holds it only until
it expires.
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import timedelta

from django.db import models
from django.utils import timezone

from .models import Mailbox

# Long enough for one batch (2,000 messages read, matched and written); renewed per batch.
LEASE_DURATION = timedelta(minutes=5)


class LeaseLost(Exception):
    """Another sync owns the mailbox now (or a resync fenced this one off): stop, write nothing."""


def holder_name() -> str:
    """Who holds a lease, for the mailbox page and the logs: host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"[:200]


def _new_epoch() -> int:
    # Fencing needs each claim's epoch to differ from every other's, not to grow: a random
    # 62-bit number does, and is known without reading it back (one query less per sync).
    return secrets.randbits(62) + 1


def claim_lease(mailbox_id: int) -> int | None:
    """Take the mailbox's lease if nobody holds it (or its holder's has expired); return the
    new epoch, or None when another sync holds it. One conditional UPDATE: atomic on
    PostgreSQL and SQLite alike."""
    now = timezone.now()
    epoch = _new_epoch()
    claimed = (
        Mailbox.objects.filter(pk=mailbox_id)
        .filter(models.Q(lease_expires_at__isnull=True) | models.Q(lease_expires_at__lte=now))
        .update(
            lease_holder=holder_name(),
            lease_epoch=epoch,
            lease_expires_at=now + LEASE_DURATION,
        )
    )
    return epoch if claimed else None


def hold_lease(mailbox_id: int, epoch: int) -> None:
    """In the caller's transaction, before it writes: check that `epoch` still holds the lease
    and renew it; raise LeaseLost otherwise. The UPDATE locks the mailbox row until the
    transaction ends, so no one can claim the lease in between."""
    now = timezone.now()
    renewed = Mailbox.objects.filter(
        pk=mailbox_id, lease_epoch=epoch, lease_expires_at__gt=now
    ).update(lease_expires_at=now + LEASE_DURATION)
    if not renewed:
        raise LeaseLost(f"mailbox {mailbox_id}: the sync lease of epoch {epoch} no longer holds")


def release_lease(mailbox_id: int, epoch: int) -> None:
    """Give the lease back, if this epoch still holds it."""
    Mailbox.objects.filter(pk=mailbox_id, lease_epoch=epoch).update(
        lease_holder="", lease_expires_at=None
    )


def fence_off(mailbox_id: int) -> None:
    """End whatever lease is held: the running sync, if any, stops before its next batch."""
    Mailbox.objects.filter(pk=mailbox_id).update(
        lease_holder="", lease_epoch=_new_epoch(), lease_expires_at=None
    )
