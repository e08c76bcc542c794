"""Connecting Microsoft 365 through the pages: allauth's OAuth flow against the fake Microsoft
identity platform, then the first sync through O365."""

import pytest
from playwright.sync_api import expect

from mailboxes.models import Mailbox
from tests.browser.test_send_email import log_in
from tests.mailboxes.helpers import build_email
from tests.servers.fake_microsoft import FakeMicrosoft


@pytest.fixture
def microsoft(settings):
    with FakeMicrosoft() as fake:
        settings.CRM_OAUTH = {"graph": fake.crm_oauth}
        # allauth reads Microsoft's endpoints from the app settings on every request.
        endpoints = {"tenant": "common", "login_url": fake.base, "graph_url": fake.base}
        app = {"client_id": fake.client_id, "secret": fake.client_secret, "settings": endpoints}
        providers = settings.SOCIALACCOUNT_PROVIDERS
        settings.SOCIALACCOUNT_PROVIDERS = {
            **providers,
            "microsoft": {**providers["microsoft"], "APP": app},
        }
        yield fake


def test_connect_microsoft_365_through_consent(live_server, page, microsoft, owner):
    microsoft.add_message(build_email(subject="Welcome", message_id="welcome@example.com"))
    log_in(page, live_server, owner)

    page.goto(f"{live_server.url}/mailboxes/connect/")
    page.get_by_role("button", name="Connect Microsoft 365").click()

    connected = page.get_by_text(f"{microsoft.email} is connected. The first sync has started.")
    expect(connected).to_be_visible()
    expect(page.locator("progress[data-folder='Inbox']")).to_have_attribute("value", "1")
    mailbox = Mailbox.objects.get(owner=owner, kind="graph")
    assert mailbox.credentials.reveal()["refresh_token"] in microsoft.refresh_tokens
    assert ("GET", "/common/oauth2/v2.0/authorize") in microsoft.log
