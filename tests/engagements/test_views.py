from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse

from engagements.models import Attachment, EmailEngagement
from tests.factories import ContactFactory, EmailEngagementFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def attachment(team):
    engagement = EmailEngagementFactory(thread__team=team)
    return Attachment.objects.create(
        team=team,
        engagement=engagement,
        filename="report <1>.html",
        content_type="text/html",
        size=20,
        file=ContentFile(b"<script>x()</script>", name="report.html"),
    )


def test_attachment_downloads_with_safe_headers(client_for, owner, attachment):
    response = client_for(owner).get(attachment.get_absolute_url())

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"<script>x()</script>"
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"].startswith("attachment;")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]


def test_attachment_of_deleted_engagement_is_not_served(client_for, owner, attachment):
    client = client_for(owner)
    client.post(reverse("engagements:engagement_delete", args=[attachment.engagement_id]))

    response = client.get(attachment.get_absolute_url())

    assert response.status_code == 404


def test_delete_then_restore_redirects_back_to_the_record(client_for, owner, team):
    contact = ContactFactory(team=team)
    engagement = EmailEngagementFactory(thread__team=team)
    engagement.contacts.add(contact)
    client = client_for(owner)
    back = {"next": contact.get_absolute_url()}

    deleted = client.post(reverse("engagements:engagement_delete", args=[engagement.pk]), back)
    engagement.refresh_from_db()
    assert engagement.is_deleted
    restored = client.post(reverse("engagements:engagement_restore", args=[engagement.pk]), back)

    engagement.refresh_from_db()
    assert deleted.url == restored.url == contact.get_absolute_url()
    assert not engagement.is_deleted


def test_delete_ignores_an_off_site_next(client_for, owner, team):
    engagement = EmailEngagementFactory(thread__team=team)

    response = client_for(owner).post(
        reverse("engagements:engagement_delete", args=[engagement.pk]),
        {"next": "https://evil.example/"},
    )

    assert response.url == reverse("home")


def test_delete_get_does_not_mutate(client_for, owner, team):
    engagement = EmailEngagementFactory(thread__team=team)

    response = client_for(owner).get(reverse("engagements:engagement_delete", args=[engagement.pk]))

    assert response.status_code == 405
    assert EmailEngagement.objects.visible().filter(pk=engagement.pk).exists()


def test_recently_deleted_page_lists_restores_and_says_when_it_goes(client_for, owner, team):
    contact = ContactFactory(team=team)
    engagement = EmailEngagementFactory(thread__team=team, subject="Old quote")
    engagement.contacts.add(contact)
    client = client_for(owner)
    client.post(reverse("engagements:engagement_delete", args=[engagement.pk]))
    engagement.refresh_from_db()

    page = client.get(reverse("engagements:recently_deleted")).content.decode()

    erased_on = engagement.deleted_at + timedelta(days=90)
    assert "Old quote" in page and f"{erased_on:%-d %b %Y}" in page
    assert str(contact) in page
    client.post(reverse("engagements:engagement_restore", args=[engagement.pk]))
    assert (
        "No deleted email" in client.get(reverse("engagements:recently_deleted")).content.decode()
    )
    assert EmailEngagement.objects.visible().filter(pk=engagement.pk).exists()
