"""Connecting Gmail and Microsoft 365 mailboxes over OAuth, through django-allauth.

"Connect Gmail" posts to allauth's provider login with `process=connect`; allauth runs the
authorisation-code flow (PKCE, offline access, mail scopes only). When the provider answers,
this adapter hands the tokens to `connect_mailbox`, which checks them against the mailbox and
keeps them encrypted on the Mailbox (SPEC S1): allauth stores no token
(SOCIALACCOUNT_STORE_TOKENS = False). The mailbox belongs to the account that consented,
whichever account the user signed in with.
"""

from __future__ import annotations

from typing import Any

from allauth.core.exceptions import ImmediateHttpResponse
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from allauth.socialaccount.models import SocialLogin
from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest
from django.shortcuts import redirect
from django.urls import reverse

from .models import Mailbox
from .services import ConnectError, connect_mailbox, queue_sync

# allauth provider id -> Mailbox.Kind
MAILBOX_KINDS = {"google": Mailbox.Kind.GMAIL, "microsoft": Mailbox.Kind.GRAPH}


def oauth_available(kind: str) -> bool:
    """Whether the deployment has an OAuth client for this kind of mailbox."""
    return bool(settings.CRM_OAUTH.get(kind, {}).get("client_id"))


def _tokens(sociallogin: SocialLogin) -> dict[str, Any]:
    token = sociallogin.token
    return {
        "access_token": token.token,
        "refresh_token": token.token_secret,
        "expires_at": token.expires_at.isoformat() if token.expires_at else None,
    }


def _email(sociallogin: SocialLogin) -> str:
    data = sociallogin.account.extra_data or {}
    for key in ("email", "mail", "userPrincipalName"):
        if data.get(key):
            return str(data[key]).lower()
    addresses = sociallogin.email_addresses
    return addresses[0].email.lower() if addresses else ""


class MailboxSocialAccountAdapter(DefaultSocialAccountAdapter):
    """Third-party accounts only connect mailboxes: no sign-up or sign-in through them."""

    def is_open_for_signup(self, request: HttpRequest, sociallogin: SocialLogin) -> bool:
        return False

    def pre_social_login(self, request: HttpRequest, sociallogin: SocialLogin) -> None:
        kind = MAILBOX_KINDS.get(sociallogin.account.provider)
        if sociallogin.state.get("process") != "connect" or kind is None:
            return
        user = request.user
        if not user.is_authenticated or getattr(request, "team", None) is None:
            return  # allauth refuses a connect without a signed-in user
        if sociallogin.is_existing and sociallogin.user != user:
            return  # linked to another user: allauth refuses it with its own message
        token = sociallogin.token
        if token is None or not token.token_secret:
            messages.error(request, "The provider gave no lasting access; please try again.")
            raise ImmediateHttpResponse(redirect("mailboxes:mailbox_list"))
        try:
            mailbox = connect_mailbox(
                team=request.team, owner=user, kind=kind, email_address=_email(sociallogin),
                provider_settings={}, credentials=_tokens(sociallogin),
            )  # fmt: skip
        except ConnectError as exc:
            messages.error(request, f"The mailbox could not be connected: {exc}")
            raise ImmediateHttpResponse(redirect("mailboxes:mailbox_list")) from None
        queue_sync(mailbox.pk)
        messages.success(
            request, f"{mailbox.email_address} is connected. The first sync has started."
        )
        request.session["threadline_connected_mailbox"] = mailbox.pk

    def get_connect_redirect_url(self, request: HttpRequest, socialaccount: Any) -> str:
        pk = request.session.pop("threadline_connected_mailbox", None)
        if pk is not None:
            return reverse("mailboxes:mailbox_detail", args=[pk])
        return reverse("mailboxes:mailbox_list")
