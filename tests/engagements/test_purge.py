"""Retention (SPEC R1–R5) with time travel across every boundary: the day before, the day,
the day after."""

import os
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
import time_machine
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from engagements.models import Attachment, EmailEngagement, Thread, TrackedMessageId
from engagements.purge import erase_team, purge
from engagements.services import restore_engagement
from mailboxes.crypto import Secret
from mailboxes.models import Folder, Mailbox, MessageBody, MessageMeta, QuarantinedMessage
from teams.models import RetentionPolicy, Team
from tests.factories import ContactFactory, EmailEngagementFactory, MembershipFactory

pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def purged_at(moment):
    with time_machine.travel(moment, tick=False):
        return {r.rule: r for r in purge()}


def deleted_email(team, *, source="sync", deleted_at=T0, with_file=True):
    engagement = EmailEngagementFactory(thread__team=team, source=source, deleted_at=deleted_at)
    TrackedMessageId.objects.create(
        team=team, message_id=engagement.message_id, thread=engagement.thread,
        engagement=engagement,
    )  # fmt: skip
    if with_file:
        Attachment.objects.create(
            team=team, engagement=engagement, filename="quote.pdf",
            file=ContentFile(b"%PDF", name="quote.pdf"), size=4,
        )  # fmt: skip
    return engagement


def synced_message(team, *, stored_at=T0, fetched_at=T0):
    owner = MembershipFactory(team=team).user
    mailbox = Mailbox.objects.create(
        team=team, owner=owner, kind="imap", email_address=f"{owner.username}@example.com",
        credentials=Secret({"password": "x"}),
    )  # fmt: skip
    folder = Folder.objects.create(team=team, mailbox=mailbox, name="INBOX", role="inbox")
    meta = MessageMeta.objects.create(
        team=team, mailbox=mailbox, folder=folder, ref="1", message_id="m@example.com",
        subject="Hello", created_at=stored_at,
    )  # fmt: skip
    MessageBody.objects.create(
        team=team, meta=meta, raw=b"Subject: Hello\r\n\r\nHi", fetched_at=fetched_at
    )
    return meta


@pytest.mark.parametrize(("offset", "erased"), [(-1, False), (0, True), (1, True)])
def test_r2_deleted_email_is_erased_after_90_days_with_its_file(team, offset, erased):
    engagement = deleted_email(team)
    path = engagement.attachments.get().file.path
    thread_id = engagement.thread_id

    result = purged_at(T0 + timedelta(days=90 + offset))

    assert EmailEngagement.objects.filter(pk=engagement.pk).exists() is not erased
    assert os.path.exists(path) is not erased
    assert Thread.objects.filter(pk=thread_id).exists() is not erased
    assert TrackedMessageId.objects.filter(message_id=engagement.message_id).exists() is not erased
    assert (result["R2"].rows, result["R2"].files) == ((1, 1) if erased else (0, 0))


@pytest.mark.parametrize(("offset", "erased"), [(-1, False), (0, True), (1, True)])
def test_r3_cached_bodies_are_erased_after_7_days(team, offset, erased):
    meta = synced_message(team)

    purged_at(T0 + timedelta(days=7 + offset))

    assert MessageBody.objects.filter(meta=meta).exists() is not erased
    assert MessageMeta.objects.filter(pk=meta.pk).exists()  # R4 keeps it longer


@pytest.mark.parametrize(("offset", "erased"), [(-1, False), (0, True), (1, True)])
def test_r4_metadata_is_erased_after_60_days(team, offset, erased):
    meta = synced_message(team, fetched_at=T0 + timedelta(days=59))  # a body fetched late

    purged_at(T0 + timedelta(days=60 + offset))

    assert MessageMeta.objects.filter(pk=meta.pk).exists() is not erased
    assert MessageBody.objects.filter(meta_id=meta.pk).exists() is not erased


@pytest.mark.parametrize(("offset", "erased"), [(-1, False), (0, True)])
def test_r4_erases_a_quarantined_message_with_its_metadata(team, offset, erased):
    meta = synced_message(team)
    QuarantinedMessage.objects.create(
        team=team, mailbox=meta.mailbox, folder=meta.folder, ref=meta.ref,
        message_id=meta.message_id, subject=meta.subject, reason="ValueError: x",
    )  # fmt: skip
    other = synced_message(team, stored_at=T0 + timedelta(days=30))
    QuarantinedMessage.objects.create(
        team=team, mailbox=other.mailbox, folder=other.folder, ref=other.ref, reason="kept"
    )

    purged_at(T0 + timedelta(days=60 + offset))

    assert QuarantinedMessage.objects.filter(folder=meta.folder).exists() is not erased
    assert QuarantinedMessage.objects.filter(folder=other.folder).exists()


def test_what_the_rules_keep_survives(team):
    contact = ContactFactory(team=team)
    on_timeline = EmailEngagementFactory(thread__team=team, sent_at=T0 - timedelta(days=900))
    on_timeline.contacts.add(contact)
    sequence = deleted_email(team, source="sequence")
    restored = deleted_email(team)
    restore_engagement(engagement=restored)
    thread_mate = deleted_email(team, with_file=False)
    kept_in_thread = EmailEngagementFactory(thread=thread_mate.thread)

    purged_at(T0 + timedelta(days=1000))

    assert set(EmailEngagement.objects.values_list("pk", flat=True)) == {
        on_timeline.pk, sequence.pk, restored.pk, kept_in_thread.pk,
    }  # fmt: skip
    assert restored.attachments.count() == 1 and sequence.attachments.count() == 1
    assert Thread.objects.filter(pk=thread_mate.thread_id).exists()


def test_each_team_has_its_own_periods(team, other_team):
    RetentionPolicy.objects.update_or_create(team=team, defaults={"deleted_engagement_days": 30})
    short = deleted_email(team, with_file=False)
    default = deleted_email(other_team, with_file=False)

    purged_at(T0 + timedelta(days=31))

    assert not EmailEngagement.objects.filter(pk=short.pk).exists()
    assert EmailEngagement.objects.filter(pk=default.pk).exists()


def test_small_batches_and_a_second_run_find_nothing_more(team):
    for _ in range(7):
        deleted_email(team)
    for n in range(5):
        synced_message(team, stored_at=T0 - timedelta(days=n))

    with time_machine.travel(T0 + timedelta(days=200), tick=False):
        first = {r.rule: r.rows for r in purge(batch_size=2)}
        second = {r.rule: r.rows for r in purge(batch_size=2)}

    assert first == {"R2": 7, "R3": 5, "R4": 5, "files": 0}
    assert second == {"R2": 0, "R3": 0, "R4": 0, "files": 0}
    assert not Attachment.objects.exists()


def test_dry_run_prints_a_table_and_erases_nothing(team):
    deleted_email(team)
    synced_message(team)
    out = StringIO()

    with time_machine.travel(T0 + timedelta(days=100), tick=False):
        call_command("purge", "--dry-run", stdout=out)

    text = out.getvalue()
    assert "dry run: nothing erased" in text
    lines = {line.split()[0]: line.split() for line in text.splitlines()[1:]}
    assert lines["R2"][-2:] == ["1", "1"]
    assert lines["R3"][-2:] == ["1", "-"]
    assert lines["R4"][-2:] == ["1", "-"]
    assert lines["R1"][-2:] == ["none", "-"]
    assert EmailEngagement.objects.count() == 1 and MessageMeta.objects.count() == 1


def test_r5_deleting_a_team_erases_everything_of_it(team, other_team):
    mine = deleted_email(team, deleted_at=None)
    path = mine.attachments.get().file.path
    synced_message(team)
    ContactFactory(team=team)
    theirs = deleted_email(other_team, deleted_at=None)
    synced_message(other_team)

    erase_team(team)

    assert not Team.objects.filter(pk=team.pk).exists()
    assert not os.path.exists(path)
    for model in (EmailEngagement, Attachment, Thread, MessageMeta, MessageBody, Mailbox):
        assert not model.objects.filter(team_id=team.pk).exists(), model
    assert os.path.exists(theirs.attachments.get().file.path)
    assert MessageMeta.objects.filter(team=other_team).count() == 1


def test_team_deleted_in_the_admin_loses_its_files_too(team):
    engagement = deleted_email(team, deleted_at=None)
    path = engagement.attachments.get().file.path

    team.delete()

    assert not os.path.exists(path)


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="the in-memory SQLite test database (shared cache) refuses a second writer instead "
    "of waiting; concurrency is checked on PostgreSQL",
)
def test_two_purges_at_once_erase_each_row_once(team):
    import threading

    for n in range(12):
        synced_message(team, stored_at=T0 - timedelta(days=n))
    for _ in range(6):
        deleted_email(team)
    results, errors = [], []

    def run():
        try:
            results.append({r.rule: r.rows for r in purge(now=T0 + timedelta(days=200),
                                                          batch_size=3)})  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sum(r["R4"] for r in results) == 12 and sum(r["R2"] for r in results) == 6
    assert not MessageMeta.objects.exists() and not EmailEngagement.objects.exists()
    assert not Attachment.objects.exists()


def test_attachment_files_without_a_row_are_erased_after_a_day(team, settings):
    kept = EmailEngagementFactory(thread__team=team)
    logged = Attachment.objects.create(
        team=team, engagement=kept, filename="kept.pdf", file=ContentFile(b"%PDF", name="kept.pdf")
    )
    orphan = Attachment(team=team, engagement=kept, filename="lost.pdf")
    orphan.file.save("lost.pdf", ContentFile(b"%PDF lost"), save=False)  # its batch rolled back
    orphan_path = orphan.file.path
    now = timezone.now()

    too_soon = {r.rule: r.files for r in purge(now=now + timedelta(hours=23))}
    dry = {r.rule: r.files for r in purge(now=now + timedelta(days=2), dry_run=True)}
    done = {r.rule: r.files for r in purge(now=now + timedelta(days=2))}

    assert (too_soon["files"], dry["files"], done["files"]) == (0, 1, 1)
    assert not os.path.exists(orphan_path)
    assert os.path.exists(logged.file.path)
