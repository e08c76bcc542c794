"""End to end through the pages: send from a contact, the reply arrives in the user's real
mailbox, the sync logs it in the same thread, and the user answers it (SPEC L1, L2, L6, L7)."""

from email import message_from_bytes, policy

from playwright.sync_api import expect

from tests.factories import PASSWORD, ContactEmailFactory, ContactFactory
from tests.mailboxes.helpers import build_email


def log_in(page, live_server, user):
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Email").fill(user.email)
    page.locator("input[name=password]").fill(PASSWORD)
    page.get_by_role("button", name="Sign In").click()


def test_send_get_the_reply_logged_and_answer_it(
    live_server, page, team, owner, connected, account, smtp_server
):
    contact = ContactFactory(team=team, first_name="Ada", last_name="Lovelace")
    ContactEmailFactory(contact=contact, email="ada@example.com", is_primary=True)
    own_mail = account[2]
    log_in(page, live_server, owner)

    page.goto(f"{live_server.url}{contact.get_absolute_url()}")
    page.get_by_role("link", name="New email").click()
    expect(page.get_by_label("Ada Lovelace <ada@example.com>")).to_be_checked()
    page.get_by_label("Subject").fill("Our offer")
    page.get_by_label("Body").fill("Dear Ada,\nhere is our offer.")
    page.get_by_role("button", name="Send").click()

    expect(page.get_by_text("“Our offer” is on its way.")).to_be_visible()
    thread = page.get_by_role("article", name="Thread: Our offer")
    expect(thread.locator(".badge.out")).to_have_text("Sent")

    # Ada answers: her mail client replies to the message as it arrived (the sent copy).
    own_mail.client.select_folder("Sent", readonly=True)
    (uid,) = own_mail.client.search(["SUBJECT", "Our offer"])
    sent = message_from_bytes(
        own_mail.client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"], policy=policy.default
    )
    sent_id = sent["Message-ID"].strip("<>")
    own_mail.deliver(
        build_email(
            subject="Re: Our offer", message_id="ada-reply@example.com", in_reply_to=sent_id,
            references=[sent_id], text="Thanks, we accept.",
        )
    )  # fmt: skip
    page.goto(f"{live_server.url}/mailboxes/{connected.pk}/")
    page.get_by_role("button", name="Sync now").click()

    page.goto(f"{live_server.url}{contact.get_absolute_url()}")
    thread = page.get_by_role("article", name="Thread: Our offer")
    expect(thread).to_contain_text("2 emails")
    expect(thread.get_by_text("Thanks, we accept.")).to_be_visible()

    thread.locator("#email-" + str(_engagement_pk("ada-reply@example.com"))).get_by_role(
        "link", name="Reply"
    ).click()
    expect(page.get_by_label("Subject")).to_have_value("Re: Our offer")
    page.get_by_label("Body").press("Control+Home")
    page.get_by_label("Body").press_sequentially("Great, talk soon.")
    page.get_by_role("button", name="Send").click()

    thread = page.get_by_role("article", name="Thread: Our offer")
    expect(thread).to_contain_text("3 emails")
    expect(thread.get_by_text("Great, talk soon.", exact=False)).to_be_visible()
    assert b"In-Reply-To: <ada-reply@example.com>" in smtp_server.received[-1].data


def _engagement_pk(message_id):
    from engagements.models import EmailEngagement

    return EmailEngagement.objects.get(message_id=message_id).pk
