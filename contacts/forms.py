from __future__ import annotations

import re
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from teams.models import Team

from .models import Company, Contact, ContactEmail, Deal

_SPLIT = re.compile(r"[\s,;]+")
# validate_email allows 320 characters, the column 254: a longer address fails on PostgreSQL.
_EMAIL_MAX_LENGTH = ContactEmail._meta.get_field("email").max_length


def parse_email_list(raw: str) -> list[str]:
    """Split a free-typed list of addresses; raise ValidationError naming the bad ones."""
    emails: list[str] = []
    bad: list[str] = []
    for item in _SPLIT.split(raw.strip()):
        if not item:
            continue
        if len(item) > _EMAIL_MAX_LENGTH:
            bad.append(item)
            continue
        try:
            validate_email(item)
        except ValidationError:
            bad.append(item)
            continue
        if item.lower() not in emails:
            emails.append(item.lower())
    if bad:
        raise ValidationError(f"Not a valid email address: {', '.join(bad)}")
    return emails


class TeamScopedForm(forms.ModelForm):
    """ModelForm whose choice fields only offer rows (and users) of `team` (STYLE section 3)."""

    def __init__(self, *args: Any, team: Team, **kwargs: Any) -> None:
        self.team = team
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            if not isinstance(field, forms.ModelChoiceField):
                continue
            model = field.queryset.model
            if model is get_user_model():
                field.queryset = model.objects.filter(membership__team=team).order_by("email")
                field.label_from_instance = lambda user: user.email
            else:
                field.queryset = model.objects.for_team(team)


class ContactForm(TeamScopedForm):
    emails = forms.CharField(
        label="Email addresses",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="One or more, separated by commas or new lines; the first is the primary.",
    )

    class Meta:
        model = Contact
        fields = ["first_name", "last_name", "emails", "phone", "job_title", "company", "owner"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and not self.is_bound:
            self.initial["emails"] = "\n".join(e.email for e in self.instance.emails.all())

    def clean_emails(self) -> list[str]:
        emails = parse_email_list(self.cleaned_data["emails"])
        taken = (
            ContactEmail.objects.for_team(self.team)
            .filter(email__in=emails)
            .exclude(contact_id=self.instance.pk)
            .values_list("email", flat=True)
        )
        if taken:
            raise ValidationError(f"Already used by another contact: {', '.join(sorted(taken))}")
        return emails

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not (data.get("first_name") or data.get("last_name") or data.get("emails")):
            raise ValidationError("Give the contact a name or an email address.")
        return data


class CompanyForm(TeamScopedForm):
    class Meta:
        model = Company
        fields = ["name", "domain", "phone", "owner"]

    def clean_domain(self) -> str:
        domain = self.cleaned_data["domain"].strip().lower()
        domain = domain.removeprefix("https://").removeprefix("http://").removeprefix("www.")
        return domain.rstrip("/")


class DealForm(TeamScopedForm):
    class Meta:
        model = Deal
        fields = ["name", "stage", "amount", "close_date", "company", "contacts", "owner"]
        widgets = {
            "close_date": forms.DateInput(attrs={"type": "date"}),
            "contacts": forms.SelectMultiple(attrs={"size": 6}),
        }

    def clean_amount(self) -> Any:
        amount = self.cleaned_data["amount"]
        if amount is not None and amount < 0:
            raise ValidationError("The amount cannot be negative.")
        return amount


class ContactImportForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        help_text=(
            "UTF-8, with a header row. Columns: first_name, last_name, email (several separated "
            "by ';'), phone, job_title, company."
        ),
    )

    def __init__(self, *args: Any, refusal: str = "", **kwargs: Any) -> None:
        """`refusal`: why the upload was stopped part-way (contacts/uploads.py), if it was."""
        super().__init__(*args, **kwargs)
        self.refusal = refusal
        self.fields[
            "file"
        ].help_text += (
            f" At most {settings.CRM_IMPORT_MAX_MB} MB and {settings.CRM_IMPORT_MAX_ROWS:,} rows."
        )

    def clean(self) -> dict[str, Any]:
        if self.refusal:
            # The stopped upload left no file: say why rather than "This field is required."
            self.errors.pop("file", None)
            raise ValidationError({"file": self.refusal})
        return super().clean()
