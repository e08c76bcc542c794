"""django-q2 tasks of the engagements app."""

from __future__ import annotations

from .sending import send_outgoing


def send_email_task(outgoing_id: int) -> str:
    return send_outgoing(outgoing_id)
