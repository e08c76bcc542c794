"""Attachment names made safe in one place (engagements/filenames.py, STYLE 4b): examples,
then seeded fuzz of the invariants every name from outside must come out with."""

import random
import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest
from django.core.files.utils import validate_file_name
from django.utils import timezone
from django.utils.text import get_valid_filename

from engagements.filenames import (
    content_disposition,
    display_name,
    safe_content_type,
    storage_name,
)
from engagements.models import Attachment, attachment_path
from engagements.services import Address, EmailData, log_email
from mailboxes.parsing import ParsedAttachment

# Written out here, not imported: the test says what "reserved" means on its own.
WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL"} | {
    f"{device}{digit}" for device in ("COM", "LPT") for digit in "0123456789¹²³"
}
BIDI_CONTROLS = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Django's collision suffix (Storage.get_alternative_name): "_" and 7 characters.
COLLISION_SUFFIX = "_abcdefg"
FRAGMENTS = [
    "..",
    ".",
    "/",
    "\\",
    "../",
    "..\\",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "\x00",
    "\x07",
    "\x1b",
    "\x7f",
    "CON",
    "con",
    "nul",
    "COM1",
    "LPT9",
    "COM¹",
    "aux",
    ".txt",
    ".pdf",
    ".tar.gz",
    "€",
    "ü",
    "报告",
    "हिंदी",
    "e\u0301",
    "\u202e",
    "\u200b",
    "\ufeff",
    "\ud800",
    "\udfff",
    "_",
    "-",
    "~",
    ":",
    "*",
    "?",
    '"',
    "<",
    ">",
    "|",
    "%00",
    "\u2028",
    "\uff0f",
    "\uff0e",
    "\U0001f600",
    "a" * 120,
    "ü" * 120,
    "x.y" * 30,
]


@pytest.mark.parametrize(
    ("original", "stored"),
    [
        ("../../../etc/passwd", "passwd"),
        ("..\\..\\win.ini", "win.ini"),
        ("/etc/", "etc"),
        ("CON.txt", "_CON.txt"),
        ("con", "_con"),
        ("Lpt1.tar.gz", "_Lpt1.tar.gz"),
        ("COM¹.log", "_COM¹.log"),
        ("CONSOLE.txt", "CONSOLE.txt"),
        ("€ rates.pdf", "rates.pdf"),
        ("Q3 report (final).xlsx", "Q3_report_final.xlsx"),
        ("bad\x00na\nme\x07.txt", "bad_na_me.txt"),
        (".htaccess", "attachment.htaccess"),
        ("trailing. . .", "trailing"),
        ("a..b.pdf", "a.b.pdf"),
        ("invoice\u202efdp.exe", "invoice_fdp.exe"),
        ("报告.pdf", "报告.pdf"),
    ],
)
def test_storage_name_of_hostile_names(original, stored):
    assert storage_name(original) == stored


def test_storage_name_keeps_the_extension_of_a_long_multibyte_name():
    name = storage_name("ü" * 296 + ".pdf")

    assert name == "ü" * 48 + ".pdf"
    assert len(name.encode()) == 100


@pytest.mark.parametrize(
    ("original", "content_type", "stored"),
    [
        ("", "application/pdf", "attachment.pdf"),
        ("...", "text/plain", "attachment.txt"),
        ("€€€", "application/octet-stream", "attachment"),
        ("", "not a type\x00", "attachment"),
        ("notes", "text/plain", "notes"),
    ],
)
def test_empty_names_get_a_default_with_an_extension_for_the_type(original, content_type, stored):
    assert storage_name(original, content_type) == stored


@pytest.mark.parametrize(
    ("original", "shown"),
    [
        ("../../../etc/passwd", "../../../etc/passwd"),
        ("€ rates.pdf", "€ rates.pdf"),
        ("bad\x00na\nme\x07.txt", "badna me.txt"),
        ("  tab\there  ", "tab here"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("lone \ud800 surrogate", "lone \ufffd surrogate"),
        ("\x00\x01", "attachment"),
    ],
)
def test_display_name_keeps_the_senders_name_but_for_what_cannot_be_shown(original, shown):
    assert display_name(original) == shown


def test_display_name_of_a_long_name_keeps_its_extension():
    shown = display_name("ü" * 296 + ".pdf")

    assert shown == "ü" * 251 + ".pdf"


@pytest.mark.parametrize(
    ("shown", "header"),
    [
        ("report.pdf", 'attachment; filename="report.pdf"'),
        ("€ rates.pdf", "attachment; filename=\"rates.pdf\"; "
         "filename*=UTF-8''%E2%82%AC%20rates.pdf"),
        ("../../../etc/passwd", 'attachment; filename="passwd"'),
        ("CON.txt", 'attachment; filename="_CON.txt"'),
        ('say "hi";\r\nX-Evil: 1.txt', "attachment; filename=\"say_hi_X-Evil_1.txt\"; "
         "filename*=UTF-8''say%20_hi_%3B%20X-Evil_%201.txt"),
    ],
)  # fmt: skip
def test_content_disposition_offers_the_shown_name_safely(shown, header):
    assert content_disposition(shown) == header


def test_safe_content_type():
    assert safe_content_type(" Application/PDF ") == "application/pdf"
    assert safe_content_type("text/html\x00") == "application/octet-stream"
    assert safe_content_type("") == "application/octet-stream"


def test_the_full_stored_path_stays_within_the_column_and_the_file_system():
    attachment = Attachment(team_id=2**63 - 1, content_type="application/pdf")

    path = attachment_path(attachment, "€" * 400 + ".pdf")

    directory, name = path.rsplit("/", 1)
    assert re.fullmatch(r"attachments/team_\d+/[0-9a-f]{24}", directory)
    with_collision = f"{directory}/{name.removesuffix('.pdf')}{COLLISION_SUFFIX}.pdf"
    assert len(with_collision) <= Attachment._meta.get_field("file").max_length
    assert max(len(part.encode()) for part in with_collision.split("/")) <= 255


# -- seeded fuzz ----------------------------------------------------------------------------


def _random_name(rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:  # any code point, surrogates and unassigned ones included
        return "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(0, 80)))
    if kind == 1:  # bytes, read the ways a parser may read them
        raw = rng.randbytes(rng.randrange(0, 300))
        encoding, errors = rng.choice(
            [("utf-8", "surrogateescape"), ("latin-1", "strict"), ("utf-8", "replace")]
        )
        return raw.decode(encoding, errors)
    if kind == 2:  # hostile pieces put together
        return "".join(rng.choice(FRAGMENTS) for _ in range(rng.randrange(0, 12)))
    # a plausible name with hostile pieces around it
    stem = "".join(rng.choice("abcXYZ019 _-.€ü") for _ in range(rng.randrange(0, 40)))
    return rng.choice(FRAGMENTS) + stem + rng.choice(["", ".pdf", ".tar.gz", "."])


def fuzzed_names(count: int, seed: int = 13) -> list[str]:
    rng = random.Random(seed)
    return [_random_name(rng) for _ in range(count)]


def test_fuzzed_storage_names_are_safe_everywhere():
    for original in fuzzed_names(20000):
        content_type = "application/pdf" if len(original) % 2 else ""
        name = storage_name(original, content_type)

        assert name, original
        assert "/" not in name and "\\" not in name, original
        assert ".." not in name and not name.startswith("."), original
        assert not name.endswith((".", " ")), original
        assert not any(unicodedata.category(c).startswith(("C", "Z")) for c in name), original
        assert len(name.encode("utf-8")) <= 100, original
        assert name.split(".")[0].upper() not in WINDOWS_DEVICES, original
        assert storage_name(name, content_type) == name, original  # idempotent
        assert unicodedata.normalize("NFC", name) == name, original
        # Django's storage keeps it as it is and finds no path in it.
        assert get_valid_filename(name) == name, original
        assert validate_file_name(name) == name, original


def test_fuzzed_display_names_can_be_stored_and_shown():
    for original in fuzzed_names(20000, seed=31):
        shown = display_name(original, "text/plain")

        assert shown and shown == shown.strip(), original
        assert len(shown) <= 255, original
        assert not any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in shown)
        assert not BIDI_CONTROLS & set(shown), original
        shown.encode("utf-8")  # no lone surrogate left to break a column or a page
        assert display_name(shown, "text/plain") == shown, original  # idempotent


def test_fuzzed_download_headers_are_one_plain_ascii_line():
    for original in fuzzed_names(10000, seed=47):
        header = content_disposition(display_name(original))

        assert header.isascii() and header.isprintable(), original
        match = re.fullmatch(
            r'attachment; filename="([-\w.]+)"(?:; filename\*=UTF-8\'\'([^\s;"]+))?', header
        )
        assert match, (original, header)
        offered = unquote(match.group(2)) if match.group(2) else match.group(1)
        assert "/" not in offered and "\\" not in offered, original
        assert offered.split(".")[0].strip().upper() not in WINDOWS_DEVICES, original


@pytest.mark.django_db
def test_fuzzed_names_are_all_stored_under_the_media_root(team, settings):
    names = fuzzed_names(60, seed=7)
    parts = [ParsedAttachment(name, "application/pdf", name.encode("utf-8", "replace"))
             for name in names]  # fmt: skip

    engagement = log_email(
        team=team,
        email=EmailData("fuzz@example.com", Address("ada@example.com"), timezone.now()),
        direction="in",
        source="sync",
        attachments=parts,
    )

    media = Path(settings.MEDIA_ROOT).resolve()
    stored = list(engagement.attachments.order_by("pk"))
    assert engagement.attachments_note == ""
    assert len(stored) == len(names)
    for attachment, part in zip(stored, parts, strict=True):
        path = Path(attachment.file.path).resolve()
        assert path.is_relative_to(media / "attachments" / f"team_{team.pk}")
        assert path.read_bytes() == part.payload
        assert attachment.filename == display_name(part.filename, "application/pdf")
