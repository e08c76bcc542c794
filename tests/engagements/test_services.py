from datetime import timedelta

import pytest
from django.utils import timezone

from engagements.models import EmailEngagement, Thread, TrackedMessageId
from engagements.services import (
    Address,
    EmailData,
    LogItem,
    delete_engagement,
    log_email,
    log_emails,
    restore_engagement,
)
from tests.factories import ContactFactory, DealFactory

pytestmark = pytest.mark.django_db


def email(message_id, **kwargs):
    defaults = {
        "sender": Address("ada@example.com", "Ada"),
        "sent_at": timezone.now(),
        "subject": "Hello",
    }
    return EmailData(message_id=message_id, **{**defaults, **kwargs})


def log(team, data, **kwargs):
    return log_email(team=team, email=data, direction="in", source="sync", **kwargs)


def test_logged_email_is_tracked_and_linked_to_records(team):
    contact, deal = ContactFactory(team=team), DealFactory(team=team)

    engagement = log(team, email("<a1@example.com>"), contacts=[contact], deals=[deal])

    assert engagement.message_id == "a1@example.com"
    assert list(engagement.contacts.all()) == [contact]
    assert list(engagement.deals.all()) == [deal]
    tracked = TrackedMessageId.objects.get(team=team)
    assert (tracked.message_id, tracked.thread_id) == ("a1@example.com", engagement.thread_id)


def test_reply_joins_the_thread_of_its_tracked_ancestor(team):
    first = log(team, email("a1@example.com"))

    reply = log(team, email("a2@example.com", in_reply_to="<a1@example.com>"))
    reply_to_reply = log(
        team, email("a3@example.com", references=("a1@example.com", "a2@example.com"))
    )

    assert reply.thread_id == first.thread_id
    assert reply_to_reply.thread_id == first.thread_id
    assert Thread.objects.count() == 1


def test_reply_whose_references_were_trimmed_still_matches_a_surviving_id(team):
    first = log(team, email("a1@example.com"))

    reply = log(team, email("a9@example.com", references=("unknown@x", "a1@example.com")))

    assert reply.thread_id == first.thread_id


def test_unrelated_email_starts_a_new_thread(team):
    first = log(team, email("a1@example.com"))

    other = log(team, email("b1@example.com", in_reply_to="nothing@example.com"))

    assert other.thread_id != first.thread_id


def test_logging_the_same_message_twice_keeps_one_engagement(team):
    contact_a, contact_b = ContactFactory(team=team), ContactFactory(team=team)

    first = log(team, email("dup@example.com"), contacts=[contact_a])
    again = log(team, email("<dup@example.com>"), contacts=[contact_b])

    assert first.pk == again.pk
    assert EmailEngagement.objects.count() == 1
    assert set(again.contacts.all()) == {contact_a, contact_b}


def test_threads_do_not_cross_teams(team, other_team):
    log(team, email("a1@example.com"))

    theirs = log(other_team, email("a2@example.com", in_reply_to="a1@example.com"))

    assert theirs.thread.team == other_team
    assert EmailEngagement.objects.filter(team=other_team).count() == 1


def test_refuses_records_of_another_team(team, other_team):
    with pytest.raises(ValueError, match="another team"):
        log(team, email("a1@example.com"), contacts=[ContactFactory(team=other_team)])

    assert not EmailEngagement.objects.exists()


def test_refuses_email_without_message_id(team):
    with pytest.raises(ValueError, match="Message-ID"):
        log(team, email("  <>  "))


def test_delete_hides_and_restore_brings_back(team, owner):
    contact = ContactFactory(team=team)
    engagement = log(team, email("a1@example.com"), contacts=[contact])

    delete_engagement(engagement=engagement, actor=owner)

    assert not EmailEngagement.objects.on_timeline_of(contact).exists()
    assert EmailEngagement.objects.deleted().get().deleted_by == owner

    restore_engagement(engagement=engagement)

    assert EmailEngagement.objects.on_timeline_of(contact).get() == engagement


def test_deleting_twice_keeps_the_first_deletion_time(team, owner):
    engagement = log(team, email("a1@example.com"))
    delete_engagement(engagement=engagement, actor=owner)
    first_time = engagement.deleted_at

    delete_engagement(engagement=engagement, actor=owner)

    engagement.refresh_from_db()
    assert engagement.deleted_at == first_time
    assert first_time <= timezone.now() + timedelta(seconds=1)


def test_log_emails_threads_replies_within_one_call(team):
    contact = ContactFactory(team=team)
    items = [
        LogItem(email("a@example.com"), "out", contacts=[contact]),
        LogItem(email("b@example.com", in_reply_to="a@example.com"), "in", contacts=[contact]),
        LogItem(email("c@example.com"), "in"),
        LogItem(email("<b@example.com>"), "in"),
    ]

    a, b, c, b_again = log_emails(team=team, items=items, source="sync")

    assert b.thread_id == a.thread_id != c.thread_id
    assert b_again.pk == b.pk
    assert EmailEngagement.objects.count() == 3
    assert TrackedMessageId.objects.count() == 3
    assert list(b.contacts.all()) == [contact]


def test_log_emails_costs_the_same_queries_for_few_or_many(team, django_assert_num_queries):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    log(team, email("root@example.com"))
    contact = ContactFactory(team=team)

    def replies(prefix, count):
        return [
            LogItem(
                email(f"{prefix}{n}@example.com", in_reply_to="root@example.com"),
                "in",
                contacts=[contact],
            )  # fmt: skip
            for n in range(count)
        ]

    with CaptureQueriesContext(connection) as few:
        log_emails(team=team, items=replies("few", 2), source="sync")
    with django_assert_num_queries(len(few.captured_queries)):
        log_emails(team=team, items=replies("many", 40), source="sync")

    assert EmailEngagement.objects.filter(contacts=contact).count() == 42
