"""Connecting Gmail through the pages: allauth's OAuth flow against the fake Google, then the
first sync, all through the real client libraries."""

import pytest
from allauth.socialaccount.providers.google.views import GoogleOAuth2Adapter
from playwright.sync_api import expect

from mailboxes.models import Mailbox
from tests.browser.test_send_email import log_in
from tests.mailboxes.helpers import build_email
from tests.servers.fake_google import FakeGoogle


@pytest.fixture
def google(settings, monkeypatch):
    with FakeGoogle() as fake:
        settings.CRM_OAUTH = {"gmail": fake.crm_oauth}
        app = {"client_id": fake.client_id, "secret": fake.client_secret}
        providers = settings.SOCIALACCOUNT_PROVIDERS
        settings.SOCIALACCOUNT_PROVIDERS = {
            **providers,
            "google": {**providers["google"], "APP": app},
        }
        # allauth reads Google's endpoints into class attributes when it is imported.
        monkeypatch.setattr(GoogleOAuth2Adapter, "authorize_url", f"{fake.base}/o/oauth2/v2/auth")
        monkeypatch.setattr(GoogleOAuth2Adapter, "access_token_url", f"{fake.base}/token")
        yield fake


def test_connect_gmail_through_google_consent(live_server, page, google, owner):
    google.add_message(build_email(subject="Welcome to the team", message_id="w@example.com"))
    log_in(page, live_server, owner)

    page.goto(f"{live_server.url}/mailboxes/connect/")
    page.get_by_role("button", name="Connect Gmail").click()

    expect(
        page.get_by_text(f"{google.email} is connected. The first sync has started.")
    ).to_be_visible()
    expect(page.locator("progress[data-folder='INBOX']")).to_have_attribute("value", "1")
    mailbox = Mailbox.objects.get(owner=owner, kind="gmail")
    assert mailbox.email_address == google.email
    assert mailbox.credentials.reveal()["refresh_token"] in google.refresh_tokens
    authorize = [path for method, path in google.log if path == "/o/oauth2/v2/auth"]
    assert authorize and ("POST", "/token") in google.log
