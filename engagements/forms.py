from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from contacts.forms import parse_email_list
from mailboxes.parsing import ParsedAttachment
from teams.models import Team

from .filenames import display_name
from .models import EmailTemplate
from .templating import TOKENS, unknown_tokens

# What one email may carry in attachments; SMTP servers commonly refuse more than 25 MB.
MAX_ATTACHMENTS_BYTES = 20 * 1024 * 1024


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    widget = MultipleFileInput

    def clean(self, data: Any, initial: Any = None) -> list[Any]:
        files = data if isinstance(data, list | tuple) else [data] if data else []
        return [super(MultipleFileField, self).clean(item, initial) for item in files]


def _address_list(value: str) -> list[str]:
    return parse_email_list(value) if value.strip() else []


class ComposeForm(forms.Form):
    """An email to write from a record page (SPEC C4, L1): recipients picked from the record's
    contacts or typed."""

    to_contacts = forms.MultipleChoiceField(
        label="To",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="The record's contacts.",
    )
    to_other = forms.CharField(
        label="Other recipients",
        required=False,
        help_text="Addresses separated by commas.",
    )
    cc = forms.CharField(label="Cc", required=False)
    bcc = forms.CharField(label="Bcc", required=False, help_text="Hidden from the others.")
    subject = forms.CharField(max_length=998)
    body = forms.CharField(widget=forms.Textarea(attrs={"rows": 12}))
    formatting = forms.BooleanField(
        label="Simple formatting",
        required=False,
        help_text="**bold**, *italic*, [text](https://link), lines starting with - as a list.",
    )
    attachments = MultipleFileField(required=False)

    def __init__(self, *args: Any, contact_choices: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["to_contacts"].choices = contact_choices
        if not contact_choices:
            self.fields["to_contacts"].help_text = "This record has no contact with an address."

    def clean_to_other(self) -> list[str]:
        return _address_list(self.cleaned_data["to_other"])

    def clean_cc(self) -> list[str]:
        return _address_list(self.cleaned_data["cc"])

    def clean_bcc(self) -> list[str]:
        return _address_list(self.cleaned_data["bcc"])

    def clean_attachments(self) -> list[ParsedAttachment]:
        files = self.cleaned_data["attachments"]
        if sum(f.size for f in files) > MAX_ATTACHMENTS_BYTES:
            raise ValidationError(
                f"Attachments may add up to {MAX_ATTACHMENTS_BYTES // (1024 * 1024)} MB."
            )
        return [
            ParsedAttachment(
                filename=display_name(f.name),  # sent as shown; stored under a safe name
                content_type=f.content_type or "application/octet-stream",
                payload=f.read(),
            )
            for f in files
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not data.get("to_contacts") and not data.get("to_other"):
            raise ValidationError("Choose or type at least one recipient.")
        return data


class EmailTemplateForm(forms.ModelForm):
    class Meta:
        model = EmailTemplate
        fields = ["name", "subject", "body"]
        widgets = {"body": forms.Textarea(attrs={"rows": 12})}
        help_texts = {
            "body": "Tokens: "
            + ", ".join(f"{{{name}}} ({text})" for name, text in TOKENS.items())
            + ". A fallback after a bar is used when the value is missing: {first_name|there}."
        }

    def __init__(self, *args: Any, team: Team, **kwargs: Any) -> None:
        self.team = team
        super().__init__(*args, **kwargs)

    def _known_tokens(self, field: str) -> str:
        value = self.cleaned_data[field]
        unknown = unknown_tokens(value)
        if unknown:
            raise ValidationError(
                "Unknown token{}: {}. Use one of: {}.".format(
                    "s" if len(unknown) > 1 else "",
                    ", ".join(f"{{{name}}}" for name in unknown),
                    ", ".join(f"{{{name}}}" for name in TOKENS),
                )
            )
        return value

    def clean_subject(self) -> str:
        return self._known_tokens("subject")

    def clean_body(self) -> str:
        return self._known_tokens("body")

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        others = EmailTemplate.objects.for_team(self.team).filter(name__iexact=name)
        if self.instance.pk:
            others = others.exclude(pk=self.instance.pk)
        if others.exists():
            raise ValidationError("Your team already has a template with this name.")
        return name
