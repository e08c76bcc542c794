from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse
from django.utils import timezone

from engagements.models import Attachment, EmailEngagement
from engagements.services import Address, EmailData, log_email
from engagements.timeline import THREADS_PER_PAGE
from tests.factories import CompanyFactory, ContactFactory, DealFactory

pytestmark = pytest.mark.django_db


def log_thread(team, records, key, replies=1, start=None, attach=False):
    """Log a thread of 1 + `replies` emails on `records` (dict of record kwargs)."""
    start = start or timezone.now() - timedelta(days=10)
    previous = None
    for index in range(replies + 1):
        engagement = log_email(
            team=team,
            email=EmailData(
                message_id=f"{key}-{index}@example.com",
                sender=Address("ada@example.com", "Ada"),
                to=(Address("me@example.com"),),
                subject=f"Thread {key}",
                body_text=f"Body {key} {index}",
                sent_at=start + timedelta(hours=index),
                in_reply_to=previous or "",
            ),
            direction="in",
            source="sync",
            **records,
        )
        previous = engagement.message_id
        if attach:
            Attachment.objects.create(
                team=team,
                engagement=engagement,
                filename=f"{key}-{index}.txt",
                size=3,
                file=ContentFile(b"abc", name="a.txt"),
            )
    return engagement


def timeline_of(client, record):
    return client.get(record.get_absolute_url()).context["timeline"]


def test_contact_timeline_groups_by_thread_newest_first(client_for, owner, team):
    contact = ContactFactory(team=team)
    now = timezone.now()
    log_thread(team, {"contacts": [contact]}, "old", replies=2, start=now - timedelta(days=5))
    log_thread(team, {"contacts": [contact]}, "new", replies=1, start=now - timedelta(days=1))

    timeline = timeline_of(client_for(owner), contact)

    threads = list(timeline.threads.object_list)
    assert [t.subject for t in threads] == ["Thread new", "Thread old"]
    assert [e.message_id for e in threads[1].shown] == [
        "old-2@example.com",
        "old-1@example.com",
        "old-0@example.com",
    ]


def test_timeline_shows_only_the_records_own_email(client_for, owner, team):
    mine, other = ContactFactory(team=team), ContactFactory(team=team)
    log_thread(team, {"contacts": [mine]}, "mine")
    log_thread(team, {"contacts": [other]}, "other")

    body = client_for(owner).get(mine.get_absolute_url()).content.decode()

    assert "Thread mine" in body
    assert "Thread other" not in body


def test_company_and_deal_pages_show_their_timelines(client_for, owner, team):
    company, deal = CompanyFactory(team=team), DealFactory(team=team)
    log_thread(team, {"companies": [company]}, "co")
    log_thread(team, {"deals": [deal]}, "deal")
    client = client_for(owner)

    assert [t.subject for t in timeline_of(client, company).threads] == ["Thread co"]
    assert [t.subject for t in timeline_of(client, deal).threads] == ["Thread deal"]


def test_deleted_engagement_leaves_the_timeline(client_for, owner, team):
    contact = ContactFactory(team=team)
    last = log_thread(team, {"contacts": [contact]}, "t", replies=1, attach=True)
    client = client_for(owner)

    client.post(reverse("engagements:engagement_delete", args=[last.pk]))

    timeline = timeline_of(client, contact)
    assert [e.message_id for e in timeline.threads[0].shown] == ["t-0@example.com"]
    assert [a.filename for a in timeline.attachments] == ["t-0.txt"]


def test_timeline_paginates_threads(client_for, owner, team):
    contact = ContactFactory(team=team)
    for index in range(THREADS_PER_PAGE + 3):
        log_thread(team, {"contacts": [contact]}, f"p{index}", replies=0)
    client = client_for(owner)

    page2 = client.get(contact.get_absolute_url(), {"page": 2}).context["timeline"].threads

    assert page2.paginator.num_pages == 2
    assert len(page2.object_list) == 3


@pytest.mark.parametrize("factory", [ContactFactory, CompanyFactory, DealFactory])
def test_record_page_queries_do_not_grow_with_engagements(
    client_for, owner, team, factory, django_assert_num_queries
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    record = factory(team=team)
    field = {"Contact": "contacts", "Company": "companies", "Deal": "deals"}[type(record).__name__]
    client = client_for(owner)
    log_thread(team, {field: [record]}, "small", replies=1, attach=True)
    with CaptureQueriesContext(connection) as small:
        client.get(record.get_absolute_url())
    for index in range(12):
        log_thread(team, {field: [record]}, f"big{index}", replies=8, attach=True)
    assert EmailEngagement.objects.on_timeline_of(record).count() == 2 + 12 * 9

    with django_assert_num_queries(len(small.captured_queries)):
        response = client.get(record.get_absolute_url())

    assert response.status_code == 200
    assert len(response.context["timeline"].threads.object_list) == THREADS_PER_PAGE


def test_html_bodies_are_sanitised_and_remote_images_blocked(client_for, owner, team):
    contact = ContactFactory(team=team)
    log_email(
        team=team,
        email=EmailData(
            message_id="x@example.com",
            sender=Address("evil@example.com"),
            sent_at=timezone.now(),
            subject="Hi",
            body_html=(
                '<p onmouseover="steal()">Hello <b>there</b></p><script>steal()</script>'
                '<img src="https://tracker.example/p.gif"><a href="javascript:steal()">x</a>'
            ),
        ),
        direction="in",
        source="sync",
        contacts=[contact],
    )
    client = client_for(owner)

    body = client.get(contact.get_absolute_url()).content.decode()
    with_images = client.get(contact.get_absolute_url(), {"images": "1"}).content.decode()

    assert "Hello <b>there</b>" in body
    assert "steal()" not in body
    assert "tracker.example" not in body
    assert "Remote images are blocked" in body
    assert 'src="https://tracker.example/p.gif"' in with_images


def test_empty_timeline_explains_itself(client_for, owner, team):
    contact = ContactFactory(team=team)

    body = client_for(owner).get(contact.get_absolute_url()).content.decode()

    assert "No email on this timeline yet" in body
    assert "Files attached to logged email appear here" in body


def test_removed_email_is_listed_for_restore_until_restored(client_for, owner, team):
    contact = ContactFactory(team=team)
    engagement = log_thread(team, {"contacts": [contact]}, "gone", replies=0)
    client = client_for(owner)
    client.post(reverse("engagements:engagement_delete", args=[engagement.pk]))

    removed = timeline_of(client, contact).recently_removed
    body = client.get(contact.get_absolute_url()).content.decode()
    client.post(reverse("engagements:engagement_restore", args=[engagement.pk]))

    assert removed == [engagement]
    assert "Recently removed (1)" in body
    assert "restorable for 90 days" in body
    assert timeline_of(client, contact).recently_removed == []
    assert [t.subject for t in timeline_of(client, contact).threads] == ["Thread gone"]


def version_of(client, record):
    kind = type(record).__name__.lower()
    url = reverse(f"engagements:timeline_version_{kind}", args=[record.pk])
    response = client.get(url)
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    return response.json()["version"]


@pytest.mark.parametrize("factory", [ContactFactory, CompanyFactory, DealFactory])
def test_the_timeline_version_changes_with_what_the_page_shows(client_for, owner, team, factory):
    from engagements.services import delete_engagement, restore_engagement

    record = factory(team=team)
    field = {"Contact": "contacts", "Company": "companies", "Deal": "deals"}[type(record).__name__]
    client = client_for(owner)
    empty = version_of(client, record)
    rendered = client.get(record.get_absolute_url())
    assert rendered.context["timeline_version"] == empty  # the page starts from the same

    last = log_thread(team, {field: [record]}, "a", replies=1)
    logged = version_of(client, record)
    log_thread(team, {field: [factory(team=team)]}, "elsewhere")  # another record's email
    unchanged = version_of(client, record)
    delete_engagement(engagement=last, actor=owner)
    removed = version_of(client, record)
    restore_engagement(engagement=last)
    restored = version_of(client, record)
    EmailEngagement.objects.filter(pk=last.pk).update(status="sending")
    sending = version_of(client, record)
    EmailEngagement.objects.filter(pk=last.pk).update(status="sent")

    assert len({empty, logged, removed, sending}) == 4
    assert unchanged == logged and restored == logged
    assert version_of(client, record) == logged
