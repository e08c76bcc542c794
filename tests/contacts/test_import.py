import codecs
import random
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.test import Client
from django.test.client import BOUNDARY, MULTIPART_CONTENT, FakePayload, encode_multipart
from django.urls import reverse

from contacts.models import Company, Contact, ContactEmail
from contacts.services import ImportFileError, import_contacts_csv
from tests.factories import CompanyFactory, ContactEmailFactory, ContactFactory

pytestmark = pytest.mark.django_db

MB = 1024 * 1024


def csv_bytes(text: str) -> bytes:
    return text.strip().encode("utf-8") + b"\n"


def post_csv(client: Client, data: bytes):
    upload = SimpleUploadedFile("contacts.csv", data, "text/csv")
    return client.post(reverse("contacts:contact_import"), {"file": upload})


def csv_of_size(size: int) -> bytes:
    """A CSV of exactly `size` bytes: one contact (Ada), padded with ignored columns."""
    parts = [b"first_name,email\nAda,ada@example.com"]
    length = len(parts[0])
    while length < size:
        parts.append(b"," + b"x" * min(9_999, size - length - 1))
        length += len(parts[-1])
    return b"".join(parts)


class RecordingUploadHandler(FileUploadHandler):
    """Installed through settings after the import's own handler: counts the bytes it is given."""

    received: list[int] = []

    def receive_data_chunk(self, raw_data, start):
        self.received.append(len(raw_data))
        return raw_data

    def file_complete(self, file_size):
        return None


@pytest.fixture
def recorded_upload(settings):
    settings.FILE_UPLOAD_HANDLERS = [
        "tests.contacts.test_import.RecordingUploadHandler",
        *settings.FILE_UPLOAD_HANDLERS,
    ]
    RecordingUploadHandler.received = []
    return RecordingUploadHandler.received


def test_import_creates_contacts_and_companies(team, owner):
    CompanyFactory(team=team, name="Analytical Engines")
    data = csv_bytes(
        """
first_name,last_name,email,phone,company
Ada,Lovelace,ada@example.com;ada.l@example.org,+44 1,analytical engines
Grace,Hopper,grace@example.com,,Navy
"""
    )

    report = import_contacts_csv(team=team, data=data, actor=owner)

    assert report.created == 2
    assert report.errors == []
    ada = Contact.objects.get(first_name="Ada")
    assert ada.company.name == "Analytical Engines"
    assert ada.emails.count() == 2
    assert Company.objects.filter(team=team).count() == 2


def test_import_reports_bad_rows_by_line_and_keeps_good_ones(team, owner):
    ContactEmailFactory(contact=ContactFactory(team=team), email="taken@example.com")
    data = csv_bytes(
        """
First Name;Last Name;Email
Ada;Lovelace;ada@example.com
Bad;Email;not-an-address
Dup;Licate;TAKEN@example.com
;;
Grace;Hopper;grace@example.com
Again;Grace;grace@example.com
"""
    )

    report = import_contacts_csv(team=team, data=data, actor=owner)

    assert report.created == 2
    assert [e.line for e in report.errors] == [3, 4, 5, 7]
    assert "not-an-address" in report.errors[0].messages[0]
    assert "Already used" in report.errors[1].messages[0]
    assert "name or an email" in report.errors[2].messages[0]
    assert "grace@example.com" in report.errors[3].messages[0]


def test_import_refuses_a_file_without_known_columns(team, owner):
    with pytest.raises(ImportFileError, match="No known column"):
        import_contacts_csv(team=team, data=b"foo,bar\n1,2\n", actor=owner)


def test_import_refuses_non_utf8(team, owner):
    with pytest.raises(ImportFileError, match="UTF-8"):
        import_contacts_csv(team=team, data="first_name\nRenée\n".encode("utf-16"), actor=owner)


def test_import_stops_at_the_row_limit(team, owner, settings):
    settings.CRM_IMPORT_MAX_ROWS = 2
    data = csv_bytes("first_name\nA\nB\nC\nD")

    report = import_contacts_csv(team=team, data=data, actor=owner)

    assert report.created == 2
    assert "Only 2 rows" in report.errors[0].messages[0]


def test_import_page_shows_the_report(client_for, owner, team):
    upload = SimpleUploadedFile(
        "contacts.csv", csv_bytes("first_name,email\nAda,ada@example.com\nBad,nope"), "text/csv"
    )

    response = client_for(owner).post(reverse("contacts:contact_import"), {"file": upload})

    body = response.content.decode()
    assert response.status_code == 200
    assert "<strong>1</strong> contact created" in body
    assert "Not a valid email address: nope" in body
    assert Contact.objects.filter(team=team).count() == 1


def test_import_page_shows_file_errors(client_for, owner):
    upload = SimpleUploadedFile("x.csv", b"foo\n1\n", "text/csv")

    response = client_for(owner).post(reverse("contacts:contact_import"), {"file": upload})

    assert response.status_code == 400
    assert "No known column" in response.content.decode()


def test_import_reads_a_file_with_a_byte_order_mark(team, owner):
    data = codecs.BOM_UTF8 + csv_bytes("first_name,email\nRenée,renee@example.com")

    report = import_contacts_csv(team=team, data=data, actor=owner)

    assert report.created == 1
    assert Contact.objects.get(team=team).first_name == "Renée"


def test_import_page_reads_a_file_spooled_to_disk(client_for, owner, team, settings):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0  # every upload goes to a temporary file

    response = post_csv(client_for(owner), csv_bytes("first_name,email\nAda,ada@example.com"))

    assert response.status_code == 200
    assert Contact.objects.filter(team=team).count() == 1


def test_import_page_reports_a_200000_character_field_and_imports_the_other_rows(
    client_for, owner, team
):
    data = csv_bytes(
        "first_name,last_name,email,job_title\n"
        "Ada,Lovelace,ada@example.com,Countess\n"
        f"Long,Title,long@example.com,{'x' * 200_000}\n"
        "Grace,Hopper,grace@example.com,Admiral"
    )

    response = post_csv(client_for(owner), data)

    body = response.content.decode()
    assert response.status_code == 200
    assert "<td>3</td><td>A field is longer than 10,000 characters.</td>" in body
    assert set(ContactEmail.objects.filter(team=team).values_list("email", flat=True)) == {
        "ada@example.com",
        "grace@example.com",
    }


def test_import_keeps_a_row_whose_ignored_column_is_at_the_field_limit(team, owner):
    data = csv_bytes(f"first_name,notes\nAda,{'x' * 10_000}\nLong,{'x' * 10_001}")

    report = import_contacts_csv(team=team, data=data, actor=owner)

    assert report.created == 1
    assert [e.line for e in report.errors] == [3]


def test_import_reports_a_row_with_a_nul_character_and_keeps_the_others(client_for, owner, team):
    data = b"first_name,email\nAda,ada@example.com\nN\x00ul,nul@example.com\nGrace,g@example.com\n"

    response = post_csv(client_for(owner), data)

    body = response.content.decode()
    assert response.status_code == 200
    assert "<td>3</td><td>The row contains a NUL character" in body
    assert Contact.objects.filter(team=team).count() == 2


def test_import_page_refuses_utf16_without_a_byte_order_mark(client_for, owner, team):
    data = "first_name,email\nAda,ada@example.com\n".encode("utf-16-le")

    response = post_csv(client_for(owner), data)

    assert response.status_code == 400
    assert "it may be UTF-16" in response.content.decode()
    assert not Contact.objects.filter(team=team).exists()


def test_import_page_reports_an_unclosed_quote_with_the_lines_it_swallowed(client_for, owner, team):
    data = csv_bytes(
        """
first_name,last_name,email
Ada,Lovelace,ada@example.com
Bob,"Smith,bob@example.com
Carl,Jones,carl@example.com
"""
    )

    response = post_csv(client_for(owner), data)

    body = response.content.decode()
    assert response.status_code == 200
    assert "<td>3–4</td><td>The row runs over 2 lines and has 2 columns instead of 3" in body
    assert list(Contact.objects.filter(team=team).values_list("first_name", flat=True)) == ["Ada"]


def test_import_reports_a_value_running_over_lines_in_a_known_column(team, owner):
    data = csv_bytes('first_name,email\n"Ada\nLovelace",ada@example.com\nGrace,g@example.com')

    report = import_contacts_csv(team=team, data=data, actor=owner)

    assert report.created == 1
    assert (report.errors[0].line, report.errors[0].last_line) == (2, 3)
    assert "runs over several lines" in report.errors[0].messages[0]


def test_import_reports_an_email_address_longer_than_its_column(team, owner):
    address = "a" * 250 + "@example.com"  # valid for validate_email (<= 320), too long to store

    report = import_contacts_csv(team=team, data=csv_bytes(f"email\n{address}"), actor=owner)

    assert report.created == 0
    assert "Not a valid email address" in report.errors[0].messages[0]


def test_import_reports_a_company_name_longer_than_its_column(team, owner):
    data = csv_bytes(f"first_name,company\nAda,{'C' * 201}")

    report = import_contacts_csv(team=team, data=data, actor=owner)

    assert report.created == 0
    assert report.errors[0].messages == [
        "Company: Ensure this value has at most 200 characters (it has 201)."
    ]
    assert not Company.objects.filter(team=team).exists()


def test_import_page_refuses_a_file_over_the_size_limit(client_for, owner, team, settings):
    settings.CRM_IMPORT_MAX_MB = 1

    response = post_csv(client_for(owner), csv_of_size(int(1.5 * MB)))

    assert response.status_code == 400
    assert (
        "The file is 1.5 MB; the largest import is 1 MB. Split it into smaller files."
        in response.content.decode()
    )
    assert not Contact.objects.filter(team=team).exists()


def test_a_file_over_the_size_limit_reaches_no_other_upload_handler(
    client_for, owner, settings, recorded_upload
):
    settings.CRM_IMPORT_MAX_MB = 1

    post_csv(client_for(owner), csv_of_size(int(1.5 * MB)))

    assert sum(recorded_upload) == 0


def test_a_file_just_over_the_size_limit_is_stopped_as_it_streams(
    client_for, owner, team, settings, recorded_upload
):
    settings.CRM_IMPORT_MAX_MB = 1

    # Within what a form adds around a file, so only the file's own bytes can tell.
    response = post_csv(client_for(owner), csv_of_size(MB + 20_000))

    assert response.status_code == 400
    assert "The file is 1.1 MB; the largest import is 1 MB." in response.content.decode()
    assert 0 < sum(recorded_upload) <= MB
    assert not Contact.objects.filter(team=team).exists()


def test_a_file_at_the_size_limit_is_imported(client_for, owner, team, settings):
    settings.CRM_IMPORT_MAX_MB = 1

    response = post_csv(client_for(owner), csv_of_size(MB))

    assert response.status_code == 200
    assert Contact.objects.filter(team=team).count() == 1


def test_a_request_far_over_the_size_limit_is_left_unread(client_for, owner, settings):
    settings.CRM_IMPORT_MAX_MB = 1
    upload = SimpleUploadedFile("big.csv", csv_of_size(11 * MB), "text/csv")
    body = encode_multipart(BOUNDARY, {"file": upload})
    payload = FakePayload(body)

    response = client_for(owner).generic(
        "POST",
        reverse("contacts:contact_import"),
        body,
        content_type=MULTIPART_CONTENT,
        **{"wsgi.input": payload},
    )

    assert response.status_code == 400
    assert len(body) - len(payload) < MB  # bytes read


def test_import_page_still_checks_csrf(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)

    response = post_csv(client, csv_bytes("first_name\nAda"))

    assert response.status_code == 403
    assert not Contact.objects.exists()


# Seeded fuzzing (STYLE 4b): mutated files never give a 500, and no valid row that survives in
# a mutated file is lost without a line of the report covering it.

_FUZZ_HEADER = "first_name,last_name,email,phone,job_title,company"
_FUZZ_ROWS = [
    "Ada,Lovelace,ada@example.com,+44 1,Countess,Analytical Engines",
    "Grace,Hopper,grace@example.com,+1 2,Rear Admiral,Navy",
    "Renée,Dupont,renee@example.com,+33 3,Ingénieure,Société Générale",
    "Alan,Turing,alan@example.com,,Fellow,King's College",
    "Katherine,Johnson,katherine@example.com,+1 4,Mathematician,NASA",
    "Émile,Zola,emile@example.com,+33 5,Writer,",
]
_FUZZ_EMAILS = {row: row.split(",")[2] for row in _FUZZ_ROWS}


def _mutate(rng: random.Random, data: bytes) -> bytes:
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(data) + 1)
        kind = rng.choice(
            ["bytes", "truncate", "quote", "quote", "long", "bom", "nul", "newlines", "encoding"]
        )
        if kind == "bytes":
            data = data[:at] + rng.randbytes(rng.randint(1, 8)) + data[at:]
        elif kind == "truncate":
            data = data[:at]
        elif kind == "quote":
            commas = [i + 1 for i, byte in enumerate(data) if byte == ord(",")]
            at = rng.choice(commas) if commas and rng.random() < 0.7 else at
            data = data[:at] + b'"' + data[at:]
        elif kind == "long":
            data = data[:at] + b"y" * rng.choice([9_999, 10_001, 131_073, 200_000]) + data[at:]
        elif kind == "bom":
            data = data[:at] + codecs.BOM_UTF8 + data[at:]
        elif kind == "nul":
            data = data[:at] + b"\x00" + data[at:]
        elif kind == "newlines":
            data = data.replace(b"\n", rng.choice([b"\r\n", b"\r"]))
        else:
            encoding = rng.choice(["utf-16", "utf-16-le", "latin-1", "cp1252", "utf-8-sig"])
            data = data.decode("utf-8", errors="replace").encode(encoding, errors="replace")
    return data


def _lines_covered(body: str) -> set[int]:
    covered: set[int] = set()
    for first, last in re.findall(r"<tr><td>(\d+)(?:–(\d+))?</td>", body):
        covered.update(range(int(first), int(last or first) + 1))
    return covered


@pytest.mark.parametrize("seed", range(5))
def test_import_of_mutated_files_never_fails_and_never_drops_a_row_silently(
    client_for, owner, team, seed
):
    rng = random.Random(seed)
    client = client_for(owner)
    original = "\n".join([_FUZZ_HEADER, *_FUZZ_ROWS, ""]).encode()

    for _ in range(20):
        Contact.objects.filter(team=team).delete()
        Company.objects.filter(team=team).delete()
        data = _mutate(rng, original)

        response = post_csv(client, data)

        body = response.content.decode()
        assert response.status_code in (200, 400), data
        if response.status_code == 400:
            assert 'class="error"' in body, data
            assert not Contact.objects.filter(team=team).exists(), data
            continue
        created = int(re.search(r"<strong>(\d+)</strong> contacts? created", body)[1])
        assert created == Contact.objects.filter(team=team).count(), data
        lines = re.split(r"\r\n|\r|\n", data.decode("utf-8-sig"))
        if lines[0] != _FUZZ_HEADER:
            continue
        imported = set(ContactEmail.objects.filter(team=team).values_list("email", flat=True))
        covered = _lines_covered(body)
        for number, line in enumerate(lines, start=1):
            if line in _FUZZ_EMAILS and number > 1:
                assert _FUZZ_EMAILS[line] in imported or number in covered, (number, data)
