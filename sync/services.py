"""The sync engine: reading each mailbox's new mail and logging the replies (SPEC L1-L3).

For every batch a provider lists, one transaction stores the metadata (`mailboxes`), logs
the replies to tracked threads (`engagements.matching`, with the raw copies this engine
reads) and moves the folder's checkpoint, under the mailbox's lease (mailboxes/leases.py).
An interrupted sync resumes where the last committed batch left it, without loss or
duplicates; a message that cannot be stored or logged is quarantined and costs only itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as datetime_time

from django.db import transaction
from django.utils import timezone

from engagements.matching import find_replies, log_replies, replies_to, reply_chains
from engagements.services import normalize_message_id
from mailboxes.bulk import (
    PreparedBatch,
    answers_among,
    insert_metadata,
    prepare_batch,
    update_flags,
)
from mailboxes.leases import LeaseLost, claim_lease, hold_lease, kept, release_lease
from mailboxes.models import Folder, Mailbox, MessageMeta, QuarantinedMessage
from mailboxes.parsing import ParsedMessage
from mailboxes.providers.base import Batch, MailProvider, MessageHeaders, ProviderError, SyncCrashed
from mailboxes.services import (
    fetch_bodies,
    open_provider,
    provider_config,
    record_failure,
    save_credentials,
)
from teams.models import RetentionPolicy, Team

from . import readahead
from .signals import batch_stored

logger = logging.getLogger(__name__)

SYNC_BATCH_SIZE = 2000

# Syncs check for drift at most this often (not the first reading, which just stored the
# window): counting a large folder costs the server and the database more than an idle sync.
DRIFT_CHECK_INTERVAL = timedelta(hours=1)

# Read and parsed copies of a batch's likely replies, by ref (a large sync's read-ahead).
Parsed = dict[str, tuple[bytes, ParsedMessage]]


@dataclass
class SyncResult:
    new_messages: int = 0
    error: str = ""
    already_syncing: bool = False  # another sync held the lease: this one did nothing

    def summary(self, counted: str = "new message(s)") -> str:
        if self.already_syncing:
            return "already syncing"
        if self.error:
            return f"error: {self.error}"
        return f"{self.new_messages} {counted}"


def sync_mailbox(mailbox_id: int, *, limit: int = SYNC_BATCH_SIZE) -> SyncResult:
    """Read new metadata of every synced folder in batches of `limit`; each batch, the
    replies logged from it and its checkpoint commit together.

    One sync per mailbox: it runs under the mailbox's lease, and a sync that finds the lease
    held ends at once (`already_syncing`). Failures, provider errors and unexpected
    exceptions alike, are recorded on the mailbox (last_error, retried with backoff) and
    returned, not raised.
    """
    mailbox = Mailbox.objects.select_related("team").get(pk=mailbox_id)
    result = SyncResult()
    if mailbox.state != Mailbox.State.CONNECTED:
        result.error = "mailbox is disconnected"
        return result
    epoch = claim_lease(mailbox.pk)
    if epoch is None:
        result.already_syncing = True
        return result
    policy, _ = RetentionPolicy.objects.get_or_create(team=mailbox.team)
    since = (timezone.now() - timedelta(days=policy.metadata_days)).date()
    try:
        with kept(mailbox.pk, epoch), open_provider(mailbox) as provider:
            _retry_quarantined(mailbox, provider, epoch)
            for folder in mailbox.folders.all():
                batches = _batches(mailbox, provider, folder, limit, since)
                with closing(batches):
                    for read_from, batch, prepared in batches:
                        result.new_messages += _apply_batch(
                            mailbox, folder, batch, provider, read_from, prepared, epoch=epoch
                        )
            checked = mailbox.drift_checked_at
            if checked is None:
                drift = ""  # a first reading (or a resync's) just stored the whole window
            elif timezone.now() - checked >= DRIFT_CHECK_INTERVAL:
                drift = check_drift(mailbox, provider, since)
            else:
                drift = None
        with transaction.atomic():
            # Under the lease: a resync meanwhile (its own drift check to come) or a newer
            # sync's failure must not be overwritten by this one's success.
            hold_lease(mailbox.pk, epoch)
            checked = {} if drift is None else {"drift": drift, "drift_checked_at": timezone.now()}
            Mailbox.objects.filter(pk=mailbox.pk).update(
                **checked,
                last_synced_at=timezone.now(),
                last_error="",
                failures=0,
                failing_since=None,
                retry_at=None,
            )
    except LeaseLost as exc:
        # Another sync (or a resync) owns the mailbox now; what this one wrote stays valid.
        logger.warning("%s; this sync stops", exc)
        result.error = "another sync took over"
        return result
    except ProviderError as exc:
        result.error = exc.message
        logger.warning("sync of mailbox %s failed: %s", mailbox.pk, exc.cause)
        record_failure(mailbox, exc)
        return result
    except Exception as exc:
        # A bug or a database failure: visible on the mailbox page, retried like a server
        # failure, never a silent "Connected".
        logger.exception("sync of mailbox %s failed unexpectedly", mailbox.pk)
        failure = SyncCrashed(
            f"The sync stopped on an unexpected error ({type(exc).__name__}: {exc}); it is "
            "retried automatically. If it keeps failing, tell your administrator."[:2000]
        )
        result.error = failure.message
        record_failure(mailbox, failure)
        return result
    finally:
        release_lease(mailbox.pk, epoch)
    return result


def _batches(
    mailbox: Mailbox, provider: MailProvider, folder: Folder, limit: int, since: date
) -> Iterator[tuple[str, Batch, PreparedBatch | None]]:
    """A folder's batches, each with the cursor it was read from and, when it was prepared
    ahead, what is written of it.

    The first is read here. When more than another batch's worth remains (an initial sync,
    a large backlog), a child process starts reading the rest before this one writes the
    first, prepares each and reads its likely replies (readahead.py); otherwise they are
    read here too.
    """
    cursor = folder.cursor
    batch = provider.changes(folder.name, cursor or None, limit, since)
    if batch.remaining > limit and readahead.can_fork():
        chains = reply_chains(mailbox.team)
        if chains is not None:
            chains.follow(answers_among(batch.messages))  # the child starts from what this read

        def prepare(read: Batch, child_provider: MailProvider, busy: bool) -> PreparedBatch | None:
            if not busy:
                if chains is not None:
                    chains.follow(answers_among(read.messages))
                return None
            prepared = prepare_batch(mailbox, folder, read.messages)
            if chains is not None and prepared.answers:
                prepared.ahead = readahead.read_likely_replies(
                    chains, child_provider, folder.name, prepared.answers
                )
            return prepared

        with readahead.ReadAhead(
            mailbox.kind, provider_config(mailbox), folder.name, batch.cursor, limit, since,
            on_credentials=lambda updated: save_credentials(mailbox, updated), prepare=prepare,
        ) as rest:  # fmt: skip
            yield cursor, batch, None
            for following, prepared in rest:
                yield batch.cursor, following, prepared
                batch = following
        return
    yield cursor, batch, None
    while not batch.done:
        cursor = batch.cursor
        batch = provider.changes(folder.name, cursor, limit, since)
        yield cursor, batch, None


@transaction.atomic
def _apply_batch(
    mailbox: Mailbox,
    folder: Folder,
    batch: Batch,
    provider: MailProvider,
    read_from: str,
    prepared: PreparedBatch | None = None,
    *,
    epoch: int,
) -> int:
    """Store one batch, log its replies and move the folder's checkpoint, in one
    transaction, only while `epoch` holds the mailbox's lease (else LeaseLost, nothing
    written)."""
    hold_lease(mailbox.pk, epoch)
    folder = Folder.objects.select_for_update().get(pk=folder.pk)
    if prepared is None:
        prepared = prepare_batch(mailbox, folder, batch.messages)
    rows, answers = prepared.rows, prepared.answers
    if batch.reset:
        # UIDVALIDITY changed: the old UIDs mean nothing now. Timeline engagements stay;
        # re-read messages are recognised by Message-ID and not logged twice.
        folder.messages.all().delete()
        folder.synced_count = 0
    existing: set[str] = set()
    if folder.cursor != read_from and not batch.reset:
        # Another sync moved the checkpoint since this batch was read: skip what it stored.
        # (Otherwise none can exist: rows and checkpoint commit together.)
        existing = set(folder.messages.filter(ref__in=prepared.refs).values_list("ref", flat=True))
        rows = [row for ref, row in zip(prepared.refs, rows, strict=True) if ref not in existing]
        answers = [meta for meta in answers if meta.ref not in existing]
    new = len(prepared.refs) - len(existing)
    insert_metadata(rows)
    update_flags(folder, batch.flag_updates)
    if new:
        logged = log_new_replies(mailbox, folder, provider, answers, prepared.ahead)
        batch_stored.send(
            sender=Folder, mailbox=mailbox, folder=folder, new_messages=new, logged=logged
        )
    # The row is locked (select_for_update), so plain arithmetic is safe.
    folder.cursor = batch.cursor
    folder.synced_count += new
    folder.total_count = folder.synced_count + batch.remaining
    folder.last_synced_at = timezone.now()
    folder.save(update_fields=["cursor", "synced_count", "total_count", "last_synced_at"])
    return new


def log_new_replies(
    mailbox: Mailbox,
    folder: Folder,
    provider: MailProvider,
    messages: Sequence[MessageHeaders],
    parsed: Parsed | None = None,
) -> list[str]:
    """Log the replies to tracked threads among these messages of the folder (a batch's new
    ones that answer another, or saved rows on a retry or a replay); return their
    Message-IDs. The matcher decides with the database; the raw copies it needs are read
    here, in as few round trips as their sizes allow, and cached (SPEC R3)."""
    replies = find_replies(mailbox.team, messages)
    if not replies:
        return []
    metas = _stored(folder, messages, list(replies))
    parsed = parsed or {}
    raws = fetch_bodies(metas, provider, ready={ref: raw for ref, (raw, _p) in parsed.items()})
    return log_replies(mailbox, replies, metas, raws, parsed)


def _stored(
    folder: Folder, messages: Sequence[MessageHeaders], refs: list[str]
) -> list[MessageMeta]:
    """The saved rows of these messages of the folder, in the order of `refs`.

    A sync writes its rows without making model instances (there can be 100,000s); the few
    the matcher chose are read back here, in one query.
    """
    rows = {m.ref: m for m in messages if isinstance(m, MessageMeta)}
    missing = [ref for ref in refs if ref not in rows]
    if missing:
        rows.update((m.ref, m) for m in folder.messages.filter(ref__in=missing))
    return [rows[ref] for ref in refs if ref in rows]


def check_drift(mailbox: Mailbox, provider: MailProvider, since: date) -> str:
    """After a sync: the folders where the server has more messages in the synced window than
    Threadline stored, in plain words with the numbers ("" when none).

    The server counts messages by the date of its own time zone and we store times in UTC:
    it counts from a day after the window's start, we count from its start, so a mailbox in
    step never looks short. Rows of messages deleted on the server since can hide a gap
    smaller than them; a gap seen is real.
    """
    start = since + timedelta(days=1)
    stored_from = datetime.combine(since, datetime_time.min, tzinfo=UTC)
    gaps = []
    for folder in mailbox.folders.all():
        on_server = provider.count_since(folder.name, start)
        if on_server is None:
            continue
        stored = folder.messages.filter(received_at__gte=stored_from).count()
        if on_server > stored:
            gaps.append(
                f"{folder.name}: the server has {on_server} messages since "
                f"{start:%d %b %Y}, Threadline has {stored}"
            )
    return "; ".join(gaps)


def _retry_quarantined(mailbox: Mailbox, provider: MailProvider, epoch: int) -> None:
    """Give the mailbox's quarantined messages another try through the matcher, folder by
    folder and under the lease, until they have failed MAX_ATTEMPTS times. Those logged (or
    no longer to log) leave the quarantine; those whose metadata is gone too."""
    waiting = list(
        mailbox.quarantined.filter(attempts__lt=QuarantinedMessage.MAX_ATTEMPTS).select_related(
            "folder"
        )
    )
    by_folder: dict[int, list[QuarantinedMessage]] = {}
    for row in waiting:
        by_folder.setdefault(row.folder_id, []).append(row)
    for rows in by_folder.values():
        folder = rows[0].folder
        started = timezone.now()
        metas = list(folder.messages.filter(ref__in=[row.ref for row in rows]))
        with transaction.atomic():
            hold_lease(mailbox.pk, epoch)
            if metas:
                log_new_replies(mailbox, folder, provider, metas)
            # Not failed again just now: logged, or nothing to log any more.
            folder.quarantined.filter(
                ref__in=[row.ref for row in rows], failed_at__lt=started
            ).delete()


def log_backlog(team: Team, message_ids: Iterable[str], max_depth: int = 20) -> int:
    """Log replies that were synced (as metadata) before their thread was tracked.

    BCC and forward logging, which starts tracking a thread, queues this with its ids; the
    replies are read from the user's server now (IMAP keeps the mail there). Follows reply
    chains; returns how many emails were logged.
    """
    wanted = {normalize_message_id(i) for i in message_ids} - {""}
    total = 0
    for _depth in range(max_depth):
        if not wanted:
            break
        logged = replay_messages(replies_to(team, wanted))
        total += len(logged)
        wanted = set(logged)
    return total


def replay_messages(messages: list[MessageMeta]) -> list[str]:
    """Run the matcher again over messages already synced, folder by folder, with a
    connection to read them (for threads tracked after their replies arrived); return the
    Message-IDs logged.

    A provider failure is recorded on its mailbox (SPEC D1, as for a sync) and the other
    mailboxes go on.
    """
    by_folder: dict[int, list[MessageMeta]] = {}
    for meta in messages:
        by_folder.setdefault(meta.folder_id, []).append(meta)
    logged: list[str] = []
    for items in by_folder.values():
        folder = items[0].folder
        mailbox = folder.mailbox
        if mailbox.state != Mailbox.State.CONNECTED:
            continue
        try:
            with open_provider(mailbox) as provider, transaction.atomic():
                logged += log_new_replies(mailbox, folder, provider, items)
        except ProviderError as exc:
            record_failure(mailbox, exc)  # the same causes as a sync: revoked access disconnects
    return logged
