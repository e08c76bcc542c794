"""What the Gmail and Microsoft 365 providers do alike, each against its own fake."""

import pytest
from django.utils import timezone

from tests.mailboxes.helpers import sync

pytestmark = pytest.mark.django_db(transaction=True)

PROVIDERS = pytest.mark.parametrize(
    ("mailbox", "fake"), [("gmail", "google"), ("outlook", "microsoft")]
)


@PROVIDERS
def test_throttling_waits_as_asked_and_does_not_disconnect(request, mailbox, fake):
    mailbox, fake = request.getfixturevalue(mailbox), request.getfixturevalue(fake)
    fake.throttle(1)

    result = sync(mailbox)

    assert "slow down" in result.error
    assert mailbox.state == "connected"
    assert 0 < (mailbox.retry_at - timezone.now()).total_seconds() <= 2
    assert sync(mailbox).error == ""
