import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.urls import reverse

from teams.adapters import INVITATION_SESSION_KEY
from teams.models import Invitation, Membership
from tests.factories import PASSWORD, TeamFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_signup_creates_a_team_with_its_admin_and_default_retention(client):
    response = client.post(
        reverse("account_signup"),
        {"email": "new@example.com", "password1": PASSWORD, "password2": PASSWORD},
    )

    assert response.status_code == 302
    user = get_user_model().objects.get(email="new@example.com")
    membership = Membership.objects.get(user=user)
    assert membership.role == Membership.Role.ADMIN
    assert membership.team.retention.body_cache_days == 7
    assert membership.team.retention.metadata_days == 60
    assert membership.team.retention.deleted_engagement_days == 90
    assert membership.team.retention.attachment_max_mb == 50


def test_login_is_by_email(client, owner):
    response = client.post(reverse("account_login"), {"login": owner.email, "password": PASSWORD})

    assert response.status_code == 302
    assert client.get(reverse("contacts:contact_list")).status_code == 200


def test_owner_can_invite_a_teammate_by_email(client_for, owner, team):
    response = client_for(owner).post(
        reverse("teams:invitation_create"), {"email": "Friend@Example.com"}
    )

    assert response.status_code == 302
    invitation = Invitation.objects.get(team=team)
    assert invitation.email == "friend@example.com"
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["friend@example.com"]
    assert "Acme" in mail.outbox[0].subject
    assert f"/team/join/{invitation.token}/" in mail.outbox[0].body


def test_invitation_rejects_duplicate_pending_email(client_for, owner):
    client = client_for(owner)
    client.post(reverse("teams:invitation_create"), {"email": "friend@example.com"})

    response = client.post(reverse("teams:invitation_create"), {"email": "friend@example.com"})

    assert response.status_code == 400
    assert "already has a pending invitation" in response.content.decode()
    assert len(mail.outbox) == 1


def test_invitation_rejects_invalid_email(client_for, owner):
    response = client_for(owner).post(reverse("teams:invitation_create"), {"email": "nope"})

    assert response.status_code == 400
    assert not Invitation.objects.exists()


def test_teammate_cannot_invite(client_for, teammate):
    response = client_for(teammate).post(
        reverse("teams:invitation_create"), {"email": "friend@example.com"}
    )

    assert response.status_code == 403
    assert not Invitation.objects.exists()


def test_invitation_create_get_does_not_mutate(client_for, owner):
    response = client_for(owner).get(reverse("teams:invitation_create"))

    assert response.status_code == 405
    assert not Invitation.objects.exists()


def test_invited_person_signs_up_into_the_inviting_team(client, team, owner):
    invitation = Invitation.objects.create(team=team, email="friend@example.com", invited_by=owner)
    client.post(reverse("teams:invitation_accept", args=[invitation.token]))
    assert client.session[INVITATION_SESSION_KEY] == invitation.token

    client.post(
        reverse("account_signup"),
        {"email": "friend@example.com", "password1": PASSWORD, "password2": PASSWORD},
    )

    user = get_user_model().objects.get(email="friend@example.com")
    assert user.membership.team == team
    assert user.membership.role == Membership.Role.MEMBER
    invitation.refresh_from_db()
    assert invitation.accepted_at is not None


def test_invitation_for_another_address_does_not_join_the_team(client, team, owner):
    invitation = Invitation.objects.create(team=team, email="friend@example.com", invited_by=owner)
    client.post(reverse("teams:invitation_accept", args=[invitation.token]))

    client.post(
        reverse("account_signup"),
        {"email": "stranger@example.com", "password1": PASSWORD, "password2": PASSWORD},
    )

    user = get_user_model().objects.get(email="stranger@example.com")
    assert user.membership.team != team


def test_used_invitation_cannot_be_used_again(client_for, team, owner):
    invitation = Invitation.objects.create(team=team, email="friend@example.com", invited_by=owner)
    first = UserFactory(email="friend@example.com")
    client_for(first).post(reverse("teams:invitation_accept", args=[invitation.token]))
    second = UserFactory()

    response = client_for(second).post(reverse("teams:invitation_accept", args=[invitation.token]))

    assert response.status_code == 410
    assert not Membership.objects.filter(user=second).exists()


def test_outsider_cannot_revoke_another_teams_invitation(client_for, team, owner, outsider):
    invitation = Invitation.objects.create(team=team, email="friend@example.com", invited_by=owner)

    response = client_for(outsider).post(reverse("teams:invitation_revoke", args=[invitation.pk]))

    assert response.status_code == 404
    assert Invitation.objects.filter(pk=invitation.pk).exists()


def test_owner_can_revoke_an_invitation(client_for, team, owner):
    invitation = Invitation.objects.create(team=team, email="friend@example.com", invited_by=owner)

    response = client_for(owner).post(reverse("teams:invitation_revoke", args=[invitation.pk]))

    assert response.status_code == 302
    assert not Invitation.objects.exists()


def test_team_settings_lists_only_own_members(client_for, owner, teammate, outsider):
    response = client_for(owner).get(reverse("teams:team_settings"))

    body = response.content.decode()
    assert owner.email in body
    assert teammate.email in body
    assert outsider.email not in body


def test_user_without_team_is_asked_to_create_one(client_for):
    user = UserFactory()
    client = client_for(user)

    assert client.get(reverse("contacts:contact_list")).url == reverse("teams:team_create")
    response = client.post(reverse("teams:team_create"), {"name": "Solo"})

    assert response.status_code == 302
    assert user.membership.team.name == "Solo"
    assert user.membership.role == Membership.Role.ADMIN


def test_anonymous_is_sent_to_login(client):
    response = client.get(reverse("teams:team_settings"))

    assert response.status_code == 302
    assert response.url.startswith(reverse("account_login"))


def test_second_team_is_independent(db):
    first, second = TeamFactory(), TeamFactory()

    assert first.retention.pk != second.retention.pk
