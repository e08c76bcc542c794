from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from .models import Mailbox
from .providers import network
from .providers.imap import is_loopback, pop3_explanation

SECURITY = [("ssl", "SSL/TLS"), ("starttls", "STARTTLS"), ("plain", "None (test servers only)")]
POP3_PORTS = {110, 995}

# Common providers' IMAP/SMTP settings, offered to fill the form.
PRESETS = {
    "fastmail": ("Fastmail", "imap.fastmail.com", 993, "ssl", "smtp.fastmail.com", 465, "ssl"),
    "yahoo": ("Yahoo Mail", "imap.mail.yahoo.com", 993, "ssl", "smtp.mail.yahoo.com", 465, "ssl"),
    "icloud": ("iCloud Mail", "imap.mail.me.com", 993, "ssl", "smtp.mail.me.com", 587, "starttls"),
    "zoho": ("Zoho Mail", "imap.zoho.com", 993, "ssl", "smtp.zoho.com", 465, "ssl"),
    "aruba": ("Aruba", "imaps.aruba.it", 993, "ssl", "smtps.aruba.it", 465, "ssl"),
    "gmx": ("GMX", "imap.gmx.net", 993, "ssl", "mail.gmx.net", 587, "starttls"),
}


class ImapConnectForm(forms.Form):
    email_address = forms.EmailField(label="Email address")
    imap_host = forms.CharField(label="IMAP server", max_length=253)
    imap_port = forms.IntegerField(label="IMAP port", min_value=1, max_value=65535, initial=993)
    imap_security = forms.ChoiceField(label="IMAP security", choices=SECURITY, initial="ssl")
    smtp_host = forms.CharField(label="SMTP server", max_length=253)
    smtp_port = forms.IntegerField(label="SMTP port", min_value=1, max_value=65535, initial=587)
    smtp_security = forms.ChoiceField(label="SMTP security", choices=SECURITY, initial="starttls")
    username = forms.CharField(
        label="Username", required=False, help_text="Leave empty to use the email address."
    )
    password = forms.CharField(
        label="Password",
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted; some providers require an app password.",
    )

    def _clean_host(self, field: str) -> str:
        # Plainly non-public servers are refused here, without a lookup; names are checked
        # once resolved, when connecting (providers/network.py).
        host: str = self.cleaned_data[field].strip()
        if not settings.CRM_ALLOW_PRIVATE_MAIL_HOSTS and network.is_plainly_private(host):
            raise ValidationError(network.refusal_message(host), code="private_host")
        return host

    def clean_imap_host(self) -> str:
        return self._clean_host("imap_host")

    def clean_smtp_host(self) -> str:
        return self._clean_host("smtp_host")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        host = (data.get("imap_host") or "").strip().lower()
        first_label = host.split(".", 1)[0]
        if host and (data.get("imap_port") in POP3_PORTS or first_label in {"pop", "pop3"}):
            # SPEC C2: refuse POP3 with the reason; nothing is saved.
            raise ValidationError(pop3_explanation(host), code="pop3")
        for prefix in ("imap", "smtp"):
            if data.get(f"{prefix}_security") == "plain" and not (
                settings.CRM_ALLOW_PLAINTEXT_LOOPBACK
                and is_loopback((data.get(f"{prefix}_host") or "").strip())
            ):
                self.add_error(
                    f"{prefix}_security",
                    "Unencrypted connections are not allowed: choose SSL/TLS or STARTTLS.",
                )
        if not data.get("username") and data.get("email_address"):
            data["username"] = data["email_address"]
        return data

    def provider_settings(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            key: data[key]
            for key in (
                "imap_host", "imap_port", "imap_security",
                "smtp_host", "smtp_port", "smtp_security", "username",
            )
        }  # fmt: skip


class SenderIdentityForm(forms.ModelForm):
    """How email sent from the CRM through this mailbox is signed."""

    class Meta:
        model = Mailbox
        fields = ["display_name", "signature"]
        labels = {"display_name": "Your name on sent email"}
        widgets = {"signature": forms.Textarea(attrs={"rows": 4})}
