"""Writes to contacts, companies and deals; CSV import."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import models, transaction

from teams.models import Team

from .forms import ContactForm, TeamScopedForm
from .models import Company, Contact, ContactEmail


@transaction.atomic
def save_record(*, team: Team, form: TeamScopedForm, actor: AbstractBaseUser | None) -> Any:
    """Create or update a contact, company or deal from a valid team-scoped form."""
    record = form.save(commit=False)
    assert record.team_id in (None, team.pk), "record of another team"
    record.team = team
    if record.pk is None and record.owner_id is None and actor is not None:
        record.owner = actor
    record.save()
    form.save_m2m()
    return record


@transaction.atomic
def save_contact(*, team: Team, form: ContactForm, actor: AbstractBaseUser | None) -> Contact:
    """Save a contact like `save_record`, then replace its email addresses (first = primary)."""
    contact = save_record(team=team, form=form, actor=actor)
    emails = form.cleaned_data["emails"]
    contact.emails.exclude(email__in=emails).delete()
    existing = set(contact.emails.values_list("email", flat=True))
    ContactEmail.objects.bulk_create(
        ContactEmail(team=team, contact=contact, email=email)
        for email in emails
        if email not in existing
    )
    if emails:
        contact.emails.update(
            is_primary=models.Case(models.When(email=emails[0], then=True), default=False)
        )
    return contact


def delete_record(*, record: models.Model) -> None:
    """Delete a contact, company or deal (caller has checked the team)."""
    record.delete()


@dataclass
class RowError:
    line: int
    messages: list[str]


@dataclass
class ImportReport:
    created: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.errors)


class ImportFileError(Exception):
    """The file as a whole cannot be read; the message says why in plain words."""


_COLUMN_ALIASES = {
    "first_name": {"first_name", "first name", "firstname", "given name"},
    "last_name": {"last_name", "last name", "lastname", "surname", "family name"},
    "email": {"email", "emails", "email address", "e-mail"},
    "phone": {"phone", "phone number", "telephone"},
    "job_title": {"job_title", "job title", "title"},
    "company": {"company", "company name", "organisation", "organization"},
}


def _canonical_headers(headers: list[str]) -> dict[str, str]:
    mapping = {}
    for header in headers:
        key = header.strip().lower().replace("-", " ").replace("_", " ")
        for canonical, aliases in _COLUMN_ALIASES.items():
            if key in {alias.replace("_", " ") for alias in aliases}:
                mapping[header] = canonical
    return mapping


def import_contacts_csv(*, team: Team, data: bytes, actor: AbstractBaseUser | None) -> ImportReport:
    """Create one contact per valid row; report each invalid row with its line number.

    Valid rows are kept even when others fail. Raises ImportFileError if the file is not a
    readable CSV with a known column.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportFileError("The file is not UTF-8 text. Export it as 'CSV UTF-8'.") from None
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(io.StringIO(text), dialect=dialect)
    mapping = _canonical_headers(reader.fieldnames or [])
    if not {"first_name", "last_name", "email"} & set(mapping.values()):
        raise ImportFileError(
            "No known column found. The first row must name columns such as first_name, "
            "last_name and email."
        )
    report = ImportReport()
    companies = {c.name.lower(): c for c in Company.objects.for_team(team)}
    for index, row in enumerate(reader):
        line = index + 2  # the header is line 1
        if index >= settings.CRM_IMPORT_MAX_ROWS:
            report.errors.append(
                RowError(line, [f"Only {settings.CRM_IMPORT_MAX_ROWS} rows are imported at once."])
            )
            break
        values = {
            canonical: (row.get(header) or "").strip() for header, canonical in mapping.items()
        }
        company_name = values.pop("company", "")
        form = ContactForm(
            {
                **values,
                "emails": values.pop("email", "").replace(";", ","),
            },
            team=team,
        )
        if not form.is_valid():
            report.errors.append(
                RowError(line, [msg for errors in form.errors.values() for msg in errors])
            )
            continue
        with transaction.atomic():
            if company_name:
                company = companies.get(company_name.lower())
                if company is None:
                    company = Company.objects.create(team=team, name=company_name, owner=actor)
                    companies[company_name.lower()] = company
                form.instance.company = company
            save_contact(team=team, form=form, actor=actor)
        report.created += 1
    return report
