"""Retention (SPEC R1–R5): erase what each team's retention settings no longer keep.

- R1: email sent by sequences is never erased here (only with its team, R5).
- R2: a deleted engagement is erased once it has been deleted for the team's restore period
  (default 90 days), with its attachments' files, its tracked Message-IDs and, when it was
  the last one, its thread.
- R3: raw bodies in the sync cache are erased once fetched that many days ago (default 7).
- R4: mailbox metadata is erased once stored that many days ago (default 60), with any
  cached body. Engagements on timelines are separate rows: R3 and R4 never touch them.
- R5: `erase_team` erases a team and everything of it, files included.
- Attachment files without a row (their batch rolled back, or its process was killed, after
  the file was written) are erased a day after they were written.

Work goes in batches of ids, each in its own short transaction that re-checks the rule while
deleting, so a row restored meanwhile is kept; memory stays bounded, no table is locked for
long, and two purges at once only find less to do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import models, transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.utils import timezone

from mailboxes.models import Mailbox, MessageBody, MessageMeta, QuarantinedMessage
from teams.models import RetentionPolicy, Team

from .models import Attachment, EmailEngagement, Thread, TrackedMessageId

logger = logging.getLogger(__name__)

BATCH_SIZE = 5000


@dataclass
class RuleResult:
    rule: str
    what: str
    rows: int = 0
    files: int = 0


@dataclass
class _Rule:
    rule: str
    what: str
    expired: Callable[[Team, RetentionPolicy, datetime], models.QuerySet]
    erase: Callable[[models.QuerySet, list[int]], tuple[int, int]]
    count_files: Callable[[models.QuerySet], int] | None = None


def _expired_engagements(team: Team, policy: RetentionPolicy, now: datetime) -> models.QuerySet:
    cutoff = now - timedelta(days=policy.deleted_engagement_days)
    return (
        EmailEngagement.objects.for_team(team)
        .filter(deleted_at__lte=cutoff)
        .exclude(source=EmailEngagement.Source.SEQUENCE)  # R1
    )


def _expired_bodies(team: Team, policy: RetentionPolicy, now: datetime) -> models.QuerySet:
    cutoff = now - timedelta(days=policy.body_cache_days)
    return MessageBody.objects.for_team(team).filter(fetched_at__lte=cutoff)


def _expired_metadata(team: Team, policy: RetentionPolicy, now: datetime) -> models.QuerySet:
    cutoff = now - timedelta(days=policy.metadata_days)
    return MessageMeta.objects.for_team(team).filter(created_at__lte=cutoff)


def _erase_engagements(expired: models.QuerySet, ids: list[int]) -> tuple[int, int]:
    # Lock the rows that still qualify: a restore waits for this batch, or wins before it.
    rows = list(expired.filter(pk__in=ids).select_for_update().values_list("pk", "thread_id"))
    keys = [pk for pk, _thread in rows]
    files = Attachment.objects.filter(engagement_id__in=keys).exclude(file="").count()
    TrackedMessageId.objects.filter(engagement_id__in=keys).delete()
    EmailEngagement.objects.filter(pk__in=keys).delete()  # attachments go via the signal
    Thread.objects.filter(
        pk__in={thread for _pk, thread in rows}, engagements__isnull=True
    ).delete()  # the last email of a thread: its remaining tracked ids go with it
    return len(keys), files


def _erase_rows(expired: models.QuerySet, ids: list[int]) -> tuple[int, int]:
    """Metadata or cached bodies: one DELETE per table, no rows loaded. (QuerySet.delete()
    would first load every metadata row, because bodies cascade from it; `_raw_delete` is
    the single statement Django's own fast delete runs. Nothing here has signals or files.)"""
    batch = expired.filter(pk__in=ids)
    if expired.model is MessageMeta:
        MessageBody.objects.filter(meta__in=batch)._raw_delete(batch.db)
        # A quarantined message's copied headers go with its metadata (R4).
        same = batch.filter(folder_id=models.OuterRef("folder_id"), ref=models.OuterRef("ref"))
        QuarantinedMessage.objects.filter(models.Exists(same))._raw_delete(batch.db)
    return batch._raw_delete(batch.db), 0


def _attachment_files(expired: models.QuerySet) -> int:
    return Attachment.objects.filter(engagement__in=expired).exclude(file="").count()


RULES = [
    _Rule("R2", "deleted email past its restore period", _expired_engagements,
          _erase_engagements, _attachment_files),
    _Rule("R3", "cached message bodies past the cache period", _expired_bodies, _erase_rows),
    _Rule("R4", "mailbox metadata past the metadata period", _expired_metadata, _erase_rows),
]  # fmt: skip


def _teams(team_id: int | None) -> Iterator[tuple[Team, RetentionPolicy]]:
    teams = Team.objects.order_by("pk")
    if team_id is not None:
        teams = teams.filter(pk=team_id)
    for team in teams.iterator():
        policy, _ = RetentionPolicy.objects.get_or_create(team=team)
        yield team, policy


# A batch that writes attachment files and then rolls back (or is killed) leaves them without
# a row; after this long no transaction can still be about to commit one.
ORPHAN_FILE_AGE = timedelta(days=1)
ORPHANS = ("files", "attachment files of email never logged (its batch rolled back)")


def _orphan_files(team: Team, now: datetime) -> Iterator[str]:
    """The team's attachment files that no Attachment row names, older than ORPHAN_FILE_AGE
    (attachment_path: attachments/team_<id>/<random>/<name>)."""
    storage = Attachment._meta.get_field("file").storage
    root = f"attachments/team_{team.pk}"
    try:
        folders, _files = storage.listdir(root)
    except FileNotFoundError:
        return
    known = set(Attachment.objects.filter(team=team).values_list("file", flat=True))
    for folder in folders:
        for name in storage.listdir(f"{root}/{folder}")[1]:
            path = f"{root}/{folder}/{name}"
            if path not in known and storage.get_modified_time(path) < now - ORPHAN_FILE_AGE:
                yield path


def _erase_orphan_files(team: Team, now: datetime, result: RuleResult, dry_run: bool) -> None:
    storage = Attachment._meta.get_field("file").storage
    for path in _orphan_files(team, now):
        if not dry_run:
            storage.delete(path)
        result.files += 1


def purge(
    *,
    team_id: int | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
    on_batch: Callable[[RuleResult], None] | None = None,
) -> list[RuleResult]:
    """Apply R2–R4 to every team (or one), and erase orphaned attachment files; return per
    rule how many rows and files were (with dry_run: would be) erased."""
    now = now or timezone.now()
    results = {rule.rule: RuleResult(rule.rule, rule.what) for rule in RULES}
    results[ORPHANS[0]] = RuleResult(*ORPHANS)
    for team, policy in _teams(team_id):
        _erase_orphan_files(team, now, results[ORPHANS[0]], dry_run)
        for rule in RULES:
            expired = rule.expired(team, policy, now)
            result = results[rule.rule]
            if dry_run:
                result.rows += expired.count()
                result.files += rule.count_files(expired) if rule.count_files else 0
                continue
            while ids := list(expired.values_list("pk", flat=True)[:batch_size]):
                with transaction.atomic():
                    rows, files = rule.erase(expired, ids)
                result.rows += rows
                result.files += files
                if on_batch:
                    on_batch(result)
                if rows == 0:
                    break  # another purge took them: nothing left that this one can erase
    return list(results.values())


def erase_team(team: Team, *, batch_size: int = BATCH_SIZE) -> None:
    """R5: erase a team and everything of it, files included. The large tables go first in
    batches (bounded memory, short transactions); the cascade takes the rest."""
    for model in (MessageBody, MessageMeta, Attachment):
        rows = model.objects.filter(team=team)
        while ids := list(rows.values_list("pk", flat=True)[:batch_size]):
            batch = model.objects.filter(pk__in=ids)
            if model is not Attachment:  # attachments keep `file`: the signal deletes it
                batch = batch.only("pk")
            with transaction.atomic():
                batch.delete()
    Mailbox.objects.filter(team=team).delete()
    team.delete()


@receiver(post_delete, sender=Attachment)
def _delete_attachment_file(sender: type, instance: Attachment, **kwargs: object) -> None:
    """An attachment's file goes with its row however the row goes (purge, a deleted record
    or team): once the deletion commits, so a rolled-back one keeps its file. No orphans."""
    if not instance.file:
        return
    storage, name = instance.file.storage, instance.file.name

    def delete_file() -> None:
        try:
            storage.delete(name)
        except OSError:
            logger.warning("could not delete attachment file %s", name)

    transaction.on_commit(delete_file)
