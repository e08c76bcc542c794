"""Compose, reply, retry, templates and bulk sending through the pages (SPEC C4, L1, L7, T1)."""

from email import message_from_bytes, policy

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from engagements.models import EmailEngagement, EmailTemplate
from tests.factories import (
    ContactEmailFactory,
    ContactFactory,
    DealFactory,
    EmailEngagementFactory,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def ada(team):
    contact = ContactFactory(team=team, first_name="Ada", last_name="Lovelace")
    ContactEmailFactory(contact=contact, email="ada@example.com", is_primary=True)
    return contact


def on_the_wire(smtp_server, engagement):
    (copy,) = [r for r in smtp_server.received if f"<{engagement.message_id}>".encode() in r.data]
    return copy


def test_without_a_mailbox_the_compose_page_explains_how_to_connect(client_for, owner, ada):
    client = client_for(owner)
    page = client.get(ada.get_absolute_url()).content.decode()
    assert "connect your mailbox first" in page

    response = client.post(
        reverse("engagements:compose_contact", args=[ada.pk]),
        {"to_contacts": ["ada@example.com"], "subject": "Hi", "body": "Hello"},
    )

    assert "connect your mailbox first" in response.content.decode()
    assert 'name="subject"' not in response.content.decode()
    assert not EmailEngagement.objects.exists()


def test_new_email_from_a_deal_page(client_for, owner, team, ada, connected, smtp_server):
    deal = DealFactory(team=team, name="Big order")
    deal.contacts.add(ada)
    client = client_for(owner)
    form = client.get(reverse("engagements:compose_deal", args=[deal.pk])).content.decode()
    assert "Ada Lovelace &lt;ada@example.com&gt;" in form

    response = client.post(
        reverse("engagements:compose_deal", args=[deal.pk]),
        {
            "to_contacts": ["ada@example.com"],
            "to_other": "bob@example.com",
            "bcc": "boss@example.com",
            "subject": "Your order",
            "body": "Here it is.",
            "attachments": [SimpleUploadedFile("order.csv", b"a,b\n1,2\n", "text/csv")],
        },
    )

    engagement = EmailEngagement.objects.get(subject="Your order")
    assert response.status_code == 302
    assert response.url == f"{deal.get_absolute_url()}#email-{engagement.pk}"
    assert engagement.status == "sent"
    assert list(engagement.deals.all()) == [deal]
    assert list(engagement.contacts.all()) == [ada]  # the recipient who is a contact
    copy = on_the_wire(smtp_server, engagement)
    assert sorted(copy.rcpt_tos) == ["ada@example.com", "bob@example.com", "boss@example.com"]
    message = message_from_bytes(copy.data, policy=policy.default)
    assert message["To"].addresses[0].display_name == "Ada Lovelace"
    assert next(message.iter_attachments()).get_filename() == "order.csv"
    page = client.get(deal.get_absolute_url()).content.decode()
    assert "Your order" in page and "Reply" in page


def test_reply_is_prefilled_and_stays_in_the_thread(client_for, owner, ada, connected):
    incoming = EmailEngagementFactory(
        thread__team=ada.team, subject="Question", from_address="ada@example.com",
        message_id="q1@example.com", body_text="Can you call me?",
    )  # fmt: skip
    incoming.contacts.add(ada)
    url = reverse("engagements:compose_contact", args=[ada.pk]) + f"?reply={incoming.pk}"
    client = client_for(owner)

    page = client.get(url).content.decode()
    assert 'value="Re: Question"' in page
    assert "&gt; Can you call me?" in page

    client.post(
        url,
        {"to_contacts": ["ada@example.com"], "subject": "Re: Question", "body": "Sure.",
         "reply": incoming.pk},
    )  # fmt: skip

    reply = EmailEngagement.objects.get(subject="Re: Question")
    assert reply.in_reply_to == "q1@example.com"
    assert reply.thread_id == incoming.thread_id


def test_simple_formatting_from_the_page(client_for, owner, ada, connected):
    client_for(owner).post(
        reverse("engagements:compose_contact", args=[ada.pk]),
        {"to_contacts": ["ada@example.com"], "subject": "Hi", "body": "**Hello**",
         "formatting": "on"},
    )  # fmt: skip

    engagement = EmailEngagement.objects.get(subject="Hi")
    assert engagement.body_html == "<p><strong>Hello</strong></p>"


def test_compose_needs_a_recipient(client_for, owner, ada, connected):
    response = client_for(owner).post(
        reverse("engagements:compose_contact", args=[ada.pk]),
        {"to_other": "not-an-address", "subject": "Hi", "body": "Hello"},
    )

    assert "Not a valid email address: not-an-address" in response.content.decode()
    assert not EmailEngagement.objects.filter(source="crm").exists()


def test_failed_send_shows_the_reason_and_retry(client_for, owner, ada, connected, smtp_server):
    client = client_for(owner)
    smtp_server.refuse.add("ada@example.com")
    try:
        client.post(
            reverse("engagements:compose_contact", args=[ada.pk]),
            {"to_contacts": ["ada@example.com"], "subject": "Hi", "body": "Hello"},
        )
    finally:
        smtp_server.refuse.discard("ada@example.com")
    engagement = EmailEngagement.objects.get(subject="Hi")
    page = client.get(ada.get_absolute_url()).content.decode()
    assert "Not sent" in page and "refused every recipient" in page and "Retry" in page

    client.post(reverse("engagements:engagement_retry", args=[engagement.pk]))

    engagement.refresh_from_db()
    assert engagement.status == "sent"
    assert on_the_wire(smtp_server, engagement).rcpt_tos == ["ada@example.com"]


def test_template_with_an_unknown_token_is_refused(client_for, owner):
    response = client_for(owner).post(
        reverse("engagements:template_create"),
        {"name": "Intro", "subject": "Hi {firstname}", "body": "Hello"},
    )

    assert "Unknown token: {firstname}" in response.content.decode()
    assert not EmailTemplate.objects.exists()


def test_template_preview_uses_a_real_contact_and_fallbacks(client_for, owner, team, ada):
    nameless = ContactFactory(team=team, first_name="", last_name="Nobody")
    client = client_for(owner)
    client.post(
        reverse("engagements:template_create"),
        {"name": "Intro", "subject": "Hello {first_name|there}",
         "body": "Dear {first_name|friend} of {company|your company},\n{signature}"},
    )  # fmt: skip
    template = EmailTemplate.objects.get(name="Intro")

    as_ada = client.get(f"{template.get_absolute_url()}?preview={ada.pk}").content.decode()
    as_nameless = client.get(
        f"{template.get_absolute_url()}?preview={nameless.pk}"
    ).content.decode()

    assert "Hello Ada" in as_ada
    assert "Hello there" in as_nameless and "Dear friend of your company" in as_nameless
    assert "{first_name" not in as_nameless.split('id="preview-title"')[1]


def test_template_sent_to_several_contacts(
    client_for, owner, team, ada, connected, smtp_server, account
):
    grace = ContactFactory(team=team, first_name="", last_name="Hopper")
    ContactEmailFactory(contact=grace, email="grace@example.com", is_primary=True)
    no_email = ContactFactory(team=team, first_name="Tim", last_name="Okafor")
    template = EmailTemplate.objects.create(
        team=team, name="Intro", subject="Hi {first_name|there}", body="Hello {first_name|there}"
    )
    client = client_for(owner)
    selected = {"contact": [ada.pk, grace.pk, no_email.pk], "template": template.pk}
    preview = client.get(reverse("engagements:send_template"), selected).content.decode()
    assert "Hi Ada" in preview and "Hi there" in preview and "skipped" in preview

    response = client.post(reverse("engagements:send_template"), selected)

    assert response.status_code == 302
    sent = list(EmailEngagement.objects.filter(source="crm").order_by("subject"))
    assert [e.subject for e in sent] == ["Hi Ada", "Hi there"]
    assert sent[0].thread_id != sent[1].thread_id
    assert [list(e.contacts.all()) for e in sent] == [[ada], [grace]]
    for engagement in sent:
        data = on_the_wire(smtp_server, engagement).data
        assert b"{" not in data and b"References" not in data
    messages = [m.message for m in response.wsgi_request._messages]
    assert "Skipped: Tim Okafor (no email address)" in messages[0]


def test_a_newcomer_in_an_old_thread_is_explained(client_for, owner, team, ada):
    first = EmailEngagementFactory(
        thread__team=team, to=[{"name": "", "email": "ada@example.com"}],
        from_address="me@example.com", subject="Quote",
    )  # fmt: skip
    forwarded = EmailEngagementFactory(
        thread=first.thread, to=[{"name": "", "email": "carl@example.com"}],
        from_address="me@example.com", subject="Fwd: Quote",
    )  # fmt: skip
    first.contacts.add(ada)
    forwarded.contacts.add(ada)

    page = client_for(owner).get(ada.get_absolute_url()).content.decode()

    assert page.count("joined this conversation here") == 1
    assert "carl@example.com joined this conversation here" in page


def test_team_page_shows_the_logging_address(client_for, owner, team):
    page = client_for(owner).get(reverse("teams:team_settings")).content.decode()

    assert f"log-{team.logging_token}@threadline.localhost" in page
