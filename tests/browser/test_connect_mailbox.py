"""Connecting a mailbox through the pages, watching the sync, and seeing a reply logged."""

from django.utils import timezone
from playwright.sync_api import expect

from engagements.services import Address, EmailData, log_email
from tests.factories import PASSWORD, ContactEmailFactory, ContactFactory
from tests.mailboxes.helpers import UserMailbox, build_email


def test_connect_sync_and_see_the_reply_on_the_timeline(
    live_server, page, mail_settings, dovecot, smtp_server, team, owner
):
    user, password = dovecot.add_user()
    contact = ContactFactory(team=team, first_name="Ada", last_name="Lovelace")
    ContactEmailFactory(contact=contact, email="ada@example.com")
    log_email(
        team=team,
        email=EmailData(
            message_id="proposal@threadline.test", sender=Address(f"{user}@example.com"),
            to=(Address("ada@example.com"),), subject="Proposal", sent_at=timezone.now(),
        ),
        direction="out", source="crm", contacts=[contact],
    )  # fmt: skip
    own_mail = UserMailbox(dovecot, user, password)
    for n in range(3):
        own_mail.deliver(build_email(subject=f"Unrelated {n}"))
    own_mail.deliver(
        build_email(subject="Re: Proposal", message_id="answer@example.com",
                    in_reply_to="proposal@threadline.test", text="Sounds good to me.")
    )  # fmt: skip

    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Email").fill(owner.email)
    page.locator("input[name=password]").fill(PASSWORD)
    page.get_by_role("button", name="Sign In").click()
    page.get_by_role("link", name="Mailboxes").click()
    page.get_by_role("link", name="Connect a mailbox").first.click()
    page.get_by_label("Email address").fill(f"{user}@example.com")
    page.get_by_label("IMAP server").fill(dovecot.host)
    page.get_by_label("IMAP port").fill(str(dovecot.port))
    page.get_by_label("IMAP security").select_option("plain")
    page.get_by_label("SMTP server").fill(smtp_server.host)
    page.get_by_label("SMTP port").fill(str(smtp_server.port))
    page.get_by_label("SMTP security").select_option("plain")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Check and connect").click()

    expect(page.get_by_text("is connected. The first sync has started.")).to_be_visible()
    inbox = page.locator("progress[data-folder='INBOX']")
    expect(inbox).to_have_attribute("value", "4")
    expect(inbox).to_have_attribute("max", "4")
    expect(page.get_by_text("4 of 4 messages read")).to_be_visible()

    page.goto(f"{live_server.url}{contact.get_absolute_url()}")
    thread = page.get_by_role("article", name="Thread: Proposal")
    expect(thread).to_contain_text("2 emails")
    expect(thread.get_by_text("Sounds good to me.")).to_be_visible()
    expect(page.get_by_text("Unrelated 0")).to_have_count(0)
    own_mail.close()
