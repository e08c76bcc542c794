"""The matcher run on every synced batch (SPEC L2, L3, L5).

A message whose In-Reply-To or References names a tracked Message-ID is read in full and
logged on the thread's records; everything else stays metadata only.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from django.db import connection, transaction
from django.db.models import F, Model, Q
from django.template.defaultfilters import filesizeformat

from contacts.models import Company, Contact, Deal
from crm_site.db import any_of
from mailboxes.models import Mailbox, MessageMeta
from mailboxes.parsing import ParsedAttachment, ParsedMessage, parse_message
from mailboxes.providers.base import MailProvider, MessageHeaders
from mailboxes.services import BatchContext, quarantine, replay_messages
from teams.models import RetentionPolicy, Team

from .models import EmailEngagement, TrackedMessageId
from .services import Address, EmailData, LogItem, log_emails, normalize_message_id

logger = logging.getLogger(__name__)
SYNC = EmailEngagement.Source.SYNC


def _ancestors(meta: MessageHeaders) -> list[str]:
    """Ids this message answers, nearest first."""
    ids = [meta.in_reply_to] if meta.in_reply_to else []
    ids += reversed(meta.reference_ids)
    return [i for i in ids if i]


def _thread_records(team: Team, thread_ids: set[int]) -> dict[int, dict[str, list[Model]]]:
    """For each thread, the contacts, companies and deals its email is logged on (3 queries)."""
    records: dict[int, dict[str, list[Model]]] = defaultdict(lambda: defaultdict(list))
    for field, model in (("contacts", Contact), ("companies", Company), ("deals", Deal)):
        rows = (
            model.objects.for_team(team)
            .filter(email_engagements__thread_id__in=thread_ids)
            .annotate(thread_id=F("email_engagements__thread_id"))
            .distinct()
        )
        for row in rows:
            if row not in records[row.thread_id][field]:
                records[row.thread_id][field].append(row)
    return records


def attachments_to_log(
    policy: RetentionPolicy, size: int, attachments: list[ParsedAttachment]
) -> tuple[list[ParsedAttachment], str]:
    """The attachments of an email of `size` bytes to log and, when they are dropped, why
    (SPEC L5). Shared by the sync and BCC logging."""
    if not attachments:
        return [], ""
    if not policy.log_attachments:
        return [], "Attachments were not logged: attachment logging is off for your team."
    if size >= policy.attachment_max_bytes:
        return [], (
            f"Attachments were not logged: the email ({filesizeformat(size)}) is over the "
            f"{policy.attachment_max_mb} MB limit."
        )
    return attachments, ""


def _match_replies(
    answers: list[tuple[MessageHeaders, list[str]]], tracked: dict[str, int], logged: set[str]
) -> dict[str, int]:
    """The replies among `answers` (messages and their ancestors): ref -> thread.

    Headers alone decide, so replies to replies in the same batch match too, whatever order
    the provider listed them in: each pass matches the replies to what the previous ones
    matched (so the result lists parents before replies), until a pass finds none. Each
    reply's own id joins `tracked` and `logged`; one already in `logged` is a duplicate.
    """
    matched: dict[str, int] = {}
    pending = [(m, a) for m, a in answers if m.message_id not in logged]
    while pending:
        unmatched = []
        for meta, ancestors in pending:
            thread_id = next((tracked[i] for i in ancestors if i in tracked), None)
            if thread_id is None or meta.message_id in logged:
                unmatched.append((meta, ancestors))  # untracked (L3), or a duplicate
                continue
            matched[meta.ref] = thread_id
            if meta.message_id:
                logged.add(meta.message_id)
                tracked[meta.message_id] = thread_id
        if len(unmatched) == len(pending):
            break
        pending = unmatched
    return matched


def log_matches(context: BatchContext) -> list[str]:
    """Log the batch's replies to tracked threads.

    A fixed number of queries and one FETCH per batch, however many messages match:
    tracked ids, already-logged ids, the matched messages' rows, records of their threads,
    the bodies (those the read-ahead child did not read and parse: `read_ahead`), and one
    log_emails for all of them.
    """
    mailbox = context.mailbox
    team = mailbox.team
    # Only a message that answers another can be a reply to a tracked thread.
    answers = [(meta, ancestors) for meta in context.messages if (ancestors := _ancestors(meta))]
    wanted = {i for _meta, ancestors in answers for i in ancestors}
    tracked = {
        t.message_id: t.thread_id for t in TrackedMessageId.objects.for_team(team).matching(wanted)
    }
    if not tracked:
        return []
    logged = set(
        EmailEngagement.objects.for_team(team)
        .filter(message_id__in=any_of({m.message_id for m, _a in answers if m.message_id}))
        .values_list("message_id", flat=True)
    )
    matched = _match_replies(answers, tracked, logged)
    if not matched:
        return []
    metas = context.stored(list(matched))
    records = _thread_records(team, set(matched.values()))
    policy, _ = RetentionPolicy.objects.get_or_create(team=team)
    own_address = mailbox.email_address.lower()
    ahead: dict[str, tuple[bytes, ParsedMessage]] = context.ahead or {}
    raws = context.fetch_many(metas, ready={ref: raw for ref, (raw, _parsed) in ahead.items()})
    items: list[tuple[MessageMeta, LogItem]] = []
    for meta in metas:
        raw = raws.get(meta.pk)
        if raw is None:
            continue  # deleted on the server meanwhile: nothing to log
        try:
            thread = records[matched[meta.ref]]
            items.append((meta, _log_item(meta, raw, own_address, thread, ahead, policy)))
        except Exception as exc:  # noqa: BLE001 - one message costs only itself
            _quarantine(meta, exc)
    return _log_or_quarantine(team, items)


def _log_item(
    meta: MessageMeta,
    raw: bytes,
    own_address: str,
    thread: dict[str, list[Model]],
    ahead: dict[str, tuple[bytes, ParsedMessage]],
    policy: RetentionPolicy,
) -> LogItem:
    """What log_emails needs to log one matched reply on its thread's records."""
    read, parsed = ahead.get(meta.ref, (None, None))
    if parsed is None or read != raw:
        parsed = parse_message(raw)
    # Some providers do not report a size with the metadata (Graph): the raw one counts.
    size = max(meta.size, len(raw))
    attachments, note = attachments_to_log(policy, size, parsed.attachments)
    message_id = meta.message_id or f"threadline-{meta.folder_id}-{meta.ref}@invalid"
    email = EmailData(
        message_id=message_id,
        sender=Address(meta.from_address or "unknown@invalid", meta.from_name),
        to=tuple(Address(a["email"], a["name"]) for a in meta.to),
        cc=tuple(Address(a["email"], a["name"]) for a in meta.cc),
        subject=meta.subject,
        body_text=parsed.text,
        body_html=parsed.html,
        sent_at=meta.sent_at or meta.received_at or meta.created_at,
        in_reply_to=meta.in_reply_to,
        references=tuple(meta.reference_ids),
    )
    direction = (
        EmailEngagement.Direction.OUTGOING
        if meta.from_address.lower() == own_address
        else EmailEngagement.Direction.INCOMING
    )
    return LogItem(
        email, direction, thread["contacts"], thread["companies"], thread["deals"],
        attachments, note,
    )  # fmt: skip


def _log_or_quarantine(team: Team, items: list[tuple[MessageMeta, LogItem]]) -> list[str]:
    """Log the items together (one log_emails, the usual case); should that fail, one by one,
    each message that still fails set aside with its reason, and the rest logged."""
    if not items:
        return []
    try:
        with _savepoint():
            log_emails(team=team, items=[item for _meta, item in items], source=SYNC)
        return [item.email.message_id for _meta, item in items]
    except Exception:  # noqa: BLE001 - tried again one by one, where the culprit shows
        logger.warning("logging a batch of %d replies failed; logging them one by one", len(items))
    logged = []
    for meta, item in items:
        try:
            with _savepoint():
                log_emails(team=team, items=[item], source=SYNC)
        except Exception as exc:  # noqa: BLE001 - one message costs only itself
            _quarantine(meta, exc)
        else:
            logged.append(item.email.message_id)
    return logged


@contextmanager
def _savepoint() -> Iterator[None]:
    """A savepoint whose constraint failures show inside it: PostgreSQL checks Django's
    foreign keys (DEFERRABLE INITIALLY DEFERRED) at COMMIT, where one bad row would fail the
    whole batch instead of only itself."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        yield


def _quarantine(meta: MessageMeta, exc: Exception) -> None:
    logger.warning("message %s of folder %s quarantined: %r", meta.ref, meta.folder_id, exc)
    quarantine(meta, exc)


# What the read-ahead child reads of likely replies: bounded, since a batch waiting in its
# pipe holds them. Messages of unknown size (Graph lists none) are left to the matcher.
AHEAD_MESSAGE_BYTES = 1024 * 1024
AHEAD_BATCH_BYTES = 8 * 1024 * 1024
# Above this many tracked ids a team's set is not copied into the child.
AHEAD_TRACKED_IDS = 200_000


class RepliesAhead:
    """What a large sync's read-ahead child does for this matcher (mailboxes/readahead.py):
    it follows the folder's reply chains as `log_matches` will, without the database the
    child cannot use, and reads and parses a batch's likely replies on its own connection,
    so that they are ready when the batch is matched.

    Likely replies answer an id tracked when the sync started, or such a reply. The matcher
    still decides with the database: it reads any reply the child missed (a thread tracked
    since), and leaves unused copies.
    """

    def __init__(self, tracked_ids: Iterable[str]) -> None:
        self.tracked = dict.fromkeys(tracked_ids, 0)

    def note(self, messages: Sequence[MessageHeaders]) -> dict[str, int]:
        """Follow the chains through these messages; their likely replies (ref -> 0)."""
        answers = [(meta, ancestors) for meta in messages if (ancestors := _ancestors(meta))]
        return _match_replies(answers, self.tracked, set())

    def prepare(
        self, provider: MailProvider, folder: str, messages: Sequence[MessageHeaders]
    ) -> dict[str, tuple[bytes, ParsedMessage]]:
        """The likely replies among `messages`, read and parsed, by ref (bounded)."""
        likely = self.note(messages)
        refs, total = [], 0
        for meta in messages:
            if meta.ref in likely and 0 < meta.size <= AHEAD_MESSAGE_BYTES:
                if total + meta.size > AHEAD_BATCH_BYTES:
                    break
                refs.append(meta.ref)
                total += meta.size
        raws = provider.fetch_many(folder, refs) if refs else {}
        return {ref: (raw, parse_message(raw)) for ref, raw in raws.items()}


def read_ahead(mailbox: Mailbox) -> RepliesAhead | None:
    """The matcher's read-ahead work for a large sync of the mailbox (see
    services.ReadAheadWork); None when its team tracks too many ids to copy into the child."""
    ids = list(
        TrackedMessageId.objects.for_team(mailbox.team)
        .order_by()
        .values_list("message_id", flat=True)[: AHEAD_TRACKED_IDS + 1]
    )
    return RepliesAhead(ids) if len(ids) <= AHEAD_TRACKED_IDS else None


log_matches.read_ahead = read_ahead  # type: ignore[attr-defined] # see services.ReadAheadWork


def log_backlog(team: Team, message_ids: Iterable[str], max_depth: int = 20) -> int:
    """Log replies that were synced (as metadata) before their thread was tracked.

    BCC and forward logging, which starts tracking a thread, calls this with its ids; the
    replies are read from the user's server now (IMAP keeps the mail there). Follows reply
    chains; returns how many emails were logged.
    """
    wanted = {normalize_message_id(i) for i in message_ids} - {""}
    total = 0
    for _depth in range(max_depth):
        if not wanted:
            break
        match = Q(in_reply_to__in=wanted)
        for message_id in wanted:
            match |= Q(references__contains=message_id)
        metas = list(
            MessageMeta.objects.for_team(team)
            .filter(match)
            .select_related("folder__mailbox__team")
            .order_by("received_at", "pk")
        )
        logged: list[str] = []

        def collect(context: BatchContext, logged: list[str] = logged) -> None:
            logged.extend(log_matches(context))

        replay_messages(metas, collect)
        total += len(logged)
        wanted = set(logged)
    return total
