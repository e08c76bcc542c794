"""mailboxes.parsing on hostile input (STYLE 4b): seeded mutations of the shared corpus and of
hand-written messages. Whatever the bytes, every public function returns its normal type and
names in `problems` what it could not read; nothing raises."""

from __future__ import annotations

import contextlib
import random
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from mailboxes.parsing import (
    HeaderFields,
    ParsedAttachment,
    ParsedMessage,
    date_in_utc,
    header_fields,
    header_values,
    message_ids,
    parse_header_list,
    parse_headers,
    parse_message,
    with_bcc_header,
)

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT.parent / "shared" / "corpus"
SEED = 13  # the number; change it to explore, keep it fixed in the suite
MUTATIONS_PER_MESSAGE = 6
MUTATIONS_PER_HOSTILE = 20
BASE_BYTES = 64 * 1024  # mutations start from a message's first 64 KB: the suite stays fast
DATE_ERRORS = (ValueError, TypeError, IndexError, OverflowError)  # date_in_utc's, documented

needs_corpus = pytest.mark.skipif(
    not CORPUS.is_dir(), reason=f"the shared corpus is not present at {CORPUS}"
)


def nested(depth: int, kind: str = "multipart") -> bytes:
    """A message whose text part sits `depth` multiparts (or message/rfc822s) deep."""
    head = b"From: Deep <deep@example.com>\r\nSubject: deep\r\nMessage-ID: <deep@example.com>\r\n"
    leaf = b"Content-Type: text/plain; charset=utf-8\r\n\r\nthe bottom\r\n"
    if kind == "rfc822":
        return head + b"Content-Type: message/rfc822\r\n\r\n" * depth + leaf
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (n, n)
        for n in range(depth)
    )
    closing = b"".join(b"\r\n--b%d--\r\n" % n for n in reversed(range(depth)))
    return head + b"MIME-Version: 1.0\r\n" + opening + leaf + closing


def _multipart(*parts: bytes, boundary: bytes = b"hostile") -> bytes:
    return (
        b"From: a@example.com\r\nTo: b@example.com\r\nMessage-ID: <m@example.com>\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n'
        + b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
        + b"--" + boundary + b"--\r\n"
    )  # fmt: skip


HOSTILE = [
    b"Subject: =?utf-8?b?a?=\r\nFrom: =?\xff?Q?a?= <a@b.c>\r\n\r\nbody\r\n",
    b'From: =?x-unknown?B?SGVsbG8=?= <a@b.c>\r\nTo: =?utf-8?q?=FF=FE?= <c@d.e>, <<<@>>>, "open\r\n'
    b"Cc: group: a@b.c, (comment <x@y>;\r\nSubject: =?utf-8*en?q?x?= =?utf-8?b?????=\r\n"
    b"Date: Fri, 31 Dec 9999 23:59:59 -2359\r\nMessage-ID: <<<>>>\r\nIn-Reply-To: <\r\n\r\n",
    b"Subject: Caf\xc3\xa9 =?utf-8?q?cr=C3=A8me?= =?idna?q?a?= =?undefined?b?YQ==?=\r\n"
    b"From: =?utf-8?b?" + b"A" * 5001 + b"?= <a@b.c>\r\nDate: 99 Foo 99999 99:99:99 +99999\r\n\r\n",
    _multipart(
        b'Content-Type: text/plain; charset="\xff"\r\n\r\nbad charset\r\n',
        b"Content-Type: text/html; charset=idna\r\n\r\n<b>idna</b>\r\n",
        b"Content-Type: text/plain; charset=undefined\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"!!!!====@@@@\r\nab=c\r\n=\r\n",
        b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: x-uuencode\r\n"
        b"Content-Disposition: attachment; filename*=x-unknown''%FF%FE.pdf\r\n\r\n"
        b"begin 644 a\r\nM\xff\xff\r\nend\r\n",
        b"Content-Type: application/octet-stream; name*0*=idna''%ff; name*1=x\r\n"
        b"Content-Disposition: attachment; filename*=\xff'en'%ff%00\r\n\r\nx\r\n",
        b"Content-Type: image/png\r\nContent-Disposition: attachment; "
        b"filename=\"=?utf-8?b?a?=\"; filename*=utf-8''%\r\n\r\nx\r\n",
        b"Content-Type: text/plain; charset*=utf-8''%ff\r\n"
        b"Content-Transfer-Encoding: \x00\r\n\r\nx",
    ),
    _multipart(b"Content-Type: multipart/alternative\r\n\r\nno boundary at all\r\n"),
    _multipart(b'Content-Type: multipart/mixed; boundary="never"\r\n\r\n--never\r\n\r\nopen\r\n'),
    b'Content-Type: multipart/mixed; boundary=""\r\n\r\n--\r\n\r\n--\r\n',
    b"Content-Type: message/rfc822\r\n\r\n" * 3 + b"\x00" * 64,
    b"Subject: " + b"\x00" * 1000 + b"\r\nFrom: \x00 <\x00@\x00>\r\n\r\n\x00\x00",
    b"From nobody Mon Jan  1 00:00:00 2026\nFrom: a@b.c\nSubject: mbox\n\nbody",
    *(b"", b"\r\n", b":", b"=?", b"\xff" * 100, b"From:\r\n\tfolded\r\n\r\n"),
]
# Slow to read (0.1-0.2 s each): mutated only twice.
BIG = [
    nested(500),
    nested(500, "rfc822"),
    b"Subject: " + b"=?a?q?x " * 30_000 + b"\r\nFrom: " + b"(" * 50_000 + b"\r\n\r\n",
    b"X-Long: " + b"x" * 300_000 + b"\r\nSubject: after the limit\r\n\r\n",
    b"x" * 300_000 + b"\r\nSubject: after a line that is no header\r\n\r\n",
    b"To: " + b"a@b, " * 20_000 + b"\r\nCc: " + b"<" * 10_000 + b"\r\n\r\n",
    b"Subject: " + b"=?utf-8?q?=FF?= " * 16_000 + b"\r\n\r\n",  # over the 256 KB limit
]

# Pieces that parsers trip on: encoded-word, RFC 2231, MIME and address syntax.
SNIPPETS = [
    b"\x00", b"\xff", b"\x80", b"=?", b"?=", b"\r\n", b"\n", b"\r", b"\r\n\r\n", b":", b";",
    b"<", b">", b'"', b"(", b")", b"\\", b",", b"@", b"--", b"=", b"*", b"'", b"%",
    b"=?utf-8?b?a?=", b"=?\xff?Q?a?=", b"=?x-unknown?B?SGVsbG8=?=", b"=?utf-8?q?=FF?=",
    b"=?idna?q?a?=", b"=?utf-8*en?b?????=", b"=?a?q?x " * 200, b"\xc3", b"\xe2\x80",
]  # fmt: skip
CHARSETS = [b'"\xff"', b"x-unknown", b"idna", b"undefined", b'"utf-8\x00"', b"zlib", b'""', b"*"]
ENCODINGS = [b"base64", b"quoted-printable", b"x-uuencode", b"x-unknown", b"8bit\xff", b"\x00"]
GARBAGE = [b"!!!!====@@@@\r\nab=c\r\n=\r\n", b"begin 644 x\r\nM\xff\r\nend\r\n", b"=\r\n=Z", b"A"]
HOSTILE_HEADERS = [
    b"Content-Disposition: attachment; filename*=x-unknown''%FF%FE.pdf",
    b"Content-Disposition: attachment; filename*=\xff'en'%ff",
    b"Content-Disposition: attachment; filename*0*=idna''%ff; filename*1=x",
    b"Content-Disposition: attachment; filename*=utf-8''%",
    b'Content-Disposition: attachment; filename="=?utf-8?b?a?="',
    b"Content-Type: text/plain; charset*=undefined''x",
    b"Content-Type: multipart/mixed; boundary*=idna''%ff",
    b"Content-Transfer-Encoding: base64",
    b"Subject: =?utf-8?b?a?=",
    b"From: =?\xff?Q?a?= <a@b.c>",
    b'To: =?x-unknown?B?SGVsbG8=?= <a@b.c>, "\\',
    b"Cc: =?utf-8?q?=FF?= <" + b"<" * 1000,
    b"Date: Fri, 31 Dec 9999 23:59:59 -2359",
    b"Message-ID: <" + b"a@b" * 1000,
    b"Subject: " + b"y" * 200_000,
]


def _header_lines(raw: bytes) -> list[tuple[int, int]]:
    """(start, end) of each line of the header block."""
    end = raw.find(b"\r\n\r\n")
    end = len(raw) if end < 0 else end
    return [(m.start(), m.end()) for m in re.finditer(rb"[^\r\n]*\r?\n?", raw[:end]) if m.group()]


def _truncate(rng: random.Random, raw: bytes) -> bytes:
    return raw[: rng.randint(0, len(raw))]


def _flip(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw or b"x")
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def _insert(rng: random.Random, raw: bytes) -> bytes:
    for _ in range(rng.randint(1, 4)):
        piece = rng.choice(SNIPPETS) if rng.random() < 0.7 else rng.randbytes(rng.randint(1, 16))
        at = rng.randint(0, len(raw))
        raw = raw[:at] + piece + raw[at:]
    return raw


def _duplicate_header(rng: random.Random, raw: bytes) -> bytes:
    lines = _header_lines(raw)
    if not lines:
        return raw
    start, end = rng.choice(lines)
    at = rng.choice(lines)[0]
    return raw[:at] + raw[start:end] + raw[at:]


def _remove_header(rng: random.Random, raw: bytes) -> bytes:
    lines = _header_lines(raw)
    if not lines:
        return raw
    start, end = rng.choice(lines)
    return raw[:start] + raw[end:]


def _break_boundaries(rng: random.Random, raw: bytes) -> bytes:
    found = re.findall(rb'boundary="?([^";\r\n]+)', raw, re.IGNORECASE)
    if not found:
        return _add_header(rng, raw)
    boundary = rng.choice(found)
    how = rng.randrange(4)
    if how == 0:  # no closing delimiter
        return raw.replace(b"--" + boundary + b"--", b"")
    if how == 1:  # the parameter names another boundary
        return raw.replace(b"boundary=", b"boundary=x", 1)
    if how == 2:  # delimiters without their line ends
        return raw.replace(b"\n--" + boundary, b"--" + boundary)
    return raw.replace(b"--" + boundary, b"--" + boundary[: rng.randint(0, len(boundary))])


def _bad_charset(rng: random.Random, raw: bytes) -> bytes:
    charset = rng.choice(CHARSETS)
    if re.search(rb"charset=", raw, re.IGNORECASE) is None:
        return _add_header(rng, raw, b"Content-Type: text/plain; charset=" + charset)
    return re.sub(rb'(?i)charset="?[^";\s]*"?', b"charset=" + charset, raw, count=rng.randint(1, 3))


def _bad_transfer_encoding(rng: random.Random, raw: bytes) -> bytes:
    encoding = b"Content-Transfer-Encoding: " + rng.choice(ENCODINGS)
    raw = re.sub(rb"(?im)^content-transfer-encoding:[^\r\n]*", encoding, raw)
    if encoding not in raw:
        raw = _add_header(rng, raw, encoding)
    at = raw.find(b"\r\n\r\n")
    at = len(raw) if at < 0 else at + 4
    return raw[:at] + rng.choice(GARBAGE) + raw[at:]


def _add_header(rng: random.Random, raw: bytes, line: bytes | None = None) -> bytes:
    """A hostile header line at the start of a random part (or of the message)."""
    line = line if line is not None else rng.choice(HOSTILE_HEADERS)
    starts = [0] + [m.end() for m in re.finditer(rb"\n--[^\r\n]*\r?\n", raw)]
    at = rng.choice(starts)
    return raw[:at] + line + b"\r\n" + raw[at:]


def _nul_bytes(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw or b"x")
    for _ in range(rng.randint(1, 32)):
        data[rng.randrange(len(data))] = 0
    return bytes(data)


def _huge_header(rng: random.Random, raw: bytes) -> bytes:
    name = rng.choice([b"Subject", b"To", b"X-Huge", b"References", b""])
    piece = rng.choice([b"x", b"a@b, ", b"=?", b"(", b"\xff", b"=?utf-8?q?=FF?= ", b"=?a?q?x "])
    size = rng.choices([1_000, 20_000, 70_000], weights=[6, 3, 1])[0]  # bytes; BIG has more
    return name + b": " + piece * (size // len(piece)) + b"\r\n" + raw


def _nest(rng: random.Random, raw: bytes) -> bytes:
    depth = rng.randint(1, 60)
    if rng.random() < 0.5:
        return b"Content-Type: message/rfc822\r\n\r\n" * depth + raw
    return (
        b"".join(
            b'Content-Type: multipart/mixed; boundary="n%d"\r\n\r\n--n%d\r\n' % (n, n)
            for n in range(depth)
        )
        + raw
    )


def _line_ends(rng: random.Random, raw: bytes) -> bytes:
    return re.sub(rb"\r?\n", rng.choice([b"\n", b"\r", b"\r\r\n", b"\n\r"]), raw)


MUTATORS: list[Callable[[random.Random, bytes], bytes]] = [
    _truncate, _flip, _insert, _duplicate_header, _remove_header, _break_boundaries,
    _bad_charset, _bad_transfer_encoding, _add_header, _nul_bytes, _huge_header, _nest,
    _line_ends,
]  # fmt: skip


def corpus_messages() -> list[tuple[str, bytes]]:
    if not CORPUS.is_dir():
        return []
    return [
        (str(path.relative_to(CORPUS)), path.read_bytes())
        for path in sorted(CORPUS.rglob("*.eml"))
        if path.is_file()
    ]


def hostile_bases() -> list[tuple[str, bytes, int]]:
    """(label, message, how many mutations) for the hand-written messages."""
    bases = [(f"hostile[{n}]", raw, MUTATIONS_PER_HOSTILE) for n, raw in enumerate(HOSTILE)]
    return bases + [(f"big[{n}]", raw, 2) for n, raw in enumerate(BIG)]


def corpus_bases() -> list[tuple[str, bytes, int]]:
    return [(name, raw[:BASE_BYTES], MUTATIONS_PER_MESSAGE) for name, raw in corpus_messages()]


def fuzz_cases(
    bases: list[tuple[str, bytes, int]], seed: int = SEED
) -> Iterator[tuple[str, bytes]]:
    """(label, bytes) for each mutation of each base, the same on every run for a seed."""
    rng = random.Random(seed)
    for name, base, count in bases:
        for n in range(count):
            raw, steps = base, []
            for mutate in rng.sample(MUTATORS, rng.randint(1, 3)):
                raw = mutate(rng, raw)
                steps.append(mutate.__name__)
            yield f"{name} #{n} {'+'.join(steps)}", raw


def _check_fields(fields: object) -> None:
    assert isinstance(fields, HeaderFields)
    texts = [fields.message_id, fields.in_reply_to, fields.from_name, fields.from_address]
    texts += [
        fields.subject,
        *fields.references,
        *(s for pair in fields.to + fields.cc for s in pair),
    ]
    assert all(isinstance(text, str) and "\x00" not in text for text in texts)
    assert fields.sent_at is None or isinstance(fields.sent_at, datetime)
    assert all(isinstance(problem, str) and problem for problem in fields.problems)


def _check_message(parsed: object) -> None:
    assert isinstance(parsed, ParsedMessage)
    _check_fields(parsed.headers)
    assert isinstance(parsed.text, str) and "\x00" not in parsed.text
    assert isinstance(parsed.html, str) and "\x00" not in parsed.html
    for attachment in parsed.attachments:
        assert isinstance(attachment, ParsedAttachment)
        assert isinstance(attachment.filename, str) and "\x00" not in attachment.filename
        assert isinstance(attachment.content_type, str) and isinstance(attachment.payload, bytes)
    assert all(isinstance(problem, str) and problem for problem in parsed.problems)


def _check_date(value: str) -> None:
    with contextlib.suppress(DATE_ERRORS):  # documented: header_fields names them
        assert isinstance(date_in_utc(value), datetime)


def read_everything(raw: bytes) -> list[str]:
    """Every public function of mailboxes.parsing on `raw`: what raised or returned wrongly."""
    failures = []

    def attempt(name: str, call: Callable[[], object]) -> None:
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - each is a finding, reported with the case
            failures.append(f"{name}: {type(exc).__name__}: {str(exc)[:100]}")

    values: dict[str, str] = {}

    def read_values() -> None:
        values.update(header_values(raw))
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in values.items())

    attempt("parse_headers", lambda: _check_fields(parse_headers(raw)))
    attempt("parse_message", lambda: _check_message(parse_message(raw)))
    attempt("header_values", read_values)
    attempt("header_fields", lambda: _check_fields(header_fields(values)))
    attempt("parse_header_list", lambda: _check_fields(parse_header_list(values.items())))
    attempt("with_bcc_header", lambda: _check_bcc(raw))
    for value in values.values():
        attempt("message_ids", lambda v=value: _check_ids(v))
    if "date" in values:
        attempt("date_in_utc", lambda: _check_date(values["date"]))
    return failures


def _check_bcc(raw: bytes) -> None:
    out = with_bcc_header(raw, ["hidden@example.com", "a@b.c", "=?utf-8?b?a?="])
    assert isinstance(out, bytes) and out.endswith(raw)


def _check_ids(value: str) -> None:
    assert all(isinstance(i, str) for i in message_ids(value))


def _failures(cases: Iterator[tuple[str, bytes]]) -> tuple[int, list[str]]:
    count, failures = 0, []
    for label, raw in cases:
        count += 1
        failures += [f"{label}: {failure}" for failure in read_everything(raw)]
    return count, failures


def test_mutations_of_hostile_messages_are_read_without_an_exception():
    count, failures = _failures(fuzz_cases(hostile_bases()))

    assert count == len(HOSTILE) * MUTATIONS_PER_HOSTILE + 2 * len(BIG)
    assert failures == [], f"{len(failures)} failures (seed {SEED}):\n" + "\n".join(failures[:20])


@needs_corpus
def test_mutations_of_the_corpus_are_read_without_an_exception():
    count, failures = _failures(fuzz_cases(corpus_bases()))

    assert count >= 300 * MUTATIONS_PER_MESSAGE
    assert failures == [], f"{len(failures)} failures (seed {SEED}):\n" + "\n".join(failures[:20])


@needs_corpus
def test_every_corpus_message_is_read_without_an_exception():
    messages = corpus_messages()
    assert len(messages) >= 300

    count, failures = _failures(iter(messages))

    assert failures == [], "\n".join(failures[:20])


def test_undecodable_encoded_subject_is_kept_as_written_and_named():
    raw = b"Subject: =?utf-8?b?a?=\r\nFrom: a@b.c\r\nMessage-ID: <s@example.com>\r\n\r\n"

    fields = parse_headers(raw)

    assert fields.subject == "=?utf-8?b?a?="
    assert (fields.message_id, fields.from_address) == ("s@example.com", "a@b.c")
    assert fields.problems == ["unreadable encoded word in Subject header"]


def test_encoded_from_name_in_an_impossible_charset_is_read_and_named():
    fields = parse_headers(b"From: =?\xff?Q?a?= <a@b.c>\r\nMessage-ID: <f@example.com>\r\n\r\n")

    assert (fields.from_name, fields.from_address) == ("a", "a@b.c")
    assert fields.problems == ["unknown charset in From header"]


def test_one_bad_word_does_not_cost_the_others():
    fields = parse_headers(b"Subject: =?utf-8?q?Caf=C3=A9?= =?utf-8?b?a?= =?x-unknown?q?ok?=\r\n")

    assert fields.subject == "Café =?utf-8?b?a?= ok"
    assert "unreadable encoded word in Subject header" in fields.problems
    assert "unknown charset in Subject header" in fields.problems


def test_bad_charset_of_a_text_part_is_read_as_utf8_and_named():
    parsed = parse_message(HOSTILE[3])

    assert parsed.text == "bad charset\r\n"
    assert parsed.html == "<b>idna</b>\r\n"
    assert any("charset" in problem for problem in parsed.problems)


def test_500_deep_nesting_is_read_without_recursion():
    for kind in ("multipart", "rfc822"):
        parsed = parse_message(nested(500, kind))

        assert parsed.text == "the bottom\r\n", kind
        assert parsed.headers.subject == "deep"


def test_unclosed_encoded_words_are_not_read_in_quadratic_time():
    # 30,000 openings without a closing: 30 s in the stdlib's decoder, milliseconds in ours.
    raw = b"Subject: " + b"=?a?q?x " * 30_000 + b"\r\n\r\n"
    started = time.perf_counter()

    fields = parse_headers(raw)

    assert time.perf_counter() - started < 2  # generous: a loaded machine must not fail it
    assert fields.subject == ("=?a?q?x " * 30_000).strip()[:998]


def test_raw_utf8_beside_encoded_words_is_not_escaped():
    fields = parse_headers("Subject: 日本 =?utf-8?q?caf=C3=A9?=\r\n\r\n".encode())

    assert fields.subject == "日本 café"  # the stdlib's decoder gives "\\u65e5\\u672c café"


def test_structure_header_the_stdlib_cannot_parse_costs_only_its_parameter():
    raw = b"Content-Type: text/plain; charset*=undefined''x\r\nFrom: a@b.c\r\n\r\nthe text\r\n"

    parsed = parse_message(raw)

    assert parsed.text == "the text\r\n"


def test_nul_in_an_attachment_file_name_is_replaced():
    raw = _multipart(
        b'Content-Type: application/pdf\r\nContent-Disposition: attachment; filename="a\x00b.pdf"'
        b"\r\n\r\n%PDF"
    )

    parsed = parse_message(raw)

    assert [a.filename for a in parsed.attachments] == ["a\ufffdb.pdf"]
