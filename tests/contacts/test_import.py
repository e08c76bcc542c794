import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from contacts.models import Company, Contact
from contacts.services import ImportFileError, import_contacts_csv
from tests.factories import CompanyFactory, ContactEmailFactory, ContactFactory

pytestmark = pytest.mark.django_db


def csv_bytes(text: str) -> bytes:
    return text.strip().encode("utf-8") + b"\n"


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
