"""django-q2 tasks of the engagements app."""

from __future__ import annotations

from .purge import purge
from .sending import reconcile_outbox, send_outgoing


def send_email_task(outgoing_id: int) -> str:
    return send_outgoing(outgoing_id)


def reconcile_outbox_task() -> str:
    """Queue again what a lost task left waiting, and finish or re-send what a dead worker left
    sending, checking the sent folder first (the schedule's entry point)."""
    return reconcile_outbox().summary()


def purge_task() -> str:
    """The daily retention purge (SPEC R2–R4)."""
    return "; ".join(f"{r.rule}: {r.rows} rows, {r.files} files" for r in purge())
