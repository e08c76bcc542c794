"""The push webhooks (sync/push.py): called by Google's Pub/Sub and by Microsoft Graph, never
by a user. Each answers quickly and says little; what a call may do is only to have a
mailbox synced."""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from mailboxes.providers.base import PushRefused

from . import push

logger = logging.getLogger(__name__)

# A push is a few hundred bytes; Graph batches at most 1,000 small notifications.
MAX_BODY = 1024 * 1024
MAX_VALIDATION_TOKEN = 4096


def _body(request: HttpRequest) -> bytes | None:
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    return request.body if 0 < length <= MAX_BODY else None


@csrf_exempt
@require_POST
def gmail_push(request: HttpRequest) -> HttpResponse:
    """Pub/Sub's push of a Gmail notification. 204 acknowledges it (also for an address we
    no longer connect, or Pub/Sub would deliver it again for a week); 403 refuses a call
    that is not a genuine push."""
    body = _body(request)
    if body is None:
        return HttpResponse(status=400)
    try:
        push.gmail_pushed(request.headers.get("Authorization", ""), body)
    except PushRefused as exc:
        logger.warning("Gmail push refused: %s", exc)
        return HttpResponse(status=403)
    return HttpResponse(status=204)


@csrf_exempt
@require_POST
def graph_push(request: HttpRequest) -> HttpResponse:
    """Graph's change and lifecycle notifications, and its validation of this URL when a
    subscription is made (the token echoed as plain text within 10 seconds)."""
    token = request.GET.get("validationToken")
    if token is not None:
        if not token or len(token) > MAX_VALIDATION_TOKEN:
            return HttpResponse(status=400)
        return HttpResponse(token, content_type="text/plain; charset=utf-8")
    body = _body(request)
    if body is None:
        return HttpResponse(status=400)
    try:
        push.graph_notified(body)
    except PushRefused as exc:
        logger.warning("Graph notification refused: %s", exc)
        return HttpResponse(status=400)
    return HttpResponse(status=202)
