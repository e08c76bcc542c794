"""Raw RFC 822 bytes -> headers, bodies, addresses, for every provider (stdlib `email`).

Real mail is often broken. Nothing here raises on a bad header or part: what cannot be read
is left empty and named in `problems`, so the message is still stored and the reason kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.utils import getaddresses, parseaddr, parsedate_to_datetime

_MSGID = re.compile(rb"<([^<>\s]+)>|<([^<>]+)>")
_MSGID_STR = re.compile(r"<([^<>\s]+)>")
MAX_HEADER_BYTES = 256 * 1024

Address = tuple[str, str]  # (name, email)


@dataclass
class HeaderFields:
    message_id: str = ""
    in_reply_to: str = ""
    references: tuple[str, ...] = ()
    from_name: str = ""
    from_address: str = ""
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    subject: str = ""
    sent_at: datetime | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class ParsedAttachment:
    filename: str
    content_type: str
    payload: bytes


@dataclass
class ParsedMessage:
    headers: HeaderFields
    text: str = ""
    html: str = ""
    attachments: list[ParsedAttachment] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def message_ids(value: str) -> tuple[str, ...]:
    """Message-IDs in a header value, without angle brackets, in order, deduplicated."""
    seen: dict[str, None] = {}
    for match in _MSGID_STR.findall(value or ""):
        seen.setdefault(match.strip(), None)
    if not seen and value and "@" in value and " " not in value.strip():
        seen[value.strip().strip("<>")] = None  # a bare id without brackets
    return tuple(seen)


def _decode(value: str) -> str:
    """Decode RFC 2047 words leniently; keep the raw text when they are broken."""
    try:
        return str(make_header(decode_header(value)))
    except (UnicodeError, LookupError, ValueError, TypeError):
        return value


def _unescape(text: str) -> str:
    """Undo the surrogate escapes `email` uses for raw 8-bit header bytes: decode them as
    UTF-8 (what most clients send), else as Windows-1252, so no surrogate reaches storage."""
    if text.isascii():
        return text
    raw = text.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", "replace")


def _raw(message: Message, name: str) -> str:
    """A header as raw text, even when the typed policy cannot parse it."""
    for key, value in message.raw_items() if hasattr(message, "raw_items") else []:
        if key.lower() == name.lower():
            return _unescape(" ".join(str(value).split()))
    return ""


def _addresses(raw: str, problems: list[str], name: str) -> tuple[Address, ...]:
    if not raw:
        return ()
    try:
        pairs = getaddresses([_decode(raw)])
    except (ValueError, TypeError, IndexError):
        problems.append(f"unreadable {name} header")
        return ()
    result = []
    for display, address in pairs:
        address = address.strip()
        if "@" in address:
            result.append((display.strip(), address.lower()))
    if not result:
        problems.append(f"no address in {name} header")
    return tuple(result)


def parse_headers(raw: bytes) -> HeaderFields:
    """The header fields we keep as metadata (SPEC R4), from a header block or whole message."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0][:MAX_HEADER_BYTES]
    message = message_from_bytes(head + b"\r\n\r\n", policy=policy.compat32)
    return _header_fields(message)


def _header_fields(message: Message) -> HeaderFields:
    fields = HeaderFields()
    problems = fields.problems
    ids = message_ids(_raw(message, "Message-ID"))
    if ids:
        fields.message_id = ids[0]
    else:
        problems.append("no Message-ID")
    reply_ids = message_ids(_raw(message, "In-Reply-To"))
    fields.in_reply_to = reply_ids[0] if reply_ids else ""
    fields.references = message_ids(_raw(message, "References"))
    sender = _addresses(_raw(message, "From"), problems, "From")
    if sender:
        fields.from_name, fields.from_address = sender[0]
    elif not _raw(message, "From"):
        problems.append("no From header")
    else:
        name, address = parseaddr(_raw(message, "From"))
        fields.from_name = _decode(name)
    fields.to = _addresses(_raw(message, "To"), problems, "To")
    fields.cc = _addresses(_raw(message, "Cc"), problems, "Cc")
    fields.subject = _decode(_raw(message, "Subject"))[:998]
    date = _raw(message, "Date")
    if date:
        try:
            sent_at = parsedate_to_datetime(date)
            fields.sent_at = sent_at if sent_at.tzinfo else sent_at.replace(tzinfo=UTC)
        except (ValueError, TypeError, IndexError, OverflowError):
            problems.append("unreadable Date header")
    return fields


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True) or b""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


def parse_message(raw: bytes) -> ParsedMessage:
    """Headers, the first text and HTML bodies, and the attachments of a whole message."""
    headers = parse_headers(raw)
    parsed = ParsedMessage(headers=headers, problems=list(headers.problems))
    try:
        message = message_from_bytes(raw, policy=policy.default)
        parts = list(message.walk()) if isinstance(message, EmailMessage) else []
    except Exception as exc:  # noqa: BLE001 - any parser failure becomes a recorded problem
        parsed.problems.append(f"unreadable MIME structure ({type(exc).__name__})")
        return parsed
    for part in parts:
        try:
            if part.is_multipart():
                continue
            disposition = part.get_content_disposition()
            filename = part.get_filename()
            content_type = part.get_content_type()
            if disposition == "attachment" or (filename and disposition != "inline"):
                parsed.attachments.append(
                    ParsedAttachment(
                        filename=_decode(filename or "attachment")[:255] or "attachment",
                        content_type=content_type,
                        payload=part.get_payload(decode=True) or b"",
                    )
                )
            elif content_type == "text/plain" and not parsed.text:
                parsed.text = _part_text(part)
            elif content_type == "text/html" and not parsed.html:
                parsed.html = _part_text(part)
        except Exception as exc:  # noqa: BLE001 - one broken part must not lose the others
            parsed.problems.append(f"unreadable part ({type(exc).__name__})")
    return parsed
