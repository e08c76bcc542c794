from __future__ import annotations

from allauth.account.adapter import DefaultAccountAdapter
from django.http import HttpRequest

from .models import Invitation
from .services import InvitationError, accept_invitation, create_team

INVITATION_SESSION_KEY = "threadline_invitation"


class TeamAccountAdapter(DefaultAccountAdapter):
    """Signing up either accepts the invitation that brought the user, or creates a team."""

    def save_user(self, request: HttpRequest, user, form, commit: bool = True):  # type: ignore[no-untyped-def]
        user = super().save_user(request, user, form, commit=commit)
        if not commit:
            return user
        token = request.session.pop(INVITATION_SESSION_KEY, None)
        invitation = Invitation.objects.filter(token=token).first() if token else None
        if invitation and invitation.email.lower() == user.email.lower():
            try:
                accept_invitation(invitation=invitation, user=user)
                return user
            except InvitationError:
                pass
        create_team(name=f"{user.email.split('@')[0]}'s team", owner=user)
        return user
