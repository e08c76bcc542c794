"""BCC and forward logging (SPEC L4): email sent to a team's logging address over SMTP.

`manage.py run_inbound_smtp` serves `InboundHandler` with aiosmtpd. A team member who BCCs
the logging address gets the email logged on the records of the contacts among its
recipients; one who forwards an email to it gets it logged on the records of the original
correspondents. Either way its Message-ID becomes tracked, so the sync logs the replies.
Mail for unknown addresses, from non-members, or over the size limit is refused with an SMTP
error and never logged.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import getaddresses

from aiosmtpd.controller import Controller
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import close_old_connections, transaction
from django.db.models.functions import Lower
from django.utils import timezone
from django_q.tasks import async_task

from contacts.models import Contact, ContactEmail
from mailboxes.parsing import ParsedMessage, message_ids, parse_message
from teams.models import RetentionPolicy, Team

from .matching import attachments_to_log
from .models import EmailEngagement
from .services import Address, EmailData, log_email

logger = logging.getLogger(__name__)

# The sync engine's task that logs replies synced before their thread was tracked (queued by
# name: the engine imports this app, not the reverse).
LOG_BACKLOG_TASK = "sync.tasks.log_backlog_task"

_LOGGING_LOCAL = re.compile(r"^log-([0-9a-f]{8,40})$")
_FORWARD_SUBJECT = re.compile(r"^\s*(fwd?|wg|tr|rv|i|enc|doorst)\s*:", re.IGNORECASE)
_FORWARD_MARKER = re.compile(
    r"^[ >]*(?:-{2,}\s*(?:forwarded message|original message|messaggio inoltrato|"
    r"weitergeleitete nachricht|message transféré)\s*-{2,}|begin forwarded message:)\s*$",
    re.IGNORECASE | re.MULTILINE,
)
_QUOTED_HEADER = re.compile(r"^[ >*]*(from|to|cc|da|a|von|an|de|à)\s*:\s*(.+)$", re.IGNORECASE)
_HEADER_NAMES = {"from": "from", "da": "from", "von": "from", "de": "from",
                 "to": "to", "a": "to", "an": "to", "à": "to", "cc": "cc"}  # fmt: skip


def team_for_address(address: str) -> Team | None:
    """The team whose logging address this is, or None."""
    local, _, domain = address.strip().lower().rpartition("@")
    match = _LOGGING_LOCAL.match(local)
    if match is None or domain != settings.CRM_MAIL_DOMAIN.lower():
        return None
    return Team.objects.filter(logging_token=match.group(1)).first()


def _members(team: Team) -> set[str]:
    users = get_user_model().objects.filter(membership__team=team)
    return {email.lower() for email in users.values_list("email", flat=True) if email}


@dataclass
class Correspondence:
    """Who an inbound email is about: the addresses whose contacts get it logged."""

    forwarded: bool
    sender: Address
    addresses: list[str]


def _forwarded_headers(text: str) -> dict[str, list[str]] | None:
    """From/To/Cc of an inline forwarded message ("---------- Forwarded message ---------")."""
    marker = _FORWARD_MARKER.search(text)
    if marker is None:
        return None
    found: dict[str, list[str]] = {}
    for line in text[marker.end() :].lstrip("\r\n").splitlines()[:15]:
        if not line.strip(" >"):
            if found:
                break
            continue
        match = _QUOTED_HEADER.match(line)
        if match:
            found.setdefault(_HEADER_NAMES[match.group(1).lower()], []).append(match.group(2))
    return found or None


def _attached_original(message: EmailMessage) -> EmailMessage | None:
    for part in message.walk():
        if part.get_content_type() == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload:
                return payload[0]
    return None


def correspondence(raw: bytes, parsed: ParsedMessage) -> Correspondence:
    """The people an inbound email involves: for a forward, the original correspondents
    (an attached original, else the forwarded header block); for a BCC, its recipients."""
    headers = parsed.headers
    sender = Address(headers.from_address, headers.from_name)
    recipients = [address for _name, address in (*headers.to, *headers.cc)]
    try:
        message = message_from_bytes(raw, policy=policy.default)
        original = _attached_original(message) if isinstance(message, EmailMessage) else None
    except Exception:  # noqa: BLE001 - a broken structure is read as a plain BCC
        original = None
    if original is not None:
        fields = {name: [str(original.get(name, ""))] for name in ("from", "to", "cc")}
    else:
        fields = _forwarded_headers(parsed.text) if _FORWARD_SUBJECT.match(headers.subject) or (
            _FORWARD_MARKER.search(parsed.text)
        ) else None  # fmt: skip
    if not fields:
        return Correspondence(forwarded=False, sender=sender, addresses=recipients)
    people = getaddresses([value for values in fields.values() for value in values])
    addresses = [address.lower() for _name, address in people if "@" in address]
    return Correspondence(forwarded=True, sender=sender, addresses=addresses)


class Refused(Exception):
    """An inbound email that is not logged; `reply` is the SMTP answer."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


def log_inbound(team: Team, envelope_sender: str, raw: bytes) -> EmailEngagement:
    """Log an email received at `team`'s logging address, with its attachments as the team's
    setting allows (SPEC L5). Raises Refused."""
    parsed = parse_message(raw)
    headers = parsed.headers
    members = _members(team)
    sender = headers.from_address.lower()
    if sender not in members and envelope_sender.lower() not in members:
        raise Refused("550 5.7.1 Only members of the team can log email at this address")
    who = correspondence(raw, parsed)
    involved = set(who.addresses) - members - {team.logging_address.lower()}
    contacts = _contacts(team, involved)
    if not contacts:
        raise Refused(
            "550 5.1.1 None of the people in this email is a contact of your team: add them "
            "as contacts in Threadline, then send it again"
        )
    message_id = headers.message_id or f"inbound-{timezone.now().timestamp()}@invalid"
    policy, _ = RetentionPolicy.objects.get_or_create(team=team)
    attachments, note = attachments_to_log(policy, len(raw), parsed.attachments)
    engagement = log_email(
        team=team,
        email=EmailData(
            message_id=message_id,
            sender=Address(headers.from_address or envelope_sender, headers.from_name),
            sent_at=headers.sent_at or timezone.now(),
            subject=headers.subject,
            to=tuple(Address(a, n) for n, a in headers.to),
            cc=tuple(Address(a, n) for n, a in headers.cc),
            body_text=parsed.text,
            body_html=parsed.html,
            in_reply_to=headers.in_reply_to,
            references=headers.references,
        ),
        direction=EmailEngagement.Direction.OUTGOING,
        source=EmailEngagement.Source.LOGGING_ADDRESS,
        contacts=contacts,
        companies=[c.company for c in contacts if c.company is not None],
        attachments=attachments,
        attachments_note=note,
    )
    # Replies synced before this email was logged (IMAP keeps them on the server): the sync
    # engine reads and logs them in the background, not while the sender's server waits.
    backlog = [message_id, *message_ids(headers.in_reply_to)]
    transaction.on_commit(lambda: async_task(LOG_BACKLOG_TASK, team.pk, backlog, group="sync"))
    return engagement


def _contacts(team: Team, addresses: set[str]) -> list[Contact]:
    ids = (
        ContactEmail.objects.for_team(team)
        .annotate(address=Lower("email"))
        .filter(address__in=addresses)
        .values("contact_id")
    )
    return list(Contact.objects.for_team(team).filter(pk__in=ids).select_related("company"))


class InboundHandler:
    """aiosmtpd handler: RCPT accepts only logging addresses, DATA logs (in a worker thread:
    the ORM is synchronous)."""

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        team = await asyncio.get_running_loop().run_in_executor(None, _team_id, address)
        if team is None:
            return "550 5.1.1 No such logging address"
        teams = getattr(envelope, "threadline_teams", set())
        teams.add(team)
        envelope.threadline_teams = teams
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        loop = asyncio.get_running_loop()
        replies = []
        for team_id in sorted(envelope.threadline_teams):
            replies.append(
                await loop.run_in_executor(
                    None, _log, team_id, envelope.mail_from or "", envelope.original_content
                )
            )
        refused = [r for r in replies if not r.startswith("250")]
        return refused[0] if refused else replies[0]


def _team_id(address: str) -> int | None:
    try:
        team = team_for_address(address)
        return team.pk if team else None
    finally:
        close_old_connections()


def _log(team_id: int, envelope_sender: str, raw: bytes) -> str:
    try:
        team = Team.objects.get(pk=team_id)
        engagement = log_inbound(team, envelope_sender, raw)
        return f"250 2.0.0 Logged “{engagement.subject[:60]}” on {team.name}'s timelines"
    except Refused as exc:
        logger.info("inbound email refused for team %s: %s", team_id, exc.reply)
        return exc.reply
    except Exception:
        logger.exception("inbound email for team %s could not be logged", team_id)
        return "451 4.3.0 The email could not be logged now; try again later"
    finally:
        close_old_connections()


def inbound_server(host: str, port: int) -> Controller:
    """The inbound SMTP service, not started (call .start() and .stop())."""
    return Controller(
        InboundHandler(),
        hostname=host,
        port=port,
        server_hostname=settings.CRM_MAIL_DOMAIN,
        data_size_limit=settings.CRM_INBOUND_MAX_MB * 1024 * 1024,
    )
