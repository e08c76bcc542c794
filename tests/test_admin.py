"""The admin lists every model for staff and never shows secrets."""

import pytest
from django.contrib import admin
from django.urls import reverse

from teams.models import Invitation
from tests.factories import EmailEngagementFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


@pytest.mark.parametrize("model", [m for m in admin.site._registry], ids=lambda m: m._meta.label)
def test_changelist_loads(staff_client, model, team):
    EmailEngagementFactory(thread__team=team)
    opts = model._meta

    listing = staff_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))

    assert listing.status_code == 200


def test_invitation_token_is_not_shown(staff_client, team):
    invitation = Invitation.objects.create(team=team, email="x@example.com")

    page = staff_client.get(reverse("admin:teams_invitation_change", args=[invitation.pk]))

    assert page.status_code == 200
    assert invitation.token not in page.content.decode()


def test_retention_defaults_are_editable_in_the_admin(staff_client, team):
    url = reverse("admin:teams_retentionpolicy_change", args=[team.retention.pk])

    response = staff_client.post(
        url,
        {
            "team": team.pk,
            "body_cache_days": 3,
            "metadata_days": 30,
            "deleted_engagement_days": 10,
            "log_attachments": "",
            "attachment_max_mb": 25,
        },
    )

    team.retention.refresh_from_db()
    assert response.status_code == 302
    assert (team.retention.body_cache_days, team.retention.log_attachments) == (3, False)


def test_team_added_in_the_admin_gets_the_default_retention(staff_client):
    from teams.models import Team

    response = staff_client.post(
        reverse("admin:teams_team_add"),
        {
            "name": "Made by staff",
            "retention-TOTAL_FORMS": "0",
            "retention-INITIAL_FORMS": "0",
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
        },
    )

    team = Team.objects.get(name="Made by staff")
    assert response.status_code == 302
    assert team.retention.metadata_days == 60
