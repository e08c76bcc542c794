"""Pages carry a Content-Security-Policy that forbids inline script, and still work under it."""

from playwright.sync_api import expect

from contacts.models import Contact
from tests.browser.test_send_email import log_in
from tests.factories import ContactFactory


def test_delete_asks_first_under_a_policy_without_inline_script(live_server, page, team, owner):
    contact = ContactFactory(team=team, first_name="Ada", last_name="Lovelace")
    log_in(page, live_server, owner)

    response = page.goto(f"{live_server.url}{contact.get_absolute_url()}")
    questions = []

    def answer(dialog, accept):
        questions.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    page.once("dialog", lambda dialog: answer(dialog, accept=False))
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("heading", name="Ada Lovelace")).to_be_visible()
    assert Contact.objects.filter(pk=contact.pk).exists()
    page.once("dialog", lambda dialog: answer(dialog, accept=True))
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("heading", name="Contacts", exact=True)).to_be_visible()

    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert questions == ["Delete Ada Lovelace? This cannot be undone."] * 2
    assert not Contact.objects.filter(pk=contact.pk).exists()


def test_an_inline_script_is_refused_by_the_browser(live_server, page, team, owner, csp_violations):
    # The guard behind the sanitiser: were a script to reach a page, it would not run.
    log_in(page, live_server, owner)
    page.goto(f"{live_server.url}/contacts/")

    page.evaluate(
        """() => { const s = document.createElement("script");
                   s.textContent = "window.__ran = true"; document.body.append(s); }"""
    )

    assert page.evaluate("() => window.__ran === undefined")
    assert len(csp_violations) == 1 and "script-src 'self'" in csp_violations[0]
    csp_violations.clear()  # provoked on purpose: not a fault of the page
