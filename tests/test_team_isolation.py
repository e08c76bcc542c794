"""Every URL that takes an id answers 404 to a member of another team (SPEC S3)."""

import pytest
from django.core.files.base import ContentFile
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from contacts.models import Company, Contact, Deal
from engagements.models import Attachment, EmailEngagement, EmailTemplate, OutgoingEmail
from mailboxes.crypto import Secret
from mailboxes.models import Mailbox
from teams.models import Invitation, Membership
from tests.factories import (
    CompanyFactory,
    ContactFactory,
    DealFactory,
    EmailEngagementFactory,
    MembershipFactory,
)


def _attachment(team):
    engagement = EmailEngagementFactory(thread__team=team)
    return Attachment.objects.create(
        team=team, engagement=engagement, filename="a.txt", file=ContentFile(b"a", name="a.txt")
    )


def _mailbox(team):
    first = Membership.objects.filter(team=team).first()
    owner = first.user if first else MembershipFactory(team=team).user
    return Mailbox.objects.create(
        team=team, owner=owner, kind="imap", email_address=f"{owner.username}@example.com",
        credentials=Secret({"password": "x"}),
        settings={"imap_host": "127.0.0.1", "imap_port": 9, "imap_security": "ssl",
                  "smtp_host": "127.0.0.1", "smtp_port": 9, "smtp_security": "ssl",
                  "username": "x"},
    )  # fmt: skip


def _failed_send(team):
    engagement = EmailEngagementFactory(thread__team=team, status="failed")
    mailbox = _mailbox(team)
    OutgoingEmail.objects.create(
        team=team, engagement=engagement, mailbox=mailbox, raw=b"x",
        sender=mailbox.email_address, recipients=["ada@example.com"],
    )  # fmt: skip
    return engagement


def _template(team):
    return EmailTemplate.objects.create(team=team, name="Intro", subject="Hi", body="Hello")


def _deleted_engagement(team):
    return EmailEngagementFactory(thread__team=team, deleted_at="2026-01-01T00:00:00Z")


# url name -> (method, factory of a row of the given team, model to check it survived)
URLS_WITH_IDS = {
    "engagements:contact_detail": ("get", lambda t: ContactFactory(team=t), Contact),
    "engagements:company_detail": ("get", lambda t: CompanyFactory(team=t), Company),
    "engagements:deal_detail": ("get", lambda t: DealFactory(team=t), Deal),
    "contacts:contact_update": ("post", lambda t: ContactFactory(team=t), Contact),
    "contacts:contact_delete": ("post", lambda t: ContactFactory(team=t), Contact),
    "contacts:company_update": ("post", lambda t: CompanyFactory(team=t), Company),
    "contacts:company_delete": ("post", lambda t: CompanyFactory(team=t), Company),
    "contacts:deal_update": ("post", lambda t: DealFactory(team=t), Deal),
    "contacts:deal_delete": ("post", lambda t: DealFactory(team=t), Deal),
    "engagements:engagement_delete": (
        "post",
        lambda t: EmailEngagementFactory(thread__team=t),
        EmailEngagement,
    ),
    "engagements:engagement_restore": ("post", _deleted_engagement, EmailEngagement),
    "engagements:attachment_download": ("get", _attachment, Attachment),
    "mailboxes:mailbox_detail": ("get", _mailbox, Mailbox),
    "mailboxes:mailbox_status": ("get", _mailbox, Mailbox),
    "mailboxes:mailbox_sync": ("post", _mailbox, Mailbox),
    "mailboxes:mailbox_delete": ("post", _mailbox, Mailbox),
    "mailboxes:mailbox_resync": ("post", _mailbox, Mailbox),
    "engagements:compose_contact": ("get", lambda t: ContactFactory(team=t), Contact),
    "engagements:compose_company": ("get", lambda t: CompanyFactory(team=t), Company),
    "engagements:compose_deal": ("get", lambda t: DealFactory(team=t), Deal),
    "engagements:timeline_version_contact": ("get", lambda t: ContactFactory(team=t), Contact),
    "engagements:timeline_version_company": ("get", lambda t: CompanyFactory(team=t), Company),
    "engagements:timeline_version_deal": ("get", lambda t: DealFactory(team=t), Deal),
    "engagements:engagement_retry": ("post", _failed_send, EmailEngagement),
    "engagements:template_update": ("post", _template, EmailTemplate),
    "engagements:template_delete": ("post", _template, EmailTemplate),
    "mailboxes:mailbox_identity": ("post", _mailbox, Mailbox),
    "teams:invitation_revoke": (
        "post",
        lambda t: Invitation.objects.create(team=t, email="x@example.com"),
        Invitation,
    ),
}


def _named_patterns_with_pk(resolver=None, namespace=""):
    for pattern in (resolver or get_resolver()).url_patterns:
        if isinstance(pattern, URLResolver):
            if pattern.namespace in {None, "admin"}:
                continue  # allauth (no ids) and the staff-only admin
            yield from _named_patterns_with_pk(pattern, f"{namespace}{pattern.namespace}:")
        elif isinstance(pattern, URLPattern) and "pk" in pattern.pattern.converters:
            yield f"{namespace}{pattern.name}"


def test_every_url_with_an_id_is_covered():
    assert set(_named_patterns_with_pk()) == set(URLS_WITH_IDS)


@pytest.mark.django_db
@pytest.mark.parametrize("url_name", sorted(URLS_WITH_IDS))
def test_other_team_gets_404(client_for, team, outsider, url_name):
    method, make, model = URLS_WITH_IDS[url_name]
    row = make(team)
    client = client_for(outsider)

    response = getattr(client, method)(reverse(url_name, args=[row.pk]), {"name": "Hacked"})

    assert response.status_code == 404
    assert model.objects.filter(pk=row.pk).exists()
    if hasattr(row, "name"):
        row.refresh_from_db()
        assert row.name != "Hacked"


@pytest.mark.django_db
@pytest.mark.parametrize("url_name", sorted(URLS_WITH_IDS))
def test_own_team_reaches_the_row(client_for, team, owner, url_name):
    method, make, _model = URLS_WITH_IDS[url_name]
    row = make(team)

    response = getattr(client_for(owner), method)(reverse(url_name, args=[row.pk]))

    assert response.status_code in {200, 302, 400}


@pytest.mark.django_db
@pytest.mark.parametrize("url_name", sorted(URLS_WITH_IDS))
def test_anonymous_gets_login_redirect(client, team, url_name):
    method, make, _model = URLS_WITH_IDS[url_name]
    row = make(team)

    response = getattr(client, method)(reverse(url_name, args=[row.pk]))

    assert response.status_code == 302
    assert "/accounts/login/" in response.url
