"""Raw RFC 822 bytes -> headers, bodies, addresses, for every provider (stdlib `email`).

Real mail is often broken. Nothing here raises on a bad header or part: what cannot be read
is left empty and named in `problems`, so the message is still stored and the reason kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.policy import EmailPolicy
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from typing import Any

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


def _without_nul(text: str) -> str:
    """NUL shown as the replacement character, like undecodable bytes: PostgreSQL's text
    cannot hold it, and encoded words, quoted-printable and API strings can all carry it."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _decode(value: str) -> str:
    """Decode RFC 2047 words leniently; keep the raw text when they are broken."""
    if "=?" not in value:
        return value  # nothing encoded: skip the (slow) decoder
    try:
        return _without_nul(str(make_header(decode_header(value))))
    except (UnicodeError, LookupError, ValueError, TypeError):
        return value


# One mailbox in its two everyday forms, "Name <a@b>" and "a@b", with nothing that needs the
# full RFC 5322 parser (quotes, comments, groups, route addresses, escapes).
_ATOMS = r"[^\s<>@\"(),:;\[\]\\]+"
_SIMPLE_MAILBOX = re.compile(
    rf"""^(?:
        ([^\"(),:;<>@\[\]\\]*?)\ ?<({_ATOMS}@{_ATOMS})>   # Name <local@domain>
        | ({_ATOMS}@{_ATOMS})                               # local@domain
    )$""",
    re.VERBOSE,
)


def _simple_addresses(text: str) -> list[tuple[str, str]] | None:
    """getaddresses() for the common simple cases, several times faster; None otherwise."""
    pairs = []
    for part in text.split(","):
        match = _SIMPLE_MAILBOX.match(part.strip())
        if match is None:
            return None
        display, bracketed, bare = match.groups()
        pairs.append(((display or "").strip(), bracketed or bare))
    return pairs


def _addresses(raw: str, problems: list[str], name: str) -> tuple[Address, ...]:
    if not raw:
        return ()
    text = _decode(raw)
    try:
        pairs = _simple_addresses(text) or getaddresses([text])
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


_HEADER_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]*:")
KEPT_HEADERS = ("message-id", "in-reply-to", "references", "from", "to", "cc", "subject", "date")
_KEPT_NAMES = {name.encode(): name for name in KEPT_HEADERS}  # header names are ASCII


def _decode_bytes(raw: bytes) -> str:
    try:
        return _without_nul(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return _without_nul(raw.decode("cp1252", "replace"))


def header_values(head: bytes) -> dict[str, str]:
    """The first value of each kept header, unfolded, whitespace collapsed.

    A small line scanner instead of the `email` package: the sync parses every header of
    every message, and this is several times faster. It reads headers as the stdlib's
    compat32 parser does (tests prove the two agree on the shared corpus): headers end at the
    first empty line or the first line that is not a header, a leading mbox "From " line is
    skipped, and undeclared 8-bit bytes are read as UTF-8, else Windows-1252.
    """
    found: dict[str, list[bytes]] = {}
    current: list[bytes] | None = None
    for number, line in enumerate(head[:MAX_HEADER_BYTES].splitlines()):
        if not line:
            break
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current.append(line)
            continue
        if number == 0 and line.startswith(b"From "):
            continue
        if not _HEADER_LINE.match(line):
            break
        name, _, value = line.partition(b":")
        key = _KEPT_NAMES.get(name.lower())
        if key is not None and key not in found:
            current = found[key] = [value]
        else:
            current = None
    return {key: " ".join(_decode_bytes(b" ".join(parts)).split()) for key, parts in found.items()}


def parse_header_list(pairs: Iterable[tuple[str, str]]) -> HeaderFields:
    """HeaderFields from (name, value) pairs, as the Gmail and Graph APIs give headers: read
    by the same parser as raw IMAP headers, so every provider reads them alike."""
    block = "".join(f"{name}: {value}\r\n" for name, value in pairs if value)
    return parse_headers(block.encode("utf-8", "replace"))


def with_bcc_header(raw: bytes, recipients: Iterable[str]) -> bytes:
    """The message with a Bcc header naming the recipients its To and Cc do not: for APIs
    that take their recipients from the message (Gmail, Graph), which drop Bcc on delivery.
    (Over SMTP, Bcc stays in the envelope only.)"""
    headers = message_from_bytes(raw, policy=policy.compat32)
    shown = [str(value) for name in ("To", "Cc") for value in headers.get_all(name, [])]
    visible = {address.lower() for _name, address in getaddresses(shown)}
    hidden = [r for r in recipients if r.lower() not in visible]
    return f"Bcc: {', '.join(hidden)}\r\n".encode() + raw if hidden else raw


def parse_headers(raw: bytes) -> HeaderFields:
    """The header fields we keep as metadata (SPEC R4), from a header block or whole message."""
    values = header_values(raw)
    return header_fields(lambda name: values.get(name.lower(), ""))


def header_fields(get: Callable[[str], str]) -> HeaderFields:
    """Interpret raw header values (`get(name)` -> unfolded text) into HeaderFields."""
    fields = HeaderFields()
    problems = fields.problems
    ids = message_ids(get("Message-ID"))
    if ids:
        fields.message_id = ids[0]
    else:
        problems.append("no Message-ID")
    reply_ids = message_ids(get("In-Reply-To"))
    fields.in_reply_to = reply_ids[0] if reply_ids else ""
    fields.references = message_ids(get("References"))
    sender = _addresses(get("From"), problems, "From")
    if sender:
        fields.from_name, fields.from_address = sender[0]
    elif not get("From"):
        problems.append("no From header")
    else:
        name, _address = parseaddr(get("From"))
        fields.from_name = _decode(name)
    fields.to = _addresses(get("To"), problems, "To")
    fields.cc = _addresses(get("Cc"), problems, "Cc")
    fields.subject = _decode(get("Subject"))[:998]
    date = get("Date")
    if date:
        try:
            sent_at = parsedate_to_datetime(date)
            # In UTC, as stored: one shared tzinfo instead of one per offset-bearing header.
            fields.sent_at = (
                sent_at.astimezone(UTC) if sent_at.tzinfo else sent_at.replace(tzinfo=UTC)
            )
        except (ValueError, TypeError, IndexError, OverflowError):
            problems.append("unreadable Date header")
    return fields


class _StructureParsedOnce(EmailPolicy):
    """policy.default, except that the headers giving a message its MIME structure are
    parsed once, when the message is read: the parser itself asks for a part's content
    type several times, and policy.default parses the header again on every access.

    A header object stored in the message is what policy.default keeps for a header set
    by code, and what its header_fetch_parse returns as it is.
    """

    STRUCTURE = frozenset({"content-type", "content-disposition", "content-transfer-encoding"})

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, Any]:
        name, value = super().header_source_parse(sourcelines)
        if name.lower() in self.STRUCTURE:
            return name, self.header_fetch_parse(name, value)
        return name, value


_MIME_POLICY = _StructureParsedOnce()


def _part_text(part: Message, charset: str | None) -> str:
    payload = part.get_payload(decode=True) or b""
    try:
        return _without_nul(payload.decode(charset or "utf-8", errors="replace"))
    except LookupError:
        return _without_nul(payload.decode("utf-8", errors="replace"))


def parse_message(raw: bytes) -> ParsedMessage:
    """Headers, the first text and HTML bodies, and the attachments of a whole message."""
    headers = parse_headers(raw)
    parsed = ParsedMessage(headers=headers, problems=list(headers.problems))
    try:
        message = message_from_bytes(raw, policy=_MIME_POLICY)
        parts = list(message.walk()) if isinstance(message, EmailMessage) else []
    except Exception as exc:  # noqa: BLE001 - any parser failure becomes a recorded problem
        parsed.problems.append(f"unreadable MIME structure ({type(exc).__name__})")
        return parsed
    for part in parts:
        try:
            if part.is_multipart():
                continue
            content_type = part.get_content_type()
            disposition, filename = part.get_content_disposition(), part.get_filename()
            if disposition == "attachment" or (filename and disposition != "inline"):
                parsed.attachments.append(
                    ParsedAttachment(
                        filename=_decode(filename or "attachment")[:255] or "attachment",
                        content_type=content_type,
                        payload=part.get_payload(decode=True) or b"",
                    )
                )
            elif content_type == "text/plain" and not parsed.text:
                parsed.text = _part_text(part, part.get_content_charset())
            elif content_type == "text/html" and not parsed.html:
                parsed.html = _part_text(part, part.get_content_charset())
        except Exception as exc:  # noqa: BLE001 - one broken part must not lose the others
            parsed.problems.append(f"unreadable part ({type(exc).__name__})")
    return parsed
