"""A newcomer signs up, creates a contact and opens its timeline, in a real browser."""

import re

from django.core.management import call_command
from playwright.sync_api import expect

from contacts.models import Contact
from teams.models import Membership


def test_sign_up_create_contact_and_open_its_timeline(live_server, page, mailoutbox):
    page.goto(live_server.url)
    page.get_by_role("link", name="Create your team").click()
    page.get_by_label("Email").fill("newcomer@example.com")
    page.locator("input[name=password1]").fill("a long and unusual passphrase")
    page.locator("input[name=password2]").fill("a long and unusual passphrase")
    page.get_by_role("button", name="Sign Up").click()

    expect(page.get_by_role("heading", name="Verify Your Email Address")).to_be_visible()
    link = next(w for w in mailoutbox[0].body.split() if "/accounts/confirm-email/" in w)
    page.goto(link)
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("heading", name="No contacts yet")).to_be_visible()
    page.get_by_role("link", name="Add a contact").click()
    page.get_by_label("First name").fill("Ada")
    page.get_by_label("Last name").fill("Lovelace")
    page.get_by_label("Email addresses").fill("ada@example.com")
    page.get_by_role("button", name="Save contact").click()

    expect(page.get_by_role("heading", name="Ada Lovelace")).to_be_visible()
    expect(page.get_by_role("heading", name="Email timeline")).to_be_visible()
    expect(page.get_by_text("No email on this timeline yet")).to_be_visible()
    membership = Membership.objects.get(user__email="newcomer@example.com")
    contact = Contact.objects.get(team=membership.team)
    assert page.url.endswith(contact.get_absolute_url())
    assert contact.primary_email == "ada@example.com"


def test_demo_timeline_shows_threads_and_blocks_remote_images(live_server, page):
    call_command("load_demo_data", verbosity=0)

    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Email").fill("demo@threadline.test")
    page.locator("input[name=password]").fill("threadline-demo")
    page.get_by_role("button", name="Sign In").click()
    page.get_by_role("searchbox").fill("lovelace")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name="Ada Lovelace").click()

    thread = page.get_by_role("article", name="Thread: Licence proposal for Analytical Engines")
    expect(thread).to_contain_text("3 emails")
    expect(thread.get_by_text("Can we start with")).to_be_visible()
    expect(page.locator("img[src*='tracker.example']")).to_have_count(0)
    page.get_by_role("link", name="Show images").click()
    expect(page).to_have_url(re.compile(r"images=1"))
    expect(page.locator("img[src*='tracker.example']")).to_have_count(1)
