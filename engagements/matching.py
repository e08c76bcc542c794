"""The matcher the sync engine runs on every synced batch (SPEC L2, L3, L5).

A message whose In-Reply-To or References names a tracked Message-ID is read in full and
logged on the thread's records; everything else stays metadata only. The engine (sync/)
asks `find_replies` which messages those are, reads their raw copies, and hands them to
`log_replies`: this module never holds a connection to a mail server.
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
from mailboxes.providers.base import MessageHeaders
from mailboxes.services import quarantine
from teams.models import RetentionPolicy, Team

from .models import EmailEngagement, TrackedMessageId
from .services import Address, EmailData, LogItem, log_emails

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


def find_replies(team: Team, messages: Sequence[MessageHeaders]) -> dict[str, int]:
    """The replies to the team's tracked threads among a folder's new `messages`, by ref, to
    the thread each belongs to; parents come before their replies.

    Two queries however many messages there are: the tracked ids they answer, and those of
    them already logged (a reply is logged once, whichever mailbox saw it first).
    """
    # Only a message that answers another can be a reply to a tracked thread.
    answers = [(meta, ancestors) for meta in messages if (ancestors := _ancestors(meta))]
    wanted = {i for _meta, ancestors in answers for i in ancestors}
    tracked = {
        t.message_id: t.thread_id for t in TrackedMessageId.objects.for_team(team).matching(wanted)
    }
    if not tracked:
        return {}
    logged = set(
        EmailEngagement.objects.for_team(team)
        .filter(message_id__in=any_of({m.message_id for m, _a in answers if m.message_id}))
        .values_list("message_id", flat=True)
    )
    return _match_replies(answers, tracked, logged)


def log_replies(
    mailbox: Mailbox,
    replies: dict[str, int],
    metas: list[MessageMeta],
    raws: dict[int, bytes],
    parsed: dict[str, tuple[bytes, ParsedMessage]] | None = None,
) -> list[str]:
    """Log the replies found by `find_replies` on their threads' records; return the
    Message-IDs logged.

    `metas` are their saved rows and `raws` their raw copies by row pk (a message missing
    from `raws` was deleted on the server meanwhile: nothing to log). `parsed` holds copies
    already read and parsed, by ref (a large sync's read-ahead). A message that cannot be
    logged is quarantined with its reason; the others are logged, with a fixed number of
    queries however many there are.
    """
    team = mailbox.team
    records = _thread_records(team, set(replies.values()))
    policy, _ = RetentionPolicy.objects.get_or_create(team=team)
    own_address = mailbox.email_address.lower()
    items: list[tuple[MessageMeta, LogItem]] = []
    for meta in metas:
        raw = raws.get(meta.pk)
        if raw is None:
            continue
        try:
            thread = records[replies[meta.ref]]
            items.append((meta, _log_item(meta, raw, own_address, thread, parsed or {}, policy)))
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


# Above this many tracked ids a team's set is not copied into a sync's read-ahead child.
CHAINS_TRACKED_IDS = 200_000


class ReplyChains:
    """The team's reply chains, followed without the database: what a large sync's
    read-ahead child (sync/readahead.py), which cannot use the database, uses to tell the
    likely replies it may read and parse before the batch is matched.

    Likely replies answer an id tracked when the sync started, or such a reply. The matcher
    (`find_replies`) still decides with the database.
    """

    def __init__(self, tracked_ids: Iterable[str]) -> None:
        self.tracked = dict.fromkeys(tracked_ids, 0)

    def follow(self, messages: Sequence[MessageHeaders]) -> set[str]:
        """Follow the chains through these messages (in order); the refs of likely replies."""
        answers = [(meta, ancestors) for meta in messages if (ancestors := _ancestors(meta))]
        return set(_match_replies(answers, self.tracked, set()))


def reply_chains(team: Team) -> ReplyChains | None:
    """The team's reply chains as they are now; None when it tracks too many ids to copy."""
    ids = list(
        TrackedMessageId.objects.for_team(team)
        .order_by()
        .values_list("message_id", flat=True)[: CHAINS_TRACKED_IDS + 1]
    )
    return ReplyChains(ids) if len(ids) <= CHAINS_TRACKED_IDS else None


def replies_to(team: Team, message_ids: set[str]) -> list[MessageMeta]:
    """The team's synced messages that answer any of these ids, oldest first (the backlog a
    newly tracked thread may have: replies synced before it was tracked)."""
    if not message_ids:
        return []
    match = Q(in_reply_to__in=message_ids)
    for message_id in message_ids:
        match |= Q(references__contains=message_id)
    return list(
        MessageMeta.objects.for_team(team)
        .filter(match)
        .select_related("folder__mailbox__team")
        .order_by("received_at", "pk")
    )
