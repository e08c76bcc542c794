"""One owner per mailbox: the sync lease (holder, epoch, expiry) in a SyncLease row.

A sync claims the lease before it reads, renews it with every batch it writes (and, on
PostgreSQL, from a keeper thread every third of the lease while it runs: `kept`), and
releases it at the end. Each claim sets a new epoch, and every batch checks, in its own transaction
and before it writes anything, that its epoch still holds (fencing): a sync whose lease was
taken (it expired and another sync claimed it, or a resync fenced it off) cannot store a
batch or move a checkpoint. A process that dies holding the lease holds it only until it
expires (a minute by default), so another process takes the mailbox over soon; a live sync
keeps it however long it reads, and a stopped one (SIGSTOP) loses it like a dead one.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, connections, models, transaction
from django.utils import timezone

from .models import SyncLease

logger = logging.getLogger(__name__)


def lease_duration() -> timedelta:
    """How long a lease lasts unless renewed (CRM_SYNC_LEASE_SECONDS, a minute by default):
    longer than one batch (2,000 messages read, matched and written) takes, for SQLite,
    where only the batches renew it."""
    return timedelta(seconds=settings.CRM_SYNC_LEASE_SECONDS)


class LeaseLost(Exception):
    """Another sync owns the mailbox now (or a resync fenced this one off): stop, write nothing."""


def holder_name() -> str:
    """Who holds a lease, for the logs and support: host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"[:200]


def _new_epoch() -> int:
    # Fencing needs each claim's epoch to differ from every other's, not to grow: a random
    # 62-bit number does, and is known without reading it back.
    return secrets.randbits(62) + 1


def _created_lease_row(mailbox_id: int) -> bool:
    """Give the mailbox its lease row if it has none yet; whether it was missing. (Two first
    claims at once: one creates it, the other finds it.)"""
    if SyncLease.objects.filter(mailbox_id=mailbox_id).exists():
        return False
    try:
        with transaction.atomic():
            SyncLease.objects.create(mailbox_id=mailbox_id)
    except IntegrityError:
        pass  # created meanwhile by the other claimer
    return True


def claim_lease(mailbox_id: int) -> int | None:
    """Take the mailbox's lease if nobody holds it (or its holder's has expired); return the
    new epoch, or None when another sync holds it. One conditional UPDATE: atomic on
    PostgreSQL and SQLite alike (the mailbox's first claim makes its row first)."""
    now = timezone.now()
    epoch = _new_epoch()
    claimed = (
        SyncLease.objects.filter(mailbox_id=mailbox_id)
        .filter(models.Q(expires_at__isnull=True) | models.Q(expires_at__lte=now))
        .update(holder=holder_name(), epoch=epoch, expires_at=now + lease_duration())
    )
    if not claimed and _created_lease_row(mailbox_id):
        return claim_lease(mailbox_id)
    return epoch if claimed else None


def hold_lease(mailbox_id: int, epoch: int) -> None:
    """In the caller's transaction, before it writes: check that `epoch` still holds the lease
    and renew it; raise LeaseLost otherwise. The UPDATE locks the lease row until the
    transaction ends, so no one can claim the lease in between (a claimer waits, then finds
    it renewed)."""
    renewed = SyncLease.objects.filter(mailbox_id=mailbox_id, epoch=epoch).update(
        expires_at=timezone.now() + lease_duration()
    )
    if not renewed:
        raise LeaseLost(f"mailbox {mailbox_id}: the sync lease of epoch {epoch} no longer holds")


@contextmanager
def kept(mailbox_id: int, epoch: int) -> Iterator[None]:
    """Renew the lease every third of its duration while the block runs, from a thread of
    its own (and its own database connection): a sync that reads for a long time between two
    batches keeps its mailbox, and one that died loses it within a lease. Not on SQLite, which
    takes one writer at a time: there the batches renew it."""
    if connection.vendor == "sqlite":
        yield
        return
    done = threading.Event()

    def keep() -> None:
        try:
            while not done.wait(lease_duration().total_seconds() / 3):
                renewed = SyncLease.objects.filter(mailbox_id=mailbox_id, epoch=epoch).update(
                    expires_at=timezone.now() + lease_duration()
                )
                if not renewed:
                    return  # taken over or fenced off: the sync's next batch finds out
        except DatabaseError:
            logger.warning("renewing the lease of mailbox %s failed", mailbox_id, exc_info=True)
        finally:
            connections.close_all()

    keeper = threading.Thread(target=keep, name=f"lease keeper {mailbox_id}", daemon=True)
    keeper.start()
    try:
        yield
    finally:
        done.set()
        keeper.join()


def release_lease(mailbox_id: int, epoch: int) -> None:
    """Give the lease back, if this epoch still holds it."""
    SyncLease.objects.filter(mailbox_id=mailbox_id, epoch=epoch).update(holder="", expires_at=None)


def fence_off(mailbox_id: int) -> None:
    """End whatever lease is held: the running sync, if any, stops before its next write."""
    SyncLease.objects.filter(mailbox_id=mailbox_id).update(
        holder="", epoch=_new_epoch(), expires_at=None
    )
