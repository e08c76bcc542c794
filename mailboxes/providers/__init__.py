"""Mail providers behind one interface (see base.py). Nothing outside this package imports
imapclient, googleapiclient or O365."""

from __future__ import annotations

from importlib import import_module

from .base import MailProvider, ProviderConfig

REGISTRY = {
    "imap": "mailboxes.providers.imap.ImapProvider",
    "gmail": "mailboxes.providers.gmail.GmailProvider",
    "graph": "mailboxes.providers.graph.GraphProvider",
}


def get_provider(kind: str, config: ProviderConfig) -> MailProvider:
    """The provider for a mailbox kind, imported lazily."""
    try:
        path = REGISTRY[kind]
    except KeyError:
        raise ValueError(f"no mail provider for kind {kind!r}") from None
    module, _, name = path.rpartition(".")
    return getattr(import_module(module), name)(config)  # type: ignore[no-any-return]
