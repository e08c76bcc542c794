"""django-q2 tasks of the engagements app."""

from __future__ import annotations

from .purge import purge
from .sending import send_outgoing


def send_email_task(outgoing_id: int) -> str:
    return send_outgoing(outgoing_id)


def purge_task() -> str:
    """The daily retention purge (SPEC R2–R4)."""
    return "; ".join(f"{r.rule}: {r.rows} rows, {r.files} files" for r in purge())
