"""Raw RFC 822 bytes -> headers, bodies, addresses, for every provider (stdlib `email`).

Real mail is often broken. Nothing here raises on a bad header or part: what cannot be read
is left empty and named in `problems`, so the message is still stored and the reason kept.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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


@functools.lru_cache(maxsize=4096)
def _addresses(raw: str, name: str) -> tuple[tuple[Address, ...], tuple[str, ...]]:
    """The addresses of a From, To or Cc value, and the problems reading it.

    Cached: the same few values (the user's own address, regular correspondents) come back
    on most messages of a mailbox.
    """
    if not raw:
        return (), ()
    text = _decode(raw)
    try:
        pairs = _simple_addresses(text) or getaddresses([text])
    except (ValueError, TypeError, IndexError):
        return (), (f"unreadable {name} header",)
    result = []
    for display, address in pairs:
        address = address.strip()
        if "@" in address:
            result.append((display.strip(), address.lower()))
    if not result:
        return (), (f"no address in {name} header",)
    return tuple(result), ()


_HEADER_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]*:")
KEPT_HEADERS = ("message-id", "in-reply-to", "references", "from", "to", "cc", "subject", "date")
_KEPT_NAMES = {name.encode(): name for name in KEPT_HEADERS}  # header names are ASCII


def _decode_bytes(raw: bytes) -> str:
    try:
        return _without_nul(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return _without_nul(raw.decode("cp1252", "replace"))


# A header block in its everyday form: header lines, each with its continuation lines, all
# ending in CRLF (as IMAP servers send them), up to an empty line or the end. It is decoded
# at once and its kept fields found by one regex; any other block is read line by line.
_PLAIN_BLOCK = re.compile(rb"(?:[\x21-\x39\x3b-\x7e]+:[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)*")
_KEPT_FIELD = re.compile(
    rf"^({'|'.join(KEPT_HEADERS)}):([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)",
    re.ASCII | re.IGNORECASE | re.MULTILINE,
)


def header_values(head: bytes) -> dict[str, str]:
    """The first value of each kept header, unfolded, whitespace collapsed.

    Small scanners instead of the `email` package: the sync parses every header of every
    message, and this is several times faster. It reads headers as the stdlib's compat32
    parser does (tests prove the two agree on the shared corpus): headers end at the first
    empty line or the first line that is not a header, a leading mbox "From " line is
    skipped, and undeclared 8-bit bytes are read as UTF-8, else Windows-1252.
    """
    end = _PLAIN_BLOCK.match(head).end()
    if end <= MAX_HEADER_BYTES and (end == len(head) or head[end : end + 2] == b"\r\n"):
        try:
            text = _without_nul(head[:end].decode("utf-8"))
        except UnicodeDecodeError:
            pass  # each header is decoded on its own, below
        else:
            values: dict[str, str] = {}
            for name, value in _KEPT_FIELD.findall(text):
                key = name.lower()
                if key not in values:
                    values[key] = " ".join(value.split())
            return values
    return {
        key: " ".join(_decode_bytes(value).split())
        for key, value in _scan_header_lines(head).items()
    }


def _scan_header_lines(head: bytes) -> dict[str, bytes]:
    """header_values' reading of any header block, line by line: the raw values."""
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
    return {key: b" ".join(parts) for key, parts in found.items()}


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
    return header_fields(header_values(raw))


def header_fields(values: Mapping[str, str]) -> HeaderFields:
    """Interpret raw header values (lower-case name -> unfolded text) into HeaderFields."""
    problems: list[str] = []
    ids = message_ids(values.get("message-id", ""))
    if not ids:
        problems.append("no Message-ID")
    reply_ids = message_ids(values.get("in-reply-to", ""))
    raw_from = values.get("from", "")
    sender, unread = _addresses(raw_from, "From")
    problems += unread
    if sender:
        from_name, from_address = sender[0]
    else:
        from_address = ""
        if not raw_from:
            problems.append("no From header")
        from_name = _decode(parseaddr(raw_from)[0]) if raw_from else ""
    to, unread = _addresses(values.get("to", ""), "To")
    problems += unread
    cc, unread = _addresses(values.get("cc", ""), "Cc")
    problems += unread
    sent_at = None
    date = values.get("date", "")
    if date:
        try:
            sent_at = date_in_utc(date)
        except (ValueError, TypeError, IndexError, OverflowError):
            problems.append("unreadable Date header")
    return HeaderFields(
        message_id=ids[0] if ids else "",
        in_reply_to=reply_ids[0] if reply_ids else "",
        references=message_ids(values.get("references", "")),
        from_name=from_name,
        from_address=from_address,
        to=to,
        cc=cc,
        subject=_decode(values.get("subject", ""))[:998],
        sent_at=sent_at,
        problems=problems,
    )


_MONTH_NUMBERS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
# RFC 5322's date, as nearly every mail program writes it; a comment may follow ("(UTC)").
_PLAIN_DATE = re.compile(
    r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?(\d{1,2}) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct"
    r"|Nov|Dec) ([1-9]\d{3}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)(?: .*)?",
    re.ASCII,
)


def date_in_utc(value: str) -> datetime:
    """A Date header as parsedate_to_datetime reads it, in UTC (a date without a zone is
    taken as UTC); raises as it does. Its everyday form is read here, several times faster."""
    match = _PLAIN_DATE.fullmatch(value)
    if match is not None:
        day, month, year, hour, minute, second, sign, off_h, off_m = match.groups()
        offset = int(off_h) * 3600 + int(off_m) * 60
        if offset < 86400:  # else parsedate_to_datetime refuses it: so do we, below
            try:
                local = datetime(int(year), _MONTH_NUMBERS[month], int(day), int(hour),
                                 int(minute), int(second), tzinfo=UTC)  # fmt: skip
                return local - timedelta(seconds=-offset if sign == "-" else offset)
            except (ValueError, OverflowError):
                pass  # the same error from the general reader
    sent_at = parsedate_to_datetime(value)
    # In UTC, as stored: one shared tzinfo instead of one per offset-bearing header.
    return sent_at.astimezone(UTC) if sent_at.tzinfo else sent_at.replace(tzinfo=UTC)


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
