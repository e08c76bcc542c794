import pytest
from django.utils import timezone

from engagements.services import Address, EmailData, log_email
from mailboxes.services import connect_mailbox
from tests.factories import CompanyFactory, ContactEmailFactory, ContactFactory, DealFactory
from tests.mailboxes.helpers import SENT_ID, UserMailbox


@pytest.fixture
def account(dovecot):
    """A fresh user on the test Dovecot: (user, password, their own IMAP session)."""
    user, password = dovecot.add_user()
    mailbox = UserMailbox(dovecot, user, password)
    yield user, password, mailbox
    mailbox.close()


@pytest.fixture
def connected(mail_settings, dovecot, smtp_server, account, team, owner):
    user, password, _ = account
    return connect_mailbox(
        team=team,
        owner=owner,
        kind="imap",
        email_address=f"{user}@example.com",
        provider_settings={
            "imap_host": dovecot.host,
            "imap_port": dovecot.port,
            "imap_security": "plain",
            "smtp_host": smtp_server.host,
            "smtp_port": smtp_server.port,
            "smtp_security": "plain",
            "username": user,
        },  # fmt: skip
        credentials={"password": password},
    )


@pytest.fixture
def tracked(team, connected):
    """An email sent from the CRM to Ada, logged on her contact, company and deal."""
    company = CompanyFactory(team=team)
    contact = ContactFactory(team=team, company=company)
    ContactEmailFactory(contact=contact, email="ada@example.com")
    deal = DealFactory(team=team)
    log_email(
        team=team,
        email=EmailData(
            message_id=SENT_ID,
            sender=Address(connected.email_address),
            to=(Address("ada@example.com", "Ada"),),
            subject="Proposal",
            sent_at=timezone.now(),
        ),
        direction="out",
        source="crm",
        contacts=[contact],
        companies=[company],
        deals=[deal],
    )
    return contact, company, deal
