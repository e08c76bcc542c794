"""Raw RFC 822 bytes -> headers, bodies, addresses, for every provider (stdlib `email`).

Real mail is often broken, and anyone can send it. Nothing here raises on a bad header or
part: what cannot be read is left empty, or kept as written, and named in `problems`, so the
message is still stored and the reason kept. The causes are handled where they arise; each
public function also turns an unexpected exception into a result and a logged problem, so a
bug here costs one message, never a sync (issue 13).
"""

from __future__ import annotations

import binascii
import functools
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.errors import MessageError
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser
from email.policy import EmailPolicy
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from typing import Any

logger = logging.getLogger(__name__)

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
    try:
        return _message_ids(value)
    except Exception:  # the last resort (see the module's docstring)
        logger.exception("message_ids failed on a value")
        return ()


def _message_ids(value: str) -> tuple[str, ...]:
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


def _decode(value: str, where: str = "", problems: list[str] | None = None) -> str:
    """Decode RFC 2047 words leniently: a word that cannot be decoded is kept as written, and
    one in a charset Python does not know is read as UTF-8, else Windows-1252. Either is
    named in `problems` (as "... in {where}")."""
    if "=?" not in value:
        return value  # nothing encoded: skip the (slow) decoder
    # The stdlib's decoder reads non-ASCII text around the words as "\uXXXX" escapes, and
    # takes quadratic time on many words or a long line of unclosed ones: ours reads those.
    if value.isascii() and (len(value) < _QUADRATIC_FROM or _stdlib_decodes_fast(value)):
        try:
            return _without_nul(str(make_header(decode_header(value))))
        except (UnicodeError, LookupError, ValueError, TypeError, MessageError):
            pass  # MessageError: HeaderParseError (bad base64), CharsetError (non-ASCII name)
    text, found = _decode_words(value)
    if problems is not None:
        for problem in found:
            named = f"{problem} in {where}"
            if named not in problems:
                problems.append(named)
    return _without_nul(text)


# An RFC 2047 encoded word, without the stdlib's lazy ".*?": searching for these is linear.
_ENCODED_WORD = re.compile(r"=\?([^?]*)\?([bBqQ])\?([^?]*)\?=")
_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
# decode_header's regex scans to the end of the line from every "=?" after the line's last
# "?=", and it pops each word from the front of a list: past about this many characters
# scanned, or this many words (a few milliseconds either way), our decoder reads the value.
_STDLIB_DECODE_WORK = 200_000
_STDLIB_DECODE_WORDS = 1000
_QUADRATIC_FROM = 632  # a shorter value reaches neither (openings <= len / 2)


def _stdlib_decodes_fast(value: str) -> bool:
    if value.count("=?") > _STDLIB_DECODE_WORDS:
        return False
    for line in value.splitlines():
        last = line.rfind("?=")
        if line.count("=?", last + 1) * (len(line) - last) > _STDLIB_DECODE_WORK:
            return False
    return True


def _decode_words(value: str) -> tuple[str, list[str]]:
    """The encoded words of `value` decoded one run at a time, and the problems found.

    Like decode_header: white space between two words is dropped, and adjacent words in
    one charset are decoded together (a character may be split between them)."""
    pieces: list[str | tuple[str, bytes]] = []  # text as it stands, or (charset, bytes)
    problems: list[str] = []
    end = 0
    for match in _ENCODED_WORD.finditer(value):
        between = value[end : match.start()]
        end = match.end()
        charset, encoding, encoded = match.groups()
        data = _word_bytes(encoding, encoded)
        if data is None:
            problems.append("unreadable encoded word")
            pieces.append(between + match.group())
            continue
        charset = _codec_name(charset)
        last = pieces[-1] if pieces else None
        if isinstance(last, tuple) and (not between or between.isspace()):
            if last[0] == charset:
                pieces[-1] = (charset, last[1] + data)
                continue
        elif between:
            pieces.append(between)
        pieces.append((charset, data))
    pieces.append(value[end:])
    out = []
    for piece in pieces:
        if isinstance(piece, str):
            out.append(piece)
            continue
        text, problem = _text_in_charset(*piece)
        out.append(text)
        if problem:
            problems.append(problem)
    return "".join(out), problems


def _word_bytes(encoding: str, encoded: str) -> bytes | None:
    """The bytes of one encoded word's text (None if they cannot be read)."""
    data = encoded.encode("utf-8")  # raw 8-bit text was read as UTF-8 (else Windows-1252)
    if encoding in "qQ":
        return _QP_ESCAPE.sub(lambda m: bytes.fromhex(m[1].decode()), data.replace(b"_", b" "))
    try:
        return binascii.a2b_base64(data + b"==="[: -len(data) % 4])  # padding, as the stdlib
    except binascii.Error:
        return None


_RFC1556_CHARSET = re.compile(r"(iso-8859-[68])-[ei]")


def _codec_name(charset: str) -> str:
    """A MIME charset name as Python's codecs know it: without an RFC 2231 language
    ("utf-8*en"), and the RFC 1556 Arabic and Hebrew variants as their base charsets."""
    charset = charset.partition("*")[0].strip().lower()
    match = _RFC1556_CHARSET.fullmatch(charset)
    return match[1] if match else charset


def _text_in_charset(charset: str, data: bytes) -> tuple[str, str | None]:
    """`data` read in `charset`, and the problem doing so, if any."""
    try:
        return data.decode(charset), None
    except UnicodeDecodeError:
        return data.decode(charset, "replace"), "undecodable characters"
    except (LookupError, ValueError):
        # Unknown, or not usable for text (idna and "undefined" raise UnicodeError, a name
        # with NUL ValueError): read as undeclared 8-bit header bytes are.
        return _decode_bytes(data), "unknown charset"


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


def _read_addresses(raw: str, name: str) -> tuple[tuple[Address, ...], tuple[str, ...]]:
    """The addresses of a From, To or Cc value, and the problems reading it."""
    if not raw:
        return (), ()
    where = f"{name} header"
    problems: list[str] = []
    text = _decode(raw, where, problems)
    result = _address_pairs(text)
    if not result and text != raw:
        # A decoded name can hold "@", "," or "<": read the addresses as written, then
        # decode each name.
        result = _address_pairs(raw)
        if result:
            result = [(_decode(display, where, problems), address) for display, address in result]
    if result is None:
        return (), (*problems, f"unreadable {name} header")
    if not result:
        return (), (*problems, f"no address in {name} header")
    return tuple(result), tuple(problems)


def _address_pairs(text: str) -> list[Address] | None:
    """(name, address) for each address in `text`; None if it cannot be read."""
    try:
        pairs = _simple_addresses(text) or getaddresses([text])
    except (ValueError, TypeError, IndexError):
        return None
    result = []
    for display, address in pairs:
        address = address.strip()
        if "@" in address:
            result.append((display.strip(), address.lower()))
    return result


# Cached: the same few values (the user's own address, regular correspondents) come back on
# most messages of a mailbox. Only short values: 4,096 long ones would hold gigabytes.
_addresses = functools.lru_cache(maxsize=4096)(_read_addresses)
_CACHED_UP_TO = 2048


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

    See _header_values.
    """
    try:
        return _header_values(head)
    except Exception:  # the last resort (see the module's docstring)
        logger.exception("header_values failed on a header block")
        return {}


def _header_values(head: bytes) -> dict[str, str]:
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
    try:
        block = "".join(f"{name}: {value}\r\n" for name, value in pairs if value)
    except Exception as exc:  # the last resort (see the module's docstring)
        return _unreadable_headers("header list", exc)
    return parse_headers(block.encode("utf-8", "replace"))


def with_bcc_header(raw: bytes, recipients: Iterable[str]) -> bytes:
    """The message with a Bcc header naming the recipients its To and Cc do not: for APIs
    that take their recipients from the message (Gmail, Graph), which drop Bcc on delivery.
    (Over SMTP, Bcc stays in the envelope only.) If To and Cc cannot be read, every recipient
    is named: one may be told twice, none goes without."""
    recipients = list(recipients)
    try:
        # The header block only: the body's MIME structure is not ours to read here.
        headers = BytesHeaderParser(policy=policy.compat32).parsebytes(raw)
        shown = [str(value) for name in ("To", "Cc") for value in headers.get_all(name, [])]
        visible = {address.lower() for _name, address in getaddresses(shown)}
    except Exception:  # the last resort (see the module's docstring)
        logger.exception("with_bcc_header could not read To and Cc")
        visible = set()
    hidden = [r for r in recipients if r.lower() not in visible]
    return f"Bcc: {', '.join(hidden)}\r\n".encode("utf-8", "replace") + raw if hidden else raw


def parse_headers(raw: bytes) -> HeaderFields:
    """The header fields we keep as metadata (SPEC R4), from a header block or whole message."""
    try:
        return _header_fields(_header_values(raw))
    except Exception as exc:  # the last resort (see the module's docstring)
        return _unreadable_headers("header block", exc)


def header_fields(values: Mapping[str, str]) -> HeaderFields:
    """Interpret raw header values (lower-case name -> unfolded text) into HeaderFields."""
    try:
        return _header_fields(values)
    except Exception as exc:  # the last resort (see the module's docstring)
        return _unreadable_headers("header values", exc)


def _unreadable_headers(what: str, exc: Exception) -> HeaderFields:
    logger.error("reading a %s failed", what, exc_info=exc)
    return HeaderFields(problems=[f"unreadable {what} ({type(exc).__name__})"])


def _header_fields(values: Mapping[str, str]) -> HeaderFields:
    problems: list[str] = []
    ids = _message_ids(values.get("message-id", ""))
    if not ids:
        problems.append("no Message-ID")
    reply_ids = _message_ids(values.get("in-reply-to", ""))
    raw_from, raw_to, raw_cc = values.get("from", ""), values.get("to", ""), values.get("cc", "")
    # Long values skip the cache (see _addresses), chosen here: no extra call per message.
    cached = _addresses if len(raw_from) <= _CACHED_UP_TO else _read_addresses
    sender, unread = cached(raw_from, "From")
    problems += unread
    if sender:
        from_name, from_address = sender[0]
    else:
        from_address = ""
        if not raw_from:
            problems.append("no From header")
        from_name = _decode(parseaddr(raw_from)[0], "From header", problems) if raw_from else ""
    cached = _addresses if len(raw_to) <= _CACHED_UP_TO else _read_addresses
    to, unread = cached(raw_to, "To")
    problems += unread
    cached = _addresses if len(raw_cc) <= _CACHED_UP_TO else _read_addresses
    cc, unread = cached(raw_cc, "Cc")
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
        references=_message_ids(values.get("references", "")),
        from_name=from_name,
        from_address=from_address,
        to=to,
        cc=cc,
        subject=_decode(values.get("subject", ""), "Subject header", problems)[:998],
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
            try:
                return name, self.header_fetch_parse(name, value)
            except Exception:  # noqa: BLE001 - a stdlib bug; policy.default raises on each access
                return name, _UnparsedHeader(_LINE_BREAKS.sub("", value))
        return name, value


class _UnparsedHeader(str):
    """A structure header that policy.default's parser raises on, kept as text: Message's
    methods read it as compat32 does. (RFC 2231 parameters in charsets such as idna or
    "undefined" raise UnicodeError in the stdlib's header objects.) Having a name, it is
    what header_fetch_parse returns."""

    name = ""


_LINE_BREAKS = re.compile(r"[\r\n]")
_MIME_POLICY = _StructureParsedOnce()


def _part_text(part: Message, problems: list[str]) -> str:
    payload = part.get_payload(decode=True) or b""
    try:
        charset = part.get_content_charset()
    except ValueError:  # an RFC 2231 charset parameter in a charset named with a NUL
        charset = None
    try:
        return _without_nul(payload.decode(charset or "utf-8", errors="replace"))
    except (LookupError, ValueError):  # UnicodeError: codecs without "replace" (idna, ...)
        pass
    try:
        return _without_nul(payload.decode(_codec_name(charset or ""), errors="replace"))
    except (LookupError, ValueError):
        problems.append(f"unknown charset in {part.get_content_type()} part")
        return _without_nul(payload.decode("utf-8", errors="replace"))


def _filename(part: Message, problems: list[str]) -> str | None:
    """The part's file name as get_filename reads it, RFC 2047 words still encoded."""
    try:
        return part.get_filename()
    except ValueError:  # UnicodeError too: an RFC 2231 charset that cannot "replace" (idna)
        problems.append("attachment file name in an unknown charset")
    value = part.get_param("filename", None, "content-disposition")
    value = value or part.get_param("name", None, "content-type")
    raw = value[2] if isinstance(value, tuple) else str(value or "")
    return _decode_bytes(raw.encode("latin-1", "replace"))  # %-escapes were read as Latin-1


def parse_message(raw: bytes) -> ParsedMessage:
    """Headers, the first text and HTML bodies, and the attachments of a whole message."""
    try:
        return _parse_message(raw)
    except Exception as exc:  # the last resort (see the module's docstring)
        logger.error("parse_message failed", exc_info=exc)
        problem = f"unreadable message ({type(exc).__name__})"
        return ParsedMessage(headers=HeaderFields(problems=[problem]), problems=[problem])


def _parse_message(raw: bytes) -> ParsedMessage:
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
            disposition = part.get_content_disposition()
            filename = _filename(part, parsed.problems)
            if disposition == "attachment" or (filename and disposition != "inline"):
                name = _decode(filename or "attachment", "attachment file name", parsed.problems)
                parsed.attachments.append(
                    ParsedAttachment(
                        filename=_without_nul(name)[:255] or "attachment",
                        content_type=content_type,
                        payload=part.get_payload(decode=True) or b"",
                    )
                )
            elif content_type == "text/plain" and not parsed.text:
                parsed.text = _part_text(part, parsed.problems)
            elif content_type == "text/html" and not parsed.html:
                parsed.html = _part_text(part, parsed.problems)
        except Exception as exc:  # noqa: BLE001 - one broken part must not lose the others
            parsed.problems.append(f"unreadable part ({type(exc).__name__})")
    return parsed
