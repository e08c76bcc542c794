"""The banner every page shows while one of the user's mailboxes is disconnected (SPEC D2)."""

from __future__ import annotations

from django.http import HttpRequest

from .models import Mailbox


def disconnected_mailboxes(request: HttpRequest) -> dict[str, object]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    # A queryset: evaluated (one small query) only by the base layout's banner.
    return {
        "disconnected_mailboxes": Mailbox.objects.filter(
            owner=user, state=Mailbox.State.DISCONNECTED
        ).only("pk", "email_address", "disconnect_cause", "last_error", "disconnected_at")
    }
