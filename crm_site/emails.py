"""The one helper that renders and sends the app's own notification emails (STYLE section 6)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string


def send_templated_email(name: str, to: Sequence[str], context: dict[str, Any]) -> None:
    """Render `emails/<name>_subject.txt`, `_body.txt` and `_body.html`, and send them."""
    subject = render_to_string(f"emails/{name}_subject.txt", context).strip()
    text = render_to_string(f"emails/{name}_body.txt", context)
    html = render_to_string(f"emails/{name}_body.html", context)
    message = EmailMultiAlternatives(
        subject=" ".join(subject.splitlines()),
        body=text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=list(to),
    )
    message.attach_alternative(html, "text/html")
    message.send()
