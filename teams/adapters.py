from __future__ import annotations

from ipaddress import ip_address, ip_network
from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from django.http import HttpRequest

from .models import Invitation
from .services import InvitationError, accept_invitation, create_team

INVITATION_SESSION_KEY = "threadline_invitation"


class TeamAccountAdapter(DefaultAccountAdapter):
    """Signing up either accepts the invitation that brought the user, or creates a team."""

    def _get_login_attempts_cache_key(self, request: HttpRequest, **credentials: Any) -> str:
        # allauth counts failed logins per account: five failures from anywhere would lock the
        # owner out. Count them per account and client address (an IPv6 /64 as one).
        address = ip_address(self.get_client_ip(request))
        if address.version == 6 and address.ipv4_mapped:  # a dual-stack socket's IPv4 client
            address = address.ipv4_mapped
        if address.version == 6:
            address = ip_network(f"{address}/64", strict=False).network_address
        return f"{super()._get_login_attempts_cache_key(request, **credentials)}:{address}"

    def save_user(self, request: HttpRequest, user, form, commit: bool = True):  # type: ignore[no-untyped-def]
        user = super().save_user(request, user, form, commit=commit)
        if not commit:
            return user
        token = request.session.pop(INVITATION_SESSION_KEY, None)
        invitation = Invitation.objects.filter(token=token).first() if token else None
        if invitation and invitation.email.lower() == user.email.lower():
            try:
                accept_invitation(invitation=invitation, user=user)
                # The invitation reached this address: no verification email is needed.
                self.stash_verified_email(request, user.email)
                return user
            except InvitationError:
                pass
        create_team(name=f"{user.email.split('@')[0]}'s team", owner=user)
        return user
