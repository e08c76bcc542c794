"""Writes to contacts, companies and deals; CSV import."""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass, field
from typing import IO, Any

from django import forms
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
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
    last_line: int = 0  # where a row running over several lines ends; 0: on `line`

    def __post_init__(self) -> None:
        self.last_line = max(self.last_line, self.line)


@dataclass
class ImportReport:
    created: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.errors)


class ImportFileError(Exception):
    """The file as a whole cannot be read; the message says why in plain words."""


# Far above any column we keep (the longest is 254), far below what would hurt: a longer field
# costs its row, with this limit in the message.
IMPORT_FIELD_MAX_CHARS = 10_000
# The csv module's own limit (131,072 by default) raises mid-file, and a reader resumed after it
# may start inside a quoted field. Ours is checked per row instead, so theirs is set out of reach;
# what one field can hold is then bounded by the upload limit (contacts/uploads.py).
_CSV_FIELD_SIZE_LIMIT = 2**31 - 1
_SNIFF_CHARS = 4096
_READ_CHUNK = 64 * 1024
_NOT_UTF8 = "The file is not UTF-8 text. Export it as 'CSV UTF-8'."

_COLUMN_ALIASES = {
    "first_name": {"first_name", "first name", "firstname", "given name"},
    "last_name": {"last_name", "last name", "lastname", "surname", "family name"},
    "email": {"email", "emails", "email address", "e-mail"},
    "phone": {"phone", "phone number", "telephone"},
    "job_title": {"job_title", "job title", "title"},
    "company": {"company", "company name", "organisation", "organization"},
}
_COMPANY_NAME = forms.CharField(max_length=Company._meta.get_field("name").max_length)


def _column_indexes(headers: list[str]) -> dict[str, int]:
    """Map each known column (first_name, email...) to its index in the header row."""
    columns = {}
    for index, header in enumerate(headers):
        # A second byte order mark (files joined with `cat`) must not hide the first column.
        key = header.replace("\ufeff", "").strip().lower().replace("-", " ").replace("_", " ")
        for canonical, aliases in _COLUMN_ALIASES.items():
            if key in {alias.replace("_", " ") for alias in aliases}:
                columns[canonical] = index
    return columns


def _read_sample(stream: IO[bytes]) -> str:
    """Check that the whole stream is UTF-8, a chunk at a time; return its first characters.

    Leaves the stream at its start. Raises ImportFileError, so that a file in another encoding
    is refused before any row is imported.
    """
    stream.seek(0)
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    sample = ""
    try:
        while chunk := stream.read(_READ_CHUNK):
            if len(sample) < _SNIFF_CHARS:
                sample += decoder.decode(chunk)[: _SNIFF_CHARS - len(sample)]
            else:
                decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise ImportFileError(_NOT_UTF8) from None
    stream.seek(0)
    return sample


def _sniff(sample: str) -> type[csv.Dialect]:
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        return csv.excel
    return dialect


def _row_problems(row: list[str], width: int, values: dict[str, str], lines: int) -> list[str]:
    """What makes a parsed row unfit before the contact form sees it (empty list: nothing)."""
    if any("\x00" in value for value in row):
        return ["The row contains a NUL character: the file may not be plain text."]
    if any(len(value) > IMPORT_FIELD_MAX_CHARS for value in row):
        problem = f"A field is longer than {IMPORT_FIELD_MAX_CHARS:,} characters."
        if lines > 1:
            problem += " A quote may be missing its closing quote."
        return [problem]
    if lines > 1 and len(row) != width:
        return [
            f"The row runs over {lines} lines and has {len(row)} columns instead of {width}: "
            "a quote is probably missing its closing quote."
        ]
    if any("\n" in value or "\r" in value for value in values.values()):
        return ["A value runs over several lines: a quote is probably missing its closing quote."]
    return []


def _import_row(
    *,
    team: Team,
    values: dict[str, str],
    companies: dict[str, Company],
    actor: AbstractBaseUser | None,
) -> list[str]:
    """Create one contact (and its company if new) from a row; return the problems instead."""
    company_name = values.pop("company", "")
    form = ContactForm({**values, "emails": values.pop("email", "").replace(";", ",")}, team=team)
    problems = [msg for errors in form.errors.values() for msg in errors]
    if company_name:
        try:
            _COMPANY_NAME.clean(company_name)
        except ValidationError as exc:
            problems += [f"Company: {msg}" for msg in exc.messages]
    if problems:
        return problems
    with transaction.atomic():
        if company_name:
            company = companies.get(company_name.lower())
            if company is None:
                company = Company.objects.create(team=team, name=company_name, owner=actor)
                companies[company_name.lower()] = company
            form.instance.company = company
        save_contact(team=team, form=form, actor=actor)
    return []


def import_contacts_csv(
    *, team: Team, data: bytes | IO[bytes], actor: AbstractBaseUser | None
) -> ImportReport:
    """Create one contact per valid row; report each invalid row with its line number(s).

    `data` is the file's bytes or a seekable binary file, read as a stream (twice: a UTF-8
    check, then the rows). Valid rows are kept even when others fail; a row's problem costs only
    that row. Raises ImportFileError, before importing anything, if the file is not UTF-8 or
    has no known column.
    """
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    dialect = _sniff(_read_sample(stream))
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    try:
        return _import_rows(team=team, text=text, dialect=dialect, actor=actor)
    finally:
        text.detach()  # the caller's file stays open


def _import_rows(
    *, team: Team, text: IO[str], dialect: type[csv.Dialect], actor: AbstractBaseUser | None
) -> ImportReport:
    csv.field_size_limit(_CSV_FIELD_SIZE_LIMIT)  # process-wide; see its definition
    reader = csv.reader(text, dialect=dialect)
    try:
        headers = next(reader, [])
    except csv.Error:
        headers = []
    if any("\x00" in header for header in headers):
        raise ImportFileError(
            "The file contains NUL characters: it may be UTF-16. Export it as 'CSV UTF-8'."
        )
    columns = _column_indexes(headers)
    if not {"first_name", "last_name", "email"} & set(columns):
        raise ImportFileError(
            "No known column found. The first row must name columns such as first_name, "
            "last_name and email."
        )
    report = ImportReport()
    companies = {c.name.lower(): c for c in Company.objects.for_team(team)}
    rows = 0
    last = reader.line_num
    while True:
        first = last + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            # Not reached by any input we know of (see _CSV_FIELD_SIZE_LIMIT); should it be, the
            # reader may now be inside a quoted field, so nothing after this line is trusted.
            report.errors.append(
                RowError(
                    first,
                    [f"This row is not valid CSV ({exc}). It and the rows after it were skipped."],
                    reader.line_num,
                )
            )
            break
        last = reader.line_num
        if not row:  # a blank line
            continue
        if rows >= settings.CRM_IMPORT_MAX_ROWS:
            report.errors.append(
                RowError(
                    first,
                    [
                        f"Only {settings.CRM_IMPORT_MAX_ROWS} rows are imported at once: "
                        "this row and the ones after it were skipped."
                    ],
                )
            )
            break
        rows += 1
        values = {
            canonical: (row[index] if index < len(row) else "").replace("\ufeff", "").strip()
            for canonical, index in columns.items()
        }
        problems = _row_problems(row, len(headers), values, last - first + 1) or _import_row(
            team=team, values=values, companies=companies, actor=actor
        )
        if problems:
            report.errors.append(RowError(first, problems, last))
        else:
            report.created += 1
    return report
