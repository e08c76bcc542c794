"""Open pages follow what happens without a reload: a reply the sync logs appears on the
contact's timeline, and the mailbox page's state follows its sync (issue 14)."""

from playwright.sync_api import expect

from mailboxes.leases import claim_lease, release_lease
from sync.services import sync_mailbox
from tests.browser.test_send_email import log_in
from tests.mailboxes.helpers import reply, track_proposal

SOON = 15_000  # ms: the page asks every 4 s


def test_a_reply_logged_by_the_sync_appears_on_the_open_timeline(
    live_server, page, team, owner, connected, account
):
    contact, _company, _deal = track_proposal(team, connected)
    log_in(page, live_server, owner)
    page.goto(f"{live_server.url}{contact.get_absolute_url()}")
    thread = page.get_by_role("article", name="Thread: Proposal")
    expect(thread).to_contain_text("1 email")
    page.evaluate("window.stayed = true")  # gone if the page reloads

    account[2].deliver(reply(1, text="Sounds good, send the contract."))
    assert sync_mailbox(connected.pk).new_messages == 1

    expect(thread.get_by_text("Sounds good, send the contract.")).to_be_visible(timeout=SOON)
    expect(thread).to_contain_text("2 emails")
    expect(page.get_by_role("status").filter(has_text="timeline was updated")).to_be_attached()
    assert page.evaluate("window.stayed") is True

    # With the keyboard inside the timeline, the next email waits behind a button.
    thread.get_by_role("link", name="Reply").first.focus()
    account[2].deliver(reply(2, parent="reply-1@example.com", text="And the invoice, please."))
    sync_mailbox(connected.pk)
    show = page.get_by_role("button", name="New email on this timeline: show it")
    expect(show).to_be_visible(timeout=SOON)
    expect(page.get_by_text("And the invoice, please.")).to_have_count(0)
    show.click()
    expect(page.get_by_text("And the invoice, please.")).to_be_visible()
    expect(page.get_by_role("heading", name="Email timeline")).to_be_focused()
    expect(show).to_be_hidden()
    assert page.evaluate("window.stayed") is True


def test_the_mailbox_page_follows_its_state(live_server, page, owner, connected):
    log_in(page, live_server, owner)
    page.goto(f"{live_server.url}/mailboxes/{connected.pk}/")
    state = page.locator("#mailbox-state")
    expect(state).to_have_text("Connected")

    epoch = claim_lease(connected.pk)  # a sync starts, in a worker somewhere
    expect(state).to_have_text("Syncing…", timeout=SOON)
    release_lease(connected.pk, epoch)
    expect(state).to_have_text("Connected", timeout=SOON)
