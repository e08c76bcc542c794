"""Personalisation tokens of email templates (SPEC T1).

A token is a name in braces, `{first_name}`, with an optional fallback after a bar,
`{first_name|there}`, used when the value is empty. Unknown names are refused when a template
is saved, so a sent email never shows a raw token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TOKENS = {
    "first_name": "the contact's first name",
    "last_name": "the contact's last name",
    "full_name": "the contact's full name",
    "company": "the contact's (or the record's) company name",
    "deal": "the deal's name, when sending from a deal",
    "sender_name": "your name, as your mailbox shows it",
    "signature": "your mailbox's signature",
}

_TOKEN = re.compile(r"\{\s*([A-Za-z_]+)\s*(?:\|([^{}\n]*))?\}")


def unknown_tokens(text: str) -> list[str]:
    """Token names in `text` that are not in TOKENS, in order, each once."""
    return list(
        dict.fromkeys(m.group(1) for m in _TOKEN.finditer(text) if m.group(1) not in TOKENS)
    )


def render(text: str, values: dict[str, str]) -> str:
    """Replace every token by its value, else its fallback, else nothing."""

    def value(match: re.Match[str]) -> str:
        found = (values.get(match.group(1)) or "").strip()
        return found or (match.group(2) or "").strip()

    return _TOKEN.sub(value, text)


@dataclass
class Sender:
    name: str = ""
    signature: str = ""


def token_values(*, contact=None, company=None, deal=None, sender: Sender | None = None) -> dict:  # type: ignore[no-untyped-def]
    """The values of the tokens for one recipient (any record may be missing)."""
    company = company or (contact.company if contact is not None else None)
    sender = sender or Sender()
    return {
        "first_name": contact.first_name if contact else "",
        "last_name": contact.last_name if contact else "",
        "full_name": contact.full_name if contact else "",
        "company": company.name if company else "",
        "deal": deal.name if deal else "",
        "sender_name": sender.name,
        "signature": sender.signature,
    }
