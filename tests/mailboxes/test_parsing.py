"""mailboxes.parsing on hand-written samples and on the shared real-world corpus."""

import re
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from mailboxes.parsing import (
    KEPT_HEADERS,
    MAX_HEADER_BYTES,
    header_fields,
    message_ids,
    parse_headers,
    parse_message,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "emails"
CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "eml"


def sample(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_headers_are_decoded_and_ids_extracted():
    fields = parse_headers(sample("multipart_reply.eml"))

    assert fields.message_id == "reply-1@example.fr"
    assert fields.in_reply_to == "sent-1@threadline.test"
    assert fields.references == ("root-0@threadline.test", "sent-1@threadline.test")
    assert (fields.from_name, fields.from_address) == ("Renée Dupont", "renee@example.fr")
    assert fields.to == (("Owner, Team", "owner@example.com"), ("", "bob@example.com"))
    assert fields.cc == (("", "carol@example.com"),)
    assert fields.subject == "Réunion de lundi"
    assert fields.sent_at.isoformat() == "2026-11-24T08:30:00+00:00"  # 09:30 +0100, in UTC
    assert fields.problems == []


def test_bodies_and_attachments_are_separated():
    parsed = parse_message(sample("multipart_reply.eml"))

    assert parsed.text.strip() == "Oui, lundi à 10h."
    assert "<b>&agrave; 10h</b>" in parsed.html
    assert [(a.filename, a.content_type) for a in parsed.attachments] == [
        ("ordre du jour.pdf", "application/pdf")
    ]
    assert parsed.attachments[0].payload.startswith(b"%PDF-1.4")


def test_broken_headers_are_named_not_raised():
    parsed = parse_message(sample("broken_headers.eml"))

    problems = " ".join(parsed.problems)
    assert "no Message-ID" in problems
    assert "unreadable Date header" in problems
    assert parsed.headers.references == ("a@b", "c@d")
    assert parsed.headers.from_address == ""


def test_legacy_charset_without_message_id():
    parsed = parse_message(sample("no_message_id_latin1.eml"))

    assert parsed.headers.message_id == ""
    assert "Schöne Grüße" in parsed.text


def test_message_ids_keeps_order_and_drops_duplicates():
    assert message_ids("<a@x> <b@y>\r\n <a@x>") == ("a@x", "b@y")
    assert message_ids("bare@id.example") == ("bare@id.example",)
    assert message_ids("no ids here") == ()


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is not present beside the repo")
def test_every_corpus_message_parses_or_names_its_problems():
    files = sorted(p for p in CORPUS.rglob("*") if p.is_file())
    assert len(files) >= 300

    outcomes = {path: parse_message(path.read_bytes()) for path in files}

    without_id = [p for p in outcomes.values() if not p.headers.message_id]
    assert all("no Message-ID" in p.problems for p in without_id)
    declared = [
        path
        for path in files
        if re.search(
            rb"(?im)^message-id:[ \t]*<", re.split(rb"\r?\n\r?\n", path.read_bytes(), maxsplit=1)[0]
        )
    ]
    found = [path for path in declared if outcomes[path].headers.message_id]
    assert len(found) >= 0.99 * len(declared)
    assert sum(1 for p in outcomes.values() if p.text or p.html) > len(files) // 2


def test_raw_8bit_headers_become_text_without_surrogates():
    fields = parse_headers(sample("raw_8bit_headers.eml"))

    assert fields.from_name == "Renée Dupont"
    assert fields.subject == "Café crème"
    assert fields.to == (("Jürgen", "j@example.de"),)
    assert all(not 0xD800 <= ord(c) <= 0xDFFF for c in fields.from_name + fields.subject)


def _email_package_fields(raw: bytes):
    """The reference reading: the stdlib's compat32 parser, through the same interpretation."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0][:MAX_HEADER_BYTES]
    message = message_from_bytes(head + b"\r\n\r\n", policy=policy.compat32)
    values = {}
    for key, value in message.raw_items():
        if key.lower() not in KEPT_HEADERS or key.lower() in values:
            continue
        text = " ".join(str(value).split())
        if not text.isascii():
            raw_value = text.encode("utf-8", "surrogateescape")
            try:
                text = raw_value.decode("utf-8")
            except UnicodeDecodeError:
                text = raw_value.decode("cp1252", "replace")
        values[key.lower()] = text
    return header_fields(values)


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is not present beside the repo")
def test_fast_header_reading_equals_the_email_package_on_the_corpus():
    files = sorted(p for p in CORPUS.rglob("*") if p.is_file())

    different = [
        path.relative_to(CORPUS)
        for path in files
        if parse_headers(path.read_bytes()) != _email_package_fields(path.read_bytes())
    ]

    assert different == []


def test_fast_header_reading_equals_the_email_package_on_the_samples():
    for path in sorted(FIXTURES.glob("*.eml")):
        assert parse_headers(path.read_bytes()) == _email_package_fields(path.read_bytes()), path


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is not present beside the repo")
def test_address_and_word_shortcuts_agree_with_the_email_package_on_the_corpus():
    from email.header import decode_header, make_header
    from email.utils import getaddresses

    from mailboxes.parsing import _decode, _simple_addresses, header_values

    shortcut_used = 0
    for path in sorted(p for p in CORPUS.rglob("*") if p.is_file()):
        values = header_values(path.read_bytes())
        for name in ("from", "to", "cc", "subject"):
            text = values.get(name, "")
            if "=?" not in text:
                assert _decode(text) == str(make_header(decode_header(text))), (path, name)
            if name == "subject":
                continue
            simple = _simple_addresses(text)
            if simple is not None:
                shortcut_used += 1
                assert simple == getaddresses([text]), (path, name, text)
    assert shortcut_used > 200


def _parts(raw, mime_policy):
    """What parse_message reads of each leaf part."""
    from email import message_from_bytes

    return [
        (
            part.get_content_type(),
            part.get_content_charset(),
            part.get_content_disposition(),
            part.get_filename(),
            part.get_payload(decode=True),
            len(part.defects),
        )  # fmt: skip
        for part in message_from_bytes(raw, policy=mime_policy).walk()
        if not part.is_multipart()
    ]


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is not present beside the repo")
def test_parsing_structure_headers_once_reads_every_part_as_policy_default_does():
    from email import policy

    from mailboxes.parsing import _MIME_POLICY

    compared = 0
    for path in sorted(p for p in CORPUS.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        try:
            expected = _parts(raw, policy.default)
        except Exception:  # noqa: BLE001 - structures the email package cannot walk
            with pytest.raises(Exception):  # noqa: B017, PT011 - the same failure, whatever it is
                _parts(raw, _MIME_POLICY)
            continue
        assert _parts(raw, _MIME_POLICY) == expected, path.relative_to(CORPUS)
        compared += len(expected)
    assert compared > 500


def _corpus_files():
    return sorted(p for p in CORPUS.rglob("*") if p.is_file())


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is not present beside the repo")
def test_plain_block_reading_equals_the_line_scanner_on_the_corpus():
    from mailboxes.parsing import _PLAIN_BLOCK, _decode_bytes, _scan_header_lines, header_values

    plain = 0
    for path in _corpus_files():
        # As IMAP servers send them: CRLF line ends, which the one-regex reading needs.
        raw = re.sub(rb"\r?\n", b"\r\n", path.read_bytes())
        end = _PLAIN_BLOCK.match(raw).end()
        plain += raw[end : end + 2] == b"\r\n"
        scanned = _scan_header_lines(raw)
        expected = {k: " ".join(_decode_bytes(v).split()) for k, v in scanned.items()}
        assert header_values(raw) == expected, path.relative_to(CORPUS)
    assert plain > 250


def _reference_date(value):
    from datetime import UTC
    from email.utils import parsedate_to_datetime

    try:
        sent_at = parsedate_to_datetime(value)
        return sent_at.astimezone(UTC) if sent_at.tzinfo else sent_at.replace(tzinfo=UTC)
    except (ValueError, TypeError, IndexError, OverflowError) as exc:
        return type(exc)


def _our_date(value):
    from mailboxes.parsing import date_in_utc

    try:
        return date_in_utc(value)
    except (ValueError, TypeError, IndexError, OverflowError) as exc:
        return type(exc)


DATES = [
    "Fri, 27 Nov 2026 01:33:17 +0000",
    "Fri, 27 Nov 2026 01:33:17 -0000",  # UTC, source zone unknown: naive in the stdlib
    "Fri, 27 Nov 2026 01:33:17 +0530",
    "Fri, 27 Nov 2026 01:33:17 -0800 (PST)",
    "27 Nov 2026 01:33:17 -0800",
    "Fri, 1 Mar 2024 00:10:00 +0100",  # crosses back into February of a leap year
    "Fri, 27 Nov 2026 01:33:17 +0075",  # 75 minutes: odd, but the stdlib takes it
    "Fri, 27 Nov 2026 01:33:17 +9999",  # a day or more: refused
    "Fri, 31 Feb 2026 01:33:17 +0000",  # no such day
    "Fri, 27 Nov 2026 24:00:00 +0000",
    "Fri, 27 Nov 0099 01:33:17 +0000",  # two-digit years are read as 19xx/20xx
    "Fri, 31 Dec 9999 23:59:59 -2359",  # past the largest datetime in UTC
    "Mon, 1 Jan 0001 00:00:00 +0100",
    "Fri, 27 nov 2026 01:33:17 +0000",
    "Fri, 27 Nov 2026 01:33 +0000",
    "Fri, 27 Nov 2026 01:33:17 GMT",
    "Fri, 27 Nov 2026 01:33:17",
    "Friday, 27 Nov 2026 01:33:17 +0000",
    "Fri, 2\u0667 Nov 2026 01:33:17 +0000",  # a non-ASCII digit
    "not a date",
]


def test_everyday_date_reading_equals_parsedate_to_datetime():
    for value in DATES:
        assert _our_date(value) == _reference_date(value), value


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is not present beside the repo")
def test_everyday_date_reading_equals_parsedate_to_datetime_on_the_corpus():
    from mailboxes.parsing import _PLAIN_DATE, header_values

    dates = [header_values(path.read_bytes()).get("date", "") for path in _corpus_files()]
    dates = [d for d in dates if d]
    assert sum(_PLAIN_DATE.fullmatch(d) is not None for d in dates) > 200
    for value in dates:
        assert _our_date(value) == _reference_date(value), value
