"""Team, membership and invitation writes."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone

from crm_site.emails import send_templated_email

from .models import Invitation, Membership, RetentionPolicy, Team


class InvitationError(Exception):
    """The invitation cannot be sent or accepted; the message is shown to the user."""


@transaction.atomic
def create_team(*, name: str, owner: AbstractBaseUser) -> Team:
    """Create a team with its default retention policy and make `owner` its admin."""
    team = Team.objects.create(name=name.strip() or "My team")
    RetentionPolicy.objects.create(team=team)
    Membership.objects.create(team=team, user=owner, role=Membership.Role.ADMIN)
    return team


def invite_member(
    *, team: Team, email: str, actor: AbstractBaseUser, request: HttpRequest
) -> Invitation:
    """Record an invitation and email its link. Raises InvitationError on a duplicate."""
    email = email.strip().lower()
    if Membership.objects.for_team(team).filter(user__email__iexact=email).exists():
        raise InvitationError(f"{email} is already a member of {team}.")
    try:
        with transaction.atomic():
            invitation = Invitation.objects.create(team=team, email=email, invited_by=actor)
    except IntegrityError:
        raise InvitationError(f"{email} already has a pending invitation.") from None
    link = request.build_absolute_uri(reverse("teams:invitation_accept", args=[invitation.token]))
    send_templated_email(
        "invitation",
        [email],
        {"team": team, "inviter": actor, "link": link},
    )
    return invitation


@transaction.atomic
def accept_invitation(*, invitation: Invitation, user: AbstractBaseUser) -> Membership:
    """Join the invitation's team as a member. Raises InvitationError if it can't be used."""
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if not invitation.is_usable():
        raise InvitationError("This invitation has expired or was already used.")
    if Membership.objects.filter(user=user).exists():
        raise InvitationError("You already belong to a team; Threadline allows one team per user.")
    membership = Membership.objects.create(
        team=invitation.team, user=user, role=Membership.Role.MEMBER
    )
    invitation.accepted_at = timezone.now()
    invitation.save(update_fields=["accepted_at"])
    return membership


def revoke_invitation(*, invitation: Invitation) -> None:
    invitation.delete()
